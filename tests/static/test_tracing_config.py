"""Traefik's tracing and the trace store, as compose renders them: off without an endpoint, on
with one, and Jaeger's configuration the one the profile mounts."""

from __future__ import annotations

import yaml

from core.settings import Settings
from tests.support import ROOT
from tests.support.compose_config import PROD, PROD_SECRETS, compose_config


def _tracing_flags(env: dict[str, str]) -> dict[str, str]:
    """The proxy's --tracing* flags, the last of each winning as in Traefik's parser."""
    command = compose_config(**env)["services"]["proxy"]["command"]
    flags: dict[str, str] = {}
    for arg in command:
        key, _, value = arg.removeprefix("--").partition("=")
        if key.startswith("tracing"):
            flags[key] = value
    return flags


def test_traefik_traces_only_where_an_endpoint_is_set():
    # Any value but "true" leaves the section off, its sub-flags included.
    assert _tracing_flags({})["tracing"] == "tru"
    flags = _tracing_flags(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "TRACING_SAMPLE_RATIO": "0.5"}
    )
    assert flags["tracing"] == "true"
    assert flags["tracing.otlp.http.endpoint"] == "http://jaeger:4318/v1/traces"
    assert flags["tracing.sampleRate"] == "0.5"
    assert flags["tracing.serviceName"] == "traefik"


def test_traefik_samples_at_the_api_default_ratio():
    # compose cannot read core/settings.py: its default for Traefik must be the api's.
    flags = _tracing_flags({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"})
    assert float(flags["tracing.sampleRate"]) == Settings().tracing_sample_ratio


def test_the_proxy_command_has_no_empty_argument():
    """Traefik stops reading flags at an empty argument (tried on 3.6.12): a switch written as
    `${VAR:+--flag}` would silently drop every flag after it, the Swarm render's included."""
    for env in ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}):
        assert "" not in compose_config(**env)["services"]["proxy"]["command"]


def test_the_api_continues_traefiks_traceparent_and_names_its_release():
    api = compose_config(APP_TAG="20261206-1")["services"]["api"]["environment"]
    assert api["TRACING_TRUST_TRACEPARENT"] == "true"
    assert api["RELEASE"] == "20261206-1"


def test_jaeger_keeps_traces_in_memory_up_to_its_setting_on_loopback():
    config = compose_config(*PROD, COMPOSE_PROFILES="observability", **PROD_SECRETS)
    jaeger = config["services"]["jaeger"]
    assert jaeger["environment"]["JAEGER_MAX_TRACES"] == "20000"
    assert [(p["host_ip"], p["target"]) for p in jaeger["ports"]] == [("127.0.0.1", 16686)]
    store = yaml.safe_load((ROOT / "observability" / "jaeger" / "config.yaml").read_text())
    backends = store["extensions"]["jaeger_storage"]["backends"]
    assert backends["memstore"]["memory"]["max_traces"] == "${env:JAEGER_MAX_TRACES}"
    assert store["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    assert store["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
