"""A schema-checking fuzzer over the running api: schemathesis generates valid and invalid
requests for every operation in /openapi.json and checks each answer against the document (no
5xx, status codes, headers and bodies as declared, invalid input refused, valid input accepted).

Bounded: a fixed number of examples per operation and mode, derandomized, no time-based search.
Sent to the api's own address (no rate limit in front), with a writer token, so writes reach
PostgreSQL. Each operation is one parametrized test, so a failure names it.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from api.main import create_app
from api.schemas import JOB_MAX_COST
from core.settings import Settings
from tests.support.stack import container_url

EXAMPLES = 30
# Fixed: the fuzzer's jobs must not keep the stack's worker busy for the tests after this one.
FUZZ_JOB_COST = 1_000

# The document the stack serves is this code's (the image is built from it): read it here, at
# collection, to parametrize by operation; the test checks the served one is the same.
OPENAPI = create_app(Settings()).openapi()
# Valid requests for every operation; invalid ones for those that take any input.
CASES = sorted(
    (method.upper(), path, mode)
    for path, methods in OPENAPI["paths"].items()
    for method, spec in methods.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or spec.get("parameters") or spec.get("requestBody")
)


@pytest.fixture(scope="module")
def api_url(stack) -> str:
    return container_url(stack.container_ids("api")[0])


@pytest.fixture(scope="module")
def served_schema(api_url):
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    assert schema.raw_schema["paths"] == OPENAPI["paths"], "the stack serves another document"
    return schema


def _cheap_job(case) -> None:
    body = case.body
    if case.method == "POST" and case.path == "/jobs" and isinstance(body, dict):
        cost = body.get("cost")
        if isinstance(cost, int) and not isinstance(cost, bool) and 1 <= cost <= JOB_MAX_COST:
            body["cost"] = min(cost, FUZZ_JOB_COST)


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES]
)
def test_every_answer_matches_the_openapi_document(
    served_schema, api_url, auth, method, path, mode
):
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        _cheap_job(case)
        case.call_and_validate(base_url=api_url, headers=auth, timeout=10)

    check()
