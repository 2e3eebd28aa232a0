"""The kit comes up on an engine that has been in use (issue 23). Docker hands out its address
pools in turn and moves on even after networks are removed, so a subnet that is free on a fresh
engine is taken on a used one. Each test first puts the engine in the state that broke the
first command: the next pool Docker hands out is 172.30.0.0/16, where the kit's edge network
used to be pinned; the second also has another project holding the old pinned ranges. Then the
kit and the test stack come up with `docker compose up -d --wait`, and the api still believes
forwarded headers from Traefik alone."""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import stack as stack_module
from tests.support.stack import Stack, run, wait_until

NEXT_POOL = ipaddress.ip_network("172.30.0.0/16")
# The edge subnets the kit (172.30.250), its test stack (172.30.251) and its other test stacks
# pinned before they were given up: another project may hold them now.
OLD_EDGE_RANGES = ("172.30.250.0/24", "172.30.251.0/24", "172.30.254.0/24")
# Docker's default local pools: 172.17-31 (/16 each) and 192.168.0.0/16 (/20 each), 31 in all.
POOLS = 31
HTTPS_PORT = int(os.environ.get("KIT_NET_TEST_HTTPS_PORT", "46443"))


def subnet_of(network: str) -> ipaddress.IPv4Network:
    info = json.loads(run(["docker", "network", "inspect", network]).stdout)[0]
    return ipaddress.ip_network(info["IPAM"]["Config"][0]["Subnet"])


def subnets_in_use() -> list[ipaddress.IPv4Network]:
    ids = run(["docker", "network", "ls", "-q"]).stdout.split()
    return [
        ipaddress.ip_network(config["Subnet"])
        for info in json.loads(run(["docker", "network", "inspect", *ids]).stdout)
        for config in (info["IPAM"]["Config"] or [])
        if ":" not in config.get("Subnet", ":")
    ]


def steer_pools_before(target: ipaddress.IPv4Network) -> bool:
    """Create and remove networks until the last pool Docker handed out is the last free one
    before `target`, so the next network gets `target` if it is free, or the pool after it.
    False if no pool before it is free, or this engine's pools never come to it."""
    used = subnets_in_use()
    free = [
        pool
        for pool in (ipaddress.ip_network(f"172.{n}.0.0/16") for n in range(17, 30))
        if pool < target and not any(pool.overlaps(u) for u in used)
    ]
    if not free:
        return False
    made: list[str] = []
    try:
        for _ in range(POOLS + 2):
            name = f"kit-pool-steer-{uuid.uuid4().hex[:8]}"
            if run(["docker", "network", "create", name], check=False).returncode != 0:
                return False  # every pool taken
            made.append(name)
            if subnet_of(name) == free[-1]:
                return True
        return False
    finally:
        if made:
            run(["docker", "network", "rm", *made])


@pytest.fixture
def foreign_networks() -> Iterator[list[ipaddress.IPv4Network]]:
    """Another project's networks inside the ranges the kit used to pin; a range some network
    of this engine already overlaps is held already, as the test wants."""
    used = subnets_in_use()
    held = [ipaddress.ip_network(r) for r in OLD_EDGE_RANGES]
    names = []
    try:
        for subnet in held:
            if not any(subnet.overlaps(u) for u in used):
                names.append(name := f"kit-foreign-{uuid.uuid4().hex[:8]}")
                run(["docker", "network", "create", "--subnet", str(subnet), name])
        yield held
    finally:
        if names:
            run(["docker", "network", "rm", *names], check=False)


def come_up(stack: Stack) -> dict[str, ipaddress.IPv4Network]:
    """The stack up and healthy; its networks' subnets, as Docker chose them."""
    stack.up()
    networks = run(
        [
            "docker",
            "network",
            "ls",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={stack.project}",
        ]
    ).stdout.split()
    return {
        info["Name"]: ipaddress.ip_network(info["IPAM"]["Config"][0]["Subnet"])
        for info in json.loads(run(["docker", "network", "inspect", *networks]).stdout)
    }


def whoami_through_the_proxy(port: int) -> dict[str, str]:
    with httpx.Client(verify=False, timeout=10) as client:
        return wait_until(
            lambda: (
                (
                    r := client.get(
                        f"https://127.0.0.1:{port}/whoami",
                        headers={"Host": "api.localhost", "X-Forwarded-For": "6.6.6.6"},
                    )
                ).status_code
                == 200
                and r.json()
            ),
            within=60,
        )


def assert_trusts_the_proxy_alone(stack: Stack, port: int) -> None:
    proxy = stack.inspect(stack.container_ids("proxy")[0])
    proxy_address = proxy["NetworkSettings"]["Networks"][f"{stack.project}_edge"]["IPAddress"]
    seen = whoami_through_the_proxy(port)
    assert seen["scheme"] == "https"  # X-Forwarded-Proto believed: from Traefik's address
    assert seen["client"] not in ("6.6.6.6", proxy_address)
    # And from nobody else: the host, straight to the api over the edge bridge's gateway.
    api = stack.inspect(stack.container_ids("api")[0])
    address = api["NetworkSettings"]["Networks"][f"{stack.project}_edge"]["IPAddress"]
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    direct = httpx.get(f"http://{address}:8000/whoami", headers=spoof, timeout=10).json()
    edge = json.loads(run(["docker", "network", "inspect", f"{stack.project}_edge"]).stdout)[0]
    assert (direct["client"], direct["scheme"]) == (edge["IPAM"]["Config"][0]["Gateway"], "http")


@pytest.fixture
def kit() -> Iterator[Stack]:
    stack_module.require(stack_module.image_exists(stack_module.TRAEFIK_IMAGE), "traefik image")
    stack = Stack(
        project="kit-net",
        files=("compose.yaml",),
        env={"HTTP_PORT": str(HTTPS_PORT - 363), "HTTPS_PORT": str(HTTPS_PORT)},
    )
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def test_stack() -> Iterator[Stack]:
    """The stack `make test` brings up, as its own project and ports beside the session's."""
    stack_module.require(stack_module.image_exists(stack_module.TRAEFIK_IMAGE), "traefik image")
    stack = Stack(
        project="kit-net-test",
        env={
            "HTTP_PORT": str(HTTPS_PORT - 364),
            "HTTPS_PORT": str(HTTPS_PORT + 1),
            "KIT_TEST_DB_PORT": "47432",
            "KIT_TEST_REDIS_PORT": "47379",
        },
    )
    try:
        yield stack
    finally:
        stack.down()


def test_the_kit_comes_up_when_the_next_pool_held_its_old_edge_subnet(kit):
    stack_module.require(steer_pools_before(NEXT_POOL), "an engine with Docker's default pools")
    subnets = come_up(kit)
    print(f"networks: { {name: str(net) for name, net in subnets.items()} }")
    # The state that failed before: one of the kit's own networks took the pool that holds the
    # old pinned edge subnet (unless another network already held it).
    if not any(NEXT_POOL.overlaps(u) for u in subnets_in_use() if u not in subnets.values()):
        assert NEXT_POOL in subnets.values()
    assert_trusts_the_proxy_alone(kit, HTTPS_PORT)


def test_the_test_stack_comes_up_beside_networks_in_the_old_edge_ranges(
    foreign_networks, test_stack
):
    stack_module.require(steer_pools_before(NEXT_POOL), "an engine with Docker's default pools")
    subnets = come_up(test_stack)
    assert not any(
        mine.overlaps(theirs) for mine in subnets.values() for theirs in foreign_networks
    )
    assert_trusts_the_proxy_alone(test_stack, HTTPS_PORT + 1)
