"""Several passwords for one PostgreSQL role, tried in turn: what lets `make rotate-secret
NAME=postgres_app_password` change the app role's password with no failed connection.

A role has one password, so the client holds both while the rotation runs (deploy/rotate-lib.sh):
every container first gets the current and the new one (POSTGRES_PASSWORD's two lines), then
ALTER ROLE sets the new one. A connection PostgreSQL refuses with "password authentication
failed" is tried again with the next password, and the one that worked is tried first from then
on: after the switch each engine pays one refused attempt (a FATAL line in PostgreSQL's log), not
one per connection. Any other error is raised at once. With one password nothing is installed.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from sqlalchemy import Engine, event

log = logging.getLogger("core.db_passwords")

# PostgreSQL's invalid_password: asyncpg's InvalidPasswordError, whose SQLSTATE SQLAlchemy's
# asyncpg adapter keeps on the error it raises.
INVALID_PASSWORD = "28P01"  # noqa: S105 - an error code, not a password


def is_password_refused(exc: BaseException) -> bool:
    """PostgreSQL refused the password (and not the database, the host or the role's rights)."""
    if getattr(exc, "sqlstate", None) == INVALID_PASSWORD:
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # libpq reports a failed connection with no SQLSTATE (psycopg 3 gives sqlstate None): only
    # the server's message says why, in English unless the server's lc_messages says otherwise.
    return "password authentication failed" in str(exc)


class PasswordList:
    """An engine's passwords, the one that last worked first: its do_connect listener."""

    def __init__(self, passwords: list[str]) -> None:
        # A tuple, replaced whole: concurrent connects each read one order.
        self.passwords = tuple(passwords)

    def do_connect(
        self, dialect: Any, conn_rec: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        """Connects itself, as SQLAlchemy lets a do_connect listener do (returning the DBAPI
        connection); under the async engine this runs in its greenlet, as dialect.connect does."""
        order = self.passwords
        for number, password in enumerate(order, start=1):
            try:
                connection = dialect.connect(*cargs, **{**cparams, "password": password})
            except Exception as exc:
                if number == len(order) or not is_password_refused(exc):
                    raise
                log.warning(
                    "PostgreSQL refused password %d of %d: trying the next (a rotation of the "
                    "password under way, docs/secrets.md)",
                    number,
                    len(order),
                )
                continue
            if number > 1:
                self.passwords = (password, *(p for p in order if p != password))
            return connection
        raise AssertionError("unreachable: the last password's error is raised")


def try_each_password(engine: Engine, passwords: list[str]) -> PasswordList | None:
    """Installs the listener on `engine` (an AsyncEngine's sync_engine) if there are several
    passwords; one password (the normal case) installs nothing."""
    if len(passwords) < 2:
        return None
    listener = PasswordList(passwords)
    event.listen(engine, "do_connect", listener.do_connect)
    return listener
