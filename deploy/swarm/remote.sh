#!/usr/bin/env bash
# make swarm-deploy's server side: sent over SSH by deploy/swarm/lib.sh after deploy/remote-lib.sh
# and deploy/swarm/remote-lib.sh (the functions), and read with them by one bash from stdin.
#   remote.sh swarm_preflight | stale_images IMAGE=ID... | load_images R | activate R | rollback [R] | backup [NAME] | status,
#   and deploy/remote.sh's lock | unlock | install_secrets | record | current | log
set -euo pipefail

case ${1:-} in
  swarm_preflight | stale_images | load_images | activate | rollback | backup | status) "$@" ;;
  lock | unlock | install_secrets | record | current | log) "$@" ;;
  *) echo "usage: swarm/remote.sh swarm_preflight|stale_images IMAGE=ID...|load_images R|activate R|rollback [R]|backup [NAME]|status" >&2; exit 2 ;;
esac
