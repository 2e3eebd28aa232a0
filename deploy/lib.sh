#!/usr/bin/env bash
# Shared by the local deploy commands: settings and one reused SSH connection. Sourced, not run.

die() { echo "deploy: $*" >&2; exit 1; }
say() { echo "deploy: $*" >&2; }

# The production secrets, one file each (compose.prod.yaml's `secrets:`, read from SECRETS_DIR).
SECRETS=(postgres_password postgres_app_password redis_password jwt_secret pgbackrest_cipher_pass pgbackrest_ssh_key)

# Settings: deploy.env (kept out of git; see deploy/deploy.env.example), then the environment.
# Arguments: the settings that must be set (default: the ones every command but deploy-trust needs).
load_settings() {
  local file=${DEPLOY_SETTINGS:-deploy.env} required=("$@") missing=() name
  if [[ -f $file ]]; then
    set -a
    # shellcheck source=/dev/null
    source "$file"
    set +a
  fi
  ((${#required[@]})) || required=(DEPLOY_HOST DEPLOY_PATH DEPLOY_ENV_FILE DEPLOY_SECRETS_DIR)
  for name in "${required[@]}"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "missing setting(s): ${missing[*]} (set them in $file or the environment)"
  [[ -z ${DEPLOY_ENV_FILE:-} || -f $DEPLOY_ENV_FILE ]] || die "DEPLOY_ENV_FILE=$DEPLOY_ENV_FILE: no such file"
  DEPLOY_PORT=${DEPLOY_PORT:-22}
  DEPLOY_PROJECT=${DEPLOY_PROJECT:-fastapi-kit}
  DEPLOY_KEEP_RELEASES=${DEPLOY_KEEP_RELEASES:-5}
  DEPLOY_IMAGES=${DEPLOY_IMAGES:-ship}
  DEPLOY_LOCK_TIMEOUT=${DEPLOY_LOCK_TIMEOUT:-120}
  DEPLOY_HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT:-120}
  DEPLOY_MIN_FREE_MB=${DEPLOY_MIN_FREE_MB:-2048}
  DEPLOY_WHO=${DEPLOY_WHO:-$(id -un)@$(hostname)}
  # The server's SSH host key, pinned by make deploy-trust. Committed, not ignored: it is public,
  # and in git every teammate and CI job checks the same key, and a change to it is reviewed.
  DEPLOY_KNOWN_HOSTS=${DEPLOY_KNOWN_HOSTS:-deploy/known_hosts}
  [[ $DEPLOY_KNOWN_HOSTS == /* ]] || DEPLOY_KNOWN_HOSTS=$PWD/$DEPLOY_KNOWN_HOSTS
  APP_IMAGE=${APP_IMAGE:-fastapi-kit}
  if [[ -n ${DEPLOY_REGISTRY:-} ]]; then
    DEPLOY_IMAGES=registry
    APP_IMAGE=$DEPLOY_REGISTRY/$APP_IMAGE
  fi
  case $DEPLOY_IMAGES in ship | build | registry) ;; *) die "DEPLOY_IMAGES must be ship, build or registry" ;; esac
}

# Before a deploy touches the server: every secret file is there, none is left in the env file
# (where the kit kept them before), and git would never commit or ship them.
check_secrets() {
  local dir=${DEPLOY_SECRETS_DIR%/} name line value file ignored=0
  [[ -d $dir ]] || die "DEPLOY_SECRETS_DIR=$dir: no such directory (make secrets SECRETS_DIR=$dir creates it)"
  for name in "${SECRETS[@]}"; do
    [[ -s $dir/$name ]] || die "secret $dir/$name is missing or empty (make secrets SECRETS_DIR=$dir creates the missing ones)"
  done
  # 1: in this repository and not ignored (0: ignored; 128: outside the repository).
  git check-ignore -q "$dir/${SECRETS[0]}" 2>/dev/null || ignored=$?
  ((ignored != 1)) || die "DEPLOY_SECRETS_DIR=$dir is in the repository and git does not ignore it: add it to .gitignore"
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?(POSTGRES_PASSWORD|POSTGRES_APP_PASSWORD|REDIS_PASSWORD|JWT_SECRET)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
    name=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
    value=${value%"${value##*[![:space:]]}"}
    [[ -z $value || $value == '""' || $value == "''" || $value == \#* ]] && continue
    file=$dir/$(tr '[:upper:]' '[:lower:]' <<<"$name")
    die "DEPLOY_ENV_FILE=$DEPLOY_ENV_FILE still sets $name: production secrets are files now;" \
      "move its value into $file (printf %s 'VALUE' >$file) and delete the line"
  done <"$DEPLOY_ENV_FILE"
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

# ssh_command [OPTION...]: SSH=(ssh ... OPTION... DEPLOY_SSH_OPTS... DEPLOY_HOST). The server is
# known only by the key pinned in DEPLOY_KNOWN_HOSTS: no other known_hosts file counts, no key is
# learnt on first use, none is written. ssh keeps the first value it is given of an option
# (ssh_config(5)), so DEPLOY_SSH_OPTS cannot turn this off.
ssh_command() {
  # Word splitting of DEPLOY_SSH_OPTS is intended: it holds several options. DEPLOY_HOST is
  # checked by load_settings.
  # shellcheck disable=SC2206,SC2153
  SSH=(ssh -p "$DEPLOY_PORT" -o BatchMode=yes -o StrictHostKeyChecking=yes
    -o "UserKnownHostsFile=\"$DEPLOY_KNOWN_HOSTS\"" -o GlobalKnownHostsFile=/dev/null
    -o HashKnownHosts=no -o CheckHostIP=no "$@" ${DEPLOY_SSH_OPTS:-} "$DEPLOY_HOST")
}

# The name ssh looks the server's key up by, from its own view of the settings (ssh -G: after
# ~/.ssh/config's HostName and Port): HostKeyAlias if set, else the host, as [host]:port unless
# the port is 22. Sets KEY_HOST, KEY_PORT and KEY_NAME.
host_key_name() {
  local config
  # -T: else ssh 9 warns here that stdin is not a terminal.
  config=$("${SSH[0]}" -G -T "${SSH[@]:1}") || die "ssh cannot make sense of the settings for $DEPLOY_HOST"
  KEY_HOST=$(awk '$1 == "hostname" {print $2; exit}' <<<"$config")
  KEY_PORT=$(awk '$1 == "port" {print $2; exit}' <<<"$config")
  KEY_NAME=$(awk '$1 == "hostkeyalias" {print $2; exit}' <<<"$config")
  if [[ -z $KEY_NAME ]]; then
    KEY_NAME=$KEY_HOST
    [[ $KEY_PORT == 22 ]] || KEY_NAME="[$KEY_HOST]:$KEY_PORT"
  fi
}

# One SSH connection for the whole deploy (ControlMaster), not one per command.
start_ssh() {
  SSH_DIR=$(mktemp -d)
  ssh_command -o ControlMaster=auto -o "ControlPath=$SSH_DIR/%C" -o ControlPersist=300
  host_key_name
  if [[ ! -f $DEPLOY_KNOWN_HOSTS ]] || ! ssh-keygen -F "$KEY_NAME" -f "$DEPLOY_KNOWN_HOSTS" >/dev/null; then
    die "the server's host key is not pinned: run make deploy-trust (compare the fingerprint with" \
      "the server's own \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`)"
  fi
  # stderr to a file, not a pipe: the master that stays behind (ControlPersist) may keep it open.
  "${SSH[@]}" true 2>"$SSH_DIR/connect.err" && return
  cat "$SSH_DIR/connect.err" >&2
  if grep -qi 'host key\|host identification' "$SSH_DIR/connect.err"; then
    die "the server's host key is not the one pinned for $KEY_NAME in $DEPLOY_KNOWN_HOSTS:" \
      "someone may be between you and the server, or its key was replaced. Compare the server's" \
      "own \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`, over a channel you trust, with" \
      "what make deploy-trust shows before pinning it again"
  fi
  die "cannot reach $DEPLOY_HOST over SSH (port $DEPLOY_PORT)"
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
