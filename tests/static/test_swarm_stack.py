"""The Swarm stack file the kit's compose files make (compose.swarm.yaml through
deploy/swarm/render.py), checked without a swarm: the Compose schema, `docker stack config`, and
the promises of issue 15 (placement, rolling updates, host-mode ports, secrets, replicas)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.schemas import schema
from tests.support import ROOT
from tests.support.compose_config import SECRETS_BY_SERVICE, compose_config

FILES = ("compose.yaml", "compose.prod.yaml", "compose.swarm.yaml")
ENV = {"ACME_EMAIL": "ops@example.com", "API_DOMAIN": "api.example.com"}


def render(*args: str, **env: str) -> dict:
    # The stack is named as the compose project (compose.yaml's `name:` here): Traefik's flags
    # name the stack's edge network through COMPOSE_PROJECT_NAME.
    config = compose_config(*FILES, **{**ENV, **env})
    proc = subprocess.run(
        ["python3", str(ROOT / "deploy/swarm/render.py"), "--stack", "fastapi-kit", *args],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> str:
    # The secret files' contents version their names: a fresh clone has none, so stand-ins.
    path = tmp_path_factory.mktemp("secrets")
    for name in set().union(*SECRETS_BY_SERVICE.values()):
        (path / name).write_text(f"stand-in {name}")
    return str(path)


@pytest.fixture(scope="module")
def stack(secrets_dir) -> dict:
    return render("--release", "r1", SECRETS_DIR=secrets_dir)


def test_the_single_host_files_are_untouched_by_the_overlay():
    # compose.swarm.yaml is never in COMPOSE_FILE: plain and production compose see no Swarm key.
    prod = compose_config("compose.yaml", "compose.prod.yaml", **ENV)
    assert "mode" not in prod["services"]["proxy"].get("deploy", {})
    assert prod["services"]["api"]["environment"]["FORWARDED_ALLOW_NAMES"] == "proxy"


def test_the_stack_file_matches_the_compose_schema(stack):
    assert [e.message for e in schema("compose-spec.json").iter_errors(stack)] == []


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_stack_config_accepts_it_without_warnings(stack, tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps(stack))
    proc = subprocess.run(
        ["docker", "stack", "config", "-c", str(tmp_path / "stack.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "unsupported" not in proc.stderr.lower(), proc.stderr


def test_placement(stack):
    services = stack["services"]
    constraints = {
        n: s["deploy"].get("placement", {}).get("constraints") for n, s in services.items()
    }
    assert constraints["socket-proxy"] == ["node.role == manager"]
    assert constraints["proxy"] == constraints["proxy-certs"] == ["node.labels.kit.edge == true"]
    assert constraints["db"] == constraints["redis"] == ["node.labels.kit.data == true"]
    assert services["proxy"]["deploy"]["mode"] == "global"
    for name in ("api", "worker"):
        assert services[name]["deploy"]["placement"]["preferences"] == [{"spread": "node.id"}]


def test_proxy_publishes_in_host_mode_and_discovers_through_the_socket_proxy(stack):
    proxy = stack["services"]["proxy"]
    assert {(p["published"], p["mode"]) for p in proxy["ports"]} == {(80, "host"), (443, "host")}
    flags = proxy["command"]
    assert "--providers.swarm.endpoint=tcp://socket-proxy:2375" in flags
    assert "--providers.swarm.network=fastapi-kit_edge" in flags
    assert not [f for f in flags if f.startswith("--providers.docker")]
    labels = stack["services"]["api"]["deploy"]["labels"]
    assert labels["traefik.http.services.api.loadBalancer.server.port"] == "8000"
    assert "labels" not in stack["services"]["api"]


def test_rolling_updates_are_health_gated_start_first_and_roll_back(stack):
    for name in ("api", "worker"):
        update = stack["services"][name]["deploy"]["update_config"]
        assert update["order"] == "start-first"
        assert update["failure_action"] == "rollback"
        assert update["parallelism"] == 1
        assert stack["services"][name]["healthcheck"]["test"]
    for name in ("db", "redis"):
        assert stack["services"][name]["deploy"]["update_config"]["order"] == "stop-first"


def test_migrations_are_a_job_and_replicas_come_from_the_environment(secrets_dir):
    stack = render(API_REPLICAS="5", WORKER_REPLICAS="7", SECRETS_DIR=secrets_dir)
    assert stack["services"]["migrate"]["deploy"]["mode"] == "replicated-job"
    assert stack["services"]["api"]["deploy"]["replicas"] == 5
    assert stack["services"]["worker"]["deploy"]["replicas"] == 7


def test_secrets_are_swarm_secrets_given_only_where_used(stack):
    for name, service in stack["services"].items():
        given = {secret["source"] for secret in service.get("secrets", [])}
        assert given == SECRETS_BY_SERVICE.get(name, set()), name
    for name, secret in stack["secrets"].items():
        assert secret["name"].startswith(f"fastapi-kit_{name}_")


def test_forwarded_headers_are_trusted_from_the_proxy_tasks_only(stack):
    # The tasks' own addresses, not the service's virtual one; no subnet is pinned on Swarm.
    assert stack["services"]["api"]["environment"]["FORWARDED_ALLOW_NAMES"] == "tasks.proxy"
    assert "FORWARDED_ALLOW_IPS" not in stack["services"]["api"]["environment"]
    assert "ipam" not in stack["networks"]["edge"]
    on_edge = {n for n, s in stack["services"].items() if "edge" in (s.get("networks") or {})}
    assert on_edge == {"proxy", "api", "unavailable"}


def test_the_socket_proxy_passes_the_swarm_providers_reads_and_nothing_more():
    config = compose_config("compose.yaml")["services"]["socket-proxy"]["environment"]
    line = next(x for x in config["SOCKET_PROXY_CONFIG"].splitlines() if "provider_path" in x)
    # HAProxy's regex after compose's $$ -> $ (compose config keeps it escaped).
    pattern = re.compile(line.split(" path -m reg ", 1)[1].strip().replace("$$", "$"))
    allowed = [
        "/v1.41/services",
        "/v1.41/tasks",
        "/v1.41/networks",
        "/v1.41/nodes/9waem3rj",
        "/info",
        "/version",
        "/v1.41/events",
        "/v1.41/containers/json",
    ]
    refused = [
        "/v1.41/nodes/9waem3rj/update",
        "/v1.41/services/create",
        "/v1.41/secrets",
        "/v1.41/configs",
        "/v1.41/containers/x/exec",
        "/v1.41/tasks/x/logs",
    ]
    assert [p for p in allowed if not pattern.match(p)] == []
    assert [p for p in refused if pattern.match(p)] == []
