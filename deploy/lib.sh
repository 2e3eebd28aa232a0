#!/usr/bin/env bash
# Shared by the local deploy commands: settings and one reused SSH connection. Sourced, not run.

die() { echo "deploy: $*" >&2; exit 1; }
say() { echo "deploy: $*" >&2; }

# Settings: deploy.env (kept out of git; see deploy/deploy.env.example), then the environment.
load_settings() {
  local file=${DEPLOY_SETTINGS:-deploy.env}
  if [[ -f $file ]]; then
    set -a
    # shellcheck source=/dev/null
    source "$file"
    set +a
  fi
  local missing=()
  for name in DEPLOY_HOST DEPLOY_PATH DEPLOY_ENV_FILE; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "missing setting(s): ${missing[*]} (set them in $file or the environment)"
  [[ -f $DEPLOY_ENV_FILE ]] || die "DEPLOY_ENV_FILE=$DEPLOY_ENV_FILE: no such file"
  DEPLOY_PORT=${DEPLOY_PORT:-22}
  DEPLOY_PROJECT=${DEPLOY_PROJECT:-fastapi-kit}
  DEPLOY_KEEP_RELEASES=${DEPLOY_KEEP_RELEASES:-5}
  DEPLOY_IMAGES=${DEPLOY_IMAGES:-ship}
  DEPLOY_LOCK_TIMEOUT=${DEPLOY_LOCK_TIMEOUT:-120}
  DEPLOY_HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT:-120}
  DEPLOY_MIN_FREE_MB=${DEPLOY_MIN_FREE_MB:-2048}
  DEPLOY_WHO=${DEPLOY_WHO:-$(id -un)@$(hostname)}
  APP_IMAGE=${APP_IMAGE:-fastapi-kit}
  if [[ -n ${DEPLOY_REGISTRY:-} ]]; then
    DEPLOY_IMAGES=registry
    APP_IMAGE=$DEPLOY_REGISTRY/$APP_IMAGE
  fi
  case $DEPLOY_IMAGES in ship | build | registry) ;; *) die "DEPLOY_IMAGES must be ship, build or registry" ;; esac
}

# The files a release ships, as a git tree: HEAD's; or, with uncommitted changes (a deploy refuses
# them unless DEPLOY_ALLOW_DIRTY=1), the working tree's, which is what the images are built from:
# tracked files as they are now, deletions, and untracked files git does not ignore. Written
# through a throwaway copy of the index, so the real one (the staging area) is left alone.
release_tree() {
  if [[ -z $(git status --porcelain) ]]; then
    git rev-parse 'HEAD^{tree}'
    return
  fi
  local dir status=0
  dir=$(mktemp -d)
  cp "$(git rev-parse --git-path index)" "$dir/index" 2>/dev/null || true
  { GIT_INDEX_FILE=$dir/index git add -A && GIT_INDEX_FILE=$dir/index git write-tree; } || status=$?
  rm -rf "$dir"
  return "$status"
}

# One SSH connection for the whole deploy (ControlMaster), not one per command.
start_ssh() {
  SSH_DIR=$(mktemp -d)
  # Word splitting of DEPLOY_SSH_OPTS is intended: it holds several options. DEPLOY_HOST is
  # checked by load_settings.
  # shellcheck disable=SC2206,SC2153
  SSH=(ssh -p "$DEPLOY_PORT" -o BatchMode=yes -o ControlMaster=auto
    -o "ControlPath=$SSH_DIR/%C" -o ControlPersist=300 ${DEPLOY_SSH_OPTS:-} "$DEPLOY_HOST")
  "${SSH[@]}" true || die "cannot reach $DEPLOY_HOST over SSH (port $DEPLOY_PORT)"
}

stop_ssh() {
  [[ -n ${SSH_DIR:-} ]] || return 0
  "${SSH[@]}" -O exit 2>/dev/null || true
  rm -rf "$SSH_DIR"
}

# remote COMMAND [ARGS...]: deploy/remote.sh on the server, with the deploy's settings.
remote() {
  local args
  printf -v args '%q ' "$@"
  "${SSH[@]}" "DEPLOY_PATH=$(printf %q "$DEPLOY_PATH") DEPLOY_PROJECT=$DEPLOY_PROJECT" \
    "DEPLOY_KEEP_RELEASES=$DEPLOY_KEEP_RELEASES DEPLOY_LOCK_TIMEOUT=$DEPLOY_LOCK_TIMEOUT" \
    "DEPLOY_HEALTH_TIMEOUT=$DEPLOY_HEALTH_TIMEOUT DEPLOY_MIN_FREE_MB=$DEPLOY_MIN_FREE_MB" \
    "APP_IMAGE=$(printf %q "$APP_IMAGE") bash -s -- $args" <deploy/remote.sh
}
