#!/usr/bin/env bash
# make deploy | rollback | deploy-log | deploy-unlock | deploy-backup | deploy-trust: one server
# over SSH.
#   deploy.sh deploy            build, ship, migrate, roll out with zero downtime, check, or roll back
#   deploy.sh rollback [NAME]   the previous release (or NAME) serves again
#   deploy.sh log | unlock | backup
#   deploy.sh trust             pin the server's SSH host key (YES=1: without asking)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
source deploy/lib.sh

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
# act on the deployed project with the production overlay, as remote.sh's explicit flags do.
release_env() {
  printf '\n# set by make deploy\n'
  printf '%s\n' "APP_IMAGE=$APP_IMAGE" "APP_TAG=$1" "PROXY_DYNAMIC_DIR=$DEPLOY_PATH/proxy-dynamic" \
    "SECRETS_DIR=$DEPLOY_PATH/secrets" "COMPOSE_FILE=compose.yaml:compose.prod.yaml" \
    "COMPOSE_PROJECT_NAME=$DEPLOY_PROJECT"
}

# The release: the files the images are built from (git archive of release_tree, lib.sh), the
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

# The secrets (check_secrets, lib.sh), into $DEPLOY_PATH/secrets/.incoming, where
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
    remote record failed "$release" "$DEPLOY_WHO" "new containers unhealthy; previous release kept"
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

main() {
  if [[ ${1:-} == trust ]]; then
    load_settings DEPLOY_HOST
    trust
    return
  fi
  load_settings
  [[ ${1:-deploy} != deploy ]] || check_secrets
  start_ssh
  trap stop_ssh EXIT
  case ${1:-deploy} in
    deploy) deploy ;;
    rollback) rollback "${2:-}" ;;
    log) remote log ;;
    # The operator's break of a stale lock, whoever holds it (remote.sh says who did).
    unlock) remote unlock --force ;;
    backup) remote backup ;;
    *) die "usage: deploy.sh deploy|rollback [RELEASE]|log|unlock|backup|trust" ;;
  esac
}

# Sourced by deploy/swarm/deploy.sh for its functions: run only when executed.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
