"""The HTTP edge of the app, before any I/O: auth, validation, body limit, request ids.

No database is touched by these requests (each is refused before the handler runs), so they run
without the stack; everything past this edge is covered by tests/integration against real servers.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.auth import issue_token
from api.main import create_app
from core.settings import Settings
from tests.support.auth import auth_headers


@pytest.fixture(scope="module")
def settings():
    # Nothing listens on port 1: a request that reached the database would get a 503, not the
    # answer under test, so every test here also proves its request was refused before any I/O.
    return Settings(
        jwt_secret="edge-test-secret-edge-test-secret",
        max_body_bytes=2048,
        postgres_host="127.0.0.1",
        postgres_port=1,
        redis_url="redis://127.0.0.1:1/0",
    )


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def auth(settings):
    """Signed with this app's own key (settings), not the development one."""
    return auth_headers(settings, "w")


def test_write_without_token_is_401_with_challenge(client):
    r = client.post("/items", json={"name": "x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in r.json()["detail"]


def test_token_without_scope_is_403(client, settings):
    token = issue_token(settings, "reader", ["read"])
    r = client.delete("/items/1", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert "'write' scope" in r.json()["detail"]


def test_basic_auth_scheme_is_401(client):
    r = client.post("/jobs", json={"cost": 1}, headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "price_cents": -1}, "price_cents"),
        ({"name": "x", "unexpected": 1}, "unexpected"),
        ({}, "name"),
    ],
)
def test_invalid_item_bodies_name_the_field(client, auth, body, field):
    r = client.post("/items", json=body, headers=auth)
    assert r.status_code == 422
    assert any(field in err["loc"] for err in r.json()["detail"])


def test_malformed_json_is_422(client, auth):
    r = client.post(
        "/items", content=b"{not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert "json" in r.text.lower()


@pytest.mark.parametrize("path", ["/items/abc", "/items/0", "/items/99999999999999999999"])
def test_bad_item_ids_are_422(client, path):
    assert client.get(path).status_code == 422


def assert_validation_error(response, loc: list[str], message: str) -> None:
    """The shape the OpenAPI document promises for a 422: FastAPI's array of field errors."""
    errors = response.json()["detail"]
    assert isinstance(errors, list), errors
    assert any(e["loc"] == loc and message in e["msg"] for e in errors), errors


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "after=-1", "limit=101"])
def test_bad_pagination_is_422(client, query):
    r = client.get(f"/items?{query}")
    assert r.status_code == 422, r.text
    assert_validation_error(r, ["query", query.split("=")[0]], "")


def test_the_page_limit_is_declared_in_the_schema(client):
    from api.schemas import PAGE_SIZE_MAX

    parameters = client.get("/openapi.json").json()["paths"]["/items"]["get"]["parameters"]
    limit = next(p for p in parameters if p["name"] == "limit")
    assert limit["schema"]["maximum"] == PAGE_SIZE_MAX
    r = client.get(f"/items?limit={PAGE_SIZE_MAX + 1}")
    assert_validation_error(r, ["query", "limit"], f"less than or equal to {PAGE_SIZE_MAX}")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/items", {"name": "a\u0000b"}, "name"),
        ("post", "/items", {"name": "ok", "description": "\u0000"}, "description"),
        ("put", "/items/1", {"name": "\ud800"}, "name"),
        ("post", "/jobs", {"cost": 1, "seed": "\u0000"}, "seed"),
    ],
)
def test_text_postgresql_cannot_store_is_422_naming_the_field(
    client, auth, method, path, body, field
):
    """Sent as raw JSON: "\\u0000" and a lone surrogate are valid JSON escapes."""
    import json

    raw = json.dumps(body).replace("\\\\", "\\")
    r = client.request(
        method, path, content=raw, headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert_validation_error(r, ["body", field], "")


def test_bad_job_bodies(client, auth):
    assert client.post("/jobs", json={"cost": 0}, headers=auth).status_code == 422
    assert client.post("/jobs", json={"cost": "x"}, headers=auth).status_code == 422
    r = client.post("/jobs", json={"cost": 10**9}, headers=auth)
    assert r.status_code == 422
    assert_validation_error(r, ["body", "cost"], "less than or equal to 20000000")
    assert client.get("/jobs/not-a-uuid").status_code == 422


def test_body_over_limit_by_content_length_is_413(client, auth):
    r = client.post("/items", json={"name": "x", "description": "y" * 5000}, headers=auth)
    assert r.status_code == 413
    assert "2048 bytes" in r.json()["detail"]


def test_chunked_body_over_limit_is_413(client, auth):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    r = client.post(
        "/items", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 413


def test_request_id_is_echoed_or_made(client):
    assert (
        client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32
    forged = client.get("/health", headers={"X-Request-ID": "bad\nline"}).headers["x-request-id"]
    assert forged != "bad\nline"
    assert len(forged) == 32


def test_health_does_no_io(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_unknown_route_is_404(client):
    assert client.get("/nope").status_code == 404


def test_routable_is_503_while_draining_and_health_is_not(tmp_path):
    drain = tmp_path / "drain"
    with TestClient(create_app(Settings(drain_file=str(drain)))) as c:
        assert c.get("/health/routable").status_code == 200
        drain.touch()
        r = c.get("/health/routable")
        assert r.status_code == 503
        assert r.json() == {"status": "draining"}
        assert c.get("/health").status_code == 200
