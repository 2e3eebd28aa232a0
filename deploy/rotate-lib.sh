#!/usr/bin/env bash
# make rotate-secret's functions (docs/secrets.md): a new value for one secret, taken into use with
# no failed request. Sent after deploy/remote-lib.sh (its rollout_api, the deploy's zero-downtime
# switch), on a deployed server by make deploy-rotate-secret, and sourced with it on this host
# by deploy/rotate-secret.sh. Each rotation acts on remote-lib's `compose "$ROTATE_RELEASE"`.

# What make rotate-secret rotates; the other secrets are the owner's and the backups'.
ROTATABLE=(jwt_secret postgres_app_password redis_password)
JWT_KEYRING_HEADER="# jwt keyring: the first key signs, every key verifies; \"until=T key\": retired, verifies until UNIX time T (make rotate-secret NAME=jwt_secret)"

stack() { compose "${ROTATE_RELEASE:?}" "$@"; }
# Every profile's services too: the observability exporters read secrets as well.
all_services() { stack --profile '*' "$@"; }

# As make secrets writes them (deploy/secrets.sh): 32 random bytes in hex, no newline.
new_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

secret_file() { all_services config | file_of_secret "$1"; } # NAME: the host file mounted as that secret

file_of_secret() { # NAME, compose config on stdin
  awk -v name="$1:" '
    /^[^ ]/ { top = $1; next }
    top == "secrets:" && /^  [^ ]/ { here = ($1 == name); next }
    top == "secrets:" && here && $1 == "file:" { print $2; exit }'
}

services_mounting() { # NAME, compose config on stdin: the services given that secret
  awk -v name="$1" '
    /^[^ ]/ { top = $1; next }
    top == "services:" && /^  [^ ]/ { service = substr($1, 1, length($1) - 1); next }
    top == "services:" && $1 == "-" && $2 == "source:" && $3 == name { print service }' | sort -u
}

users_of() { # NAME: the running services but the api (rolled apart) and redis that mount the secret
  local running
  running=$(all_services ps --services --status running)
  all_services config | services_mounting "$1" | grep -Fx -f <(printf '%s\n' "$running") | grep -vx -e api -e redis || true
}

replace_file() { # FILE: its new content from stdin, by a rename (a running container keeps the old)
  rm -f "$1.new"
  cat >"$1.new"
  chmod 0444 "$1.new"
  mv -f "$1.new" "$1"
}

roll() { # NAME: every running service that reads the secret, in new containers, one at a time
  local service
  # Beside the old ones, drained before they stop, as a deploy switches (remote-lib.sh).
  [[ -z $(stack ps -q api) ]] || rollout_api "$ROTATE_RELEASE"
  for service in $(users_of "$1"); do
    echo "rotate-secret: new $service container(s)" >&2
    if [[ $service == scheduler ]]; then
      rollout_scheduler "$ROTATE_RELEASE" # the new one beside the old: no tick falls in a gap
    else
      stack up -d --no-deps --wait --force-recreate "$service"
    fi
  done
}

rotate_deployed() { rotate_in "$(current)" "$@"; } # NAME: on a server, in its current release

rotate_in() { ROTATE_RELEASE=$1 rotate "$2"; } # RELEASE NAME

rotate() { # NAME
  [[ -n ${1:-} && " ${ROTATABLE[*]} " == *" $1 "* ]] ||
    { echo "rotate-secret: NAME must be one of ${ROTATABLE[*]}, not '${1:-}'" >&2; return 2; }
  local file
  file=$(secret_file "$1")
  [[ -n $file && -s $file ]] || { echo "rotate-secret: no secret file for $1 (the production overlay, compose.prod.yaml?)" >&2; return 1; }
  [[ -n $(stack ps -q --status running api) ]] || { echo "rotate-secret: the api is not running; start the stack first" >&2; return 1; }
  # A development stack of the same project would otherwise get production containers beside it.
  stack exec -T api test -e "/run/secrets/$1" ||
    { echo "rotate-secret: the running api has no /run/secrets/$1: not the production overlay (compose.prod.yaml)" >&2; return 1; }
  "rotate_$1" "$file"
  echo "rotate-secret: $1 rotated" >&2
}

# ---- jwt_secret: a keyring (core/jwt_keys.py). Two rollouts: the new key first verifies
# everywhere, then signs; the old one verifies until the longest token lifetime has passed.

keyring_keys() { # FILE NOW: its keys as lines "UNTIL KEY" (0: not retired), expired ones dropped
  local first line
  IFS= read -r first <"$1" || true
  if [[ $first != "# jwt keyring"* ]]; then
    # One plain value: the whole file but one final newline, as core/settings.py reads it.
    (($(grep -c '' "$1") <= 1)) || { echo "rotate-secret: $1 has several lines but is no keyring" >&2; return 1; }
    printf '0 %s\n' "$first"
    return
  fi
  tail -n +2 "$1" | while IFS= read -r line || [[ -n $line ]]; do
    [[ -z ${line// /} || $line == \#* ]] && continue
    if [[ $line =~ ^until=([0-9]+)\ (.+)$ ]]; then
      if ((BASH_REMATCH[1] > $2)); then printf '%s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; fi
    else
      printf '0 %s\n' "$line"
    fi
  done
}

write_keyring() { # FILE, then "UNTIL KEY" lines on stdin, the signing key first
  local line
  {
    echo "$JWT_KEYRING_HEADER"
    # Split by hand: read would trim spaces a key may end with.
    while IFS= read -r line; do
      if [[ ${line%% *} != 0 ]]; then echo "until=$line"; else echo "${line#* }"; fi
    done
  } | replace_file "$1"
}

rotate_jwt_secret() { # FILE
  local file=$1 keys signing new seconds
  # The api's own figure: JWT_TTL_SECONDS + JWT_ROLLOUT_SECONDS (api/jwt_retire.py).
  seconds=$(stack exec -T api python -m api.jwt_retire) ||
    { echo "rotate-secret: the running api has no api.jwt_retire: deploy this version of the kit first" >&2; return 1; }
  keys=$(keyring_keys "$file" "$(date +%s)")
  signing=$(head -n 1 <<<"$keys")
  new=$(new_secret)
  # 1: the new key verifies in every api container before any signs with it.
  { echo "$signing"; echo "0 $new"; tail -n +2 <<<"$keys"; } | write_keyring "$file"
  echo "rotate-secret: a new key verifies" >&2
  roll jwt_secret
  # 2: it signs; every other key retires, verifying until the tokens it signed have expired.
  local until
  until=$(($(date +%s) + seconds))
  { echo "0 $new"; awk -v until="$until" '$1 == "0" { sub(/^0 /, until " ") } { print }' <<<"$keys"; } |
    write_keyring "$file"
  echo "rotate-secret: the new key signs; the previous one verifies until $(date -u -d "@$until" +%FT%TZ 2>/dev/null || echo "$until")" >&2
  roll jwt_secret
}

# ---- postgres_app_password: a role has one password, so the clients hold two while it changes
# (core/db_passwords.py tries each line of the file in turn). The migrate step then sets the new
# one (ALTER ROLE, api/db_roles.py). A two-line file is an interrupted run: the role has line 1.

rotate_postgres_app_password() { # FILE
  local file=$1 current new
  IFS= read -r current <"$file" || true # its last line may have no newline
  new=$(new_secret)
  # 1: new containers connect with the current password and fall back to the new one.
  printf '%s\n%s' "$current" "$new" | replace_file "$file"
  echo "rotate-secret: the api and the worker take the current and the new password" >&2
  roll postgres_app_password
  # 2: the role's password changes. Every running container knows both (the old ones are gone),
  # so its next new connection is refused once, then uses the new one.
  printf %s "$new" | replace_file "$file"
  if ! stack run --rm migrate; then
    printf %s "$current" | replace_file "$file"
    echo "rotate-secret: the migrate step failed; the role keeps the current password, the file too" >&2
    return 1
  fi
}

# ---- redis_password: Redis ACLs hold both passwords while the clients move over. Redis reads its
# password from the file when it starts (compose.prod.yaml), so a restart comes up with the new one.

redis_commands() { # PASSWORD: the commands on stdin, authenticated with PASSWORD, all answered OK
  local answers
  answers=$({ echo "AUTH $1"; cat; } | stack exec -T redis redis-cli)
  grep -qvx OK <<<"$answers" || return 0
  echo "rotate-secret: Redis answered: $(grep -vx OK <<<"$answers" | head -n 3)" >&2
  return 1
}

rotate_redis_password() { # FILE
  local file=$1 old new map
  old=$(<"$file")
  new=$(new_secret)
  echo "ACL SETUSER default >$new" | redis_commands "$old"
  echo "rotate-secret: Redis takes the old and the new password" >&2
  printf %s "$new" | replace_file "$file"
  # The Redis exporter's map (make observability-secrets), if there is one.
  map=$(secret_file redis_exporter_password_map)
  if [[ -n $map && -e $map ]]; then
    printf '{"redis://redis:6379": "%s"}' "$new" | replace_file "$map"
    [[ -z $(all_services ps -q --status running redis-exporter) ]] ||
      stack up -d --no-deps --wait --force-recreate redis-exporter
  fi
  roll redis_password
  # resetpass: every other password goes, one left over by an interrupted run as well.
  echo "ACL SETUSER default resetpass >$new" | redis_commands "$new"
  echo "rotate-secret: Redis takes the new password only" >&2
}
