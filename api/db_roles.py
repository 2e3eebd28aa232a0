"""The application's PostgreSQL role: what the api and the worker connect as.

Migrations run as the owner (POSTGRES_USER, the role that creates and alters tables). The api and
the worker connect as POSTGRES_APP_USER, which may read and write rows of the application's tables
and nothing else: not a superuser (no COPY ... TO PROGRAM, no reading server files), no CREATE on
the schema or the database, not the owner of any table (no ALTER, DROP or TRUNCATE), no role
management. An injection or code-execution bug in the app then reaches rows, never the server.

`ensure_app_role` is idempotent: it creates the role on a new database, brings a database made by
an earlier version of the kit (tables owned by the owner, the app connected as the owner) to the
same grants, and sets the password each time, so rotating the secret is a redeploy.
"""

from __future__ import annotations

from psycopg import Connection, sql
from psycopg.sql import SQL, Composed

# The owner keeps writing the migration history; the app only reads it (/ready compares it).
MIGRATION_TABLE = "alembic_version"


def ensure_app_role(connection: Connection[object], role: str, password: str) -> None:
    """Create or update `role` with exactly the rights the app needs, in the connected database
    (whose owner, the connected user, also owns every table migrations create)."""
    if "\n" in password:
        # A rotation's two-line file (api/migrate.py refuses it with the fix): never one password.
        raise ValueError("the app role's password has a newline: one password, one line")
    name = sql.Identifier(role)
    statements: list[SQL | Composed] = [
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {role}) THEN "
            "CREATE ROLE {name}; END IF; END $$"
        ).format(role=sql.Literal(role), name=name),
        # Every attribute stated, so a role someone created by hand with more is brought down.
        sql.SQL(
            "ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS INHERIT PASSWORD {password}"
        ).format(name=name, password=sql.Literal(password)),
        # PostgreSQL 15 and later already refuse CREATE on public to everyone but its owner; a
        # database made by an older server (or restored from one) does not.
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT CONNECT ON DATABASE {db} TO {name}").format(
            db=sql.Identifier(connection.info.dbname), name=name
        ),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {name}").format(name=name),
        sql.SQL(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {name}"
        ).format(name=name),
        sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {table} FROM {name}").format(
            table=sql.Identifier(MIGRATION_TABLE), name=name
        ),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}").format(
            name=name
        ),
        # Tables and sequences the owner creates in later migrations get the same grants.
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {name}"
        ).format(name=name),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {name}"
        ).format(name=name),
    ]
    with connection.transaction():
        for statement in statements:
            connection.execute(statement)
