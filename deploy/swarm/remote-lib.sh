#!/usr/bin/env bash
# The Swarm server side's functions, on the swarm's SSH host (a manager, or a host whose docker
# CLI reaches one: DOCKER_HOST). Sent after deploy/remote-lib.sh, whose lock, log, secrets and
# release links it reuses; it replaces compose, prune, activate and rollback. Stack: DEPLOY_PROJECT.

STACK=$DEPLOY_PROJECT
# How long a phase may take to converge: a rolling update is one replica at a time.
SWARM_DEPLOY_TIMEOUT=${SWARM_DEPLOY_TIMEOUT:-600}

# SWARM_ENGINES: "hostname=endpoint ..." (the nodes' engines as the docker CLI here reaches them,
# e.g. node2=ssh://deploy@10.0.0.2). Images are loaded into each when there is no registry, and a
# node's engine runs `docker exec` in its tasks (the backup). Empty: this CLI's own engine only.
engines() { if [[ -n ${SWARM_ENGINES:-} ]]; then tr ' ' '\n' <<<"$SWARM_ENGINES" | grep .; else echo "-="; fi; }
engine_of() { # NODE_HOSTNAME: its endpoint ("" = the default engine)
  local entry
  for entry in $(engines); do
    [[ ${entry%%=*} == "$1" ]] && { echo "${entry#*=}"; return; }
  done
  [[ -z ${SWARM_ENGINES:-} ]] || { echo "node $1 is not in SWARM_ENGINES" >&2; return 1; }
}
on() { # ENDPOINT docker ARGS...: docker against that engine ("" = the default)
  local endpoint=$1
  shift
  if [[ -n $endpoint ]]; then docker -H "$endpoint" "$@"; else docker "$@"; fi
}

swarm_preflight() {
  [[ $(docker info --format '{{.Swarm.ControlAvailable}}') == true ]] ||
    { echo "the docker engine here is not a swarm manager (DOCKER_HOST=${DOCKER_HOST:-unset})" >&2; exit 1; }
  # The node labels compose.swarm.yaml places by: without one, its services never start.
  local label
  for label in kit.edge kit.data; do
    [[ -n $(docker node ls -q --filter "node.label=$label=true") ]] ||
      { echo "no node has the label $label=true: docker node update --label-add $label=true <node>" >&2; exit 1; }
  done
  mkdir -p "$RELEASES" "$DEPLOY_PATH/backups" "$SECRETS_PATH" "$DEPLOY_PATH/images"
  chmod 0700 "$DEPLOY_PATH" "$RELEASES" "$DEPLOY_PATH/backups" "$SECRETS_PATH"
}

stale_images() { # IMAGE=ID...: each image some engine lacks, or holds as another build, a line
  local pair entry
  for pair in "$@"; do
    for entry in $(engines); do
      if [[ $(on "${entry#*=}" image inspect -f '{{.Id}}' "${pair%=*}" 2>/dev/null) != "${pair##*=}" ]]; then
        echo "${pair%=*}"
        break
      fi
    done
  done
}

load_images() { # RELEASE: images/RELEASE.tar.gz (gzipped `docker save`) into every engine
  local file=$DEPLOY_PATH/images/$1.tar.gz entry
  local pids=() pid failed=0
  for entry in $(engines); do
    echo "loading images into ${entry%%=*}" >&2
    gunzip -c "$file" | on "${entry#*=}" load -q >&2 &
    pids+=($!)
  done
  # All nodes at once: each load is its own engine's work.
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  rm -f "$file"
  ((failed == 0)) || { echo "loading the images failed on a node" >&2; return 1; }
}

# The services of a phase, one a line: written beside its stack file by render.py --names.
services_of() { cat "$RELEASES/$1/swarm/$2.names"; }

deploy_file() { # STACK_FILE: returns at once (the default; no --detach, which older CLIs lack)
  if [[ -n ${DEPLOY_REGISTRY:-} ]]; then
    # Pinned to the digest the registry has now: every node runs the same image.
    docker stack deploy --resolve-image always --with-registry-auth -c "$1" "$STACK" >&2
  else
    # No registry to ask: each node runs the image load_images gave it.
    docker stack deploy --resolve-image never -c "$1" "$STACK" >&2
  fi
}

wait_jobs() { # SERVICE=OLD_TASKS...: until each job's new tasks completed; fails on a failed one
  local deadline=$((SECONDS + SWARM_DEPLOY_TIMEOUT)) item name old new state pending
  while :; do
    pending=0
    for item in "$@"; do
      name=${item%%=*} old=${item#*=}
      new=$(comm -13 <(tr ' ' '\n' <<<"$old" | grep . | sort) <(docker service ps -q --no-trunc "${STACK}_$name" | sort))
      [[ -n $new ]] || { pending=1; continue; }
      # shellcheck disable=SC2086 # one task id a word
      for state in $(docker inspect -f '{{.Status.State}}' $new); do
        case $state in
          complete) ;;
          failed | rejected | orphaned | shutdown)
            echo "job $name: a task ended $state; its logs:" >&2
            docker service logs --tail 40 "${STACK}_$name" >&2 || true
            return 1 ;;
          *) pending=1 ;;
        esac
      done
    done
    ((pending)) || return 0
    ((SECONDS < deadline)) || { echo "jobs not done within ${SWARM_DEPLOY_TIMEOUT}s: $*" >&2; return 1; }
    sleep 2
  done
}

converged() { # SINCE SERVICE...: 0 done, 1 not yet, 2 failed (rolled back or paused)
  local since=$1 name state started desired states running total
  shift
  for name in "$@"; do
    IFS='|' read -r state started desired < <(docker service inspect "${STACK}_$name" --format \
      '{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{.UpdateStatus.StartedAt.Unix}}{{else}}|0{{end}}|{{if .Spec.Mode.Replicated}}{{.Spec.Mode.Replicated.Replicas}}{{end}}')
    if ((${started:-0} >= since)); then
      case $state in
        rollback_completed | rollback_paused | paused)
          echo "service $name: update $state (Swarm rolled it back or stopped it)" >&2
          return 2 ;;
        updating | rollback_started) return 1 ;;
      esac
    fi
    # Tasks Swarm wants running, and how many are (health-gated). Not `service ls`'s count: it
    # also counts the tasks of a node that is down, which are replaced but never report stopping.
    states=$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' "${STACK}_$name")
    running=$(grep -c '^Running' <<<"$states" || true)
    total=$(grep -c . <<<"$states" || true)
    # Global: one task a node that qualifies, however many that is.
    desired=${desired:-$total}
    ((total > 0 && running == desired && total == desired)) || return 1
  done
}

wait_converged() { # SERVICE...
  local since deadline=$((SECONDS + SWARM_DEPLOY_TIMEOUT)) status
  since=$(($(date +%s) - 5))
  sleep 3 # Swarm takes the update before UpdateStatus shows it
  while :; do
    status=0
    converged "$since" "$@" || status=$?
    ((status != 0)) || return 0
    ((status != 2)) || return 1
    if ((SECONDS >= deadline)); then
      echo "not converged within ${SWARM_DEPLOY_TIMEOUT}s:" >&2
      docker stack ps "$STACK" --filter desired-state=running --no-trunc >&2 || true
      return 1
    fi
    sleep 2
  done
}

deploy_phase() { # RELEASE PHASE: deploy it and wait
  local file=$RELEASES/$1/swarm/$2.json names start=$SECONDS
  mapfile -t names < <(services_of "$1" "$2")
  ((${#names[@]})) || return 0
  echo "phase $2: ${names[*]}" >&2
  deploy_file "$file"
  wait_converged "${names[@]}"
  echo "phase $2: converged in $((SECONDS - start))s" >&2
}

run_jobs() { # RELEASE: the jobs of its jobs.json (those not in needs), once, waited for
  local jobs=() name old
  for name in $(comm -23 <(services_of "$1" jobs | sort) <(services_of "$1" needs | sort)); do
    # The tasks it had: those of earlier deploys (none the first time).
    old=$(docker service ps -q --no-trunc "${STACK}_$name" 2>/dev/null | tr '\n' ' ') || old=""
    jobs+=("$name=$old")
  done
  ((${#jobs[@]})) || return 0
  local start=$SECONDS
  echo "jobs: ${jobs[*]%%=*}" >&2
  deploy_file "$RELEASES/$1/swarm/jobs.json"
  wait_jobs "${jobs[@]}"
  echo "jobs: done in $((SECONDS - start))s" >&2
}

# deploy/remote-lib.sh's backup() (make swarm-deploy takes the same backup before the migrations,
# whatever that function does) speaks to the database as `compose RELEASE ps -q SERVICE` and
# `compose RELEASE exec -T [--user USER] SERVICE COMMAND...`: the same calls, answered here by the
# service's running task, through the engine of the node it runs on (SWARM_ENGINES).
task_container() { # SERVICE: "endpoint<tab>container" of its first running task, or nothing
  local task node
  task=$(docker service ps -q --no-trunc --filter desired-state=running "${STACK}_$1" 2>/dev/null | head -1) || true
  [[ -n $task ]] || return 0
  [[ $(docker inspect -f '{{.Status.State}}' "$task") == running ]] || return 0
  node=$(docker node inspect -f '{{.Description.Hostname}}' "$(docker inspect -f '{{.NodeID}}' "$task")")
  printf '%s\t%s\n' "$(engine_of "$node")" "$(docker inspect -f '{{.Status.ContainerStatus.ContainerID}}' "$task")"
}

compose() { # RELEASE ps -q SERVICE | RELEASE exec -T [--user USER] SERVICE COMMAND...
  local where endpoint container options=()
  case $2 in
    ps) where=$(task_container "${*: -1}"); [[ -z $where ]] || cut -f2 <<<"$where" ;;
    exec)
      shift 2
      while [[ $1 == -* ]]; do
        case $1 in
          -T) ;;
          --user | -u) options+=(--user "$2"); shift ;;
          *) echo "compose exec $1: not on Swarm" >&2; return 2 ;;
        esac
        shift
      done
      where=$(task_container "$1")
      [[ -n $where ]] || { echo "no running task of $1" >&2; return 1; }
      IFS=$'\t' read -r endpoint container <<<"$where"
      shift
      on "$endpoint" exec "${options[@]}" "$container" "$@" ;;
    *) echo "compose $2: not on Swarm (deploy/swarm/remote-lib.sh)" >&2; return 2 ;;
  esac
}

prune() { # the newest releases (and current/previous), and only their images, on every engine
  local keep=${DEPLOY_KEEP_RELEASES:-5} release entry
  find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -r | tail -n +"$((keep + 1))" |
    while read -r release; do
      [[ $release == "$(current)" || "releases/$release" == "$(readlink "$DEPLOY_PATH/previous" 2>/dev/null)" ]] && continue
      rm -rf "${RELEASES:?}/$release"
      for entry in $(engines); do
        on "${entry#*=}" image rm "$APP_IMAGE-api:$release" "$APP_IMAGE-worker:$release" >/dev/null 2>&1 || true
      done
    done
}

activate() { # RELEASE: backup, data services, jobs (migrations), then everything else rolls
  backup "before-$1"
  deploy_phase "$1" needs
  run_jobs "$1"
  deploy_phase "$1" services
  switch_current "$1"
  prune
}

rollback() { # [RELEASE]: its services again (no job runs; no migration is undone)
  local target=${1:-$(basename "$(readlink "$DEPLOY_PATH/previous" 2>/dev/null || echo none)")}
  [[ $target != none && -f $RELEASES/$target/swarm/services.json ]] || { echo "no release to roll back to: $target" >&2; exit 1; }
  deploy_phase "$target" services
  switch_current "$target"
  echo "$target"
}

status() {
  echo "release: $(current)"
  docker node ls
  docker stack services "$STACK"
  docker stack ps "$STACK" --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}\t{{.Image}}'
}
