"""No network of the kit, its tests or its bench has a fixed subnet or address: Docker hands out
its pools in turn, so a fixed one that is free on a fresh engine collides on a used one (issue
23: `networks have overlapping IPv4`). tests/e2e/test_networks.py brings the kit up on an
engine in that state."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT
from tests.support.compose_config import load_compose_file

# Where a network may be given a subnet, and why: none today. A new entry needs a reason here
# and a setting the user can change, or `docker compose up` fails on someone's engine.
PINNED: dict[tuple[str, str], str] = {}
# Scripts that may create a network with a subnet, and why.
DELIBERATE = {
    "tests/e2e/test_networks.py": "plays another project holding the ranges the kit used to pin",
}
ADDRESS_KEYS = ("ipv4_address", "ipv6_address", "link_local_ips")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / line for line in out.splitlines()]


def compose_files() -> list[Path]:
    files = tracked("*compose*.yaml", "*compose*.yml")
    assert {"compose.yaml", "compose.prod.yaml", "compose.swarm.yaml"} <= {f.name for f in files}
    return files


def pinned_networks(document: dict[str, Any]) -> set[str]:
    return {
        name
        for name, network in (document.get("networks") or {}).items()
        if any(
            key in config
            for config in ((network or {}).get("ipam") or {}).get("config") or []
            for key in ("subnet", "ip_range", "gateway")
        )
    }


def pinned_addresses(document: dict[str, Any]) -> set[str]:
    return {
        f"{service}.{network}"
        for service, spec in (document.get("services") or {}).items()
        if isinstance((spec or {}).get("networks"), dict)
        for network, attachment in spec["networks"].items()
        if any(key in (attachment or {}) for key in ADDRESS_KEYS)
    }


def test_the_networks_with_a_subnet_are_the_listed_ones():
    found = {}
    for path in compose_files():
        document = load_compose_file(path)
        for network in pinned_networks(document):
            found[(str(path.relative_to(ROOT)), network)] = "pinned"
    assert set(found) == set(PINNED)


def test_no_container_has_a_fixed_address():
    for path in compose_files():
        document = load_compose_file(path)
        assert pinned_addresses(document) == set(), path


def test_no_script_or_test_creates_a_network_with_a_subnet():
    sources = tracked("*.py", "*.sh", "Makefile", ".ci/run", "deploy/*", "db/bin/*")
    here = Path(__file__)
    for path in sources:
        if path == here or not path.is_file() or str(path.relative_to(ROOT)) in DELIBERATE:
            continue
        assert "--subnet" not in path.read_text(errors="replace"), path


def test_the_check_sees_a_pinned_network_and_address():
    """The guard of the checks above: each sees what it looks for."""
    document = yaml.safe_load(
        "services:\n  proxy:\n    networks:\n      edge: {ipv4_address: 172.30.250.2}\n"
        "networks:\n  edge:\n    ipam:\n      config: [{subnet: 172.30.250.0/24}]\n"
    )
    assert pinned_networks(document) == {"edge"}
    assert pinned_addresses(document) == {"proxy.edge"}
