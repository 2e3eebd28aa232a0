"""Every setting of the api, the worker and the migrations, read from environment variables, and
for secrets from the files they name.

The defaults run the kit on a laptop with no `.env`. Production overrides them and is refused
(ENVIRONMENT=production) while any stays weak: one error lists every problem, each naming its
variable and the fix, so an operator fixes them all in one go. This is the only module of the kit
that reads the environment. Names say which process a setting configures: GUNICORN_* the api's
server, CELERY_* the worker; a few keep the names platforms set (PORT, WEB_CONCURRENCY,
FORWARDED_ALLOW_IPS).

Each secret (POSTGRES_PASSWORD, POSTGRES_APP_PASSWORD, REDIS_PASSWORD, JWT_SECRET) is given either
as itself or as <NAME>_FILE, the path of a file holding it: the official postgres image's
convention, and how Compose hands secrets over (/run/secrets/<name>). A secret in a file is not in
the container's environment, which `docker inspect` and any process dump show to whoever can see
them. Secrets stay SecretStr, so no repr, log line or validation error prints one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.cpus import usable_cpus
from core.jwt_keys import JwtKey, parse_keys

DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me"  # noqa: S105 - a development default
DEV_POSTGRES_PASSWORD = "app"  # noqa: S105 - a development default
DEV_POSTGRES_APP_PASSWORD = "app_rw"  # noqa: S105 - a development default
# Development defaults production refuses for any password: the kit's own defaults are public.
DEV_PASSWORDS = frozenset({DEV_POSTGRES_PASSWORD, DEV_POSTGRES_APP_PASSWORD})
# RFC 7518 section 3.2: an HMAC key at least as long as the hash's output (PyJWT warns below it).
JWT_SECRET_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# The fields that may be given as <NAME>_FILE.
SECRET_FIELDS = ("postgres_password", "postgres_app_password", "redis_password", "jwt_secret")
# Secrets of optional features, unset unless used: the same <NAME>_FILE convention.
OPTIONAL_SECRET_FIELDS = ("otel_exporter_otlp_headers", "sentry_dsn")


def _renamed(name: str) -> AliasChoices:
    """GUNICORN_<NAME> first, then the old unprefixed <NAME>."""
    return AliasChoices(f"gunicorn_{name}", name)


def _strip_one_newline(text: str) -> str:
    """`echo secret > file` and editors end a file with a newline that is not part of the secret;
    anything more (spaces, a second newline) might be, so it is kept."""
    for newline in ("\r\n", "\n"):
        if text.endswith(newline):
            return text[: -len(newline)]
    return text


class SecretFilesSource(PydanticBaseSettingsSource):
    """<NAME>_FILE for each of SECRET_FIELDS and OPTIONAL_SECRET_FIELDS: the value is the content
    of the file it names.

    Errors name the variables and the path, never the content. All of them are raised together.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(settings_cls)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every secret at once, so that all problems are reported together.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # As the settings read the environment: names in any case, an empty variable unset.
        environ = {name.upper(): value for name, value in self._environ.items() if value}
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field_name in (*SECRET_FIELDS, *OPTIONAL_SECRET_FIELDS):
            variable = field_name.upper()
            file_variable = f"{variable}_FILE"
            path = environ.get(file_variable)
            if path is None:
                continue
            if variable in environ:
                problems.append(f"{variable} and {file_variable} are both set: unset one of them")
                continue
            try:
                # Bytes, then decoded: text mode would turn a "\r" inside the secret into "\n".
                content = _strip_one_newline(Path(path).read_bytes().decode("utf-8"))
            except OSError as exc:
                problems.append(
                    f"{file_variable}={path}: cannot read the file "
                    f"({exc.strerror or type(exc).__name__})"
                )
                continue
            except UnicodeDecodeError:
                # Its message would quote a byte of the secret.
                problems.append(f"{file_variable}={path}: the file is not UTF-8 text")
                continue
            if not content:
                problems.append(f"{file_variable}={path}: the file is empty")
                continue
            # SecretStr already: pydantic-settings' debug log (PYDANTIC_SETTINGS_DEBUG) prints what
            # each source found.
            values[field_name] = SecretStr(content)
        if problems:
            raise SettingsError("secret files refused:\n" + "\n".join(f"- {p}" for p in problems))
        return values


def _lines(secret: SecretStr) -> list[str]:
    """A password file's lines: one password each (a rotation's file has two)."""
    return secret.get_secret_value().split("\n")


def _is_host_name(name: str) -> bool:
    """A DNS name such as `proxy` or `tasks.proxy`: no wildcard, no address, no network."""
    labels = name.split(".")
    return (
        len(name) <= 253
        and all(len(label) <= 63 for label in labels)
        and all(label and label.replace("-", "").replace("_", "").isalnum() for label in labels)
        and (not labels[-1].isdigit())
    )


# A comma-separated list in the environment ("a,b"), not JSON.
CommaList = Annotated[list[str], NoDecode]


def _is_origin(origin: str) -> bool:
    """scheme://host[:port] and nothing else: what a browser sends in Origin."""
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not parts.path
        and not parts.query
        and not parts.fragment
    )


def _is_wildcard(trusted: str) -> bool:
    """'*', or a network of every address (0.0.0.0/0, ::/0, written any way)."""
    if trusted == "*":
        return True
    try:
        return ipaddress.ip_network(trusted, strict=False).prefixlen == 0
    except ValueError:
        return False


class Settings(BaseSettings):
    # An empty variable (`JWT_SECRET=` copied from .env.example) means "use the default", never
    # an empty secret. hide_input_in_errors: a validation error would otherwise print the values
    # read, the secrets among them, as plain strings.
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        env_ignore_empty=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    environment: Literal["development", "production", "test"] = "development"
    app_name: str = "fastapi-compose-kit"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # The app's own line per request. "problems": 5xx answers and slow requests, at WARNING; the
    # proxy's access log has every request with the X-Request-ID, the key to these lines. "all":
    # where no proxy logs requests (the cost: docs/benchmarks.md, Tuning).
    access_log: Literal["all", "problems"] = "problems"
    slow_request_seconds: float = Field(1.0, gt=0)

    # PostgreSQL: the same variables configure the db container, so each fact is set once.
    postgres_host: str = "localhost"
    postgres_port: int = 5432
    # The role a process connects as: compose gives the api and the worker the app role below.
    postgres_user: str = "app"
    # One password a line: during make rotate-secret NAME=postgres_app_password the api and the
    # worker get the current and the new one, and try each (core/db_passwords.py).
    postgres_password: SecretStr = SecretStr(DEV_POSTGRES_PASSWORD)
    postgres_db: str = "app"
    # The least-privileged role the api and the worker connect as. Only the migrate process uses
    # these two fields, to create or alter that role; the api and the worker connect with
    # POSTGRES_USER and POSTGRES_PASSWORD as any process does (compose sets them to this role).
    postgres_app_user: str = "app_rw"
    postgres_app_password: SecretStr = SecretStr(DEV_POSTGRES_APP_PASSWORD)
    # Overflow connections are closed as soon as they are returned: under steady load above the
    # pool size each request would open (and authenticate) a new one. So the budget is all pool.
    db_pool_size: int = Field(10, ge=1, le=100)
    db_max_overflow: int = Field(0, ge=0, le=100)
    db_pool_timeout: float = Field(10.0, gt=0)
    db_statement_timeout_ms: int = Field(15_000, ge=0)
    # The migrate step (api/migrate.py). A DDL statement waiting for its table's lock queues every
    # query on that table behind it: it gives up after MIGRATION_LOCK_TIMEOUT_MS, well inside a
    # request's budget, and the whole upgrade is tried again up to MIGRATION_LOCK_RETRIES times.
    migration_lock_timeout_ms: int = Field(2_000, ge=1)
    migration_lock_retries: int = Field(5, ge=0)
    # Each migration statement's limit: a rewrite of a large table fails the deploy instead of
    # blocking the table for minutes (api/migration_timeouts.py lifts it for one, on purpose).
    migration_statement_timeout_ms: int = Field(5_000, ge=1)
    # per-request: a connection opened for each request and closed after it, no pool. For AWS
    # Lambda, where an execution environment is frozen between invocations and a pooled
    # connection outlives the server's side of it (or use RDS Proxy, and keep "pooled").
    db_pool_mode: Literal["pooled", "per-request"] = "pooled"
    # /ready fails ("archive") once WAL archiving has failed for this long since its last success
    # (pg_stat_archiver): the archiver retries every minute, so a brief failure does not count.
    # 0: /ready does not look at archiving (a database the kit does not archive).
    archive_stall_seconds: int = Field(300, ge=0)

    # Redis: cache and Celery broker (separate logical databases). REDIS_URL has no password:
    # REDIS_PASSWORD is put into it (redis_connection_url). A password in REDIS_URL still works,
    # with REDIS_PASSWORD unset, hence SecretStr.
    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    redis_password: SecretStr | None = None
    celery_broker_url: SecretStr | None = None
    redis_socket_timeout: float = Field(0.5, gt=0)
    cache_ttl_seconds: int = Field(300, ge=1)
    cache_retry_after_seconds: float = Field(5.0, ge=0)

    # Auth: HS256 bearer tokens for writes.
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "fastapi-compose-kit"
    jwt_audience: str = "fastapi-compose-kit-api"
    jwt_ttl_seconds: int = Field(3600, ge=60)
    # After `make rotate-secret NAME=jwt_secret`, the previous key verifies for JWT_TTL_SECONDS
    # plus this: the time the old api containers may still sign with it while the rollout
    # replaces them (core/jwt_keys.py, docs/secrets.md).
    jwt_rollout_seconds: int = Field(300, ge=0)

    # Requests.
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # CORS, for a browser front end on another origin. No origins: no CORSMiddleware at all (no
    # Access-Control-* headers, nothing run per request). "*" with credentials: refused in
    # production, since every site a user visits could then call the API as that user.
    cors_allow_origins: CommaList = []
    cors_allow_methods: CommaList = ["GET", "POST", "PUT", "DELETE"]
    cors_allow_headers: CommaList = ["Authorization", "Content-Type", "X-Request-ID"]
    cors_expose_headers: CommaList = ["Location", "Retry-After", "X-Request-ID"]
    cors_allow_credentials: bool = False
    cors_max_age: int = Field(600, ge=0)

    # gunicorn (api/gunicorn_conf.py). None means "work it out from the usable CPUs".
    web_concurrency: int | None = Field(None, ge=1)
    bind: str | None = None
    port: int = Field(8000, ge=1, le=65535)
    # GUNICORN_*: the names without the prefix are still read, until the next release (CHANGELOG).
    gunicorn_timeout: int = Field(30, ge=1, validation_alias=_renamed("timeout"))
    gunicorn_graceful_timeout: int = Field(25, ge=1, validation_alias=_renamed("graceful_timeout"))
    # Longer than Traefik's idle timeout for api connections (60 s, compose.yaml), so the proxy,
    # never the api, closes an idle connection it may be about to reuse.
    gunicorn_keep_alive: int = Field(65, ge=1, validation_alias=_renamed("keep_alive"))
    # Off: a recycled worker resets the keep-alive connections a request is already on its way
    # over (docs/resilience.md has the figures). A leak is bounded by the container's memory limit.
    gunicorn_max_requests: int = Field(0, ge=0, validation_alias=_renamed("max_requests"))
    gunicorn_max_requests_jitter: int = Field(
        1_000, ge=0, validation_alias=_renamed("max_requests_jitter")
    )
    gunicorn_preload_app: bool = Field(True, validation_alias=_renamed("preload_app"))
    # Seconds a stopping worker keeps answering, with `Connection: close`, before it closes its
    # connections (api/shutdown.py). Part of GUNICORN_GRACEFUL_TIMEOUT, so kept below it.
    gunicorn_drain_seconds: float = Field(5.0, ge=0)
    # Empty: no address is believed, not even loopback (a process inside the container).
    forwarded_allow_ips: str = ""
    # The proxy by DNS name (api/forwarded.py): compose sets `proxy`, Swarm `tasks.proxy`.
    forwarded_allow_names: str = ""
    # Set in the api image: gunicorn's workers write their metrics there (api/metrics.py).
    prometheus_multiproc_dir: str | None = None
    # While this file exists /health/routable answers 503, so Traefik stops routing here before
    # a deploy stops the container (deploy/remote.sh creates it).
    drain_file: str = "/tmp/api.drain"  # noqa: S108 - container-private tmpfs

    # Celery (core/celery_config.py).
    celery_concurrency: int | None = Field(None, ge=1)
    celery_task_time_limit: int = Field(300, ge=1)
    celery_visibility_timeout: int | None = Field(None, ge=1)
    # Job leases (worker/lease.py): a running job's process renews its row's heartbeat_at every
    # JOB_HEARTBEAT_SECONDS; a job whose heartbeat is older than JOB_LEASE_SECONDS is abandoned, and
    # a worker's reaper, every JOB_REAP_INTERVAL_SECONDS, puts it back on the queue. So a killed
    # worker's jobs run again within about lease + interval, not after CELERY_VISIBILITY_TIMEOUT.
    job_heartbeat_seconds: float = Field(5.0, gt=0)
    job_lease_seconds: float = Field(30.0, gt=0)
    job_reap_interval_seconds: float = Field(10.0, gt=0)
    # Runs of one job (its first and every run after a lost worker) before it is marked failed:
    # a job that kills its worker every time must not be handed out forever.
    job_max_attempts: int = Field(3, ge=1)

    # Schedules (worker/schedules.py, docs/schedules.md). purge-finished-jobs runs every
    # PURGE_INTERVAL_SECONDS and deletes finished jobs (and job count snapshots) older than
    # JOB_RETENTION_DAYS; snapshot-job-counts stores the jobs' counts by state every
    # JOB_SNAPSHOT_INTERVAL_SECONDS; purge-schedule-runs deletes claims older than
    # SCHEDULE_RUN_RETENTION_DAYS (each schedule's newest is kept).
    job_retention_days: float = Field(30.0, gt=0)
    purge_interval_seconds: int = Field(3600, ge=1)
    job_snapshot_interval_seconds: int = Field(60, ge=1)
    schedule_run_retention_days: float = Field(30.0, gt=0)

    # Metrics (compose profile `observability`). The worker's main process serves its tasks'
    # metrics on WORKER_METRICS_PORT (0: off); the job exporter (worker/queue_exporter.py) serves
    # the queue's depth, the oldest queued job's age and the volumes' free space on
    # JOB_EXPORTER_PORT, looking at each volume mounted under VOLUMES_DIR. It also serves the
    # backup service's metrics, which that service (no HTTP server in its image) writes to
    # BACKUP_METRICS_FILE in a volume they share.
    worker_metrics_port: int = Field(9808, ge=0, le=65535)
    job_exporter_port: int = Field(9809, ge=1, le=65535)
    volumes_dir: str = "/volumes"
    backup_metrics_file: str = "/backup-metrics/backup.prom"

    # Traces (core/tracing.py, docs/observability.md): OpenTelemetry over OTLP/HTTP (protobuf) to
    # this base URL, `/v1/traces` added; the SDK's own names, read here and handed to it. Unset: no
    # provider, no exporter, no span in the api or the worker (and Traefik's tracing stays off).
    otel_exporter_otlp_endpoint: str | None = None
    # Sent with each export, as the SDK writes them: `name=value,name2=value2` (a SaaS API key).
    otel_exporter_otlp_headers: SecretStr | None = None
    # The share of new traces kept (parent-based: a request continues its parent's choice).
    tracing_sample_ratio: float = Field(0.02, ge=0, le=1)
    # Continue a traceparent the request arrived with. Compose sets it for the api, whose only peer
    # is Traefik; where the api faces clients itself, a client could pick trace ids and sampling.
    tracing_trust_traceparent: bool = False
    # Error reports (core/error_reports.py) to a Sentry-compatible DSN; unset: none made.
    sentry_dsn: SecretStr | None = None
    # The deploy's release name, on every span and error report (compose: APP_TAG).
    release: str = "dev"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments (tests, `Settings(jwt_secret=...)`) still win; a secret set both as a variable
        # and as a file is refused by SecretFilesSource, so its place against env is moot.
        return (
            init_settings,
            SecretFilesSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @field_validator(
        "cors_allow_origins",
        "cors_allow_methods",
        "cors_allow_headers",
        "cors_expose_headers",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_settings(self) -> Settings:
        problems = self._inconsistencies()
        if self.environment == "production":
            problems += self._weaknesses_in_production()
        if problems:
            raise ValueError("settings refused:\n" + "\n".join(f"- {p}" for p in problems))
        return self

    def _inconsistencies(self) -> list[str]:
        """Refused in every environment."""
        problems = [
            f"FORWARDED_ALLOW_IPS={trusted!r} trusts X-Forwarded-* from anyone; "
            "set the proxy's address or subnet"
            for trusted in (t.strip() for t in self.forwarded_allow_ips.split(","))
            if _is_wildcard(trusted)
        ]
        problems += [
            f"FORWARDED_ALLOW_NAMES={name!r} is not a host name; "
            "addresses and networks go in FORWARDED_ALLOW_IPS"
            for name in (n.strip() for n in self.forwarded_allow_names.split(","))
            if name and not _is_host_name(name)
        ]
        if self.redis_password is not None and self._redis_url_has_password():
            problems.append(
                "REDIS_URL carries a password and REDIS_PASSWORD is set too: "
                "take the password out of REDIS_URL"
            )
        try:
            parse_keys(self.jwt_secret.get_secret_value())
        except ValueError as exc:
            problems.append(f"JWT_SECRET: {exc} (core/jwt_keys.py)")
        if "" in self.postgres_passwords:
            problems.append("POSTGRES_PASSWORD has an empty line: write one password a line")
        if self.gunicorn_drain_seconds >= self.gunicorn_graceful_timeout:
            problems.append(
                "GUNICORN_DRAIN_SECONDS must be below GUNICORN_GRACEFUL_TIMEOUT, "
                "or in-flight requests are killed before they finish"
            )
        if self.celery_redelivery_timeout <= self.celery_task_time_limit:
            problems.append(
                "CELERY_VISIBILITY_TIMEOUT must exceed CELERY_TASK_TIME_LIMIT, "
                "or running jobs are delivered twice"
            )
        problems += [
            f"CORS_ALLOW_ORIGINS has {origin!r}, not an origin: write scheme://host[:port] with "
            "no path or trailing slash, as browsers send it in Origin"
            for origin in self.cors_allow_origins
            if origin != "*" and not _is_origin(origin)
        ]
        endpoint = urlsplit(self.otel_exporter_otlp_endpoint or "http://unset")
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
            problems.append(
                f"OTEL_EXPORTER_OTLP_ENDPOINT={self.otel_exporter_otlp_endpoint!r} is not a URL: "
                "write http(s)://host:port, the collector's OTLP/HTTP address"
            )
        if self.otel_exporter_otlp_headers is not None and self.otlp_headers is None:
            problems.append(
                "OTEL_EXPORTER_OTLP_HEADERS is not name=value[,name=value]: write it as the "
                "OpenTelemetry SDK does (values URL-encoded)"
            )
        if self.job_lease_seconds <= 2 * self.job_heartbeat_seconds:
            problems.append(
                "JOB_LEASE_SECONDS must exceed twice JOB_HEARTBEAT_SECONDS "
                f"({self.job_lease_seconds:g} <= 2 x {self.job_heartbeat_seconds:g}), or a "
                "heartbeat that is merely late gets a running job taken over by another worker"
            )
        return problems

    def _weaknesses_in_production(self) -> list[str]:
        """Weak values given to this process: fine on a laptop, refused in production. A secret
        left unset is this module's business only where the process uses it: each entry point
        names its own (require_secrets), so the worker needs no token key and the migrations no
        Redis password. Each message says how to fix it."""
        given = self.model_fields_set
        problems: list[str] = []
        if "jwt_secret" in given:
            keys = self._jwt_keys_or_none() or []
            min_bytes = JWT_SECRET_MIN_BYTES[self.jwt_algorithm]
            # A keyring (make rotate-secret) names which of its keys is weak; one key is JWT_SECRET.
            for number, key in enumerate(keys, start=1):
                name = "JWT_SECRET" if len(keys) == 1 else f"JWT_SECRET's key {number}"
                if key.secret == DEV_JWT_SECRET:
                    problems.append(
                        f"{name} is the development default: set JWT_SECRET_FILE to a file "
                        "holding a new one (openssl rand -hex 32)"
                    )
                elif len(key.secret.encode()) < min_bytes:
                    problems.append(
                        f"{name} is shorter than {min_bytes} bytes, the least "
                        f"{self.jwt_algorithm} needs: set JWT_SECRET_FILE to a file holding a new "
                        "one (openssl rand -hex 32)"
                    )
        if self.redis_password is None and self._redis_url_has_password():
            # REDIS_URL cannot be a file, REDIS_PASSWORD can.
            problems.append(
                "REDIS_URL carries a password: take it out of REDIS_URL and set "
                "REDIS_PASSWORD_FILE to a file holding one (openssl rand -hex 24)"
            )
        if "*" in self.cors_allow_origins and self.cors_allow_credentials:
            problems.append(
                "CORS_ALLOW_ORIGINS='*' with CORS_ALLOW_CREDENTIALS=true lets any site send "
                "requests with a user's credentials: name the front end's origins"
            )
        passwords = {
            "POSTGRES_PASSWORD": self.postgres_password,
            "POSTGRES_APP_PASSWORD": self.postgres_app_password,
            "REDIS_PASSWORD": self.redis_password,
        }
        for variable, password in passwords.items():
            if variable.lower() not in given or password is None:
                continue
            lines = _lines(password)
            # A file of several lines (a rotation's) names which of its lines is weak.
            for number, line in enumerate(lines, start=1):
                name = variable if len(lines) == 1 else f"{variable}'s line {number}"
                if line in DEV_PASSWORDS:
                    problems.append(
                        f"{name} is a development default ('app' or 'app_rw'): set "
                        f"{variable}_FILE to a file holding a new one (openssl rand -hex 24)"
                    )
        return problems

    def require_secrets(self, *fields: str) -> None:
        """The secrets a process uses, named by its entry point (api, worker, migrations): in
        production none of them may be left to its development default. One error names every
        missing one."""
        if self.environment != "production":
            return
        missing = [field.upper() for field in fields if field not in self.model_fields_set]
        if missing:
            raise ValueError(
                "settings refused:\n"
                + "\n".join(
                    f"- {name} is not set: production has no default for it; set {name}_FILE "
                    "to a file holding one (make secrets)"
                    for name in missing
                )
            )

    def _jwt_keys_or_none(self) -> list[JwtKey] | None:
        try:
            return parse_keys(self.jwt_secret.get_secret_value())
        except ValueError:
            return None

    @cached_property
    def jwt_keys(self) -> list[JwtKey]:
        """JWT_SECRET's keys, the signing one first (refused at start if it has none)."""
        return parse_keys(self.jwt_secret.get_secret_value())

    @property
    def jwt_retired_key_seconds(self) -> int:
        """How long a key retired by a rotation keeps verifying: the longest token lifetime, and
        the rollout during which the old containers still sign with it."""
        return self.jwt_ttl_seconds + self.jwt_rollout_seconds

    def _redis_url_has_password(self) -> bool:
        """REDIS_URL as it was before REDIS_PASSWORD: with the password in it."""
        return bool(urlsplit(self.redis_url.get_secret_value()).password)

    @property
    def postgres_passwords(self) -> list[str]:
        """POSTGRES_PASSWORD's lines: the one to connect with first, then the others to try if
        PostgreSQL refuses it (core/db_passwords.py)."""
        return _lines(self.postgres_password)

    def _postgres_url(self, driver: str | None) -> str:
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        user = quote(self.postgres_user, safe="")
        password = quote(self.postgres_passwords[0], safe="")
        return (
            f"{scheme}://{user}:{password}@{self.postgres_host}:{self.postgres_port}"
            f"/{self.postgres_db}"
        )

    @property
    def database_url(self) -> str:
        """asyncpg, for the api."""
        return self._postgres_url("asyncpg")

    @property
    def database_url_sync(self) -> str:
        """psycopg, for Alembic and the Celery worker, whose code is synchronous."""
        return self._postgres_url("psycopg")

    @property
    def libpq_url(self) -> str:
        """The same server for psycopg itself, without SQLAlchemy's driver marker."""
        return self._postgres_url(None)

    @property
    def redis_connection_url(self) -> str:
        """REDIS_URL with REDIS_PASSWORD in it, URL-quoted: what the cache connects to."""
        url = self.redis_url.get_secret_value()
        if self.redis_password is None:
            return url
        parts = urlsplit(url)
        # A user name (Redis ACLs) is kept; a password in REDIS_URL as well was refused.
        user, _, host = parts.netloc.rpartition("@")
        password = quote(self.redis_password.get_secret_value(), safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))

    @property
    def broker_url(self) -> str:
        if self.celery_broker_url is not None:
            return self.celery_broker_url.get_secret_value()
        # Same server as the cache, next logical database: FLUSHDB on the cache keeps the queue.
        url = self.redis_connection_url
        parts = urlsplit(url)
        database = parts.path.removeprefix("/")
        if not database.isdigit():
            return url
        return urlunsplit(parts._replace(path=f"/{int(database) + 1}"))

    @property
    def otlp_headers(self) -> dict[str, str] | None:
        """OTEL_EXPORTER_OTLP_HEADERS as a dict ({} when unset), None when malformed."""
        if self.otel_exporter_otlp_headers is None:
            return {}
        headers: dict[str, str] = {}
        for item in self.otel_exporter_otlp_headers.get_secret_value().split(","):
            name, equals, value = item.partition("=")
            if not equals or not name.strip():
                return None
            headers[unquote(name.strip())] = unquote(value.strip())
        return headers

    @property
    def gunicorn_workers(self) -> int:
        return self.web_concurrency or usable_cpus()

    @property
    def celery_processes(self) -> int:
        return self.celery_concurrency or usable_cpus()

    @property
    def celery_soft_time_limit(self) -> int:
        """The task is told first, so it can record the failure before the hard kill."""
        return max(1, self.celery_task_time_limit - max(1, self.celery_task_time_limit // 10))

    @property
    def celery_redelivery_timeout(self) -> int:
        """Redis's visibility timeout: when an unacknowledged job goes to another worker."""
        return self.celery_visibility_timeout or self.celery_task_time_limit * 2

    @property
    def bind_address(self) -> str:
        """BIND wins; else PORT, which platforms such as Heroku or Cloud Run set."""
        return self.bind or f"0.0.0.0:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
