#!/usr/bin/env bash
# make swarm-deploy's functions on this side, sourced by deploy/swarm/deploy.sh after
# deploy/lib.sh, whose settings, release naming, upload, secrets, lock, log and public check
# it reuses. It replaces two: remote (the Swarm server side) and ship_images (every node's).

# remote COMMAND [ARGS...]: deploy/swarm/remote.sh on the SSH host, after the functions of
# deploy/remote-lib.sh and deploy/swarm/remote-lib.sh. SWARM_DOCKER_HOST: the manager's engine as
# the SSH host's docker CLI reaches it (empty: the SSH host's own engine, which is then a manager).
remote() {
  local args
  printf -v args '%q ' "$@"
  "${SSH[@]}" "DEPLOY_PATH=$(printf %q "$DEPLOY_PATH") DEPLOY_PROJECT=$DEPLOY_PROJECT" \
    "DEPLOY_KEEP_RELEASES=$DEPLOY_KEEP_RELEASES DEPLOY_LOCK_TIMEOUT=$DEPLOY_LOCK_TIMEOUT" \
    "APP_IMAGE=$(printf %q "$APP_IMAGE") DEPLOY_REGISTRY=$(printf %q "${DEPLOY_REGISTRY:-}")" \
    "SWARM_ENGINES=$(printf %q "${SWARM_ENGINES:-}") SWARM_DEPLOY_TIMEOUT=${SWARM_DEPLOY_TIMEOUT:-600}" \
    "${SWARM_DOCKER_HOST:+DOCKER_HOST=$(printf %q "$SWARM_DOCKER_HOST")}" \
    "bash -s -- $args" < <(cat deploy/remote-lib.sh deploy/swarm/remote-lib.sh deploy/swarm/remote.sh)
}

# The stack files of RELEASE, rendered here from the release's files and production env (what
# the server has), by phase, with the secrets' and configs' paths as the SSH host sees them.
render_release() {
  local release=$1 dir=$SSH_DIR/$1 config phase
  config=$(mktemp)
  # Only the release's .env counts, as when compose runs on a server: no variable of this shell.
  env -i PATH="$PATH" HOME="$HOME" SECRETS_DIR="$(realpath "$DEPLOY_SECRETS_DIR")" \
    PROXY_DYNAMIC_DIR="$dir/proxy/dynamic" docker compose -p "$DEPLOY_PROJECT" --project-directory "$dir" \
    -f "$dir/compose.yaml" -f "$dir/compose.prod.yaml" -f "$dir/compose.swarm.yaml" config --format json >"$config" ||
    die "the production env fails docker compose config with the Swarm overlay (see above)"
  mkdir -p "$dir/swarm"
  for phase in needs jobs services; do
    local args=(--stack "$DEPLOY_PROJECT" --release "$release" --phase "$phase"
      --relocate "$(realpath "$DEPLOY_SECRETS_DIR")=$DEPLOY_PATH/secrets"
      --relocate "$dir=$DEPLOY_PATH/releases/$release")
    python3 deploy/swarm/render.py "${args[@]}" <"$config" >"$dir/swarm/$phase.json" || die "render failed"
    python3 deploy/swarm/render.py "${args[@]}" --names <"$config" >"$dir/swarm/$phase.names"
  done
  python3 deploy/swarm/render.py --stack "$DEPLOY_PROJECT" --images <"$config" >"$dir/swarm/images"
  rm -f "$config"
  tar -C "$dir" -czf - swarm | "${SSH[@]}" "tar -xzf - -C $(printf %q "$DEPLOY_PATH/releases/$release")"
}

# Every node runs the images the compose files build (render.py --images: the api and worker of
# the release, and whatever else they build): pushed to DEPLOY_REGISTRY, or loaded into each engine.
ship_images() {
  local release=$1 images
  mapfile -t images <"$SSH_DIR/$release/swarm/images"
  say "building ${images[*]}"
  APP_IMAGE=$APP_IMAGE APP_TAG=$release docker compose build >&2
  if [[ $DEPLOY_IMAGES == registry ]]; then
    for image in "${images[@]}"; do docker push "$image" >&2; done
  else
    # Only what some engine lacks: the db image keeps one tag across releases, and an unchanged
    # one (the same build) need not travel again.
    local image built=() listed stale
    for image in "${images[@]}"; do built+=("$image=$(docker image inspect -f '{{.Id}}' "$image")"); done
    listed=$(remote stale_images "${built[@]}") || die "could not ask the nodes' engines for images"
    [[ -n $listed ]] || { say "every node's engine has the release's images"; return; }
    mapfile -t stale <<<"$listed"
    say "shipping ${stale[*]} over SSH, compressed, to every node's engine"
    # Into a file first: remote's standard input is the script itself.
    docker save "${stale[@]}" | gzip -1 |
      "${SSH[@]}" "umask 077 && cat >$(printf %q "$DEPLOY_PATH/images/$release.tar.gz")"
    remote load_images "$release"
  fi
}

swarm_deploy() {
  local release
  release=$(release_name)
  say "release $release to the swarm behind $DEPLOY_HOST:$DEPLOY_PATH (stack $DEPLOY_PROJECT)"
  remote swarm_preflight || die "preflight failed on $DEPLOY_HOST"
  take_lock
  upload_release "$release"
  upload_secrets
  render_release "$release"
  ship_images "$release"
  if ! remote activate "$release"; then
    # Swarm rolled back the service that failed; the others may have rolled on: the release that
    # was serving gets all of its services back.
    local back serving
    serving=$(remote current)
    [[ $serving != none ]] || die "release $release failed, and no release served before it"
    back=$(remote rollback "$serving") || die "release $release failed and so did going back to $serving: act now"
    remote record failed "$release" "$DEPLOY_WHO" "did not converge; $back serves again"
    die "release $release failed; $back serves again"
  fi
  go_live "$release"
}
