"""Vercel: the app under Vercel's own Python runtime (`vercel-runtime`, the group `vercel` in
pyproject.toml) on Python 3.12, driven the way Vercel drives it, on the test stack's real
PostgreSQL and Redis, with a job the stack's worker runs.

The protocol (vercel_runtime/vc_init.py): the function's process connects to the Unix socket
VERCEL_IPC_PATH, imports the entry point Vercel found (`[tool.vercel] entrypoint`), binds a port
on loopback and sends `server-started` with it; Vercel's proxy then sends each request there over
HTTP, and the runtime reports `handler-started` and `end` for it. Messages are JSON, each ended
by a NUL byte. This module plays the Vercel side: the socket's peer and the proxy.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT
from tests.support.jobs import poll_job
from tests.support.stack import require, run, wait_until

ENTRYPOINT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["vercel"]["entrypoint"]


# The interpreter: KIT_TEST_PYTHON312, else python3.12 on PATH, else one uv installed (.ci/run),
# else pyenv's (its shim may point at a version not selected: each candidate is tried).
def _python312() -> str | None:
    candidates = [
        os.environ.get("KIT_TEST_PYTHON312", ""),
        shutil.which("python3.12") or "",
        run(["uv", "python", "find", "3.12"], env=dict(os.environ), check=False).stdout.strip(),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for candidate in filter(None, candidates):
        probe = run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"], check=False
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="session")
def vercel_python(tmp_path_factory) -> Path:
    """A Python 3.12 venv holding what Vercel installs (uv.lock without dev groups, the project's
    own code left in place, as Vercel bundles it) plus vercel-runtime: its interpreter."""
    python = _python312()
    require(python is not None, "Python 3.12 (vercel-runtime needs 3.12+; set KIT_TEST_PYTHON312)")
    venv = tmp_path_factory.mktemp("vercel") / "venv"
    run(["uv", "venv", "--quiet", "--python", str(python), str(venv)], env=dict(os.environ))
    run(
        ["uv", "sync", "--quiet", "--frozen", "--no-dev", "--group", "vercel",
         "--no-install-project"],
        env=os.environ | {"UV_PROJECT_ENVIRONMENT": str(venv)},
    )  # fmt: skip
    return venv / "bin" / "python"


class VercelPeer:
    """The Vercel end of VERCEL_IPC_PATH: collects the runtime's messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.messages: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        connection, _ = self.listener.accept()
        buffer = b""
        with connection:
            while chunk := connection.recv(65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\0")
                with self.changed:
                    self.messages += [json.loads(message) for message in complete]
                    self.changed.notify_all()

    def wait_for(self, kind: str, within: float = 60, **context: Any) -> dict[str, Any]:
        """The first message of this type (and this request context, if given)."""

        def found() -> dict[str, Any] | None:
            return next(
                (
                    m
                    for m in self.messages
                    if m["type"] == kind
                    and all(m["payload"].get("context", {}).get(k) == v for k, v in context.items())
                ),
                None,
            )

        with self.changed:
            if not self.changed.wait_for(found, timeout=within):
                raise TimeoutError(f"no {kind} {context} within {within}s: {self.messages}")
            return found()  # type: ignore[return-value]

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def vercel_function(stack, vercel_python, tmp_path_factory) -> Iterator[tuple[VercelPeer, str]]:
    """The function's process, as Vercel starts it: (the peer, the base URL it announced)."""
    peer = VercelPeer(tmp_path_factory.mktemp("ipc") / "vercel.sock")
    module, _, variable = ENTRYPOINT.partition(":")
    entry_file = Path(*module.split(".")).with_suffix(".py")
    env = os.environ | {
        "VERCEL_IPC_PATH": str(peer.path),
        # What Vercel's build finds from `[tool.vercel] entrypoint` (module:variable).
        "__VC_HANDLER_ENTRYPOINT": str(entry_file),
        "__VC_HANDLER_ENTRYPOINT_ABS": str(ROOT / entry_file),
        "__VC_HANDLER_MODULE_NAME": module,
        "__VC_HANDLER_VARIABLE_NAME": variable,
        # The project's files, where Vercel's bundle has them (/var/task).
        "PYTHONPATH": str(ROOT),
        # A function frozen between requests keeps no pooled connection (as on Lambda).
        "DB_POOL_MODE": "per-request",
    }
    process = subprocess.Popen(
        [str(vercel_python), "-m", "vercel_runtime.vc_init"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = peer.wait_for("server-started")
        base = f"http://127.0.0.1:{started['payload']['httpPort']}"
        wait_until(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, within=60)
        yield peer, base
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        peer.close()
        print(output)  # shown with a failure


_invocations = iter(range(1, 1_000_000))


def _request(base: str, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
    """One request as Vercel's proxy sends it, with the internal ids the runtime reports back."""
    invocation = next(_invocations)
    headers = {
        "x-vercel-internal-invocation-id": f"inv-{invocation}",
        "x-vercel-internal-request-id": str(invocation),
        **kwargs.pop("headers", {}),
    }
    return httpx.request(method, f"{base}{path}", headers=headers, timeout=10, **kwargs), invocation


def test_the_runtime_announces_its_port_and_serves_the_app(vercel_function):
    peer, base = vercel_function
    started = peer.wait_for("server-started")
    assert started["payload"]["initDuration"] >= 0
    assert httpx.get(f"{base}/_vercel/ping").status_code == 200  # the runtime's own
    answer, invocation = _request(base, "GET", "/ready")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ready", "the lifespan ran: engine, Redis, job queue"
    context = {"invocationId": f"inv-{invocation}", "requestId": invocation}
    peer.wait_for("handler-started", **context)
    peer.wait_for("end", **context)
    # The internal headers are the runtime's, not the app's: none reach a response.
    assert not [h for h in answer.headers if h.startswith("x-vercel-internal-")]


def test_items_a_job_and_an_error_answer_on_the_real_stack(vercel_function, auth):
    _, base = vercel_function
    created, _ = _request(base, "POST", "/items", json={"name": "from vercel"}, headers=auth)
    assert created.status_code == 201, created.text
    item, _ = _request(base, "GET", created.headers["location"])
    assert (item.status_code, item.json()["name"]) == (200, "from vercel")
    invalid, _ = _request(base, "POST", "/items", json={"name": ""}, headers=auth)
    assert invalid.status_code == 422, invalid.text
    unauthorized, _ = _request(base, "POST", "/items", json={"name": "no token"})
    assert unauthorized.status_code == 401
    queued, _ = _request(base, "POST", "/jobs", json={"cost": 1000, "seed": "vercel"}, headers=auth)
    assert queued.status_code == 202, queued.text
    job = poll_job(
        lambda: _request(base, "GET", queued.headers["location"])[0].json(), within=60, every=0.5
    )
    assert job["state"] == "succeeded" and job["result"]
