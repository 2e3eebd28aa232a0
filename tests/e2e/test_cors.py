"""CORS through Traefik over HTTPS, as a browser on another origin calls the API: the test stack
names one front end (CORS_ALLOW_ORIGINS in tests/compose.test.yaml). Unit tests of the settings
and of the middleware's place: tests/unit/test_cors.py."""

from __future__ import annotations

import yaml

from tests.support import ROOT
from tests.support.jobs import poll_job

FRONT_END = yaml.safe_load((ROOT / "tests/compose.test.yaml").read_text())["services"]["api"][
    "environment"
]["CORS_ALLOW_ORIGINS"]
OTHER = "https://elsewhere.kit.test"


def _preflight(http, origin: str, path: str = "/items", method: str = "POST"):
    return http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_a_preflight_from_the_front_end_is_allowed(http):
    answer = _preflight(http, FRONT_END)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == FRONT_END
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= set(
        answer.headers["access-control-allow-headers"].lower().split(", ")
    )
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "Origin" in answer.headers["vary"]


def test_a_preflight_from_another_origin_gets_no_cors_headers(http):
    answer = _preflight(http, OTHER)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-credentials" not in answer.headers


def test_cross_origin_get_and_post_with_a_token(http, auth):
    created = http.post(
        "/items", json={"name": "from the front end"}, headers={"Origin": FRONT_END, **auth}
    )
    assert created.status_code == 201, created.text
    assert created.headers["access-control-allow-origin"] == FRONT_END
    # The front end's code may read where the new item is, and the request id to report.
    exposed = set(created.headers["access-control-expose-headers"].lower().split(", "))
    assert {"location", "x-request-id"} <= exposed
    item = http.get(created.headers["location"], headers={"Origin": FRONT_END})
    assert item.status_code == 200 and item.json()["name"] == "from the front end"
    assert item.headers["access-control-allow-origin"] == FRONT_END
    # The same GET from another origin is answered (CORS is the browser's check), without the
    # header that would let that origin's page read it.
    other = http.get(created.headers["location"], headers={"Origin": OTHER})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_a_job_from_the_front_end(http, auth):
    assert _preflight(http, FRONT_END, path="/jobs").status_code == 200
    queued = http.post(
        "/jobs", json={"cost": 1000, "seed": "cors"}, headers={"Origin": FRONT_END, **auth}
    )
    assert queued.status_code == 202, queued.text
    assert queued.headers["access-control-allow-origin"] == FRONT_END
    assert (
        poll_job(lambda: http.get(queued.headers["location"]).json(), within=60, every=0.25)[
            "state"
        ]
        == "succeeded"
    )
