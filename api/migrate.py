"""`python -m api.migrate`: the migrate service. Runs as the owner role: brings the schema to this
code's head (Alembic), then creates or updates the app's least-privileged role (api/db_roles.py).

Both steps hold the migration advisory lock, so replicas or a deploy racing an operator run one
after the other (two `CREATE ROLE` at once would fail).
"""

from __future__ import annotations

import logging

import psycopg
from alembic import command
from alembic.config import Config

from api.db_roles import ensure_app_role
from api.migration_lock import MIGRATION_LOCK_ID
from core.logs import configure_logging
from core.settings import Settings, get_settings

log = logging.getLogger("api.migrate")


def provision_app_role(settings: Settings) -> None:
    if settings.postgres_app_user == settings.postgres_user:
        # Running the app as the owner is what this module exists to end: say it, loudly.
        raise SystemExit(
            f"POSTGRES_APP_USER ({settings.postgres_app_user}) must differ from POSTGRES_USER, "
            "the owner the migrations run as"
        )
    with psycopg.connect(settings.libpq_url, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            ensure_app_role(
                connection,
                settings.postgres_app_user,
                settings.postgres_app_password.get_secret_value(),
            )
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    log.info("app role ready", extra={"role": settings.postgres_app_user})


def main() -> None:
    settings = get_settings()
    settings.require_secrets("postgres_password", "postgres_app_password")
    configure_logging(settings.log_level)
    command.upgrade(Config("alembic.ini"), "head")
    provision_app_role(settings)


if __name__ == "__main__":
    main()
