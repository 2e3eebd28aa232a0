#!/usr/bin/env bash
# make deploy | rollback | deploy-log | deploy-unlock | deploy-backup | deploy-trust: one server
# over SSH. The functions are deploy/lib.sh's here and deploy/remote-lib.sh's on the server.
#   deploy.sh deploy            build, ship, migrate, roll out with zero downtime, check, or roll back
#   deploy.sh rollback [NAME]   the previous release (or NAME) serves again
#   deploy.sh log | unlock | backup
#   deploy.sh trust             pin the server's SSH host key (YES=1: without asking)
#   deploy.sh rotate-secret NAME   a new value for NAME on the server, no downtime, copied back here
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
source deploy/lib.sh

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
    # The operator's break of a stale lock, whoever holds it (remote-lib.sh says who did).
    unlock) remote unlock --force ;;
    backup) remote backup ;;
    rotate-secret) rotate_secret "${2:-}" ;;
    *) die "usage: deploy.sh deploy|rollback [RELEASE]|log|unlock|backup|trust|rotate-secret NAME" ;;
  esac
}

main "$@"
