#!/usr/bin/env bash
# The server side's functions: everything that touches the running stack. Not run on its own:
# deploy/lib.sh's remote sends it over SSH ahead of the entry point (deploy/remote.sh, or
# deploy/swarm/remote-lib.sh and deploy/swarm/remote.sh), all read by one bash from stdin.
set -euo pipefail
# Everything it writes (the deploy log, the lock, backups, secrets) is the deploying user's alone,
# unless made readable on purpose below. $DEPLOY_PATH, releases/ (each holds a .env),
# backups/ and secrets/ are 0700 as well (preflight), for what was made before this umask.
umask 077

: "${DEPLOY_PATH:?}" "${DEPLOY_PROJECT:?}" "${APP_IMAGE:?}"
RELEASES=$DEPLOY_PATH/releases
LOCK=$DEPLOY_PATH/deploy.lock
# The secret files are 0444 and their directory 0700. Compose bind-mounts each file into the
# containers that use it, where the file keeps its host mode (a file secret's uid, gid and mode
# are not applied: https://docs.docker.com/reference/compose-file/services/#secrets), and those
# run as different users (postgres, redis, the app's 10001): so every user may read the file,
# and the directory, which only the deploying user can enter, is the barrier on the host.
SECRETS_PATH=$DEPLOY_PATH/secrets
# Draining an old api container reads each fact where it is set (docs/deploy.md, step 8): the
# container creates its own DRAIN_FILE (`python -m api.drain on`); the wait is three rounds of
# the health-check interval label below, read from the old containers: what Traefik checks with.
HEALTHCHECK_INTERVAL_LABEL=traefik.http.services.api.loadBalancer.healthCheck.interval
DRAIN_ROUNDS=3
# Traefik's providersThrottleDuration (default 2s): the wait before a new configuration applies.
PROVIDER_THROTTLE_SECONDS=2

compose() {
  docker compose -p "$DEPLOY_PROJECT" --project-directory "$RELEASES/$1" \
    -f "$RELEASES/$1/compose.yaml" -f "$RELEASES/$1/compose.prod.yaml" "${@:2}"
}

preflight() {
  docker version --format '{{.Server.Version}}' >/dev/null || { echo "Docker is not running" >&2; exit 1; }
  docker compose version >/dev/null || { echo "Docker Compose v2 is missing" >&2; exit 1; }
  mkdir -p "$RELEASES" "$DEPLOY_PATH/backups" "$DEPLOY_PATH/proxy-dynamic" "$SECRETS_PATH"
  chmod 0700 "$DEPLOY_PATH" "$RELEASES" "$DEPLOY_PATH/backups" "$SECRETS_PATH" ||
    { echo "$DEPLOY_PATH and what is in it must belong to the deploying user, $(id -un)" >&2; exit 1; }
  find "$DEPLOY_PATH/backups" -type f -exec chmod 0600 {} +
  # Bind-mounted into Traefik, which has no capability (compose.prod.yaml), so no
  # CAP_DAC_OVERRIDE, and may run as a user of its own: readable by all, as proxy/dynamic/ is.
  chmod 0755 "$DEPLOY_PATH/proxy-dynamic"
  local free_mb
  free_mb=$(df -Pm "$DEPLOY_PATH" | awk 'NR == 2 {print $4}')
  ((free_mb >= ${DEPLOY_MIN_FREE_MB:-2048})) || { echo "only ${free_mb} MB free under $DEPLOY_PATH" >&2; exit 1; }
}

check() { compose "$1" config --quiet; }

lock() {
  local deadline=$((SECONDS + ${DEPLOY_LOCK_TIMEOUT:-120}))
  until mkdir "$LOCK" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "another deploy holds the lock: $(cat "$LOCK/owner" 2>/dev/null || echo unknown)" >&2
      echo "if it is stale: make deploy-unlock" >&2
      exit 75
    fi
    sleep 2
  done
  local token
  token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  echo "$token" >"$LOCK/token"
  echo "$1 since $(date -u +%FT%TZ)" >"$LOCK/owner"
  echo "$token"
}

unlock() { # TOKEN: the lock if it is still the one `lock` gave TOKEN for | --force: whoever holds it
  if [[ ${1:-} == --force ]]; then
    if [[ -d $LOCK ]]; then
      echo "lock held by $(cat "$LOCK/owner" 2>/dev/null || echo unknown): broken" >&2
      rm -rf "$LOCK"
    else
      echo "no lock to break" >&2
    fi
  elif [[ -n ${1:-} && $(cat "$LOCK/token" 2>/dev/null) == "$1" ]]; then
    rm -rf "$LOCK"
  else
    echo "the deploy lock is no longer this deploy's (make deploy-unlock broke it?): left as it is" >&2
  fi
}

install_secrets() { # NAME...: from secrets/.incoming (make deploy's upload), each by a rename if changed
  local incoming=$SECRETS_PATH/.incoming name
  for name in "$@"; do
    [[ -s $incoming/$name ]] || { echo "secret $name did not arrive" >&2; exit 1; }
    chmod 0444 "$incoming/$name"
    # Unchanged: left alone, so running containers and the host see the same file.
    cmp -s "$incoming/$name" "$SECRETS_PATH/$name" || mv -f "$incoming/$name" "$SECRETS_PATH/$name"
    chmod 0444 "$SECRETS_PATH/$name"
  done
  rm -rf "$incoming"
}

record() { # RESULT RELEASE WHO MESSAGE: one line a deploy, appended, never rewritten
  printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$1" "$2" "$3" "${4:-}" >>"$DEPLOY_PATH/deploy.log"
}

log() { cat "$DEPLOY_PATH/deploy.log" 2>/dev/null || echo "no deploys yet"; }

current() { basename "$(readlink "$DEPLOY_PATH/current" 2>/dev/null || echo none)"; }

backup() { # [NAME]: a restore point in the running database's pgBackRest archive, if there is one
  local name=${1:-manual-$(date -u +%Y%m%dT%H%M%SZ)} release at
  release=$(current)
  [[ $release != none ]] && [[ -n $(compose "$release" ps -q db 2>/dev/null) ]] || { echo "no database yet, no restore point" >&2; return 0; }
  if ! compose "$release" exec -T db sh -c 'command -v pgbackrest' >/dev/null; then
    # The first deploy of a kit with pgBackRest: the database running is the plain one. A dump.
    # shellcheck disable=SC2016 # expanded by the db container's shell, from its own environment
    compose "$release" exec -T db sh -c 'pg_dump -U "$POSTGRES_USER" -Fc "$POSTGRES_DB"' >"$DEPLOY_PATH/backups/$name.dump"
    echo "backup: $DEPLOY_PATH/backups/$name.dump (the database had no pgBackRest yet)" >&2
    return 0
  fi
  # A named point in the WAL (instant, whatever the database's size), then a WAL switch that
  # pgbackrest check waits to see archived: the point is in the archive before a migration runs.
  # Restorable with make restore POINT=NAME as long as a backup older than it is kept.
  # shellcheck disable=SC2016 # expanded by the db container's shell, from its own environment
  at=$(compose "$release" exec -T --user postgres db sh -c \
    'psql -XAtq -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "SELECT pg_create_restore_point('"'$name'"')" -c "SELECT now()"' | tail -n 1)
  compose "$release" exec -T --user postgres db pgbackrest check >&2
  printf '%s\t%s\n' "$at" "$name" >>"$DEPLOY_PATH/backups/restore-points"
  echo "restore point $name at $at (make restore POINT=$name, or TIME=\"$at\")" >&2
}

restore_point_of() { # RELEASE: the restore point taken before its migrations, as "TIME<tab>NAME"
  grep -F "$(printf '\tbefore-%s' "$1")" "$DEPLOY_PATH/backups/restore-points" 2>/dev/null | tail -n 1
}

health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }

wait_healthy() { # CONTAINER...: all healthy, or fail fast on the first unhealthy one
  local deadline=$((SECONDS + ${DEPLOY_HEALTH_TIMEOUT:-120})) c status pending
  while :; do
    pending=0
    for c in "$@"; do
      status=$(health_of "$c")
      case $status in
        healthy) ;;
        unhealthy | exited | dead) echo "container ${c:0:12} is $status; its logs:" >&2; docker logs --tail 40 "$c" >&2; return 1 ;;
        *) pending=1 ;;
      esac
    done
    ((pending)) || return 0
    if ((SECONDS >= deadline)); then
      echo "not healthy within ${DEPLOY_HEALTH_TIMEOUT:-120}s; logs of ${1:0:12}:" >&2
      docker logs --tail 40 "$1" >&2
      return 1
    fi
    sleep 1
  done
}

duration_seconds() { # GO_DURATION FACTOR: whole seconds, rounded up (2s 3 -> 6, 500ms 3 -> 2)
  awk -v d="$1" -v f="$2" 'BEGIN {
    s = d; total = 0
    if (s == "" || f !~ /^[0-9]+$/) exit 1
    while (s != "") {
      if (!match(s, /^[0-9]+(\.[0-9]+)?/)) exit 1
      n = substr(s, 1, RLENGTH) + 0; s = substr(s, RLENGTH + 1)
      if (s ~ /^ms/) { total += n / 1000; s = substr(s, 3) }
      else if (s ~ /^us/) { total += n / 1000000; s = substr(s, 3) }
      else if (s ~ /^ns/) { total += n / 1000000000; s = substr(s, 3) }
      else if (s ~ /^h/) { total += n * 3600; s = substr(s, 2) }
      else if (s ~ /^m/) { total += n * 60; s = substr(s, 2) }
      else if (s ~ /^s/) { total += n; s = substr(s, 2) }
      else exit 1
    }
    total *= f
    if (total <= 0) exit 1
    t = int(total); if (t < total) t++
    print t
  }'
}

drain_seconds() { # CONTAINER: how long Traefik takes to stop routing to it once it drains
  local interval
  interval=$(docker inspect -f "{{index .Config.Labels \"$HEALTHCHECK_INTERVAL_LABEL\"}}" "$1")
  duration_seconds "$interval" "$DRAIN_ROUNDS" && return
  echo "api container ${1:0:12}: no usable $HEALTHCHECK_INTERVAL_LABEL label (\"$interval\");" \
    "draining relies on Traefik's active health check (compose.yaml)" >&2
  return 1
}

unrouted_seconds() { # CONTAINER: how long Docker takes to call it unhealthy once it drains
  local interval retries
  read -r interval retries < <(docker inspect \
    -f '{{with .Config.Healthcheck}}{{.Interval}} {{.Retries}}{{end}}' "$1") || true
  [[ ${retries:-} =~ ^[0-9]+$ ]] && duration_seconds "$interval" "$((retries + 1))" || echo 20
}

wait_unrouted() { # CONTAINER...: each unhealthy to Docker (or gone), bounded by its healthcheck
  local deadline=$((SECONDS + $(unrouted_seconds "$1") + 5)) c
  for c in "$@"; do
    until [[ $(health_of "$c" 2>/dev/null || echo gone) =~ ^(unhealthy|exited|dead|gone)$ ]]; do
      ((SECONDS < deadline)) || { echo "api container ${c:0:12} still healthy to Docker" >&2; break; }
      sleep 1
    done
  done
  sleep "$PROVIDER_THROTTLE_SECONDS"
}

containers_of() { # SERVICE: its running containers' ids, sorted
  docker ps -q --filter "label=com.docker.compose.project=$DEPLOY_PROJECT" \
    --filter "label=com.docker.compose.service=$1" | sort
}

rollout_api() { # RELEASE: new containers beside the old, traffic moves once they are healthy
  local release=$1 old new replicas drain
  old=$(containers_of api)
  replicas=$(grep -c . <<<"$old" || true)
  if ((replicas == 0)); then
    compose "$release" up -d --no-deps --wait api
    return
  fi
  # Known before anything starts: a rollout that cannot drain must not stop half-way.
  drain=$(drain_seconds "$(head -n 1 <<<"$old")") || return 1
  compose "$release" up -d --no-deps --no-recreate --scale "api=$((replicas * 2))" api
  new=$(comm -13 <(echo "$old") <(containers_of api))
  # shellcheck disable=SC2086 # one id a word
  if ! wait_healthy $new; then
    echo "new api containers unhealthy: removing them; the previous release keeps serving" >&2
    # shellcheck disable=SC2086
    docker rm -f $new >/dev/null
    return 1
  fi
  # Drain: /health/routable turns 503, Traefik's active check drops them, in-flight requests finish.
  echo "draining $replicas old api container(s) for ${drain}s ($DRAIN_ROUNDS rounds of Traefik's health check)" >&2
  for c in $old; do
    docker exec "$c" python -m api.drain on >&2 ||
      echo "api container ${c:0:12} could not drain (a release without api.drain?): stopping it as is" >&2
  done
  sleep "$drain"
  # A Traefik reload marks drained servers up again; only a container Docker calls unhealthy
  # leaves its configuration for good, so none is stopped while Traefik may still pick it.
  # shellcheck disable=SC2086
  wait_unrouted $old
  # shellcheck disable=SC2086
  docker stop $old >/dev/null && docker rm $old >/dev/null
}

rollout_worker() { # Celery's warm shutdown lets running jobs finish; unfinished ones are redelivered.
  compose "$1" up -d --no-deps --wait worker
}

rollout_scheduler() { # RELEASE: the new scheduler beside the old, then the old one stops
  # Both send the same ticks meanwhile; each tick's claim runs it once (docs/schedules.md). No
  # gap: a tick due while neither ran would be sent late, or missed, by the missed-tick policy.
  local release=$1 old new
  old=$(containers_of scheduler)
  if ! compose "$release" config --services | grep -qx scheduler; then
    # A release from before the scheduler (a rollback to it): none of its own, none of ours.
    # shellcheck disable=SC2086
    [[ -z $old ]] || { docker stop $old >/dev/null && docker rm $old >/dev/null; }
    return
  fi
  if [[ -z $old ]]; then
    compose "$release" up -d --no-deps --wait scheduler
    return
  fi
  compose "$release" up -d --no-deps --no-recreate --scale "scheduler=$(($(grep -c . <<<"$old") + 1))" scheduler
  new=$(comm -13 <(echo "$old") <(containers_of scheduler))
  # shellcheck disable=SC2086 # one id a word
  if ! wait_healthy $new; then
    echo "new scheduler unhealthy: removing it; the previous release's keeps sending ticks" >&2
    # shellcheck disable=SC2086
    docker rm -f $new >/dev/null
    return 1
  fi
  # shellcheck disable=SC2086
  docker stop $old >/dev/null && docker rm $old >/dev/null
}

switch_current() {
  local previous
  previous=$(current)
  [[ $previous == none || $previous == "$1" ]] || ln -sfn "releases/$previous" "$DEPLOY_PATH/previous"
  ln -sfn "releases/$1" "$DEPLOY_PATH/current.new" && mv -T "$DEPLOY_PATH/current.new" "$DEPLOY_PATH/current"
}

prune() { # keep the newest releases (and current/previous), and only their images
  local keep=${DEPLOY_KEEP_RELEASES:-5} release
  find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -r | tail -n +"$((keep + 1))" |
    while read -r release; do
      [[ $release == "$(current)" || "releases/$release" == "$(readlink "$DEPLOY_PATH/previous" 2>/dev/null)" ]] && continue
      rm -rf "${RELEASES:?}/$release"
      docker image rm "$APP_IMAGE-api:$release" "$APP_IMAGE-worker:$release" >/dev/null 2>&1 || true
    done
}

sync_proxy_config() { # RELEASE: changed files only, each replaced by a rename
  # Traefik watches this directory: a file rewritten in place can be read half-written, and a
  # router whose middleware is missing is dropped (404s for every request until the next read).
  local src=$RELEASES/$1/proxy/dynamic dst=$DEPLOY_PATH/proxy-dynamic file name
  for file in "$src"/*; do
    name=$(basename "$file")
    cmp -s "$file" "$dst/$name" && continue
    cp "$file" "$dst/.$name.tmp" && chmod 0644 "$dst/.$name.tmp" && mv -f "$dst/.$name.tmp" "$dst/$name"
  done
}

drop_stale_proxy_config() { # RELEASE: the files it does not have, once only its containers serve
  # Not in sync_proxy_config: until the switch, the other release's labels may still name them.
  local src=$RELEASES/$1/proxy/dynamic file
  for file in "$DEPLOY_PATH/proxy-dynamic"/*; do
    if [[ -f $file && ! -e $src/$(basename "$file") ]]; then rm -f "$file"; fi
  done
}

activate() { # RELEASE: backup, infrastructure, migrations, api, worker, scheduler, switch
  local release=$1
  sync_proxy_config "$release"
  backup "before-$release"
  compose "$release" up -d --wait db redis proxy backup
  # One transaction (api/migrate.py): a failed migration leaves the schema as it was.
  compose "$release" run --rm migrate ||
    { echo "migrations failed (above): nothing switched; the previous release keeps serving" >&2; return 1; }
  rollout_api "$release"
  rollout_worker "$release"
  rollout_scheduler "$release"
  switch_current "$release"
  drop_stale_proxy_config "$release"
  prune
}

rollback() { # [RELEASE]: the previous release (default) serves again; no migrations are undone
  local target=${1:-$(basename "$(readlink "$DEPLOY_PATH/previous" 2>/dev/null || echo none)")}
  [[ $target != none && -d $RELEASES/$target ]] || { echo "no release to roll back to: $target" >&2; exit 1; }
  # Its own proxy configuration too, as activate does: its labels may name middlewares that the
  # newer release changed.
  sync_proxy_config "$target"
  rollout_api "$target"
  rollout_worker "$target"
  rollout_scheduler "$target"
  switch_current "$target"
  drop_stale_proxy_config "$target"
  local from point
  from=$(basename "$(readlink "$DEPLOY_PATH/previous" 2>/dev/null || echo none)")
  point=$(restore_point_of "$from")
  if [[ -n $point ]]; then
    echo "rolled back from $from; migrations are not undone. If its migration destroyed data, the" \
      "database as it was just before: cd $DEPLOY_PATH/current && make restore POINT=${point#*$'\t'}" \
      "(taken ${point%%$'\t'*}; everything written since is lost)" >&2
  fi
  echo "$target"
}
