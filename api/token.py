"""Print a bearer token: `python -m api.token SUBJECT [--scope write] [--ttl SECONDS]`."""

from __future__ import annotations

import argparse

from api.auth import WRITE_SCOPE, issue_token
from core.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("subject", help="who the token is for (the 'sub' claim)")
    parser.add_argument("--scope", action="append", help=f"repeatable; default {WRITE_SCOPE!r}")
    parser.add_argument(
        "--ttl", type=int, help="seconds until it expires (default JWT_TTL_SECONDS)"
    )
    args = parser.parse_args(argv)
    print(issue_token(get_settings(), args.subject, args.scope or [WRITE_SCOPE], args.ttl))


if __name__ == "__main__":
    main()
