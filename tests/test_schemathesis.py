"""Property-based API testing from the service's own OpenAPI schema (schemathesis): generated
requests (valid and invalid) against every operation, through real HTTP. No response may be a 5xx,
and every response must match the documented status codes, content types and bodies; a
schema-valid request must not be refused (the schema carries the configured request limits).

Operations are driven with Hypothesis directly (schemathesis' pytest plugin does not support this
pytest version)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


def no_5xx(ctx, response, case) -> None:
    """Stricter than schemathesis' ``not_a_server_error``: it also fails on a documented 5xx. The one
    exception is the client's own deadline: 504 ``deadline_exceeded`` for a tiny ``timeout_ms``."""
    body = case.body if isinstance(case.body, dict) else {}
    asked = isinstance(body.get("timeout_ms"), (int, float)) and body["timeout_ms"] <= 50
    if response.status_code >= 500 and not (asked and response.status_code == 504):
        raise AssertionError(f"{response.status_code} for {case.method} {case.path}: {response.text[:300]}")


def test_generated_requests_never_get_a_server_error(live_server):
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in ops} >= {"/ner", "/classify", "/models/{name}/reload"}
    for op in ops:
        @given(op.as_strategy())
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(timeout=30, excluded_checks=[not_a_server_error], additional_checks=[no_5xx])

        check()
