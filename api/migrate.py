"""`python -m api.migrate`: the migrate service. Runs as the owner role: brings the schema to this
code's head (Alembic), then creates or updates the app's least-privileged role (api/db_roles.py).

Both steps hold the migration advisory lock, so replicas or a deploy racing an operator run one
after the other (two `CREATE ROLE` at once would fail).

The upgrade runs with the lock and statement timeouts of api/migration_timeouts.py, in one
transaction (but for a migration's autocommit_block): a lock timeout rolls it back, and it is
tried again a bounded number of times (MIGRATION_LOCK_RETRIES), with a growing pause. Any failure
exits non-zero, which stops a deploy before the switch (deploy/remote-lib.sh's activate), the
previous release still serving.
"""

from __future__ import annotations

import logging
import re
import time

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import DBAPIError

from api.db_roles import ensure_app_role
from api.migration_lock import MIGRATION_LOCK_ID
from core.logs import configure_logging
from core.settings import Settings, get_settings

log = logging.getLogger("api.migrate")

# PostgreSQL's SQLSTATEs: lock_not_available (lock_timeout) and query_canceled (statement_timeout).
LOCK_TIMEOUT = "55P03"
STATEMENT_TIMEOUT = "57014"
MAX_PAUSE_SECONDS = 30.0
# The table a DDL or DML statement names: enough to point the operator at it.
_TABLE = re.compile(
    r"\b(?:ALTER\s+TABLE|LOCK\s+TABLE|DROP\s+TABLE|TRUNCATE|UPDATE|INSERT\s+INTO|DELETE\s+FROM"
    r"|REFERENCES|INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON)"
    r"\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?(\"?[\w.]+\"?)",
    re.IGNORECASE,
)


def table_of(statement: str | None) -> str | None:
    """The table a statement names first, or None."""
    match = _TABLE.search(statement or "")
    return match.group(1).strip('"') if match else None


def pause_before(retry: int) -> float:
    """Seconds before retry number `retry` (1, 2, ...): 1, 2, 4... up to MAX_PAUSE_SECONDS."""
    return min(MAX_PAUSE_SECONDS, 2.0 ** (retry - 1))


def sqlstate_of(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def lock_holders(settings: Settings, table: str) -> str:
    """Who holds a lock on `table` now, oldest transaction first: the one to wait for or end."""
    query = """
        SELECT a.pid, l.mode, a.application_name, a.state,
               extract(epoch FROM now() - a.xact_start)::int, left(a.query, 120)
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.granted AND l.relation = to_regclass(%s) AND a.pid <> pg_backend_pid()
        ORDER BY a.xact_start LIMIT 3"""
    try:
        with psycopg.connect(settings.libpq_url, autocommit=True, connect_timeout=5) as c:
            rows = c.execute(query, (table,)).fetchall()
    except psycopg.Error as exc:
        return f"(could not look: {exc})"
    return "; ".join(
        f"pid {pid} ({name or 'no application_name'}, {state}, in a transaction for {age} s, "
        f"{mode}): {sql!r}"
        for pid, mode, name, state, age, sql in rows
    )


def upgrade(settings: Settings, config: Config) -> None:
    """alembic upgrade head, tried again after a lock timeout; SystemExit naming the timeout
    (and the table) if it still fails."""
    retries = settings.migration_lock_retries
    for attempt in range(retries + 1):
        try:
            command.upgrade(config, "head")
            return
        except DBAPIError as exc:
            sqlstate, table = sqlstate_of(exc), table_of(exc.statement)
            on = f" on table {table}" if table else ""
            if sqlstate == STATEMENT_TIMEOUT:
                raise SystemExit(
                    f"migration failed: statement timeout{on} (MIGRATION_STATEMENT_TIMEOUT_MS="
                    f"{settings.migration_statement_timeout_ms}); the upgrade was rolled back. A "
                    "statement meant to run long: api.migration_timeouts.statement_timeout "
                    "(docs/deploy.md)"
                ) from exc
            if sqlstate != LOCK_TIMEOUT:
                raise
            holders = lock_holders(settings, table) if table else ""
            if attempt == retries:
                raise SystemExit(
                    f"migration failed: lock timeout{on} after {retries + 1} attempt(s) of "
                    f"{settings.migration_lock_timeout_ms} ms (MIGRATION_LOCK_TIMEOUT_MS); "
                    f"the upgrade was rolled back. Holding it: {holders or 'unknown'}"
                ) from exc
            pause = pause_before(attempt + 1)
            log.warning(
                f"lock timeout{on}: retry {attempt + 1}/{retries} in {pause:g} s",
                extra={"table": table, "holders": holders, "retry": attempt + 1},
            )
            time.sleep(pause)


def app_role_password(settings: Settings) -> str:
    """POSTGRES_APP_PASSWORD, the one password to give the app role. Two lines (the current
    password and the new one) are what an interrupted rotation leaves (deploy/rotate-lib.sh):
    refused, since a role has one password and none may hold a newline."""
    password = settings.postgres_app_password.get_secret_value()
    if "\n" in password:
        raise SystemExit(
            "POSTGRES_APP_PASSWORD has several lines: a `make rotate-secret "
            "NAME=postgres_app_password` was interrupted (the file holds the current password and "
            "the new one) and nothing was migrated. Finish it: run `make rotate-secret "
            "NAME=postgres_app_password` again (`make deploy-rotate-secret` on a server make "
            "deploy manages)"
        )
    return password


def provision_app_role(settings: Settings) -> None:
    password = app_role_password(settings)
    if settings.postgres_app_user == settings.postgres_user:
        # Running the app as the owner is what this module exists to end: say it, loudly.
        raise SystemExit(
            f"POSTGRES_APP_USER ({settings.postgres_app_user}) must differ from POSTGRES_USER, "
            "the owner the migrations run as"
        )
    with psycopg.connect(settings.libpq_url, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            ensure_app_role(connection, settings.postgres_app_user, password)
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    log.info("app role ready", extra={"role": settings.postgres_app_user})


def main() -> None:
    settings = get_settings()
    settings.require_secrets("postgres_password", "postgres_app_password")
    configure_logging(settings.log_level)
    app_role_password(settings)  # refused before the upgrade, so a refusal changes nothing
    upgrade(settings, Config("alembic.ini"))
    provision_app_role(settings)


if __name__ == "__main__":
    main()
