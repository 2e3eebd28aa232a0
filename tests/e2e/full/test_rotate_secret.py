"""make rotate-secret on a production stack (compose.yaml + compose.prod.yaml, secret files), each
rotatable secret in turn under steady load through the proxy: reads, writes with a bearer token
and jobs, with zero failed requests (docs/secrets.md has the procedure and the figures printed
here). Then what must hold after each: tokens signed before still verify and new ones name the
new key; the old PostgreSQL and Redis passwords are refused; and a restart of everything comes up
on the new secret files alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from api.auth import WRITE_SCOPE, issue_token
from core.jwt_keys import JwtKey, parse_keys
from core.settings import Settings
from tests.support import stack as stack_module
from tests.support.compose_config import write_secret_files
from tests.support.jobs import poll_job
from tests.support.load import LoadResult, cycle, get, post, steady_load
from tests.support.stack import Stack, wait_until

# Overridable, so a second copy of this test can run beside another on one engine.
HTTPS_PORT = int(os.environ.get("KIT_ROTATE_TEST_HTTPS_PORT", "45443"))
PROJECT = os.environ.get("KIT_ROTATE_TEST_PROJECT", "kit-rotate")
BASE = f"https://127.0.0.1:{HTTPS_PORT}"
HOST = {"Host": "api.localhost"}
# A job of a fraction of a second of the worker's CPU, sent during each rotation.
JOB = {"cost": 200_000, "seed": "rotate"}


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Iterator[tuple[Stack, Path, dict[str, str]]]:
    """The production overlay with two api replicas, as a server runs it; its secrets directory
    and the values first written there."""
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )
    secrets = tmp_path_factory.mktemp("rotate") / "secrets"
    values = write_secret_files(secrets)
    prod = Stack(
        project=PROJECT,
        files=("compose.yaml", "compose.prod.yaml"),
        with_proxy=True,
        env={
            "API_DOMAIN": "api.localhost",
            "ACME_EMAIL": "ops@example.com",
            # Nothing leaves this machine: the ACME directory is a closed loopback port.
            "ACME_CA_SERVER": "https://127.0.0.1:9/directory",
            # The clients name no host in TLS (https://127.0.0.1 with a Host header) and no
            # certificate exists for api.localhost here (test_security.py proves strict SNI).
            "PROXY_SNI_STRICT": "false",
            "SECRETS_DIR": str(secrets),
            "HTTP_PORT": str(HTTPS_PORT - 363),
            "HTTPS_PORT": str(HTTPS_PORT),
            "API_REPLICAS": "2",
            # The test's load comes from one address: Traefik's per-client limit must not count.
            "RATE_LIMIT_AVERAGE": "5000",
            "RATE_LIMIT_BURST": "10000",
        },
    )
    try:
        prod.up()
        wait_until(lambda: _client().get("/ready").status_code == 200, within=90)
        yield prod, secrets, values
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            prod.down()


def _client() -> httpx.Client:
    return httpx.Client(base_url=BASE, headers=HOST, verify=False, timeout=10)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _legacy_token(secret: str) -> str:
    """A token as releases before key ids issued them: no kid header."""
    settings = Settings(jwt_secret=secret)
    claims = {
        "sub": "legacy",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": int(time.time()) + 3600,
        "scope": WRITE_SCOPE,
    }
    return jwt.encode(claims, secret, settings.jwt_algorithm)


def _writes(token: str) -> int:
    with _client() as client:
        return client.post("/items", json={"name": "after"}, headers=_bearer(token)).status_code


def _rotate_under_load(stack: Stack, name: str, token: str) -> LoadResult:
    """make rotate-secret NAME=name while clients read, write and send jobs with `token`."""
    writer = _bearer(token)
    with _client() as client:
        item = client.post("/items", json={"name": "read during a rotation"}, headers=writer)
        assert item.status_code == 201, item.text
        traffic = cycle(
            get(f"/items/{item.json()['id']}"),
            get("/items?limit=10"),
            post("/items", {"name": "written during a rotation"}, **writer),
            post("/jobs", JOB, **writer),
        )
        with steady_load(BASE, traffic, headers=HOST, connections=8, rate=60) as load:
            time.sleep(3)  # pools and connections opened, as on a server that was serving
            job = client.post("/jobs", json=JOB, headers=writer)
            assert job.status_code == 202, job.text
            started = time.monotonic()
            proc = stack.make("rotate-secret", f"NAME={name}", timeout=300)
            took = time.monotonic() - started
            time.sleep(3)
        done = poll_job(lambda: client.get(job.headers["location"]).json(), within=120, every=0.5)
    assert done["state"] == "succeeded", done
    assert load.failures() == [], f"{load.summary()}\n{proc.stderr[-3000:]}"
    print(f"measured: {name} rotated in {took:.0f} s, {load.summary()}")
    return load


def _key_file(secrets: Path) -> list[JwtKey]:
    return parse_keys((secrets / "jwt_secret").read_text().removesuffix("\n"))


def test_jwt_secret_rotates_with_no_failed_request_and_old_tokens_verify(production):
    stack, secrets, values = production
    old = values["jwt_secret"]
    before = issue_token(Settings(jwt_secret=old), "before", [WRITE_SCOPE])
    legacy = _legacy_token(old)

    _rotate_under_load(stack, "jwt_secret", before)

    keys = _key_file(secrets)
    assert [k.secret for k in keys][1:] == [old]
    assert keys[0].secret != old
    # Retired, verifying at least as long as a token signed just before the switch lives.
    assert keys[1].until is not None
    assert keys[1].until >= time.time() + Settings().jwt_ttl_seconds - 60
    assert _writes(before) == 201
    assert _writes(legacy) == 201
    made = stack.make("token", "SUBJECT=after").stdout.strip().splitlines()[-1]
    assert jwt.get_unverified_header(made)["kid"] == keys[0].kid
    assert _writes(made) == 201
    assert _writes(issue_token(Settings(jwt_secret="x" * 40), "stranger", [WRITE_SCOPE])) == 401


def _psql_as_app(stack: Stack, password: str) -> str:
    """SELECT 1 over TCP as the app role with `password` (the db container's own client)."""
    proc = stack.compose(
        "exec", "-T", "-e", f"PGPASSWORD={password}", "db",
        "psql", "-XAtq", "-h", "127.0.0.1", "-U", "app_rw", "-d", "app", "-c", "SELECT 1",
        check=False,
    )  # fmt: skip
    return proc.stdout.strip() or proc.stderr.strip()


def test_postgres_app_password_rotates_and_the_old_one_is_refused(production):
    stack, secrets, values = production
    old = values["postgres_app_password"]
    token = issue_token(Settings(jwt_secret=_key_file(secrets)[0].secret), "pg", [WRITE_SCOPE])

    _rotate_under_load(stack, "postgres_app_password", token)

    new = (secrets / "postgres_app_password").read_text()
    assert new != old
    assert "\n" not in new, "the file holds two passwords only while the rotation runs"
    assert "password authentication failed" in _psql_as_app(stack, old)
    assert _psql_as_app(stack, new) == "1"


def _redis_ping(stack: Stack, password: str) -> str:
    proc = stack.compose(
        "exec", "-T", "-e", f"REDISCLI_AUTH={password}", "redis", "redis-cli", "ping", check=False
    )
    return proc.stdout.strip() + proc.stderr.strip()


def test_redis_password_rotates_and_the_old_one_is_refused(production):
    stack, secrets, values = production
    old = values["redis_password"]
    token = issue_token(Settings(jwt_secret=_key_file(secrets)[0].secret), "redis", [WRITE_SCOPE])

    _rotate_under_load(stack, "redis_password", token)

    new = (secrets / "redis_password").read_text()
    assert new != old
    assert "WRONGPASS" in _redis_ping(stack, old)
    assert _redis_ping(stack, new) == "PONG"
    # Its healthcheck does not depend on the password its container started with.
    (redis,) = stack.container_ids("redis")
    wait_until(lambda: stack.health(redis) == "healthy", within=30)


def test_a_restart_of_everything_comes_up_with_the_new_secrets(production):
    stack, secrets, values = production
    stack.compose("down", "--timeout", "20")
    stack.up(build=False)
    wait_until(lambda: _client().get("/ready").status_code == 200, within=90)

    keys = _key_file(secrets)
    # Until the time the rotation wrote beside it, not until some container restarts.
    old = issue_token(Settings(jwt_secret=values["jwt_secret"]), "old", [WRITE_SCOPE])
    assert _writes(old) == 201
    assert _writes(issue_token(Settings(jwt_secret=keys[0].secret), "new", [WRITE_SCOPE])) == 201
    assert "WRONGPASS" in _redis_ping(stack, values["redis_password"])
    assert _redis_ping(stack, (secrets / "redis_password").read_text()) == "PONG"
    assert "password authentication failed" in _psql_as_app(stack, values["postgres_app_password"])
