"""Development mode (`make dev`: compose.dev.yaml, the Dockerfile's api-dev and worker-dev stages)
stays out of production: the production stages and compose files run no reloader and no
debugger and mount no source; and the development overlay wires what docs/development.md says."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from tests.support import ROOT
from tests.support.compose_config import compose_config

PROD = ("compose.yaml", "compose.prod.yaml")
DEV = ("compose.yaml", "compose.dev.yaml")
PROD_ENV = {"ACME_EMAIL": "ops@example.com", "API_DOMAIN": "api.example.com"}
APP_SERVICES = ("api", "worker", "migrate")
PRODUCTION_STAGES = ("api", "worker")
DEV_STAGES = ("api-dev", "worker-dev")
# What would reload code or attach a debugger, in a command, an instruction or a package.
DEV_TOOLS = re.compile(r"debugpy|pydevd|--reload|watchfiles|watchmedo|hupper", re.I)
DEBUG_PORT = 5678


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Each stage of the Dockerfile by name: its base (FROM) and its instructions, continuation
    lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in joined.splitlines():
        if not line.strip():
            continue
        if match := re.match(r"^FROM\s+(\S+)\s+AS\s+(\S+)", line, flags=re.I):
            current = {"base": match.group(1), "instructions": [], "order": len(stages)}
            stages[match.group(2)] = current
        elif current is not None:
            current["instructions"].append(line.strip())
    return stages


def lineage(stages: dict[str, dict[str, Any]], name: str) -> list[str]:
    """The stage and every stage it is built on or copies from, within this Dockerfile."""
    seen: list[str] = []
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in stages:
            continue
        seen.append(stage)
        todo.append(stages[stage]["base"])
        for instruction in stages[stage]["instructions"]:
            todo += re.findall(r"--from=(\S+)", instruction)
    return seen


@pytest.fixture(scope="module")
def stages() -> dict[str, dict[str, Any]]:
    return dockerfile_stages()


@pytest.mark.parametrize("target", PRODUCTION_STAGES)
def test_production_stages_have_no_reloader_and_no_debugger(stages, target):
    parts = lineage(stages, target)
    assert "runtime" in parts and "build" in parts, parts
    assert not set(parts) & {*DEV_STAGES, "build-debug"}, parts
    for stage in parts:
        for instruction in stages[stage]["instructions"]:
            assert not DEV_TOOLS.search(instruction), f"{stage}: {instruction}"
            assert not re.match(r"COPY\s+(--\S+\s+)*dev\b", instruction), f"{stage}: {instruction}"
            # Production installs the locked runtime dependencies only.
            if re.search(r"\buv (sync|pip install)\b", instruction):
                assert "--no-dev" in instruction and "--group" not in instruction, instruction


def test_the_api_is_still_the_last_stage(stages):
    """A plain `docker build .` builds the last stage: the production api."""
    assert max(stages, key=lambda name: stages[name]["order"]) == "api"


@pytest.mark.parametrize("target", DEV_STAGES)
def test_development_stages_build_on_the_production_ones(stages, target):
    parts = lineage(stages, target)
    assert "runtime" in parts, parts
    assert not set(parts) & {"lambda", "build-lambda"}, parts


def test_the_debugger_is_in_its_own_group_and_not_a_runtime_dependency():
    """The build stage's `uv sync --no-dev` installs the project's dependencies and what they need,
    from uv.lock: debugpy is none of them (and no default group of uv adds it)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(dep.startswith("debugpy") for dep in pyproject["dependency-groups"]["debug"])
    default_groups = pyproject.get("tool", {}).get("uv", {}).get("default-groups", ["dev"])
    assert "debug" not in default_groups
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    needed: set[str] = set()
    todo = [dep["name"] for dep in packages["fastapi-compose-kit"]["dependencies"]]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        package = packages[name]
        todo += [dep["name"] for dep in package.get("dependencies", [])]
        for extra in package.get("optional-dependencies", {}).values():
            todo += [dep["name"] for dep in extra]
    assert "uvicorn" in needed
    assert "debugpy" not in needed


@pytest.fixture(scope="module")
def prod() -> dict[str, Any]:
    return compose_config(*PROD, **PROD_ENV)


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return compose_config(*DEV)


@pytest.mark.parametrize("config_name", ["base", "prod"])
@pytest.mark.parametrize("service", APP_SERVICES)
def test_production_compose_runs_the_production_stages_without_source_mounts(
    request, config_name, service
):
    config = request.getfixturevalue(config_name)["services"][service]
    assert config["build"]["target"] in PRODUCTION_STAGES
    assert "develop" not in config
    assert not DEV_TOOLS.search(" ".join(config.get("command") or []))
    assert not DEV_TOOLS.search(" ".join(config.get("entrypoint") or []))
    for volume in config.get("volumes", []):
        assert volume["type"] != "bind" or not volume["target"].startswith("/app"), volume
    published = [port.get("target") for port in config.get("ports", [])]
    assert DEBUG_PORT not in published


def test_development_overlay_targets_the_development_stages(dev):
    services = dev["services"]
    assert services["api"]["build"]["target"] == "api-dev"
    assert services["worker"]["build"]["target"] == "worker-dev"
    assert services["migrate"]["build"]["target"] == "api-dev"
    # Their own image names: `docker compose up` after `make dev` never runs a development image.
    production = compose_config()["services"]
    for name in APP_SERVICES:
        assert services[name]["image"] != production[name]["image"]


def test_development_debugger_is_published_on_loopback_only(dev):
    ports = dev["services"]["api"]["ports"]
    debug = [port for port in ports if port["target"] == DEBUG_PORT]
    assert len(debug) == 1
    assert all(port.get("host_ip") == "127.0.0.1" for port in ports), ports


def _rules(service: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    return {
        (str(rule["path"]).removeprefix(str(ROOT) + "/"), rule["action"], rule.get("target"))
        for rule in service["develop"]["watch"]
    }


def test_development_watch_reloads_api_restarts_worker_rebuilds_on_dependencies(dev):
    api = _rules(dev["services"]["api"])
    worker = _rules(dev["services"]["worker"])
    # The api reloads itself from its mounted code (dev/gunicorn_conf.py): nothing to sync.
    assert not [rule for rule in api if rule[1] in ("sync", "sync+restart")]
    assert {("worker", "restart", None), ("core", "restart", None)} <= worker
    for rules in (api, worker):
        assert {("pyproject.toml", "rebuild", None), ("uv.lock", "rebuild", None)} <= rules
    # The code is mounted read-only: the containers run what is on disk and cannot change it.
    mounts = {
        name: {
            (v["source"].removeprefix(str(ROOT) + "/"), v["target"], v.get("read_only"))
            for v in dev["services"][name].get("volumes", [])
            if v["type"] == "bind"
        }
        for name in ("api", "worker")
    }
    assert mounts["api"] == {("api", "/app/api", True), ("core", "/app/core", True)}
    assert mounts["worker"] == {("worker", "/app/worker", True), ("core", "/app/core", True)}


def test_make_dev_uses_the_development_overlay_and_production_never_does():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^DEV := \$\(COMPOSE\) -f compose.yaml -f compose.dev.yaml$", makefile, re.M)
    assert re.search(r"^dev:.*\n\t\$\(DEV\) watch$", makefile, re.M)
    assert "compose.dev.yaml" not in (ROOT / "compose.prod.yaml").read_text()
    for script in (ROOT / "deploy").rglob("*"):
        if script.is_file():
            assert "compose.dev.yaml" not in script.read_text(errors="replace"), script
