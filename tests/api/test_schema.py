"""schemathesis against the live API's OpenAPI schema with a valid admin key: no 5xx, and every
answer conforms to the schema (status code, content type, body). Bounded for `make test`.

Driven through schemathesis's Python API (one hypothesis run per operation) rather than its
pytest plugin, which does not load under this pytest version.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.keys import Role

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 5
# What the issue asks: no 5xx and no schema violations. Left out on purpose: "positive data
# acceptance", which expects every schema-valid request to succeed; a window whose `to` precedes
# `from`, or scrap exceeding production, is schema-valid and still rightly a 422.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_api_conforms_to_its_schema(base_url: str, keys: dict[Role, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {keys[Role.ADMIN]}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        try:
            check()
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis failures, all kept
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 50
    labels = [f.split(":", 1)[0] for f in failures]
    assert not failures, f"{len(failures)} operations fail: {labels}\n\n" + "\n\n".join(failures)
