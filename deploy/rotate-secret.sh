#!/usr/bin/env bash
# make rotate-secret NAME=jwt_secret|postgres_app_password|redis_password: this host's production
# stack ($COMPOSE with the production overlay, its secret files in SECRETS_DIR) rotates one secret
# with no failed request (docs/secrets.md). A server make deploy manages: make deploy-rotate-secret.
# The steps are deploy/rotate-lib.sh's, with deploy/remote-lib.sh's rollout as a deploy runs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -ra COMPOSE_COMMAND <<<"${COMPOSE:-docker compose}"
# remote-lib.sh's settings: its paths are a deployed server's, unused here; the project is found below.
DEPLOY_PATH=$PWD DEPLOY_PROJECT=unknown APP_IMAGE=unused
# shellcheck source=deploy/remote-lib.sh
source deploy/remote-lib.sh
# shellcheck source=deploy/rotate-lib.sh
source deploy/rotate-lib.sh

# remote-lib's compose RELEASE ARGS...: here there is one release, this checkout.
compose() { "${COMPOSE_COMMAND[@]}" "${@:2}"; }
ROTATE_RELEASE=.
DEPLOY_PROJECT=$(stack config | awk '$1 == "name:" {print $2; exit}')
rotate "${1:-}"
