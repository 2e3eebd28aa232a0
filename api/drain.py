"""`python -m api.drain on|off`: take this container out of the proxy's rotation, or back in.

`on` creates the DRAIN_FILE of core/settings.py, so /health/routable answers 503 and Traefik's
active health check stops routing here; `off` removes it. A deploy runs it in each old api
container (`docker exec`, deploy/remote.sh), so the file's path is set in one place, the settings,
and follows DRAIN_FILE in .env. Prints the path it acted on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.settings import get_settings

USAGE = "usage: python -m api.drain on|off"


def set_draining(on: bool) -> Path:
    """Create (on) or remove (off) DRAIN_FILE; also used by the gunicorn master
    (api/gunicorn_conf.py): on at SIGTERM, off at start."""
    path = Path(get_settings().drain_file)
    if on:
        path.touch()
    else:
        path.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["on"], ["off"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        path = set_draining(args == ["on"])
    except OSError as exc:
        print(f"drain {args[0]}: {exc}", file=sys.stderr)
        return 1
    print(f"drain {args[0]}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
