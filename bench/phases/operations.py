"""The operations figures: start-up and restart times, image sizes, the rebuild after a
code-only change. Importing this module starts nothing."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.config import API_IMAGE, BASE_IMAGE, WORKER_IMAGE, log
from bench.containers import image_mib, wait_http
from bench.stack import BenchStack
from tests.support import ROOT
from tests.support.stack import run


@dataclass(frozen=True)
class Startup:
    up_wait_seconds: float
    api_restart_to_first_200_seconds: float
    api_restart_to_healthy_seconds: float


def startup_timing(stack: BenchStack) -> Startup:
    log("operations")
    stack.compose("down", "--timeout", "30")
    t = time.monotonic()
    stack.up(build=False)
    up_wait = round(time.monotonic() - t, 1)
    api = stack.container_ids("api")[0]
    t = time.monotonic()
    run(["docker", "restart", api])
    # The published port: the container's address is probed for reachability, which fails while
    # the api is still starting. Everything from the restart to the first 200 is counted.
    wait_http(f"http://127.0.0.1:{stack.published_port('api', 8000)}/health")
    first_200 = round(time.monotonic() - t, 1)
    stack.wait_healthy("api")
    healthy = round(time.monotonic() - t, 1)
    return Startup(
        up_wait_seconds=up_wait,
        api_restart_to_first_200_seconds=first_200,
        api_restart_to_healthy_seconds=healthy,
    )


@dataclass(frozen=True)
class Images:
    """Sizes, MiB."""

    base: float
    api: float
    worker: float


def image_sizes() -> Images:
    return Images(
        base=image_mib(BASE_IMAGE), api=image_mib(API_IMAGE), worker=image_mib(WORKER_IMAGE)
    )


def rebuild_seconds(stack: BenchStack) -> float:
    """`docker compose build api` after a code-only change, without touching this checkout.

    The build context is copied to a temporary directory: the files git sees (tracked, and
    untracked unless ignored; .dockerignore then picks from them exactly as it does here, and
    nothing it admits is git-ignored). api/__init__.py is changed in the copy only, and a compose
    overlay, also temporary, points the api's build at the copy. BuildKit keys its cache on the
    files' contents and metadata, not on the directory they came from (copy2 keeps modes; the
    copies belong to whoever runs the bench, as a checkout normally does), so the dependency
    layers are reused just as for an edit in place and only the code layers rebuild.
    """
    with tempfile.TemporaryDirectory(prefix="kit-bench-rebuild-") as tmp:
        context = Path(tmp) / "context"
        listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file() or source.is_symlink():  # not a file deleted from the worktree
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, context / name, follow_symlinks=False)
        marker = context / "api" / "__init__.py"
        marker.write_text(marker.read_text() + f"# bench {time.time()}\n")
        overlay = Path(tmp) / "compose.rebuild.yaml"
        # JSON is YAML: the api's build context only; target, tag and the rest stay as they are.
        overlay.write_text(json.dumps({"services": {"api": {"build": {"context": str(context)}}}}))
        rebuilding = replace(stack, files=(*stack.files, str(overlay)))
        t = time.monotonic()
        rebuilding.compose("build", "api")
        return round(time.monotonic() - t, 1)
