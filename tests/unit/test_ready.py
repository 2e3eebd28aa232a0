"""/ready's answer, without the stack: the app is served without its lifespan, and app.state holds
stand-ins for the engine and the Redis client that fail (or answer) the way the real ones do, so
the route's own code, middleware included, is what is tested. Against the real servers, in the
test environment, tests/integration/test_ops.py checks the detailed answer."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.sql.elements import TextClause

from api.main import create_app
from api.readiness import head_revision
from core.settings import Settings

# The database stand-in answers with the code's own head: migrations are at head.
HEAD = head_revision()
# What a real failure's text looks like: it names the servers behind the api.
DATABASE_ERROR = "connection to db.internal.example:5432 refused"
REDIS_ERROR = "Error 111 connecting to redis.internal.example:6379. Connection refused."


class UnreachableDatabase:
    """An AsyncEngine whose connect() fails, as when PostgreSQL is down."""

    def connect(self) -> UnreachableDatabase:
        return self

    async def __aenter__(self) -> None:
        raise OSError(DATABASE_ERROR)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class MigratedDatabase:
    """An AsyncEngine whose connection answers api.readiness.current_revision's two queries."""

    def connect(self) -> MigratedDatabase:
        return self

    async def __aenter__(self) -> MigratedDatabase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    # pg_stat_archiver as api.readiness.archive_problem reads it: archiving on, not failing.
    archive_state: tuple[object, ...] = (True, False, 5.0, None)

    async def scalar(self, statement: object) -> object:
        # First "does alembic_version exist", then the revision in it.
        return True if isinstance(statement, TextClause) else HEAD

    async def execute(self, statement: object) -> Row:
        return Row(self.archive_state)


class Row:
    def __init__(self, values: tuple[object, ...]) -> None:
        self.values = values

    def one(self) -> tuple[object, ...]:
        return self.values


class StalledArchiveDatabase(MigratedDatabase):
    """Archiving has failed for 15 minutes, the last segment tried named."""

    archive_state = (True, True, 900.0, "0000000100000000000000A1")


class UnreachableRedis:
    async def ping(self) -> bool:
        raise RedisConnectionError(REDIS_ERROR)


class ReachableRedis:
    async def ping(self) -> bool:
        return True


def _client(environment: str, engine: object, redis: object) -> TestClient:
    settings = Settings(
        environment=environment,
        jwt_secret="0123456789abcdef" * 4,
        postgres_password="a-strong-database-password",
        postgres_app_password="a-strong-app-role-password",
        redis_password="a-strong-redis-password",
    )
    app = create_app(settings)
    app.state.engine = engine
    app.state.redis = redis
    # Not entered as a context manager: no lifespan, so the stand-ins above stay.
    return TestClient(app)


@pytest.fixture
def production_down():
    return _client("production", UnreachableDatabase(), UnreachableRedis())


def test_production_answers_which_checks_failed_and_nothing_more(production_down):
    r = production_down.get("/ready")
    assert r.status_code == 503
    assert r.json() == {
        "status": "not ready",
        "failed": ["database", "redis"],
        "checks": {"database": "failed", "redis": "failed", "archive": "ok"},
    }
    assert "internal.example" not in r.text


def test_production_logs_why_each_check_failed(production_down, caplog):
    with caplog.at_level(logging.WARNING, logger="api.routes.ops"):
        production_down.get("/ready")
    failures = {
        record.check: record.error
        for record in caplog.records
        if record.name == "api.routes.ops" and record.levelno == logging.WARNING
    }
    assert set(failures) == {"database", "redis"}
    assert DATABASE_ERROR in failures["database"]
    assert REDIS_ERROR in failures["redis"]


def test_production_names_the_one_check_that_failed():
    r = _client("production", MigratedDatabase(), UnreachableRedis()).get("/ready")
    assert r.status_code == 503
    assert r.json() == {
        "status": "not ready",
        "failed": ["redis"],
        "checks": {"database": "ok", "redis": "failed", "archive": "ok"},
    }


def test_production_ready():
    r = _client("production", MigratedDatabase(), ReachableRedis()).get("/ready")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "failed": [],
        "checks": {"database": "ok", "redis": "ok", "archive": "ok"},
    }


@pytest.mark.parametrize("environment", ["development", "test"])
def test_outside_production_the_answer_says_why(environment):
    r = _client(environment, UnreachableDatabase(), UnreachableRedis()).get("/ready")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["database"] == f"unreachable: OSError: {DATABASE_ERROR}"
    assert checks["redis"] == f"unreachable: ConnectionError: {REDIS_ERROR}"


def test_a_stalled_archive_makes_the_api_not_ready():
    r = _client("development", StalledArchiveDatabase(), ReachableRedis()).get("/ready")
    assert r.status_code == 503
    assert r.json()["failed"] == ["archive"]
    assert r.json()["checks"]["archive"] == (
        "WAL archiving failing: nothing archived for 900s (0000000100000000000000A1)"
    )


def test_a_brief_archive_failure_is_not_a_stall():
    class BrieflyFailing(MigratedDatabase):
        archive_state = (True, True, 60.0, "0000000100000000000000A1")

    client = _client("development", BrieflyFailing(), ReachableRedis())
    assert client.get("/ready").status_code == 200
