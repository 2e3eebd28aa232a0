"""make coldstart: how long the api image takes from `docker run` to serving, over N starts each.

- gunicorn, 1 worker: container start to the first 200 from /health.
- Cloud Run mode: the same image with one CPU and PORT=8080, to the first 200.
- Lambda: the `lambda` target, container start to its first poll of the Runtime API (the
  import of api.main and the app's lifespan: Lambda's init duration), against the stand-in in
  tests/support/lambda_runtime.py.

With BASELINE=<git ref>, the same three for the images built from that revision, alternating
with this tree's, and the ratios (baseline / this). Needs no stack: /health and the Lambda init
touch neither PostgreSQL nor Redis. Prints a table; writes bench-results/coldstart.json.

Run from the repository root as `python -m bench.coldstart` (what `make coldstart` does).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.containers import address_on
from tests.support import ROOT
from tests.support.lambda_runtime import RuntimeAPI
from tests.support.stack import run

STARTS = int(os.environ.get("COLDSTART_STARTS", "10"))
NETWORK = "kit-coldstart"
TARGET_SECONDS = 1.5  # first 200 of the 1-worker mode (issue: on this machine)


def _address(container: str) -> str:
    address = address_on(container, NETWORK)
    if address is None:
        raise RuntimeError(f"container {container} has no address on {NETWORK}")
    return address


def _first_200(url: str, deadline: float) -> None:
    with httpx.Client(timeout=0.5) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise TimeoutError(url)


def _start(image: str, env: dict[str, str], *extra: str) -> tuple[str, float]:
    args = ["docker", "run", "-d", "--network", NETWORK]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    started = time.monotonic()
    container = run([*args, *extra, image]).stdout.strip()
    return container, started


def gunicorn_start(image: str, env: dict[str, str], *extra: str, port: int = 8000) -> float:
    container, started = _start(image, env, *extra)
    try:
        _first_200(f"http://{_address(container)}:{port}/health", started + 60)
        return time.monotonic() - started
    finally:
        run(["docker", "rm", "-f", container], check=False)


def _first_poll(runtime: RuntimeAPI, deadline: float) -> float:
    while time.monotonic() < deadline:
        if runtime.first_poll is not None:
            return runtime.first_poll
        time.sleep(0.002)
    raise TimeoutError("the Lambda image never polled for an event")


def lambda_init(image: str, runtime: RuntimeAPI) -> float:
    runtime.first_poll = None
    host, port = runtime.server_address[:2]
    assert isinstance(host, str)  # an AF_INET server's address
    container, started = _start(image, {"AWS_LAMBDA_RUNTIME_API": f"{host}:{port}"})
    try:
        return _first_poll(runtime, deadline=started + 60) - started
    finally:
        run(["docker", "rm", "-f", container], check=False)


@contextmanager
def network() -> Iterator[str]:
    run(["docker", "network", "rm", NETWORK], check=False)
    run(["docker", "network", "create", NETWORK])
    try:
        yield run([
            "docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", NETWORK,
        ]).stdout.strip()  # fmt: skip
    finally:
        run(["docker", "network", "rm", NETWORK], check=False)


def build(tree: Path, tag: str) -> dict[str, str]:
    """The api and lambda images of a source tree, tagged `tag`."""
    env = {**os.environ, "APP_IMAGE": "kit-coldstart", "APP_TAG": tag}
    for compose_file, service in (("compose.yaml", "api"), ("compose.platforms.yaml", "lambda")):
        subprocess.run(
            ["docker", "compose", "-f", str(tree / compose_file), "build", service],
            check=True,
            env=env,
            capture_output=True,
        )
    return {"api": f"kit-coldstart-api:{tag}", "lambda": f"kit-coldstart-lambda:{tag}"}


@contextmanager
def baseline_tree(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        tree = Path(directory) / "baseline"
        run(["git", "worktree", "add", "--detach", str(tree), ref])
        try:
            yield tree
        finally:
            run(["git", "worktree", "remove", "--force", str(tree)], check=False)


def measurements(images: dict[str, str], runtime: RuntimeAPI) -> dict[str, Callable[[], float]]:
    one_worker = {"WEB_CONCURRENCY": "1"}
    cloud_run = {"PORT": "8080"}
    return {
        "gunicorn, 1 worker": lambda: gunicorn_start(images["api"], one_worker),
        "Cloud Run mode (1 CPU, PORT)": lambda: gunicorn_start(
            images["api"], cloud_run, "--cpus", "1", port=8080
        ),
        "Lambda init": lambda: lambda_init(images["lambda"], runtime),
    }


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def main() -> None:
    baseline_ref = os.environ.get("BASELINE")
    variants = {"this tree": build(ROOT, "coldstart")}
    if baseline_ref:
        with baseline_tree(baseline_ref) as tree:
            variants[f"baseline {baseline_ref}"] = build(tree, "coldstart-baseline")
    results: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
    with network() as gateway:
        runtime = RuntimeAPI(gateway)
        threading.Thread(target=runtime.serve_forever, daemon=True).start()
        try:
            for _ in range(STARTS):  # alternating, so drift hits every variant alike
                for name, images in variants.items():
                    for label, measure in measurements(images, runtime).items():
                        results[name].setdefault(label, []).append(measure())
        finally:
            runtime.shutdown()
            runtime.server_close()
    report = {
        name: {label: summary(samples) for label, samples in rows.items()}
        for name, rows in results.items()
    }
    print(f"cold start, {STARTS} starts each (seconds: median [min-max])")
    for name, rows in report.items():
        for label, s in rows.items():
            print(f"  {name:<28} {label:<30} {s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]")
    if baseline_ref:
        this, base = report["this tree"], report[f"baseline {baseline_ref}"]
        for label in this:
            ratio = base[label]["median"] / this[label]["median"]
            print(f"  ratio baseline/this  {label:<30} {ratio:.2f}")
    first_200 = report["this tree"]["gunicorn, 1 worker"]["median"]
    verdict = "met" if first_200 <= TARGET_SECONDS else "NOT met"
    print(f"  goal: 1-worker first 200 within {TARGET_SECONDS} s: {verdict} ({first_200:.3f} s)")
    out = ROOT / "bench-results" / "coldstart.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"starts": STARTS, "results": report}, indent=2))


if __name__ == "__main__":
    main()
