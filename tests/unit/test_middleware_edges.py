"""Edges the HTTP client of the other tests cannot send: header values as a lenient server
(httptools) or an adapter (Mangum) hands them over."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware

LIMIT = 2048


async def read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


def call(app, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> list[Message]:
    scope = {"type": "http", "method": "POST", "path": "/items", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5000 ")],  # httptools keeps the trailing space
        [(b"content-length", b"5000\t")],
        [],  # Mangum: the event's body, whatever its headers say
        [(b"content-length", b"10")],  # a header that lies about the body
    ],
    ids=["trailing-space", "trailing-tab", "no-content-length", "understated"],
)
def test_a_body_over_the_limit_is_413_whatever_content_length_says(headers):
    sent = call(BodySizeLimitMiddleware(read_all, max_bytes=LIMIT), headers, b"x" * 5000)
    assert sent[0]["status"] == 413


def test_a_body_within_the_limit_passes():
    sent = call(
        BodySizeLimitMiddleware(read_all, max_bytes=LIMIT), [(b"content-length", b"10 ")], b"x" * 10
    )
    assert sent[0]["status"] == 200


@pytest.mark.parametrize("given", [b"abc-123\n", b"abc-123\r", b"x" * 129, b""])
def test_a_request_id_that_could_forge_a_log_line_is_replaced(given):
    sent = call(RequestContextMiddleware(read_all), [(b"x-request-id", given)])
    returned = dict(sent[0]["headers"])[b"x-request-id"]
    assert returned != given
    assert len(returned) == 32


def test_a_sane_request_id_is_kept():
    sent = call(RequestContextMiddleware(read_all), [(b"x-request-id", b"trace-42")])
    assert dict(sent[0]["headers"])[b"x-request-id"] == b"trace-42"
