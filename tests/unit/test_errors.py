"""Which failures are 'try again shortly' (503) and which are bugs (500), and that both answers
carry the request id and leave the connection usable."""

from __future__ import annotations

import socket

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from api.errors import is_service_unavailable
from api.main import create_app
from core.settings import Settings


def _wrapped(driver_error: BaseException) -> sa_exc.DBAPIError:
    """As SQLAlchemy's asyncpg dialect raises it: a DBAPIError whose .orig is the driver's."""
    try:
        try:
            raise driver_error
        except BaseException as inner:
            raise sa_exc.DBAPIError("SELECT 1", {}, inner) from inner
    except sa_exc.DBAPIError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")),
        _wrapped(asyncpg.AdminShutdownError("terminating connection")),
        _wrapped(asyncpg.TooManyConnectionsError("sorry, too many clients already")),
        _wrapped(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")),
        _wrapped(asyncpg.InternalClientError("cannot switch to state 15")),
        socket.gaierror(-2, "Name or service not known"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        sa_exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "orig", e))[:30],
)
def test_outages_are_unavailable(error):
    assert is_service_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(asyncpg.UniqueViolationError("duplicate key")),
        _wrapped(asyncpg.UndefinedTableError("relation does not exist")),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
)
def test_bugs_and_bad_queries_are_not(error):
    assert not is_service_unavailable(error)


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings())

    @app.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        if kind == "db":
            raise _wrapped(asyncpg.CannotConnectNowError("the database system is starting up"))
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_database_outage_is_503_with_retry_after_and_request_id(client):
    r = client.get("/boom/db", headers={"X-Request-ID": "outage-1"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.headers["x-request-id"] == "outage-1"
    assert "unavailable" in r.json()["detail"]


def test_a_bug_is_500_with_request_id_and_no_detail_leak(client):
    r = client.get("/boom/bug")
    assert r.status_code == 500
    assert len(r.headers["x-request-id"]) == 32
    assert r.json() == {"detail": "internal server error"}
    assert "connection" not in r.headers  # the server may keep the connection
