#!/usr/bin/env bash
# make deploy's server side: sent over SSH by deploy/lib.sh after deploy/remote-lib.sh (the
# functions), and read with it by one bash from stdin.
#   remote.sh preflight | check R | lock WHO | unlock TOKEN|--force | install_secrets NAME...
#             | activate R | rollback [R] | backup [NAME] | record RESULT R WHO MESSAGE | log | current
#             | rotate_deployed NAME (deploy/rotate-lib.sh, sent between the two)
set -euo pipefail

case ${1:-} in
  preflight | check | lock | unlock | install_secrets | activate | rollback | backup | record | log | current | rotate_deployed) "$@" ;;
  *) echo "usage: remote.sh preflight|check|lock|unlock|install_secrets|activate|rollback|backup|record|log|current|rotate_deployed" >&2; exit 2 ;;
esac
