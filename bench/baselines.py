"""The baselines' containers (the tutorial, the template peer, the bare ASGI app), each up for
a block and removed afterwards whatever happens. Importing this module starts nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from bench.config import (
    API_IMAGE,
    BARE_CONTAINER,
    PEER_CONTAINER,
    PEER_IMAGE,
    PROJECT,
    TUTORIAL_CONTAINER,
)
from bench.containers import wait_http
from bench.stack import BenchStack
from tests.support import ROOT
from tests.support.stack import compose_env, container_url, run


def docker_run(name: str, image: str, *args: str, command: tuple[str, ...] = ()) -> None:
    """A baseline container, without the image's HEALTHCHECK (its probes would run in the
    container during the rows, costing CPU the row would count)."""
    run(["docker", "rm", "-f", name], check=False)
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--label",
            f"com.fastapi-kit.bench={PROJECT}",
            "--no-healthcheck",
            "-p",
            "127.0.0.1::8000",
            *args,
            image,
            *command,
        ]
    )


@contextmanager
def container(
    name: str,
    image: str,
    *args: str,
    command: tuple[str, ...] = (),
    network: str | None = None,
) -> Iterator[str]:
    """A baseline container for the block, its URL; removed afterwards, whatever happens (also
    when it fails to start). network: also joined to it (the host reaches the container on the
    default bridge; an internal network has no route from the host)."""
    try:
        docker_run(name, image, *args, command=command)
        if network:
            run(["docker", "network", "connect", network, name])
        port = run(["docker", "port", name, "8000/tcp"]).stdout.split(":")[-1].strip()
        wait_http(f"http://127.0.0.1:{port}/health")
        yield container_url(name, f"http://127.0.0.1:{port}")
    finally:
        run(["docker", "rm", "-f", name], check=False)


@contextmanager
def baselines(stack: BenchStack, rows: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The baseline containers the chosen rows need, up for the block: their URLs by name. Each
    is removed afterwards whatever happens (ExitStack unwinds those already started)."""
    with ExitStack() as started:
        urls: dict[str, str] = {}
        if "tutorial_item" in rows:
            # What tutorials run: `uvicorn main:app`. No --workers and no WEB_CONCURRENCY (uvicorn
            # takes its worker count from it when --workers is absent): one process, which each
            # row checks.
            urls["tutorial"] = started.enter_context(
                container(
                    TUTORIAL_CONTAINER,
                    API_IMAGE,
                    "-v",
                    f"{ROOT / 'bench'}:/app/bench:ro",
                    command=("uvicorn", "bench.tutorial_app:app", "--host", "0.0.0.0"),
                )
            )
        if "bare_health" in rows:
            # The kit's gunicorn settings, with the kit api's own worker count.
            urls["bare"] = started.enter_context(
                container(
                    BARE_CONTAINER,
                    API_IMAGE,
                    "-e",
                    f"WEB_CONCURRENCY={stack.web_concurrency()}",
                    "-v",
                    f"{ROOT / 'bench'}:/app/bench:ro",
                    command=(
                        "gunicorn",
                        "--config=python:api.gunicorn_conf",
                        "bench.bare_asgi:app",
                    ),
                )
            )
        if any(row.startswith("peer_") for row in rows):
            # The template peer: on the bench stack's backend network, as the kit's app role.
            env = stack.env
            urls["peer"] = started.enter_context(
                container(
                    PEER_CONTAINER,
                    PEER_IMAGE,
                    "-e",
                    "POSTGRES_HOST=db",
                    "-e",
                    f"POSTGRES_USER={env.get('POSTGRES_APP_USER', 'app_rw')}",
                    "-e",
                    f"POSTGRES_PASSWORD={env.get('POSTGRES_APP_PASSWORD', 'app_rw')}",
                    "-e",
                    f"POSTGRES_DB={env.get('POSTGRES_DB', 'app')}",
                    network=f"{stack.project}_backend",
                )
            )
        yield urls


def build_peer() -> None:
    """The template peer's image (BuildKit, through compose: bench/compose.peer.yaml)."""
    run(
        ["docker", "compose", "-f", "bench/compose.peer.yaml", "build"],
        env=compose_env(),
        timeout=900,
    )
