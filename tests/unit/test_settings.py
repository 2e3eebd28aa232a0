"""Settings: defaults that start with no .env, environment overrides, and refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core import cpus
from core.settings import DEV_JWT_SECRET, Settings

ALL_ENV = [
    "ENVIRONMENT",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "REDIS_URL",
    "CELERY_TASK_TIME_LIMIT",
    "CELERY_VISIBILITY_TIMEOUT",
    "WEB_CONCURRENCY",
    "CELERY_CONCURRENCY",
    "BIND",
    "PORT",
    "JWT_SECRET",
    "FORWARDED_ALLOW_IPS",
    "POSTGRES_PASSWORD",
    "POSTGRES_APP_USER",
    "POSTGRES_APP_PASSWORD",
    "REDIS_PASSWORD",
    "CELERY_BROKER_URL",
    "JOB_HEARTBEAT_SECONDS",
    "JOB_LEASE_SECONDS",
    "JOB_REAP_INTERVAL_SECONDS",
    "JOB_MAX_ATTEMPTS",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_environment():
    s = Settings()
    assert s.database_url == "postgresql+asyncpg://app:app@localhost:5432/app"
    assert s.database_url_sync.startswith("postgresql+psycopg://")
    assert s.forwarded_allow_ips != "*"
    assert s.bind_address == "0.0.0.0:8000"


def test_worker_counts_default_to_usable_cpus(monkeypatch):
    monkeypatch.setattr("core.settings.usable_cpus", lambda: 3)
    s = Settings()
    assert s.gunicorn_workers == 3
    assert s.celery_processes == 3


def test_worker_counts_from_environment(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("CELERY_CONCURRENCY", "7")
    s = Settings()
    assert (s.gunicorn_workers, s.celery_processes) == (5, 7)


@pytest.mark.parametrize(
    ("name", "value", "named_in_error"),
    [
        ("WEB_CONCURRENCY", "0", "web_concurrency"),
        # '*' would trust X-Forwarded-* from anyone
        ("FORWARDED_ALLOW_IPS", "*", "FORWARDED_ALLOW_IPS"),
    ],
)
def test_unsafe_values_refused(monkeypatch, name, value, named_in_error):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=named_in_error):
        Settings()


def test_port_sets_bind_and_bind_wins(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    assert Settings().bind_address == "0.0.0.0:9123"
    monkeypatch.setenv("BIND", "127.0.0.1:7000")
    assert Settings().bind_address == "127.0.0.1:7000"


def test_production_refuses_the_development_jwt_secret(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings()
    monkeypatch.setenv("JWT_SECRET", "a-real-secret-of-some-length")
    assert Settings().jwt_secret.get_secret_value() != DEV_JWT_SECRET


def test_visibility_timeout_must_exceed_time_limit(monkeypatch):
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "100")
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "100")
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings()
    monkeypatch.delenv("CELERY_VISIBILITY_TIMEOUT")
    s = Settings()
    assert s.celery_redelivery_timeout == 200
    assert s.celery_soft_time_limit < s.celery_task_time_limit


def test_job_lease_defaults_renew_several_times_per_lease():
    s = Settings()
    assert (s.job_heartbeat_seconds, s.job_lease_seconds, s.job_reap_interval_seconds) == (
        5,
        30,
        10,
    )
    assert s.job_lease_seconds > 2 * s.job_heartbeat_seconds


@pytest.mark.parametrize(("heartbeat", "lease"), [("5", "10"), ("5", "9"), ("20", "30")])
def test_lease_must_exceed_two_heartbeats(monkeypatch, heartbeat, lease):
    """A lease of two heartbeats or less: one late heartbeat hands a live job to another worker."""
    monkeypatch.setenv("JOB_HEARTBEAT_SECONDS", heartbeat)
    monkeypatch.setenv("JOB_LEASE_SECONDS", lease)
    with pytest.raises(ValidationError, match="JOB_LEASE_SECONDS must exceed twice"):
        Settings()


def test_a_lease_just_over_two_heartbeats_is_accepted(monkeypatch):
    monkeypatch.setenv("JOB_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("JOB_LEASE_SECONDS", "2.5")
    assert Settings().job_lease_seconds == 2.5


@pytest.mark.parametrize(
    "name", ["JOB_HEARTBEAT_SECONDS", "JOB_LEASE_SECONDS", "JOB_REAP_INTERVAL_SECONDS"]
)
def test_job_lease_times_must_be_positive(monkeypatch, name):
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_secrets_are_not_in_repr(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2-db")
    monkeypatch.setenv("POSTGRES_APP_PASSWORD", "hunter2-app")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-redis")
    monkeypatch.setenv("JWT_SECRET", "hunter2-jwt")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://:hunter2-broker@redis:6379/1")
    settings = Settings()
    text = repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2" not in text


def test_a_password_in_redis_url_is_not_in_repr(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-redis@redis:6379/0")
    assert "hunter2" not in repr(Settings()) + str(Settings().model_dump())


def test_password_with_special_characters_is_quoted(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss/w:rd")
    assert "p%40ss%2Fw%3Ard@" in Settings().database_url


def test_the_app_role_has_development_defaults_and_is_set_from_the_environment(monkeypatch):
    settings = Settings()
    assert settings.postgres_app_user == "app_rw"
    assert settings.postgres_app_password.get_secret_value() == "app_rw"
    monkeypatch.setenv("POSTGRES_APP_USER", "svc")
    monkeypatch.setenv("POSTGRES_APP_PASSWORD", "svc-password")
    settings = Settings()
    assert settings.postgres_app_user == "svc"
    assert settings.postgres_app_password.get_secret_value() == "svc-password"


def test_the_app_role_is_not_what_a_process_connects_as(monkeypatch):
    """The api and the worker connect with POSTGRES_USER/PASSWORD; the app role's fields are the
    migrate process's, which creates the role."""
    monkeypatch.setenv("POSTGRES_APP_PASSWORD", "svc-password")
    assert Settings().database_url == "postgresql+asyncpg://app:app@localhost:5432/app"


def test_broker_is_the_next_redis_database(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    assert Settings().broker_url == "redis://redis:6379/1"
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://other:6379/5")
    assert Settings().broker_url == "redis://other:6379/5"


def test_a_password_in_redis_url_still_works(monkeypatch):
    """REDIS_URL as it was before REDIS_PASSWORD existed."""
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    settings = Settings()
    assert settings.redis_connection_url == "redis://:pw@redis:6379/0"
    assert settings.broker_url == "redis://:pw@redis:6379/1"


def test_usable_cpus_is_at_least_one():
    assert cpus.usable_cpus() >= 1


def test_empty_variables_mean_the_default(monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "")
    monkeypatch.setenv("WEB_CONCURRENCY", "")
    s = Settings()
    assert s.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert s.web_concurrency is None


# --- Redis password -------------------------------------------------------------------------------


def test_without_a_password_the_redis_connection_url_is_redis_url(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    assert Settings().redis_connection_url == "redis://redis:6379/0"


def test_redis_password_is_put_into_the_url_quoted(monkeypatch):
    from kombu.utils.url import url_to_parts
    from redis.connection import parse_url

    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss/w:rd")
    settings = Settings()
    assert settings.redis_connection_url == "redis://:p%40ss%2Fw%3Ard@redis:6379/0"
    assert settings.broker_url == "redis://:p%40ss%2Fw%3Ard@redis:6379/1"
    # What the clients read back is the password itself.
    assert parse_url(settings.redis_connection_url)["password"] == "p@ss/w:rd"
    assert url_to_parts(settings.broker_url).password == "p@ss/w:rd"


def test_redis_password_keeps_a_user_name_and_the_query(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "rediss://default@redis:6380/2?ssl_cert_reqs=required")
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    settings = Settings()
    assert (
        settings.redis_connection_url == "rediss://default:pw@redis:6380/2?ssl_cert_reqs=required"
    )
    assert settings.broker_url == "rediss://default:pw@redis:6380/3?ssl_cert_reqs=required"


def test_the_broker_url_given_wins_over_redis_password(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://:other@other:6379/5")
    assert Settings().broker_url == "redis://:other@other:6379/5"


def test_a_password_in_redis_url_and_redis_password_is_refused(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-url@redis:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-variable")
    with pytest.raises(ValidationError, match="REDIS_URL carries a password and REDIS_PASSWORD"):
        Settings()


def test_the_api_and_its_job_client_connect_with_the_redis_password(monkeypatch):
    """The wiring, without a server: the clients are built in the lifespan and connect lazily."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = Settings(redis_url="redis://redis:6379/0", redis_password="p@ss/w:rd")
    app = create_app(settings)
    with TestClient(app):
        assert app.state.redis.connection_pool.connection_kwargs["password"] == "p@ss/w:rd"
        connection = app.state.job_queue.connection_for_write()
        try:
            assert (connection.password, connection.virtual_host) == ("p@ss/w:rd", "1")
        finally:
            connection.release()
