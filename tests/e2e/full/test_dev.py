"""Development mode as a developer runs it: `make dev` (compose.dev.yaml, `docker compose watch`) in
a copy of the repository, edited there while it runs (the checkout itself is never touched).

The stack is its own compose project on its own ports and images. Each test edits the copy and
watches the change arrive: a route through Traefik within 3 s, a task in the next job while the
job running during the worker's restart finishes once, a model change migrated without a
recreate, and the debugger answering on loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.support import stack as stack_module
from tests.support.jobs import cost_for, poll_job
from tests.support.stack import Stack, wait_until
from worker.compute import iterated_sha256

# Overridable, so this test can run beside another stack on one engine.
HTTPS_PORT = int(os.environ.get("KIT_DEV_TEST_HTTPS_PORT", "47443"))
HTTP_PORT = HTTPS_PORT - 363
DEBUG_PORT = int(os.environ.get("KIT_DEV_TEST_DEBUG_PORT", "47678"))
PROJECT = os.environ.get("KIT_DEV_TEST_PROJECT", "kit-dev")
# The promise: the new answer through Traefik within this many seconds of the save.
RELOAD_SECONDS = 3.0
# How long the job running across the worker's restart takes.
JOB_SECONDS = 10.0
UP_SECONDS = 420
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    "bench-results", "backups", "secrets", ".env", ".deploy", "deploy.env",
)  # fmt: skip


@dataclass
class DevMode:
    root: Path
    stack: Stack
    env: dict[str, str]
    output: Path

    def make(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A make target of the copy, on this project (the Makefile's own COMPOSE, plus -p)."""
        return stack_module.run(
            ["make", "--no-print-directory", *args, f"COMPOSE=docker compose -p {PROJECT}"],
            cwd=self.root,
            env=stack_module.compose_env(**self.env),
        )

    def edit(self, relative: str, old: str, new: str) -> float:
        """Replace old by new in the copy's file, as an editor saves it; the time of the save."""
        path = self.root / relative
        source = path.read_text()
        assert old in source, f"{relative} no longer has {old!r}: update this test"
        path.write_text(source.replace(old, new, 1))
        return time.monotonic()

    def psql(self, sql: str) -> str:
        return self.stack.compose(
            "exec", "-T", "db", "sh", "-c",
            f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "{sql}"',
        ).stdout.strip()  # fmt: skip


def _client() -> httpx.Client:
    """Through Traefik, as a user: api.localhost in SNI and Host, on the published port."""
    return httpx.Client(
        base_url=f"https://127.0.0.1:{HTTPS_PORT}",
        headers={"Host": "api.localhost"},
        verify=False,
        timeout=10,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a developer ends make dev; then whatever is left of its process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def dev_mode(tmp_path_factory) -> Iterator[DevMode]:
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )
    stack_module.require(shutil.which("make") is not None, "make")
    root = tmp_path_factory.mktemp("dev") / "kit"
    shutil.copytree(ROOT, root, ignore=COPY_IGNORE)
    env = {
        "HTTP_PORT": str(HTTP_PORT),
        "HTTPS_PORT": str(HTTPS_PORT),
        "API_DEBUG_PORT": str(DEBUG_PORT),
        # Images of their own: built from the copy, never mistaken for the checkout's.
        "APP_IMAGE": f"{PROJECT}-test",
    }
    stack = Stack(
        project=PROJECT,
        files=(str(root / "compose.yaml"), str(root / "compose.dev.yaml")),
        with_proxy=True,
        env=env,
    )
    output = root / "make-dev.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "dev", f"COMPOSE=docker compose -p {PROJECT}"],
            cwd=root,
            env=stack_module.compose_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dev = DevMode(root, stack, env, output)
    try:

        def watching() -> bool:
            assert process.poll() is None, output.read_text(errors="replace")[-5000:]
            return "watch enabled" in output.read_text(errors="replace").lower()

        try:
            wait_until(watching, within=UP_SECONDS, every=1, retry_on=())
        except TimeoutError as exc:
            raise TimeoutError(output.read_text(errors="replace")[-5000:]) from exc
        with _client() as client:
            wait_until(lambda: client.get("/ready").status_code == 200, within=120)
        yield dev
    finally:
        _stop(process)
        if os.environ.get("KIT_TEST_KEEP"):
            print(f"dev stack kept: project {PROJECT}, copy {root}")
        else:
            stack.down()


def test_a_route_change_is_served_through_traefik_within_3_seconds(dev_mode):
    marker = f"reloaded-{uuid.uuid4().hex[:8]}"
    with _client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        api = dev_mode.stack.container_ids("api")
        saved = dev_mode.edit(
            "api/routes/ops.py",
            'return JSONResponse({"status": "ok"})',
            f'return JSONResponse({{"status": "{marker}"}})',
        )

        def new_answer() -> bool:
            return client.get("/health", timeout=5).json().get("status") == marker

        wait_until(new_answer, within=30, every=0.05, retry_on=(httpx.HTTPError, ValueError))
        seconds = time.monotonic() - saved
        print(f"route change served through Traefik {seconds:.2f} s after the save")
        assert seconds <= RELOAD_SECONDS, f"{seconds:.2f} s"
        # Reloaded in place: the same container, never recreated.
        assert dev_mode.stack.container_ids("api") == api


def test_a_task_change_restarts_the_worker_and_the_running_job_finishes_once(dev_mode, auth):
    cost = cost_for(JOB_SECONDS)
    stack = dev_mode.stack
    (worker,) = stack.container_ids("worker")
    started = stack.inspect(worker)["State"]["StartedAt"]
    with _client() as client:

        def job(seed: str) -> str:
            answer = client.post("/jobs", json={"cost": cost, "seed": seed}, headers=auth)
            assert answer.status_code == 202, answer.text
            return answer.headers["location"]

        running = job("across-the-restart")
        wait_until(lambda: client.get(running).json()["state"] == "running", within=60, every=0.2)
        saved = time.time()
        dev_mode.edit(
            "worker/tasks.py",
            "result = iterated_sha256(seed, cost)",
            'result = iterated_sha256(seed + "-new-code", cost)',
        )
        # The same container, restarted (sync+restart): after the running job's warm shutdown.
        wait_until(
            lambda: stack.inspect(worker)["State"]["StartedAt"] != started,
            within=JOB_SECONDS * 6 + 60,
        )
        assert stack.container_ids("worker") == [worker]
        job_id = uuid.UUID(running.rsplit("/", 1)[1])  # a UUID, so safe in the SQL text
        columns = "state, attempts, result, extract(epoch FROM finished_at)"
        row = dev_mode.psql(f"SELECT {columns} FROM jobs WHERE id = '{job_id}'")  # noqa: S608
        state, attempts, result, finished = row.split("|")
        # Finished by the old code, exactly once (never run again), and after the save: it was
        # still running when the restart began, and the warm shutdown waited for it.
        assert (state, attempts) == ("succeeded", "1"), row
        assert result == iterated_sha256("across-the-restart", cost), row
        assert float(finished) > saved + 1, f"{row}: finished before the restart, {saved}"

        after = job("after-the-restart")
        done = poll_job(lambda: client.get(after).json(), within=JOB_SECONDS * 6 + 60, every=0.5)
        assert done["state"] == "succeeded", done
        assert done["result"] == iterated_sha256("after-the-restart-new-code", cost)


def test_a_model_change_is_migrated_without_recreating_the_stack(dev_mode):
    """A new column: the model, make revision, then make dev-migrate; the api reloads meanwhile
    and /ready says the database is behind until the migration is applied."""
    stack = dev_mode.stack
    containers = {name: stack.container_ids(name) for name in ("api", "worker", "db", "redis")}
    dev_mode.edit(
        "core/models.py",
        "    price_cents: Mapped[int] = mapped_column(BigInteger, default=0)\n",
        "    price_cents: Mapped[int] = mapped_column(BigInteger, default=0)\n"
        "    sku: Mapped[str | None] = mapped_column(String(64))\n",
    )
    versions = dev_mode.root / "api" / "migrations" / "versions"
    before = set(versions.glob("*.py"))
    dev_mode.make("revision", "MESSAGE=add item sku")
    (revision,) = set(versions.glob("*.py")) - before
    assert "op.add_column('items'" in revision.read_text() or 'op.add_column("items"' in (
        revision.read_text()
    ), revision.read_text()
    with _client() as client:
        # The api has the new migration (synced, reloaded): the database is behind it.
        wait_until(lambda: client.get("/ready").status_code == 503, within=30)
        dev_mode.make("dev-migrate")
        wait_until(lambda: client.get("/ready").status_code == 200, within=30)
    column = dev_mode.psql(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_name = 'items' AND column_name = 'sku'"
    )
    assert column == "character varying"
    assert {name: stack.container_ids(name) for name in containers} == containers


def _dap(sock: socket.socket, seq: int, command: str, **arguments: object) -> None:
    body = json.dumps(
        {"seq": seq, "type": "request", "command": command, "arguments": arguments}
    ).encode()
    sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)


def _dap_messages(sock: socket.socket, within: float) -> Iterator[dict]:
    buffer = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        while (match := re.match(rb"Content-Length: (\d+)\r\n\r\n", buffer)) and len(
            buffer
        ) >= match.end() + int(match.group(1)):
            end = match.end() + int(match.group(1))
            yield json.loads(buffer[match.end() : end])
            buffer = buffer[end:]
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk


def test_the_debugger_answers_on_loopback(dev_mode):
    """debugpy speaks the Debug Adapter Protocol on the published port, as VS Code attaches."""
    with socket.create_connection(("127.0.0.1", DEBUG_PORT), timeout=10) as sock:
        _dap(sock, 1, "initialize", adapterID="debugpy", clientID="kit-e2e")
        for message in _dap_messages(sock, within=10):
            if message.get("type") == "response" and message.get("command") == "initialize":
                assert message["success"] is True, message
                break
        else:
            pytest.fail("no answer to the Debug Adapter Protocol's initialize")
    dev_config = stack_module.run(
        ["docker", "inspect", "-f", "{{json .HostConfig.PortBindings}}",
         *dev_mode.stack.container_ids("api")],
    ).stdout  # fmt: skip
    bindings = json.loads(dev_config)["5678/tcp"]
    assert [binding["HostIp"] for binding in bindings] == ["127.0.0.1"]
