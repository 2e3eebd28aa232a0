"""The compose files' promises, checked without starting anything."""

from __future__ import annotations

import re
import subprocess

import pytest
from pydantic import AliasChoices

from tests.schemas import schema
from tests.support import ROOT
from tests.support.compose_config import (
    PROD,
    PROD_SECRETS,
    SECRETS_BY_SERVICE,
    clean_env,
    compose_config,
    run_config,
)

SECRET_VARIABLES = {"POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET"}
LONG_RUNNING = {"proxy", "api", "worker", "scheduler", "db", "redis", "backup"}
ONE_SHOT = {"migrate", "proxy-certs"}


@pytest.fixture(scope="module")
def dev():
    return compose_config()


@pytest.fixture(scope="module")
def prod():
    return compose_config(*PROD, **PROD_SECRETS)


@pytest.mark.parametrize("files", [("compose.yaml",), PROD, ("compose.yaml", "compose.dev.yaml")])
def test_files_match_the_compose_schema(files):
    config = compose_config(*files, **PROD_SECRETS)
    assert [e.message for e in schema("compose-spec.json").iter_errors(config)] == []


def test_production_secrets_are_files_given_only_where_used(prod):
    for name, service in prod["services"].items():
        given = {secret["source"] for secret in service.get("secrets", [])}
        assert given == SECRETS_BY_SERVICE.get(name, set()), name
        leaked = SECRET_VARIABLES & set(service.get("environment") or {})
        assert not leaked, f"{name} has secrets in its environment: {leaked}"
    for name, secret in prod["secrets"].items():
        assert secret["file"] == str(ROOT / "secrets" / name)


@pytest.mark.parametrize("missing", sorted(PROD_SECRETS))
def test_production_refuses_each_missing_setting_by_name(missing):
    env = {k: v for k, v in PROD_SECRETS.items() if k != missing}
    proc = run_config(*PROD, env=clean_env(**env))
    assert proc.returncode != 0
    assert missing in proc.stderr


def test_development_needs_no_env_and_has_no_secret_requirement(dev):
    assert dev["services"]["api"]["environment"]["POSTGRES_HOST"] == "db"


def test_every_long_running_service_has_healthcheck_restart_and_nofile(dev):
    for name in LONG_RUNNING:
        service = dev["services"][name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        assert service["ulimits"]["nofile"]["hard"] == 65535, name


def test_nofile_comes_from_the_environment():
    config = compose_config(NOFILE_LIMIT="20000")
    assert config["services"]["api"]["ulimits"]["nofile"] == {"soft": 20000, "hard": 20000}


def test_start_order(dev):
    api_deps = dev["services"]["api"]["depends_on"]
    assert api_deps["migrate"]["condition"] == "service_completed_successfully"
    assert api_deps["redis"]["condition"] == "service_healthy"
    assert dev["services"]["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert dev["services"]["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert dev["services"]["migrate"]["restart"] == "no"


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert match, value
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def test_stop_grace_outlasts_graceful_shutdowns(dev):
    from core.settings import Settings

    # The shipped defaults, not Settings(): the test process's environment sets a 20 s time limit
    # for the test stack (tests/conftest.py), against which any grace period would pass.
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["celery_task_time_limit"] == 300
    api_grace = _seconds(dev["services"]["api"]["stop_grace_period"])
    worker_grace = _seconds(dev["services"]["worker"]["stop_grace_period"])
    assert api_grace > defaults["gunicorn_graceful_timeout"]
    assert worker_grace > defaults["celery_task_time_limit"]


def test_only_the_proxy_publishes_and_api_scales(dev, prod):
    for config in (dev, prod):
        published = {n for n, s in config["services"].items() if s.get("ports")}
        assert published == {"proxy"}
        assert not any("container_name" in s for s in config["services"].values())


def test_db_and_redis_are_on_an_internal_network_without_the_proxy(dev):
    assert dev["networks"]["backend"]["internal"] is True
    for name in ("db", "redis"):
        assert set(dev["services"][name]["networks"]) == {"backend"}
    assert "backend" not in dev["services"]["proxy"]["networks"]
    # The off-host copy's route out is the backup service's alone.
    on_backup_out = {n for n, s in dev["services"].items() if "backup-out" in s.get("networks", {})}
    assert on_backup_out == {"backup"}


def test_wal_is_archived_by_pgbackrest_within_archive_timeout(dev):
    command = dev["services"]["db"]["command"]
    assert "archive_mode=on" in command
    assert "archive_command=pgbackrest archive-push %p" in command
    assert "archive_timeout=60" in command
    shorter = compose_config(ARCHIVE_TIMEOUT="5")["services"]["db"]["command"]
    assert shorter[-1] == "archive_timeout=5"
    # The db image keeps one tag across releases: a deploy restarts the database only if it
    # changed.
    images = {dev["services"][name]["image"] for name in ("db", "backup")}
    assert images == {"fastapi-kit-db:current"}
    volumes = {v["target"]: v for v in dev["services"]["backup"]["volumes"]}
    assert volumes["/var/lib/pgbackrest"]["source"] == "pgbackrest"
    assert volumes["/var/lib/postgresql/data"]["read_only"] is True


def test_named_volumes_for_state(dev):
    assert dev["services"]["db"]["volumes"][0]["type"] == "volume"
    assert dev["services"]["redis"]["volumes"][0]["type"] == "volume"
    letsencrypt = [v for v in dev["services"]["proxy"]["volumes"] if v["target"] == "/letsencrypt"]
    assert letsencrypt[0]["type"] == "volume", "acme.json must outlive the container"


def test_production_hardening(prod):
    for name, service in prod["services"].items():
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["cap_drop"] == ["ALL"], name
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"], name
        assert not any(
            v["type"] == "bind" and v["source"].startswith(str(ROOT / "api"))
            for v in service.get("volumes", [])
        ), name
        limits = service["deploy"]["resources"]["limits"]
        assert limits["pids"] > 0, f"{name}: no pids limit (a fork bomb takes the host)"
        if name not in ONE_SHOT:
            assert limits["cpus"] and limits["memory"], name
    # Root only where a documented need is (compose.yaml): the socket proxy opens the root-owned
    # Docker socket, proxy-certs chowns the certificate volume once; the entrypoints of db and
    # redis start as root and drop to their users after taking their data directories.
    # The kit's own images run as the Dockerfile's user.
    assert "\nUSER 10001:10001\n" in (ROOT / "Dockerfile").read_text()
    as_root = {
        n
        for n, s in prod["services"].items()
        if s.get("user", "build" not in s and "root") in ("root", "0")
    }
    # The db image is the kit's own build now (db/Dockerfile), but its entrypoint, the official
    # one, still starts as root and drops to postgres: no USER there, none here.
    assert as_root | {"db"} == {"socket-proxy", "proxy-certs", "db", "redis"}
    assert "user" not in prod["services"]["db"]
    assert prod["services"]["backup"]["user"] == "postgres"
    assert "cap_add" not in prod["services"]["proxy"], "the proxy binds unprivileged ports"
    labels = prod["services"]["api"]["labels"]
    assert labels["traefik.http.routers.api-failover.tls.certresolver"] == "letsencrypt"
    rule = labels["traefik.http.routers.api-failover.rule"]
    assert rule.startswith("Host(`api.example.com`) && !PathRegexp(")
    for private in ("metrics", "whoami", "openapi", "docs"):
        assert private in rule
    # The fallback's router matches exactly what the api's does: a private path is a 404 whether
    # the api is up or down, never the fallback's 503.
    fallback = prod["services"]["unavailable"]["labels"]
    assert fallback["traefik.http.routers.api-unavailable.rule"] == rule
    assert fallback["traefik.http.routers.api-unavailable.priority"] == "1"
    proxy_ports = {(p["published"], p["target"]) for p in prod["services"]["proxy"]["ports"]}
    assert proxy_ports == {("80", 8000), ("443", 8443)}
    assert all(p.get("host_ip") in (None, "") for p in prod["services"]["proxy"]["ports"])


def test_env_example_lists_every_variable_the_kit_reads():
    from core.settings import SECRET_FIELDS, Settings

    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    compose_vars = set()
    for name in ("compose.yaml", "compose.prod.yaml"):
        code = re.sub(r"(?m)^\s*#.*$", "", (ROOT / name).read_text())
        compose_vars |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", code))
    compose_vars.discard("COMPOSE_PROJECT_NAME")
    settings_vars = {
        str(
            field.validation_alias.choices[0]
            if isinstance(field.validation_alias, AliasChoices)
            else name
        ).upper()
        for name, field in Settings.model_fields.items()
    }
    secrets = {field.upper() for field in SECRET_FIELDS}
    settings_vars |= {f"{secret}_FILE" for secret in secrets}
    assert compose_vars - documented == set()
    assert settings_vars - documented == set()
    for line in text.splitlines():
        if re.match(rf"^({'|'.join(sorted(secrets))})=.+", line):
            pytest.fail(f"a secret with a usable value in .env.example: {line}")


def test_dockerfile_is_hadolint_clean():
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    proc = subprocess.run(
        [str(hadolint) if hadolint.exists() else "hadolint", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not re.search(r"^#\s*syntax=", (ROOT / "Dockerfile").read_text(), flags=re.M)


def test_shell_scripts_are_shellcheck_clean():
    scripts = [p for p in ROOT.rglob("*.sh") if ".venv" not in p.parts] + [ROOT / ".ci" / "run"]
    scripts = [str(p) for p in scripts if p.exists()]
    if not scripts:
        pytest.skip("no shell scripts")
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_the_acme_test_overlay_adds_the_ca_without_changing_the_kit():
    """tests/compose.acme.yaml (tests/e2e/full/test_acme.py): Pebble and challtestsrv on the edge
    network with loopback ports only; the proxy gets the test CA's trust and nothing else."""
    files = (*PROD, "tests/compose.acme.yaml")
    env = {**PROD_SECRETS, "KIT_ACME_DIR": "/srv/acme-test", "ACME_CERTIFICATES_DURATION": "1"}
    config = compose_config(*files, **env)
    assert [e.message for e in schema("compose-spec.json").iter_errors(config)] == []
    prod = compose_config(*PROD, **PROD_SECRETS, ACME_CERTIFICATES_DURATION="1")
    for name in ("pebble", "challtestsrv"):
        service = config["services"][name]
        assert set(service["networks"]) == {"edge"}, name
        assert {p["host_ip"] for p in service["ports"]} == {"127.0.0.1"}, name
    proxy, kit_proxy = config["services"]["proxy"], prod["services"]["proxy"]
    assert proxy["command"] == kit_proxy["command"]
    assert "--certificatesResolvers.letsencrypt.acme.certificatesDuration=1" in proxy["command"]
    added = {k: v for k, v in proxy["environment"].items() if k not in kit_proxy["environment"]}
    assert added == {"LEGO_CA_CERTIFICATES": "/pebble-certs/pebble.minica.pem"}
    assert proxy["image"] == kit_proxy["image"]
    assert set(config["services"]) - set(prod["services"]) == {"pebble", "challtestsrv"}


@pytest.mark.parametrize(
    ("resolver", "challenge"),
    [("letsencrypt", "httpChallenge.entryPoint=web"), ("letsencrypt-tls", "tlsChallenge=true")],
)
def test_each_acme_resolver_is_one_account_with_its_own_challenge(resolver, challenge):
    """ACME_RESOLVER picks the api router's resolver; both share the account, the storage (the
    certificate a switch keeps), the CA and the renewal plan, and differ in the challenge only."""
    prod = compose_config(*PROD, **PROD_SECRETS, ACME_RESOLVER=resolver)
    labels = prod["services"]["api"]["labels"]
    assert labels["traefik.http.routers.api-failover.tls.certresolver"] == resolver
    flags = prod["services"]["proxy"]["command"]
    prefix = f"--certificatesResolvers.{resolver}.acme."
    own = sorted(flag.removeprefix(prefix) for flag in flags if flag.startswith(prefix))
    shared = [
        "caServer=https://acme-v02.api.letsencrypt.org/directory",
        "certificatesDuration=2160",
    ]
    assert own == sorted(
        [*shared, challenge, "email=ops@example.com", "storage=/letsencrypt/acme.json"]
    )
    resolvers = {f.split(".")[1] for f in flags if f.startswith("--certificatesResolvers.")}
    assert resolvers == {"letsencrypt", "letsencrypt-tls"}
