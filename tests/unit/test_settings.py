"""Settings: defaults that start with no .env, environment overrides, and refusals."""

from __future__ import annotations

import os
import re

import pytest
from pydantic import AliasChoices, ValidationError

from core import cpus
from core.settings import DEV_JWT_SECRET, SECRET_FIELDS, Settings
from tests.support import ROOT


def _variables_the_settings_read() -> set[str]:
    names = {f"{field.upper()}_FILE" for field in SECRET_FIELDS}
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice).upper() for choice in field.validation_alias.choices)
    return names


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """None of the test process's settings (tests/conftest.py sets some), in any case."""
    read = _variables_the_settings_read()
    for name in list(os.environ):
        if name.upper() in read:
            monkeypatch.delenv(name)


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
        # Each would trust X-Forwarded-* from anyone.
        ("FORWARDED_ALLOW_IPS", "*", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", "0.0.0.0/0", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", "::/0", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", "::0/0", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", " 0.0.0.0/0 ", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", "172.30.250.0/24,*", "FORWARDED_ALLOW_IPS"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1, ::/0", "FORWARDED_ALLOW_IPS"),
        # Names only: a wildcard, an address or a network belongs in FORWARDED_ALLOW_IPS.
        ("FORWARDED_ALLOW_NAMES", "*", "FORWARDED_ALLOW_NAMES"),
        ("FORWARDED_ALLOW_NAMES", "proxy,10.0.0.0/8", "FORWARDED_ALLOW_NAMES"),
        ("FORWARDED_ALLOW_NAMES", "172.30.250.2", "FORWARDED_ALLOW_NAMES"),
        ("FORWARDED_ALLOW_NAMES", "a" * 64, "FORWARDED_ALLOW_NAMES"),
        # Never equal to a browser's Origin header, so CORS would fail with no clue why.
        ("CORS_ALLOW_ORIGINS", "https://app.example.com/", "CORS_ALLOW_ORIGINS"),
        ("CORS_ALLOW_ORIGINS", "app.example.com", "CORS_ALLOW_ORIGINS"),
        ("CORS_ALLOW_ORIGINS", "https://a.example.com,https://b.example.com/app", "'https://b."),
        ("CORS_MAX_AGE", "-1", "cors_max_age"),
    ],
)
def test_unsafe_values_refused(monkeypatch, name, value, named_in_error):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=named_in_error):
        Settings()


@pytest.mark.parametrize("names", ["proxy", "tasks.proxy", "proxy, other-proxy"])
def test_a_proxy_name_is_taken(monkeypatch, names):
    monkeypatch.setenv("FORWARDED_ALLOW_NAMES", names)
    assert Settings().forwarded_allow_names == names


def test_cors_is_off_by_default_and_lists_are_comma_separated(monkeypatch):
    assert Settings().cors_allow_origins == []
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", " https://app.example.com, http://localhost:3000 ")
    monkeypatch.setenv("CORS_ALLOW_HEADERS", "Authorization,Content-Type")
    s = Settings()
    assert s.cors_allow_origins == ["https://app.example.com", "http://localhost:3000"]
    assert s.cors_allow_headers == ["Authorization", "Content-Type"]
    assert s.cors_allow_methods == ["GET", "POST", "PUT", "DELETE"]


@pytest.mark.parametrize("trusted", ["127.0.0.1", "172.30.250.0/24", "10.0.0.0/8,127.0.0.1", "::1"])
def test_a_proxy_address_or_subnet_is_trusted(monkeypatch, trusted):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", trusted)
    assert Settings().forwarded_allow_ips == trusted


def test_port_sets_bind_and_bind_wins(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    assert Settings().bind_address == "0.0.0.0:9123"
    monkeypatch.setenv("BIND", "127.0.0.1:7000")
    assert Settings().bind_address == "127.0.0.1:7000"


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


def test_a_password_file_of_several_lines_is_one_password_a_line_the_urls_carry_the_first(
    monkeypatch, tmp_path
):
    """A rotation's file (deploy/rotate-lib.sh): the current password, then the new one."""
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(_secret_file(tmp_path, "current\nnew\n")))
    settings = Settings()
    assert settings.postgres_passwords == ["current", "new"]
    assert settings.database_url == "postgresql+asyncpg://app:current@localhost:5432/app"
    assert settings.database_url_sync == "postgresql+psycopg://app:current@localhost:5432/app"
    assert settings.libpq_url == "postgresql://app:current@localhost:5432/app"


def test_one_password_is_one_line(monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss w:rd")
    assert Settings().postgres_passwords == ["p@ss w:rd"]


@pytest.mark.parametrize("password", ["current\n\nnew", "\nnew", "current\n"])
def test_a_password_file_with_an_empty_line_is_refused(monkeypatch, password):
    monkeypatch.setenv("POSTGRES_PASSWORD", password)
    with pytest.raises(ValidationError, match="POSTGRES_PASSWORD has an empty line"):
        Settings()


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


# --- Secrets from files (<NAME>_FILE) -------------------------------------------------------------


def _secret_file(tmp_path, content: bytes | str, name: str = "secret"):
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("field", SECRET_FIELDS)
def test_each_secret_can_be_read_from_the_file_its_file_variable_names(
    monkeypatch, tmp_path, field
):
    path = _secret_file(tmp_path, "from-a-file-0123456789\n")
    monkeypatch.setenv(f"{field.upper()}_FILE", str(path))
    assert getattr(Settings(), field).get_secret_value() == "from-a-file-0123456789"


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        ("s3cret", "s3cret"),
        ("s3cret\n", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        # One newline only: anything more may be part of the secret.
        ("s3cret\n\n", "s3cret\n"),
        ("s3cret\r\n\r\n", "s3cret\r\n"),
        (" s3cret \n", " s3cret "),
        ("s3\rcret\n", "s3\rcret"),
    ],
)
def test_a_secret_file_loses_one_trailing_newline_and_nothing_else(
    monkeypatch, tmp_path, content, secret
):
    monkeypatch.setenv("JWT_SECRET_FILE", str(_secret_file(tmp_path, content)))
    assert Settings().jwt_secret.get_secret_value() == secret


def test_file_variables_are_read_in_any_case(monkeypatch, tmp_path):
    monkeypatch.setenv("jwt_secret_file", str(_secret_file(tmp_path, "lower-case-name")))
    assert Settings().jwt_secret.get_secret_value() == "lower-case-name"


def test_an_empty_file_variable_means_unset(monkeypatch):
    monkeypatch.setenv("JWT_SECRET_FILE", "")
    assert Settings().jwt_secret.get_secret_value() == DEV_JWT_SECRET


@pytest.mark.parametrize("field", SECRET_FIELDS)
def test_a_secret_set_both_ways_is_refused_naming_both(monkeypatch, tmp_path, field):
    variable = field.upper()
    monkeypatch.setenv(variable, "hunter2-variable")
    monkeypatch.setenv(f"{variable}_FILE", str(_secret_file(tmp_path, "hunter2-file")))
    with pytest.raises(ValueError, match=f"{variable} and {variable}_FILE are both set") as error:
        Settings()
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize("unreadable", ["missing", "a-directory"])
def test_an_unreadable_secret_file_is_refused_naming_the_variable_and_the_path(
    monkeypatch, tmp_path, unreadable
):
    path = tmp_path / unreadable
    if unreadable == "a-directory":
        path.mkdir()
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(path))
    with pytest.raises(
        ValueError, match=re.escape(f"REDIS_PASSWORD_FILE={path}: cannot read the file")
    ):
        Settings()


def test_a_secret_file_that_is_not_text_is_refused_without_quoting_it(monkeypatch, tmp_path):
    # UnicodeDecodeError's own message would quote the byte it cannot decode.
    path = _secret_file(tmp_path, b"hunter2-\xff\xfe")
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(path))
    with pytest.raises(ValueError, match=r"POSTGRES_PASSWORD_FILE=.*not UTF-8") as error:
        Settings()
    assert "hunter2" not in str(error.value)
    assert "xff" not in str(error.value)


@pytest.mark.parametrize("content", ["", "\n", "\r\n"])
def test_an_empty_secret_file_is_refused_naming_it(monkeypatch, tmp_path, content):
    path = _secret_file(tmp_path, content)
    monkeypatch.setenv("JWT_SECRET_FILE", str(path))
    with pytest.raises(ValueError, match=re.escape(f"JWT_SECRET_FILE={path}: the file is empty")):
        Settings()


def test_every_secret_file_problem_is_reported_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("POSTGRES_APP_PASSWORD_FILE", str(_secret_file(tmp_path, "")))
    monkeypatch.setenv("JWT_SECRET", "hunter2-variable")
    monkeypatch.setenv("JWT_SECRET_FILE", str(_secret_file(tmp_path, "hunter2", "jwt")))
    with pytest.raises(ValueError) as error:
        Settings()
    message = str(error.value)
    for named in ("POSTGRES_PASSWORD_FILE=", "POSTGRES_APP_PASSWORD_FILE=", "JWT_SECRET_FILE"):
        assert named in message
    assert "hunter2" not in message


def test_an_argument_wins_over_a_secret_file(monkeypatch, tmp_path):
    """Code that builds its own Settings (the tests) is not overridden by the environment."""
    monkeypatch.setenv("JWT_SECRET_FILE", str(_secret_file(tmp_path, "from-the-file")))
    assert Settings(jwt_secret="from-the-argument").jwt_secret.get_secret_value() == (
        "from-the-argument"
    )


def test_a_secret_from_a_file_is_not_in_repr(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(_secret_file(tmp_path, "hunter2-db", "db")))
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(_secret_file(tmp_path, "hunter2-redis", "r")))
    monkeypatch.setenv("JWT_SECRET_FILE", str(_secret_file(tmp_path, "hunter2-jwt", "jwt")))
    settings = Settings()
    assert "hunter2" not in repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2-db" in settings.database_url


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
        connection = app.state.job_queue.client.connection_for_write()
        try:
            assert (connection.password, connection.virtual_host) == ("p@ss/w:rd", "1")
        finally:
            connection.release()


# --- Production refuses weak settings -------------------------------------------------------------

STRONG_PRODUCTION = {
    "ENVIRONMENT": "production",
    "JWT_SECRET": "0123456789abcdef" * 4,
    "POSTGRES_PASSWORD": "a-strong-database-password",
    "POSTGRES_APP_PASSWORD": "a-strong-app-role-password",
    "REDIS_PASSWORD": "a-strong-redis-password",
}


@pytest.fixture
def production(monkeypatch):
    for name, value in STRONG_PRODUCTION.items():
        monkeypatch.setenv(name, value)


def _refusal(monkeypatch, **variables: str | None) -> str:
    """The one error raised with these variables changed (None: unset)."""
    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        Settings()
    assert len(error.value.errors()) == 1, "one error, listing every problem"
    return str(error.value)


def test_production_accepts_strong_settings(production):
    assert Settings().environment == "production"


def test_production_accepts_secrets_from_files(production, monkeypatch, tmp_path):
    for field in SECRET_FIELDS:
        variable = field.upper()
        monkeypatch.delenv(variable)
        path = _secret_file(tmp_path, STRONG_PRODUCTION[variable] + "\n", field)
        monkeypatch.setenv(f"{variable}_FILE", str(path))
    assert Settings().jwt_secret.get_secret_value() == STRONG_PRODUCTION["JWT_SECRET"]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"JWT_SECRET": DEV_JWT_SECRET}, "JWT_SECRET is the development default"),
        ({"JWT_SECRET": "x" * 31}, "JWT_SECRET is shorter than 32 bytes"),
        # RFC 7518: at least the hash's length.
        ({"JWT_SECRET": "x" * 63, "JWT_ALGORITHM": "HS512"}, "shorter than 64 bytes"),
        ({"POSTGRES_PASSWORD": "app"}, "POSTGRES_PASSWORD is a development default"),
        ({"POSTGRES_PASSWORD": "app_rw"}, "POSTGRES_PASSWORD is a development default"),
        ({"POSTGRES_APP_PASSWORD": "app"}, "POSTGRES_APP_PASSWORD is a development default"),
        ({"POSTGRES_APP_PASSWORD": "app_rw"}, "POSTGRES_APP_PASSWORD is a development default"),
        ({"REDIS_PASSWORD": "app"}, "REDIS_PASSWORD is a development default"),
        # A rotation's file of two lines names the weak one.
        (
            {"POSTGRES_PASSWORD": "a-strong-database-password\napp_rw"},
            "POSTGRES_PASSWORD's line 2 is a development default",
        ),
        (
            {"POSTGRES_PASSWORD": "app\na-strong-database-password"},
            "POSTGRES_PASSWORD's line 1 is a development default",
        ),
        ({"REDIS_PASSWORD": "app_rw"}, "REDIS_PASSWORD is a development default"),
        (
            {"REDIS_PASSWORD": None, "REDIS_URL": "redis://:pw-in-url@redis:6379/0"},
            "take it out of REDIS_URL",
        ),
        ({"FORWARDED_ALLOW_IPS": "0.0.0.0/0"}, "FORWARDED_ALLOW_IPS='0.0.0.0/0'"),
    ],
)
def test_production_refuses_each_weak_setting_by_name(production, monkeypatch, variables, expected):
    message = _refusal(monkeypatch, **variables)
    assert expected in message
    problems = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(problems) == 1, problems
    if "FORWARDED_ALLOW_IPS" not in expected:
        assert "openssl rand" in problems[0], "says how to fix it"


def test_production_accepts_a_rotations_two_strong_passwords(production, monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "a-strong-database-password\nanother-strong-one")
    assert Settings().postgres_passwords == ["a-strong-database-password", "another-strong-one"]


def test_production_refuses_any_origin_with_credentials_naming_the_settings(
    production, monkeypatch
):
    message = _refusal(monkeypatch, CORS_ALLOW_ORIGINS="*", CORS_ALLOW_CREDENTIALS="true")
    assert "CORS_ALLOW_ORIGINS='*' with CORS_ALLOW_CREDENTIALS=true" in message
    assert "name the front end's origins" in message, "says how to fix it"


def test_any_origin_without_credentials_or_outside_production_is_accepted(production, monkeypatch):
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "*")
    assert Settings().cors_allow_origins == ["*"]
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "true")
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert Settings().cors_allow_credentials


def test_production_counts_the_jwt_secrets_bytes_not_its_characters(production, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "é" * 16)
    assert len(Settings().jwt_secret.get_secret_value().encode()) == 32


def test_production_reports_every_problem_at_once(production, monkeypatch):
    message = _refusal(
        monkeypatch,
        JWT_SECRET="short",
        POSTGRES_PASSWORD="app",
        POSTGRES_APP_PASSWORD="app",
        REDIS_PASSWORD="app_rw",
        FORWARDED_ALLOW_IPS="*",
        CELERY_TASK_TIME_LIMIT="100",
        CELERY_VISIBILITY_TIMEOUT="100",
    )
    for variable in (
        "JWT_SECRET",
        "POSTGRES_PASSWORD",
        "POSTGRES_APP_PASSWORD",
        "REDIS_PASSWORD",
        "FORWARDED_ALLOW_IPS",
        "CELERY_VISIBILITY_TIMEOUT",
    ):
        assert f"- {variable}" in message, variable


def test_a_refusal_never_prints_a_secret(production, monkeypatch):
    message = _refusal(
        monkeypatch,
        JWT_SECRET="hunter2-too-short",
        POSTGRES_PASSWORD="hunter2-postgres",
        REDIS_URL="redis://:hunter2-url@redis:6379/0",
        REDIS_PASSWORD=None,
    )
    assert "hunter2" not in message


# Each process names the secrets it uses: unset ones stop it in production, and only those.
PROCESS_SECRETS = {
    "api": ("postgres_password", "redis_password", "jwt_secret"),
    "worker": ("postgres_password", "redis_password"),
    "migrate": ("postgres_password", "postgres_app_password"),
}


@pytest.mark.parametrize("process", sorted(PROCESS_SECRETS))
def test_production_requires_the_secrets_a_process_uses(production, monkeypatch, process):
    uses = PROCESS_SECRETS[process]
    Settings().require_secrets(*uses)  # all given
    for name in SECRET_FIELDS:
        monkeypatch.delenv(name.upper())
    with pytest.raises(ValueError, match="settings refused") as error:
        Settings().require_secrets(*uses)
    for name in SECRET_FIELDS:
        assert (f"- {name.upper()} is not set" in str(error.value)) == (name in uses), name


def test_a_process_needs_none_of_the_secrets_it_does_not_use(production, monkeypatch):
    """The worker runs without the token key, the migrations without Redis's password."""
    monkeypatch.delenv("JWT_SECRET")
    monkeypatch.delenv("REDIS_PASSWORD")
    Settings().require_secrets(*PROCESS_SECRETS["migrate"])
    monkeypatch.setenv("REDIS_PASSWORD", STRONG_PRODUCTION["REDIS_PASSWORD"])
    Settings().require_secrets(*PROCESS_SECRETS["worker"])


def test_the_entry_points_name_their_secrets():
    """The list above is what the code asks for (a source check: importing them starts apps)."""
    sources = {
        "api": ROOT / "api" / "main.py",
        "worker": ROOT / "worker" / "app.py",
        "migrate": ROOT / "api" / "migrate.py",
    }
    for process, path in sources.items():
        call = "require_secrets(" + ", ".join(f'"{n}"' for n in PROCESS_SECRETS[process]) + ")"
        assert call in path.read_text(), process


def test_development_requires_no_secret():
    Settings().require_secrets(*SECRET_FIELDS)


def test_development_takes_the_defaults_production_refuses():
    settings = Settings()
    assert settings.environment == "development"
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert settings.redis_password is None
