"""Traces and error reports from the real app, over real HTTP, to a receiver in this process: the
OTLP/HTTP protobuf a collector gets, and the envelope a Sentry-compatible endpoint gets. No
containers: the app's lifespan opens no connection until a request needs one, and /boom and
/whoami need none. Each case runs the app in a process of its own (tests/unit/tracing_probe.py),
since a process sets its tracer provider once.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from core.error_reports import FILTERED, scrub
from core.settings import Settings
from core.tracing import sampler
from tests.support import ROOT

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


@dataclass
class Received:
    spans: list[tuple[str, Span]] = field(default_factory=list)  # (service.name, span)
    envelopes: list[list[dict[str, Any]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.headers.append(dict(self.headers))
            if self.path == "/v1/traces":
                export = ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    attributes = {a.key: a.value for a in resource_spans.resource.attributes}
                    service = attributes["service.name"].string_value
                    for scope_spans in resource_spans.scope_spans:
                        received.spans += [(service, span) for span in scope_spans.spans]
            else:
                received.envelopes.append([json.loads(line) for line in body.splitlines() if line])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def probe(*requests: str, **settings: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The app's JSON log lines and one line per response."""
    keep = ("PATH", "HOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env |= {"ACCESS_LOG": "all", "LOG_LEVEL": "info", **settings}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.tracing_probe", *requests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if "probe" not in line], [
        line for line in lines if "probe" in line
    ]


def _hex(raw: bytes) -> str:
    return raw.hex()


def test_tracing_off_makes_no_span_and_sends_nothing(receiver):
    _address, received = receiver
    logs, responses = probe("/whoami", "/boom", TRACING_SAMPLE_RATIO="1")
    assert [r["status"] for r in responses] == [200, 500]
    assert all(r["trace_id"] is None and r["request_id"] for r in responses)
    assert not any("trace_id" in line for line in logs)
    assert received.spans == [] and received.headers == []


def test_a_request_is_one_trace_in_its_log_lines_response_and_spans(receiver):
    address, received = receiver
    logs, responses = probe(
        "/boom",
        "/health",
        "/ready",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{address}",
        OTEL_EXPORTER_OTLP_HEADERS="x-api-key=k%3D1,x-team=kit",
        TRACING_SAMPLE_RATIO="1",
        RELEASE="r42",
    )
    boom = responses[0]
    assert boom["status"] == 500 and boom["trace_id"]
    # The probe paths make no span, not even for /ready's database and Redis checks (which fail
    # here: no servers); /boom makes its server span, an error with the exception.
    assert responses[2]["status"] == 503
    servers = [s for service, s in received.spans if service == "api"]
    assert len(servers) == 1, [s.name for _, s in received.spans]
    span = servers[0]
    assert span.name == "GET /boom"
    assert span.kind == Span.SPAN_KIND_SERVER
    assert _hex(span.trace_id) == boom["trace_id"]
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert {a.key: a.value.string_value for a in span.attributes}["request_id"] == boom[
        "request_id"
    ]
    events = [e for e in span.events if e.name == "exception"]
    assert events, "the exception is recorded on the span"
    attributes = {a.key: a.value.string_value for a in events[0].attributes}
    assert attributes["exception.type"] == "RuntimeError"
    # Every line the app wrote for the request carries its trace id beside its request id.
    lines = [line for line in logs if line.get("request_id") == boom["request_id"]]
    assert {line["message"] for line in lines} >= {"unhandled exception", "request"}
    assert {line["trace_id"] for line in lines} == {boom["trace_id"]}
    assert received.headers[0]["x-api-key"] == "k=1"
    assert received.headers[0]["x-team"] == "kit"


def test_a_traceparent_is_continued_only_where_trusted(receiver):
    address, received = receiver
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{address}", "TRACING_SAMPLE_RATIO": "1"}
    _, trusted = probe(f"/whoami|{TRACEPARENT}", TRACING_TRUST_TRACEPARENT="true", **endpoint)
    assert trusted[0]["trace_id"] == PARENT_TRACE
    continued = [s for _, s in received.spans if _hex(s.trace_id) == PARENT_TRACE]
    assert [_hex(s.parent_span_id) for s in continued] == [PARENT_SPAN]
    received.spans.clear()
    _, untrusted = probe(f"/whoami|{TRACEPARENT}", **endpoint)
    assert untrusted[0]["trace_id"] not in (None, PARENT_TRACE)
    assert [s.parent_span_id for _, s in received.spans] == [b""]


def test_a_request_not_kept_makes_no_span_but_keeps_its_trace_id(receiver):
    """Decided at the door: the ratio's draw or the caller's sampled flag; a request not kept
    sends no span (not even its exception's) and still names its trace in its log lines."""
    address, received = receiver
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{address}"}
    not_sampled = TRACEPARENT[:-2] + "00"
    logs, responses = probe(
        "/boom",
        f"/whoami|{not_sampled}",
        TRACING_SAMPLE_RATIO="0",
        TRACING_TRUST_TRACEPARENT="true",
        **endpoint,
    )
    assert received.spans == []
    drawn, told = responses
    assert drawn["status"] == 500 and drawn["trace_id"] not in (None, PARENT_TRACE)
    assert told["trace_id"] == PARENT_TRACE
    lines = [line for line in logs if line.get("request_id") == drawn["request_id"]]
    assert lines and {line["trace_id"] for line in lines} == {drawn["trace_id"]}
    # A sampled parent is kept whatever the ratio: the api follows Traefik's decision.
    probe(
        f"/whoami|{TRACEPARENT}",
        TRACING_SAMPLE_RATIO="0",
        TRACING_TRUST_TRACEPARENT="true",
        **endpoint,
    )
    assert [_hex(s.trace_id) for _, s in received.spans] == [PARENT_TRACE]


def test_the_door_keeps_the_ratio_of_new_requests():
    from api.tracing import not_kept

    kept = sum(not_kept([], 0.25) is None for _ in range(4000))
    assert 800 < kept < 1200
    assert not_kept([(b"traceparent", b"garbage")], 0.0) is not None
    assert not_kept([(b"traceparent", TRACEPARENT.encode())], 0.0) is None


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT,
        TRACEPARENT[:-2] + "00",
        TRACEPARENT[:-2] + "03",  # a flag beyond sampled
        TRACEPARENT.upper(),  # not W3C: hex is lower case
        "01" + TRACEPARENT[2:] + "-later",  # a later version, with a field of its own
        "00-" + "0" * 32 + TRACEPARENT[35:],  # an all-zero trace id: invalid
        "00-" + PARENT_TRACE + "-" + "0" * 16 + "-01",  # an all-zero span id: invalid
        TRACEPARENT + "-extra",  # version 00 has no more fields
        "ff" + TRACEPARENT[2:],  # a forbidden version
        "00-" + PARENT_TRACE[:-1] + "_-" + PARENT_SPAN + "-01",  # int() would accept "_"
    ],
)
def test_the_door_reads_a_traceparent_as_the_propagator_does(value):
    """The door reads the common form itself, for speed; the result must be the propagator's."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from api.tracing import _parent

    extracted = TraceContextTextMapPropagator().extract({"traceparent": value})
    expected = trace.get_current_span(extracted).get_span_context()
    got = _parent(value.encode())
    assert got.is_valid == expected.is_valid
    if got.is_valid:
        assert (got.trace_id, got.span_id, got.trace_flags, got.is_remote) == (
            expected.trace_id,
            expected.span_id,
            expected.trace_flags,
            True,
        )


def test_an_unhandled_exception_is_reported_tagged_and_scrubbed(receiver):
    address, received = receiver
    dsn = f"http://publickey@{address}/42"
    _, responses = probe(
        "/boom",
        SENTRY_DSN=dsn,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{address}",
        TRACING_SAMPLE_RATIO="1",
        RELEASE="r42",
        ENVIRONMENT="test",
    )
    boom = responses[0]
    events = [item for envelope in received.envelopes for item in envelope if "exception" in item]
    assert len(events) == 1, received.envelopes
    event = events[0]
    assert event["release"] == "r42"
    assert event["environment"] == "test"
    assert event["tags"]["request_id"] == boom["request_id"]
    assert event["tags"]["trace_id"] == boom["trace_id"]
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    sent = json.dumps(received.envelopes)
    for secret in ("hunter2", "s3cret", "eyJhbGciOiJIUzI1NiJ9", "publickey@"):
        assert secret not in sent, secret


def test_scrub_filters_secret_keys_and_credential_values():
    event = {
        "request": {
            "headers": [["Authorization", "Bearer abc.def"], ["Accept", "*/*"]],
            "cookies": {"session": "x"},
        },
        "extra": {"jwt_secret": "k", "count": 3, "note": "token was Bearer abc123"},
        "message": "failed: redis://:pw@redis:6379/0 and eyJa.eyJb.c",
    }
    clean = scrub(event)
    assert clean["request"]["headers"] == [["Authorization", FILTERED], ["Accept", "*/*"]]
    assert clean["request"]["cookies"] == FILTERED
    assert clean["extra"] == {
        "jwt_secret": FILTERED,
        "count": 3,
        "note": "token was Bearer [Filtered]",
    }
    assert clean["message"] == "failed: redis://:[Filtered]@redis:6379/0 and [Filtered]"


def test_the_sampler_keeps_the_ratio_of_new_traces_and_follows_a_parent():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    tracer = TracerProvider(sampler=sampler(0.25)).get_tracer("test")
    kept = sum(tracer.start_span("root").is_recording() for _ in range(4000))
    assert 800 < kept < 1200
    for flags, recording in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
        parent = NonRecordingSpan(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(flags)))
        child = tracer.start_span("child", context=set_span_in_context(parent))
        assert child.is_recording() is recording


def test_tracing_settings_are_checked():
    assert Settings().tracing_sample_ratio == 0.02
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_ENDPOINT='jaeger:4318' is not a URL"):
        Settings(otel_exporter_otlp_endpoint="jaeger:4318")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_HEADERS is not name=value"):
        Settings(otel_exporter_otlp_headers="just-a-key")
    with pytest.raises(ValueError):
        Settings(tracing_sample_ratio=1.5)
    assert Settings(otel_exporter_otlp_headers="a=1, b=x%20y").otlp_headers == {
        "a": "1",
        "b": "x y",
    }
