"""Alembic environment. Runs under a PostgreSQL advisory lock, so two migrators started at once
(replicas, a deploy racing an operator) run one after the other instead of racing; and with the
migrate step's lock and statement timeouts (api/migration_timeouts.py), online and offline."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from api.migration_lock import MIGRATION_LOCK_ID
from api.migration_timeouts import timeout_statements
from core.models import Base
from core.settings import get_settings
from core.sync_engine import make_sync_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=get_settings().database_url_sync,
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
    )
    with context.begin_transaction():
        for statement in timeout_statements(get_settings()):
            context.execute(statement)
        context.run_migrations()


def run_migrations_online() -> None:
    settings = get_settings()
    engine = config.attributes.get("connection") or make_sync_engine(settings, "migrate")
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        try:
            connection.commit()
            context.configure(
                connection=connection, target_metadata=target_metadata, compare_type=True
            )
            # After the advisory lock, whose wait for another migrator lock_timeout would cut short.
            with context.begin_transaction():
                for statement in timeout_statements(settings):
                    context.execute(statement)
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
