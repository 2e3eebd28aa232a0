"""The migration lock: every migrator of this database (Alembic's api/migrations/env.py, the app
role's provisioning in api/migrate.py) takes this PostgreSQL advisory lock, so two started at once
run one after the other. Any constant shared by all of them."""

from __future__ import annotations

MIGRATION_LOCK_ID = 727_274_001
