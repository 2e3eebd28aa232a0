"""Traefik's configuration checked against its JSON schemas (tests/schemas): the static flags
in compose.yaml, the dynamic files in proxy/dynamic, and the api's labels (which map onto the
file-provider tree)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from core.settings import Settings
from tests.schemas import schema
from tests.support import ROOT
from tests.support.compose_config import compose_config


def _coerce(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    if value.lstrip("-").isdigit():
        return int(value)
    if re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


def dotted_to_tree(pairs: dict[str, str], validator: Draft7Validator) -> dict[str, Any]:
    """`a.b.c=v` into {"a": {"b": {"c": v}}}, keys spelled as the schema spells them (Traefik
    matches keys case-insensitively) and values typed (labels and flags are strings)."""
    tree: dict[str, Any] = {}
    for dotted, raw in pairs.items():
        node, props = tree, validator.schema
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            props = _resolve(props, validator)
            known = {k.lower(): k for k in props.get("properties", {})}
            key = known.get(part.lower(), part)
            child_schema = props.get("properties", {}).get(key) or props.get(
                "additionalProperties", {}
            )
            if i == len(parts) - 1:
                child = _resolve(child_schema, validator) if isinstance(child_schema, dict) else {}
                value = _coerce(raw)
                if value is True and (child.get("type") == "object" or "properties" in child):
                    value = node.get(key) if isinstance(node.get(key), dict) else {}
                elif "array" in _types(child):
                    value = [_coerce(v) for v in raw.split(",")]
                elif _types(child) == ["string"]:
                    value = raw
                node[key] = value
            else:
                # `--accessLog=true` then `--accessLog.format=json`: the section, enabled.
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
                props = child_schema if isinstance(child_schema, dict) else {}
    return tree


def _types(node: dict[str, Any]) -> list[str]:
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _resolve(node: dict[str, Any], validator: Draft7Validator) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        # The schemas only use local references ("#/definitions/...").
        target: Any = validator.schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node if isinstance(node, dict) else {}


def errors(validator: Draft7Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def config():
    return compose_config()


def test_static_flags_match_the_schema(config):
    validator = schema("traefik-v3.json")
    flags = {}
    for arg in config["services"]["proxy"]["command"]:
        key, _, value = arg.removeprefix("--").partition("=")
        flags[key] = value
    tree = dotted_to_tree(flags, validator)
    assert errors(validator, tree) == []
    # The promises: redirect, exposedByDefault off, ping, JSON access log, trusted IPs set.
    # To the HTTPS port users reach (the published one), not the container's unprivileged 8443.
    assert tree["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]["to"] == ":443"
    assert tree["entryPoints"]["websecure"]["address"] == ":8443"
    assert tree["providers"]["docker"]["exposedByDefault"] is False
    # Discovery through the filtering socket proxy, never the socket itself.
    assert tree["providers"]["docker"]["endpoint"] == "tcp://socket-proxy:2375"
    assert tree["ping"] == {}
    assert tree["accessLog"]["format"] == "json"
    assert tree["entryPoints"]["websecure"]["forwardedHeaders"]["trustedIPs"]
    assert "api" not in tree, "the dashboard must stay off (or be put behind basic auth)"


def test_the_proxy_closes_idle_api_connections_before_the_api_does(config):
    flags = dict(
        arg.removeprefix("--").partition("=")[::2] for arg in config["services"]["proxy"]["command"]
    )
    proxy_idle = flags["serversTransport.forwardingTimeouts.idleConnTimeout"]
    assert proxy_idle.endswith("s")
    assert int(proxy_idle.removesuffix("s")) < Settings().gunicorn_keep_alive


def test_the_proxy_runs_the_go_threads_it_is_given_not_the_hosts_cpus(config):
    # Go's own default is one per host CPU (under a CPU limit, not below 2): on a small host the
    # spare threads spin on each wake-up, CPU the api's workers needed (.env.example).
    assert config["services"]["proxy"]["environment"]["GOMAXPROCS"] == "1"
    raised = compose_config(PROXY_GOMAXPROCS="4")
    assert raised["services"]["proxy"]["environment"]["GOMAXPROCS"] == "4"


def test_an_unknown_static_flag_is_caught():
    validator = schema("traefik-v3.json")
    tree = dotted_to_tree({"entryPoints.web.adress": ":80"}, validator)
    assert errors(validator, tree) != []


# Traefik renders dynamic files as Go templates; the kit uses one form: an environment variable
# with a default.
ENV_TEMPLATE = re.compile(r'\{\{ env "(?P<name>[A-Z_]+)" \| default "(?P<default>[^"]*)" \}\}')


def render(text: str, env: dict[str, str]) -> str:
    rendered = ENV_TEMPLATE.sub(lambda m: env.get(m["name"]) or m["default"], text)
    assert "{{" not in rendered, "a template form this test does not render"
    return rendered


@pytest.mark.parametrize("sni_strict", ["", "true"])
@pytest.mark.parametrize("name", ["middlewares.yml", "tls.yml"])
def test_dynamic_files_match_the_schema(name, sni_strict):
    text = (ROOT / "proxy" / "dynamic" / name).read_text()
    document = yaml.safe_load(render(text, {"PROXY_SNI_STRICT": sni_strict}))
    assert errors(schema("traefik-v3-file-provider.json"), document) == []
    if name == "tls.yml":
        assert document["tls"]["options"]["default"]["sniStrict"] is (sni_strict == "true")


@pytest.mark.parametrize("provider", ["", "swarm"])
def test_the_failover_names_the_api_and_the_fallback_of_its_provider(provider):
    text = (ROOT / "proxy" / "dynamic" / "failover.yml").read_text()
    document = yaml.safe_load(render(text, {"PROXY_PROVIDER": provider}))
    assert errors(schema("traefik-v3-file-provider.json"), document) == []
    at = provider or "docker"
    failover = document["http"]["services"]["api-failover"]["failover"]
    assert failover == {"service": f"api@{at}", "fallback": f"unavailable@{at}"}


def _label_tree(labels: dict[str, str], validator, port: int) -> dict:
    """Traefik's labels as the file provider's tree, `server.port` turned into a server URL (the
    one label-only key: the Docker provider makes the servers' URLs from it)."""
    assert labels["traefik.enable"] == "true"
    traefik = {k.removeprefix("traefik."): v for k, v in labels.items() if k != "traefik.enable"}
    tree = dotted_to_tree(traefik, validator)
    for balancer in (s["loadBalancer"] for s in tree["http"]["services"].values()):
        server = balancer.pop("server")
        assert server == {"port": port}
        balancer["servers"] = [{"url": f"http://container:{server['port']}"}]
    assert errors(validator, tree) == []
    return tree


def test_the_fallback_router_matches_the_apis_and_yields_to_it(config):
    validator = schema("traefik-v3-file-provider.json")
    api = _label_tree(config["services"]["api"]["labels"], validator, 8000)["http"]["routers"]
    tree = _label_tree(config["services"]["unavailable"]["labels"], validator, 8080)
    fallback = tree["http"]["routers"]["api-unavailable"]
    assert fallback["rule"] == api["api-failover"]["rule"]
    assert fallback["priority"] == 1  # below any rule's default (its length)
    assert fallback["service"] == "unavailable"
    assert api["api-failover"]["service"] == "api-failover@file"


def test_api_labels_match_the_file_provider_schema(config):
    validator = schema("traefik-v3-file-provider.json")
    tree = _label_tree(config["services"]["api"]["labels"], validator, 8000)
    router = tree["http"]["routers"]["api-failover"]
    assert router["entryPoints"] == ["websecure"]
    assert router["rule"] == "Host(`api.localhost`)"
    assert {"secure-headers@file", "compress@file"} <= set(router["middlewares"])
    middlewares = yaml.safe_load((ROOT / "proxy" / "dynamic" / "middlewares.yml").read_text())
    for ref in router["middlewares"]:
        name, _, provider = ref.partition("@")
        if provider == "file":
            assert name in middlewares["http"]["middlewares"], f"{ref} is not defined"
        else:
            assert name in tree["http"]["middlewares"], f"{ref} is not defined by a label"


def test_a_misspelled_label_is_caught():
    validator = schema("traefik-v3-file-provider.json")
    tree = dotted_to_tree({"http.routers.api.entrypointz": "websecure"}, validator)
    assert errors(validator, tree) != []


def test_api_trusts_only_the_proxy_by_name(config):
    """FORWARDED_ALLOW_NAMES names a service that only the proxy is, on the one network the api
    shares with it; no fixed address anywhere (tests/static/test_networks.py)."""
    api, proxy = config["services"]["api"], config["services"]["proxy"]
    assert api["environment"]["FORWARDED_ALLOW_NAMES"] == "proxy"
    assert "FORWARDED_ALLOW_IPS" not in api["environment"]  # empty: not even the container itself
    assert set(api["networks"]) == {"edge", "backend"}
    assert set(proxy["networks"]) == {"edge", "socket"}
    on_edge = {
        name for name, s in config["services"].items() if "edge" in (s.get("networks") or {})
    }
    assert on_edge == {"api", "proxy", "unavailable"}


def test_only_the_socket_proxy_mounts_the_docker_socket(config):
    mounts = {
        name: [v["source"] for v in service.get("volumes", [])]
        for name, service in config["services"].items()
    }
    holders = {name for name, sources in mounts.items() if "/var/run/docker.sock" in sources}
    assert holders == {"socket-proxy"}
    assert config["networks"]["socket"]["internal"] is True
    assert set(config["services"]["socket-proxy"]["networks"]) == {"socket"}
