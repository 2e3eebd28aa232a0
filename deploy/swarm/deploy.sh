#!/usr/bin/env bash
# make swarm-deploy | swarm-rollback | swarm-status | swarm-log: the kit on a Docker Swarm, over SSH
# to a manager. The functions are deploy/lib.sh's and deploy/swarm/lib.sh's here, and
# deploy/remote-lib.sh's and deploy/swarm/remote-lib.sh's on the SSH host.
#   deploy.sh deploy | rollback [NAME] | status | log
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=deploy/lib.sh
source deploy/lib.sh
# shellcheck source=deploy/swarm/lib.sh
source deploy/swarm/lib.sh

main() {
  load_settings
  [[ $DEPLOY_IMAGES != build ]] || die "DEPLOY_IMAGES=build is single-host only: on Swarm, ship or a registry"
  [[ ${1:-deploy} != deploy ]] || check_secrets
  start_ssh
  trap stop_ssh EXIT
  case ${1:-deploy} in
    deploy) swarm_deploy ;;
    rollback) rollback "${2:-}" ;;
    status) remote status ;;
    log) remote log ;;
    *) die "usage: swarm/deploy.sh deploy|rollback [RELEASE]|status|log" ;;
  esac
}

main "$@"
