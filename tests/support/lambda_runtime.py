"""A stand-in for the Lambda Runtime API, as AWS serves it to a function's container: the
runtime interface client asks for the next event (a long poll), then posts its response or its
error. Used by the platform tests (tests/e2e/full/test_platforms.py) and the cold-start bench."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RuntimeAPI(ThreadingHTTPServer):
    """The Lambda Runtime API, as AWS serves it to a function's container: the runtime asks for
    the next event (a long poll), then posts its response or its error."""

    daemon_threads = True

    def __init__(self, address: str) -> None:
        super().__init__((address, 0), _RuntimeHandler)
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.results: dict[str, tuple[str, Any]] = {}
        self.answered = threading.Condition()
        self.init_errors: list[Any] = []
        self.first_poll: float | None = None

    def invoke(self, event: Any, within: float = 30) -> tuple[str, Any]:
        """("response" | "error", body) for one event."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        with self.answered:
            if not self.answered.wait_for(lambda: request_id in self.results, timeout=within):
                raise TimeoutError(f"no answer to {event!r} within {within}s")
            return self.results.pop(request_id)


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RuntimeAPI

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        # awslambdaric's native client needs the Content-Type AWS sends (it crashes without).
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/2018-06-01/runtime/invocation/next":
            return self._send(404, b"{}")
        if self.server.first_poll is None:
            self.server.first_poll = time.monotonic()
        request_id, event = self.server.events.get()
        self._send(
            200,
            json.dumps(event).encode(),
            {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int((time.time() + 30) * 1000)),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-west-1:0:function:kit",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
            },
        )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.split("/")
        if self.path == "/2018-06-01/runtime/init/error":
            self.server.init_errors.append(json.loads(body or b"null"))
        elif len(parts) == 6 and parts[5] in ("response", "error"):
            with self.server.answered:
                self.server.results[parts[4]] = (parts[5], json.loads(body or b"null"))
                self.server.answered.notify_all()
        else:
            return self._send(404, b"{}")
        self._send(202, b'{"status":"OK"}')
