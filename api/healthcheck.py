"""The api container's HEALTHCHECK: GET /health/routable where gunicorn listens. No curl needed.

Standard library only, and the address comes from the kernel (the TCP socket this container's
user listens on: gunicorn's; Docker's DNS resolver listens here too, as root) rather than from
the settings: the check runs every few seconds, and importing pydantic for the settings cost
about 0.28 s of CPU each time, most of an idle api's CPU.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
DOCKER_DNS = "127.0.0.11"  # Docker's embedded resolver listens in every container's namespace
TABLES = (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6))
# Where to connect to a socket listening on every address, [::] too: Linux's sockets are
# dual-stack by default, and ::1 is missing where a container has IPv6 disabled.
ANY_ADDRESS_HOST = "127.0.0.1"


def _address(hex_address: str, family: int) -> str:
    """/proc/net/tcp* print addresses as 32-bit words in the host's byte order (little-endian)."""
    raw = bytes.fromhex(hex_address)
    return socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))


def listening(table: str, family: int, uid: int) -> tuple[str, int] | None:
    """The first socket uid listens on in a /proc/net/tcp* table: (host to connect to, port)."""
    for row in table.splitlines()[1:]:
        fields = row.split()
        if len(fields) > 7 and fields[3] == TCP_LISTEN and fields[7] == str(uid):
            hex_address, hex_port = fields[1].split(":")
            host = _address(hex_address, family)
            if host == DOCKER_DNS:  # an api run as root shares the uid with the resolver
                continue
            if host in ("0.0.0.0", "::"):
                host = ANY_ADDRESS_HOST
            return host, int(hex_port, 16)
    return None


def main() -> int:
    for path, family in TABLES:
        try:
            found = listening(Path(path).read_text(), family, os.getuid())
        except OSError:
            continue
        if found is not None:
            break
    else:
        print("unhealthy: no listening TCP socket", file=sys.stderr)
        return 1
    # A bare HTTP/1.1 request: urllib would import most of the email package to parse the answer.
    try:
        with socket.create_connection(found, timeout=2) as conn:
            conn.sendall(
                b"GET /health/routable HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            status_line = conn.makefile("rb").readline()
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if status_line.split(None, 2)[1:2] != [b"200"]:
        print(f"unhealthy: {status_line.decode('latin-1').strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
