"""Forwarded headers believed from the proxy alone, found by name (api/forwarded.py). The real
lookup is asked what this host can answer; the proxy moving or vanishing is a lookup that
answers in turn, the one thing a unit test cannot get from Docker's DNS (the e2e tests do)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

import pytest
from starlette.types import Message, Receive, Scope, Send

from api import forwarded
from api.forwarded import ForwardedHeadersMiddleware

SPOOF = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-proto", b"https")]


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    client = scope["client"][0] if scope.get("client") else "-"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{client} {scope['scheme']}".encode()})


async def seen(app: ForwardedHeadersMiddleware, peer: str) -> str:
    scope = {"type": "http", "scheme": "http", "client": (peer, 40000), "headers": SPOOF}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[-1]["body"].decode()


async def seen_in_turn(app: ForwardedHeadersMiddleware, *peers: str) -> list[str]:
    """What the app saw of one request from each peer, sent one after the other."""
    return [await seen(app, peer) for peer in peers]


class Answers:
    """A name whose addresses change between lookups, as a recreated proxy's do."""

    def __init__(self, *answers: set[str] | OSError) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, name: str) -> Iterable[str]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, OSError):
            raise answer
        return answer


@pytest.fixture
def no_wait(monkeypatch):
    monkeypatch.setattr(forwarded, "LOOKUP_INTERVAL_SECONDS", 0.0)


def test_the_static_address_is_believed_and_no_other():
    app = ForwardedHeadersMiddleware(echo, allow_ips="127.0.0.1")
    assert asyncio.run(seen(app, "127.0.0.1")) == "6.6.6.6 https"
    assert asyncio.run(seen(app, "172.18.0.1")) == "172.18.0.1 http"


def test_a_name_that_does_not_exist_is_an_answer_not_an_error():
    assert asyncio.run(forwarded.docker_dns_lookup("no-such-proxy.invalid")) == set()


def test_a_name_is_asked_as_an_absolute_name():
    """`localhost` is in /etc/hosts; where that does not answer `localhost.`, no search
    domain or hosts alias stands in for the proxy's name."""
    try:
        socket.getaddrinfo("localhost.", None)
        pytest.skip("this host's resolver answers absolute names from /etc/hosts")
    except socket.gaierror:
        pass
    assert socket.getaddrinfo("localhost", None)
    assert asyncio.run(forwarded.docker_dns_lookup("localhost")) == set()
    app = ForwardedHeadersMiddleware(echo, allow_ips="", allow_names="localhost")
    assert asyncio.run(seen(app, "127.0.0.1")) == "127.0.0.1 http"


def test_a_network_in_the_addresses_is_matched_as_a_network(no_wait):
    lookup = Answers({"10.0.0.5"})
    app = ForwardedHeadersMiddleware(
        echo, allow_ips="192.168.7.0/24", allow_names="proxy", lookup=lookup
    )
    assert asyncio.run(seen(app, "192.168.7.9")) == "6.6.6.6 https"
    assert lookup.calls == 0  # trusted already: no lookup on its behalf


def test_a_proxy_name_that_no_longer_exists_is_trusted_no_more(no_wait):
    lookup = Answers({"10.0.0.5"}, set())
    app = ForwardedHeadersMiddleware(echo, allow_ips="", allow_names="proxy", lookup=lookup)

    assert asyncio.run(seen_in_turn(app, "10.0.0.5", "10.9.9.9", "10.0.0.5")) == [
        "6.6.6.6 https",
        "10.9.9.9 http",
        "10.0.0.5 http",
    ]


def test_a_recreated_proxy_is_trusted_at_its_new_address_and_the_old_one_is_not(no_wait):
    lookup = Answers({"10.0.0.5"}, {"10.0.0.9"})
    app = ForwardedHeadersMiddleware(
        echo, allow_ips="127.0.0.1", allow_names="proxy", lookup=lookup
    )

    assert asyncio.run(seen_in_turn(app, "10.0.0.5", "10.0.0.9", "10.0.0.5")) == [
        "6.6.6.6 https",
        "6.6.6.6 https",
        "10.0.0.5 http",
    ]


def test_a_lookup_that_fails_keeps_what_was_trusted(no_wait):
    lookup = Answers({"10.0.0.5"}, OSError("Name or service not known"))
    app = ForwardedHeadersMiddleware(echo, allow_ips="", allow_names="proxy", lookup=lookup)

    assert asyncio.run(seen_in_turn(app, "10.0.0.5", "10.9.9.9", "10.0.0.5")) == [
        "6.6.6.6 https",
        "10.9.9.9 http",
        "6.6.6.6 https",
    ]
    assert app.resolved == {"10.0.0.5"}


def test_untrusted_peers_cost_at_most_one_lookup_a_second():
    lookup = Answers({"10.0.0.5"})
    app = ForwardedHeadersMiddleware(echo, allow_ips="", allow_names="proxy", lookup=lookup)

    async def run() -> None:
        for i in range(200):
            assert await seen(app, f"10.7.0.{i % 250}") == f"10.7.0.{i % 250} http"

    asyncio.run(run())
    assert lookup.calls == 1


def test_requests_arriving_during_a_lookup_wait_for_it(no_wait):
    class Slow(Answers):
        async def __call__(self, name: str) -> Iterable[str]:
            await asyncio.sleep(0.05)
            return await super().__call__(name)

    lookup = Slow({"10.0.0.5"})
    app = ForwardedHeadersMiddleware(echo, allow_ips="", allow_names="proxy", lookup=lookup)

    async def run() -> list[str]:
        return list(await asyncio.gather(*(seen(app, "10.0.0.5") for _ in range(20))))

    assert asyncio.run(run()) == ["6.6.6.6 https"] * 20
    assert lookup.calls == 1


def test_without_names_nothing_is_looked_up():
    lookup = Answers({"10.0.0.5"})
    app = ForwardedHeadersMiddleware(echo, allow_ips="127.0.0.1", lookup=lookup)
    assert asyncio.run(seen(app, "10.0.0.5")) == "10.0.0.5 http"
    assert lookup.calls == 0


def test_the_gunicorn_worker_leaves_forwarded_headers_to_the_app():
    """uvicorn's own layer would believe gunicorn's FORWARDED_ALLOW_IPS default (loopback)."""
    from api.shutdown import GracefulUvicornWorker

    assert GracefulUvicornWorker.CONFIG_KWARGS["proxy_headers"] is False
