#!/usr/bin/env bash
# make restore [TIME="2026-11-22 14:03:00+00" | POINT=before-<release>] [TIMELINE=n] [YES=1]:
# point-in-time restore of the running kit's database from its pgBackRest repository.
# Prints the plan and asks first (YES=1: does not). Then: every archived commit is made sure of
# (latest), api, worker and backup stop, the database stops, pgBackRest restores the data
# directory in place, PostgreSQL replays WAL to the target and promotes, the services start again
# and the item cache (Redis db 0) is emptied.
set -euo pipefail
# COMPOSE: the Makefile's `docker compose` (several words: intended splitting below).
read -r -a compose_cmd <<<"${COMPOSE:-docker compose}"
compose() { "${compose_cmd[@]}" "$@"; }
in_db() { compose exec -T --user postgres db "$@"; }
# shellcheck disable=SC2016 # $POSTGRES_USER: the db container's own
sql() { in_db sh -c 'psql -XAtq -U "$POSTGRES_USER" -d postgres -c "$1"' sh "$1"; }

# The timeline being written now: the first 8 hex digits of the current WAL file's name.
TIMELINE_NOW="SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"

target=(latest) described="the latest archived commit"
if [[ -n ${TIME:-} && -n ${POINT:-} ]]; then
  echo "give TIME or POINT, not both" >&2
  exit 2
elif [[ -n ${TIME:-} ]]; then
  target=(time "$TIME") described="the moment $TIME"
elif [[ -n ${POINT:-} ]]; then
  target=(name "$POINT") described="the restore point $POINT"
fi
timeline=${TIMELINE:-}

pgbackrest_once() { compose run --rm --no-deps -T --user postgres --entrypoint "$1" db "${@:2}"; }
archive_state="the database is not running: the restore ends at the last segment archived before it stopped"
current_timeline=""
if [[ -n $(compose ps -q --status running db) ]]; then
  current_timeline=$(sql "$TIMELINE_NOW")
  # The segment being written is not archived yet: switch and wait until it is (pgbackrest check),
  # so "latest" is the last commit, and WAL past TIME exists for the replay to stop at it.
  if in_db pgbackrest check >/dev/null; then
    archive_state="every commit up to now is archived (pgbackrest check)"
  else
    archive_state="WARNING: pgbackrest check failed (above): the restore ends at the last archived segment"
  fi
fi

echo "Restore of this kit's database to $described${timeline:+, following timeline $timeline}."
echo "Archive: $archive_state."
echo "The backups in the repository:"
pgbackrest_once kit-pgbackrest info | sed 's/^/  /'
cat <<PLAN
What happens, in order:
  1. api, worker and backup stop (requests get errors until step 4)
  2. PostgreSQL stops; pgBackRest rewrites its data directory in place (--delta)
  3. PostgreSQL replays the archived WAL up to the target and promotes itself: a new timeline
  4. api, worker and backup start again; the item cache (Redis db 0) is emptied
Every change made after the target is gone from the database. It stays in the archive: to come
back to the state before this restore, make restore TIMELINE=${current_timeline:-<the timeline now>}.
PLAN
if [[ ${YES:-0} != 1 ]]; then
  read -r -p "Restore now? [y/N] " answer || true
  [[ $answer == [yY]* ]] || { echo "nothing done (YES=1 skips the question)"; exit 1; }
fi

started=$SECONDS
compose stop api worker backup
compose stop db
pgbackrest_once kit-db-restore "${target[@]}" ${timeline:+"$timeline"}
# Not --wait: replaying a day of WAL can outlast the healthcheck's start period.
compose up -d --no-deps db
echo "replaying WAL to the target..."
until [[ $(sql "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; do sleep 1; done
compose up -d --wait api worker
# Not waited for: an unhealthy backup service (say, the off-host machine down) is its own alarm,
# not a failed restore.
compose up -d backup
# The item cache describes the data before the restore (db 0; the job queue is db 1). Production's
# password is a secret file (compose.prod.yaml), read into REDISCLI_AUTH: not argv.
# shellcheck disable=SC2016 # expanded by the redis container's shell
compose exec -T redis sh -c 'if [ -f /run/secrets/redis_password ]; then REDISCLI_AUTH=$(cat /run/secrets/redis_password); export REDISCLI_AUTH; fi; redis-cli -n 0 FLUSHDB' >/dev/null
echo "restored to $described in $((SECONDS - started))s; now on timeline $(sql "$TIMELINE_NOW")"
