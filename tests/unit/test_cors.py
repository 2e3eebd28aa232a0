"""CORS (CORS_ALLOW_*): off unless origins are named, then Starlette's CORSMiddleware, outermost.

No request here reaches a database (nothing listens on port 1): a preflight is answered by the
middleware itself, and a request that gets past it answers 503, which must carry the headers too.
Through Traefik over HTTPS: tests/e2e/test_cors.py.
"""

from __future__ import annotations

from typing import Any

from fastapi.middleware.cors import CORSMiddleware
from fastapi.testclient import TestClient

from api.main import create_app
from api.middleware import RequestContextMiddleware
from core.settings import Settings

FRONT_END = "https://app.example.com"
UNREACHABLE = {
    "postgres_host": "127.0.0.1",
    "postgres_port": 1,
    "redis_url": "redis://127.0.0.1:1/0",
}


def _settings(**overrides: Any) -> Settings:
    return Settings(**(UNREACHABLE | overrides))


def _layers(settings: Settings) -> list[type]:
    """The classes a request passes through, outermost first, as Starlette builds the stack."""
    app = create_app(settings)
    layer: Any = app.build_middleware_stack()
    layers = []
    while hasattr(layer, "app"):
        layers.append(type(layer))
        layer = layer.app
    return layers


def _preflight(client: TestClient, origin: str, method: str = "POST") -> Any:
    return client.options(
        "/items",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_no_origins_means_no_cors_middleware_at_all():
    app = create_app(_settings())
    assert CORSMiddleware not in [m.cls for m in app.user_middleware]
    # What costs nothing, without timing it: the request passes through the same layers as with
    # CORS settings never read, and none is CORSMiddleware.
    assert _layers(_settings()) == _layers(_settings(cors_max_age=1, cors_allow_credentials=True))
    assert CORSMiddleware not in _layers(_settings())
    with_cors = _layers(_settings(cors_allow_origins=[FRONT_END]))
    assert [layer for layer in with_cors if layer is not CORSMiddleware] == _layers(_settings())
    # Outside the request id's middleware, so the error answers it writes carry CORS headers.
    assert with_cors.index(CORSMiddleware) < with_cors.index(RequestContextMiddleware)


def test_no_origins_means_no_cors_headers():
    with TestClient(create_app(_settings())) as client:
        answer = client.get("/health", headers={"Origin": FRONT_END})
        preflight = _preflight(client, FRONT_END)
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name.startswith("access-control-")]
    assert not [name for name in preflight.headers if name.startswith("access-control-")]


def test_a_preflight_from_a_named_origin_is_allowed_with_the_settings():
    settings = _settings(cors_allow_origins=[FRONT_END], cors_max_age=321)
    with TestClient(create_app(settings)) as client:
        answer = _preflight(client, FRONT_END)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == FRONT_END
    assert set(answer.headers["access-control-allow-methods"].split(", ")) == {
        "GET", "POST", "PUT", "DELETE",
    }  # fmt: skip
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type"} <= set(allowed.split(", "))
    assert answer.headers["access-control-max-age"] == "321"
    assert "access-control-allow-credentials" not in answer.headers


def test_a_preflight_from_another_origin_gets_no_allow_origin():
    settings = _settings(cors_allow_origins=[FRONT_END])
    with TestClient(create_app(settings)) as client:
        answer = _preflight(client, "https://evil.example.net")
        method = _preflight(client, FRONT_END, method="PATCH")
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    assert method.status_code == 400, "a method not in CORS_ALLOW_METHODS"


def test_credentials_when_asked_for():
    settings = _settings(cors_allow_origins=[FRONT_END], cors_allow_credentials=True)
    with TestClient(create_app(settings)) as client:
        answer = _preflight(client, FRONT_END)
    assert answer.headers["access-control-allow-credentials"] == "true"


def test_an_error_answer_carries_the_cors_headers_so_the_front_end_can_read_it():
    settings = _settings(cors_allow_origins=[FRONT_END])
    with TestClient(create_app(settings)) as client:
        answer = client.get("/items/1", headers={"Origin": FRONT_END})
        other = client.get("/items/1", headers={"Origin": "https://evil.example.net"})
    assert answer.status_code == 503, "no database: the error answer is the point"
    assert answer.headers["access-control-allow-origin"] == FRONT_END
    assert "x-request-id" in {
        name.lower() for name in answer.headers["access-control-expose-headers"].split(", ")
    }
    assert "access-control-allow-origin" not in other.headers
