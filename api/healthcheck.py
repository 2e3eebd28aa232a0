"""The api container's HEALTHCHECK: GET /health/routable where gunicorn binds. No curl needed."""

from __future__ import annotations

import sys
import urllib.request

from core.settings import get_settings


def main() -> int:
    host, _, port = get_settings().bind_address.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health/routable", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
