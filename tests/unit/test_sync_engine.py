"""core/sync_engine.py and Settings.libpq_url, without a database: what each engine would connect
with, caught at psycopg's connect and refused there."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import event
from sqlalchemy.pool import NullPool, QueuePool

from api.engine import make_async_engine
from core.settings import Settings
from core.sync_engine import make_sync_engine


class _Refused(Exception):
    pass


def _connect_params(engine) -> dict[str, object]:
    seen: dict[str, object] = {}

    @event.listens_for(engine, "do_connect")
    def _capture(dialect, conn_rec, cargs, cparams):
        seen.update(cparams)
        raise _Refused

    with pytest.raises(_Refused):
        engine.connect()
    return seen


def test_libpq_url_is_the_same_server_and_credentials_for_psycopg_itself():
    settings = Settings(postgres_user="us er@x", postgres_password="p@ss/w:rd %+é")
    assert settings.libpq_url.startswith("postgresql://")
    params = conninfo_to_dict(settings.libpq_url)
    assert params["user"] == "us er@x"
    assert params["password"] == "p@ss/w:rd %+é"
    assert (params["host"], params["port"], params["dbname"]) == (
        settings.postgres_host,
        str(settings.postgres_port),
        settings.postgres_db,
    )


def test_a_named_engine_with_timeouts_passes_them_to_libpq():
    engine = make_sync_engine(
        Settings(app_name="kit"),
        "reaper",
        connect_timeout=5,
        statement_timeout_ms=5000,
        lock_timeout_ms=4000,
    )
    assert isinstance(engine.pool, NullPool)
    params = _connect_params(engine)
    assert params["application_name"] == "kit-reaper"
    assert params["connect_timeout"] == 5
    assert params["options"] == "-c statement_timeout=5000 -c lock_timeout=4000"


def test_a_plain_engine_adds_nothing_and_a_pooled_one_keeps_one_pinged_connection():
    params = _connect_params(make_sync_engine(Settings()))
    assert not {"application_name", "connect_timeout", "options"} & params.keys()
    pooled = make_sync_engine(Settings(), "worker", pooled=True)
    assert isinstance(pooled.pool, QueuePool)
    assert pooled.pool.size() == 1
    assert pooled.pool._pre_ping


@pytest.mark.parametrize(("password", "listeners"), [("one", 0), ("current\nnew", 1)])
def test_only_several_passwords_install_the_listener_that_tries_each(password, listeners):
    """One password, the normal case: nothing runs at a connect but SQLAlchemy's own."""
    settings = Settings(postgres_password=password)
    assert len(make_sync_engine(settings).dialect.dispatch.do_connect) == listeners
    engine = make_async_engine(settings).sync_engine
    assert len(engine.dialect.dispatch.do_connect) == listeners
