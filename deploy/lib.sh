#!/usr/bin/env bash
# make deploy's functions on this side, sourced by deploy/deploy.sh (and deploy/swarm/deploy.sh,
# with deploy/swarm/lib.sh, and deploy/secrets.sh): settings, one reused SSH connection, the
# release, the secrets, the lock, the public check. Sourced from the repository's root, not run.

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

# remote COMMAND [ARGS...]: deploy/remote.sh on the server, after its functions
# (deploy/remote-lib.sh, and make rotate-secret's deploy/rotate-lib.sh), with the deploy's settings.
remote() {
  local args
  printf -v args '%q ' "$@"
  "${SSH[@]}" "DEPLOY_PATH=$(printf %q "$DEPLOY_PATH") DEPLOY_PROJECT=$DEPLOY_PROJECT" \
    "DEPLOY_KEEP_RELEASES=$DEPLOY_KEEP_RELEASES DEPLOY_LOCK_TIMEOUT=$DEPLOY_LOCK_TIMEOUT" \
    "DEPLOY_HEALTH_TIMEOUT=$DEPLOY_HEALTH_TIMEOUT DEPLOY_MIN_FREE_MB=$DEPLOY_MIN_FREE_MB" \
    "APP_IMAGE=$(printf %q "$APP_IMAGE") bash -s -- $args" < <(cat deploy/remote-lib.sh deploy/rotate-lib.sh deploy/remote.sh)
}

release_name() {
  local rev dirty=""
  rev=$(git rev-parse --short=12 HEAD) || die "not a git checkout"
  if [[ -n $(git status --porcelain) ]]; then
    [[ ${DEPLOY_ALLOW_DIRTY:-0} == 1 ]] || die "uncommitted changes; commit them (or DEPLOY_ALLOW_DIRTY=1)"
    dirty=-dirty
  fi
  echo "$(date -u +%Y%m%dT%H%M%SZ)-$rev$dirty"
}

# What make deploy adds to the production env of RELEASE. Docker Compose reads COMPOSE_FILE and
# COMPOSE_PROJECT_NAME from the .env of the directory it runs in ("Configure pre-defined
# environment variables", https://docs.docker.com/compose/how-tos/environment-variables/envvars/;
# a variable set in the shell or a -f/-p flag wins): so a plain `docker compose`, and the
# Makefile's targets (make up, scale, logs, psql...), run in $DEPLOY_PATH/current on the server
# act on the deployed project with the production overlay, as remote-lib.sh's compose() does.
release_env() {
  printf '\n# set by make deploy\n'
  printf '%s\n' "APP_IMAGE=$APP_IMAGE" "APP_TAG=$1" "PROXY_DYNAMIC_DIR=$DEPLOY_PATH/proxy-dynamic" \
    "SECRETS_DIR=$DEPLOY_PATH/secrets" "COMPOSE_FILE=compose.yaml:compose.prod.yaml" \
    "COMPOSE_PROJECT_NAME=$DEPLOY_PROJECT"
}

# The release: the files the images are built from (git archive of release_tree), the
# production env, and what names it.
upload_release() {
  local release=$1 dir=$SSH_DIR/$1 tree
  tree=$(release_tree) || die "cannot read the working tree"
  mkdir -p "$dir"
  git archive "$tree" | tar -x -C "$dir"
  cp "$DEPLOY_ENV_FILE" "$dir/.env"
  release_env "$release" >>"$dir/.env"
  chmod 600 "$dir/.env"
  tar -C "$dir" -czf - . | "${SSH[@]}" "mkdir -p $(printf %q "$DEPLOY_PATH/releases/$release") &&
    tar -xzf - -C $(printf %q "$DEPLOY_PATH/releases/$release")"
}

# The secrets (check_secrets), into $DEPLOY_PATH/secrets/.incoming, where
# `remote install_secrets` moves each into place: all of it under the 0700 secrets directory.
upload_secrets() {
  local incoming
  incoming=$(printf %q "$DEPLOY_PATH/secrets/.incoming")
  # -h: a secret kept as a symlink travels as its file.
  tar -c -h -f - -C "$DEPLOY_SECRETS_DIR" "${SECRETS[@]}" | "${SSH[@]}" "umask 077 && rm -rf $incoming &&
    mkdir $incoming && tar -xf - --no-same-owner -C $incoming"
  remote install_secrets "${SECRETS[@]}"
}

ship_images() {
  local release=$1
  local images=("$APP_IMAGE-api:$release" "$APP_IMAGE-worker:$release") db_image=$APP_IMAGE-db:current
  case $DEPLOY_IMAGES in
    build)
      say "building images on the server"
      "${SSH[@]}" "cd $(printf %q "$DEPLOY_PATH/releases/$release") && docker compose -p $DEPLOY_PROJECT -f compose.yaml -f compose.prod.yaml build api worker db"
      ;;
    ship | registry)
      say "building ${images[*]}"
      APP_IMAGE=$APP_IMAGE APP_TAG=$release docker compose build api worker db >&2
      if [[ $DEPLOY_IMAGES == registry ]]; then
        for image in "${images[@]}" "$db_image"; do docker push "$image" >&2; done
        "${SSH[@]}" "for i in ${images[*]} $db_image; do docker pull \$i; done"
      else
        # The db image only when the server's differs (a changed db/): it keeps one tag across
        # releases (compose.yaml), so an unchanged one restarts nothing there.
        if [[ $(docker image inspect -f '{{.Id}}' "$db_image") != \
          $("${SSH[@]}" "docker image inspect -f '{{.Id}}' $db_image 2>/dev/null || true") ]]; then
          images+=("$db_image")
        fi
        say "shipping ${images[*]} over SSH, compressed"
        docker save "${images[@]}" | gzip -1 | "${SSH[@]}" 'gunzip | docker load' >&2
      fi
      ;;
  esac
}

public_check() {
  local url=${DEPLOY_HEALTH_URL:-}
  if [[ -z $url ]]; then
    local domain
    domain=$(sed -n 's/^API_DOMAIN=//p' "$DEPLOY_ENV_FILE" | tail -1)
    url=https://$domain/ready
  fi
  local attempt
  for attempt in 1 2 3 4 5; do
    # shellcheck disable=SC2086 # several curl options
    curl -fsS --max-time 5 ${DEPLOY_HEALTH_CURL_OPTS:-} "$url" >/dev/null && return 0
    say "public check $attempt/5 of $url failed"
    sleep 2
  done
  return 1
}

# The server's deploy lock, released on exit with its token: only if it is still this deploy's
# (make deploy-unlock may have broken it, and another deploy taken it since).
take_lock() {
  LOCK_TOKEN=$(remote lock "$DEPLOY_WHO")
  trap 'remote unlock "$LOCK_TOKEN" || true; stop_ssh' EXIT
}

deploy() {
  local release
  release=$(release_name)
  say "release $release to $DEPLOY_HOST:$DEPLOY_PATH"
  remote preflight || die "preflight failed on $DEPLOY_HOST"
  take_lock
  upload_release "$release"
  upload_secrets
  remote check "$release" || die "the production env fails docker compose config (see above)"
  ship_images "$release"
  if ! remote activate "$release"; then
    remote record failed "$release" "$DEPLOY_WHO" "migrations or new containers failed; previous release kept"
    die "release $release failed; the previous release is still serving"
  fi
  go_live "$release"
}

go_live() { # RELEASE, switched to: checked from outside, then recorded (rolled back if it fails)
  local release=$1 back
  if ! public_check; then
    back=$(remote rollback) || die "public check failed and so did the rollback: act now"
    remote record rolled-back "$release" "$DEPLOY_WHO" "public check failed; $back serves again"
    die "public check failed after the switch; rolled back to $back"
  fi
  remote record success "$release" "$DEPLOY_WHO" "$(git log -1 --format=%s | tr '\t' ' ')"
  say "release $release is live"
}

rollback() {
  take_lock
  local back
  back=$(remote rollback "${1:-}") || die "rollback failed"
  remote record rollback "$back" "$DEPLOY_WHO" "requested"
  say "release $back is live again"
}

# make deploy-trust: the host keys the server sends, with their fingerprints to compare with the
# server's own, pinned in DEPLOY_KNOWN_HOSTS once confirmed (replacing any pinned before).
# ssh-keyscan reads no ssh_config: the host and port are ssh's own (-G), but no ProxyJump is used.
trust() {
  local keys answer
  ssh_command
  host_key_name
  keys=$(ssh-keyscan -T 10 -p "$KEY_PORT" "$KEY_HOST" 2>/dev/null |
    awk -v name="$KEY_NAME" '!/^#/ && NF >= 3 {print name, $2, $3}') || true
  [[ -n $keys ]] || die "no host key from $KEY_HOST port $KEY_PORT (ssh-keyscan)"
  say "the host keys $KEY_HOST port $KEY_PORT sends, by fingerprint:"
  ssh-keygen -lf - <<<"$keys"
  say "compare with the server's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there)"
  if [[ ${YES:-0} != 1 ]]; then
    read -r -p "pin them for $KEY_NAME in $DEPLOY_KNOWN_HOSTS? [y/N] " answer || true
    [[ $answer == [yY]* ]] || die "nothing pinned (YES=1 pins without asking)"
  fi
  mkdir -p "$(dirname "$DEPLOY_KNOWN_HOSTS")"
  if [[ -f $DEPLOY_KNOWN_HOSTS ]] && ssh-keygen -F "$KEY_NAME" -f "$DEPLOY_KNOWN_HOSTS" >/dev/null; then
    ssh-keygen -R "$KEY_NAME" -f "$DEPLOY_KNOWN_HOSTS" >/dev/null 2>&1
    rm -f "$DEPLOY_KNOWN_HOSTS.old"
  fi
  echo "$keys" >>"$DEPLOY_KNOWN_HOSTS"
  say "pinned in $DEPLOY_KNOWN_HOSTS"
  if [[ -n $(git status --porcelain -- "$DEPLOY_KNOWN_HOSTS" 2>/dev/null) ]]; then
    say "commit it: every deploy from this repository then checks the same key"
  fi
}

# make deploy-rotate-secret NAME=...: the server rotates it (deploy/rotate-lib.sh) under the deploy
# lock, starting from the value this side holds; then its new value replaces DEPLOY_SECRETS_DIR's,
# which every later deploy ships. Fetched even after a failure: the two sides must agree.
rotate_secret() {
  local name=$1 dir=${DEPLOY_SECRETS_DIR%/} server status=0
  [[ -n $name && -s $dir/$name ]] || die "usage: make deploy-rotate-secret NAME=jwt_secret|postgres_app_password|redis_password (its file in $dir)"
  take_lock
  server=$(printf %q "$DEPLOY_PATH/secrets/$name")
  "${SSH[@]}" "cat $server" | cmp -s - "$dir/$name" ||
    die "$dir/$name is not the server's $name: make deploy first, so both sides start from one value"
  remote rotate_deployed "$name" || status=$?
  { "${SSH[@]}" "cat $server" >"$dir/.$name.new" && chmod 0444 "$dir/.$name.new" && mv -f "$dir/.$name.new" "$dir/$name"; } ||
    die "could not copy the server's $name back into $dir: do it now (scp), or the next deploy undoes the rotation"
  ((status == 0)) || die "rotating $name failed (see above); $dir/$name holds the server's value"
  remote record rotated "$(remote current)" "$DEPLOY_WHO" "secret $name"
  say "$name rotated; $dir/$name holds the new value: update any other copy of it (a CI secret)"
}
