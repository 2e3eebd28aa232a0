#!/usr/bin/env bash
# make deploy's server side: sent over SSH by deploy/lib.sh after deploy/remote-lib.sh (the
# functions), and read with it by one bash from stdin.
#   remote.sh preflight | check R | lock WHO | unlock TOKEN|--force | install_secrets NAME...
#             | activate R | rollback [R] | backup [NAME] | record RESULT R WHO MESSAGE | log | current
set -euo pipefail

case ${1:-} in
  preflight | check | lock | unlock | install_secrets | activate | rollback | backup | record | log | current) "$@" ;;
  *) echo "usage: remote.sh preflight|check|lock|unlock|install_secrets|activate|rollback|backup|record|log|current" >&2; exit 2 ;;
esac
