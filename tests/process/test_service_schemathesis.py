"""Property-based fuzzing of every operation in /openapi.json (schemathesis), against the real service
on 127.0.0.1: a few hundred generated requests per operation, none may get a 5xx, and each answer must
have a documented status and match its documented schema.

The operations are driven with schemathesis' Hypothesis strategies (`operation.as_strategy()`) inside
one test per operation, since the schema comes from a server that a fixture starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from serving import start_service

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 300
OPERATIONS = [
    "POST /predict/digit",
    "POST /forecast",
    "GET /models",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{model_name}",
    "GET /v2/models/{model_name}/versions/{model_version}",
    "GET /v2/models/{model_name}/ready",
    "GET /v2/models/{model_name}/versions/{model_version}/ready",
    "GET /v2/models/{model_name}/config",
    "GET /v2/models/{model_name}/versions/{model_version}/config",
    "POST /v2/models/{model_name}/infer",
    "POST /v2/models/{model_name}/versions/{model_version}/infer",
    "POST /v2/repository/index",
    # Last: they change what the service serves (with the admin key every call sends).
    "POST /v2/repository/models/{model_name}/unload",
    "POST /v2/repository/models/{model_name}/load",
]
ADMIN_KEY = "schemathesis-admin"
# Operations whose requests have no body or parameters: one case is all there is.
WITHOUT_INPUTS = {"GET /models", "GET /health/live", "GET /health/ready", "GET /metrics", "GET /v2",
                  "GET /v2/health/live", "GET /v2/health/ready",
                  "POST /v2/repository/models/{model_name}/unload"}  # fmt: skip


@pytest.fixture(scope="module")
def api_schema(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    log_path = tmp_path_factory.mktemp("schemathesis") / "service.log"
    url, process = start_service(
        models_dir,
        log_path,
        workers="1",
        log_level="WARNING",
        max_inputs_per_request="16",
        admin_keys=ADMIN_KEY,
    )
    yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    process.terminate()
    process.wait(timeout=60)


def operations(schema: schemathesis.BaseSchema) -> dict[str, Any]:
    """Every operation of the schema by "METHOD /path"; a schema error fails the test with its reason."""
    found = {}
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            pytest.fail(f"the OpenAPI schema has an invalid operation: {result.err()}")
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


def test_the_schema_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    assert set(operations(api_schema)) == set(OPERATIONS)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    api_schema: schemathesis.BaseSchema, operation: str
) -> None:
    found = operations(api_schema)[operation]
    calls = []
    statuses: list[int] = []

    @given(case=found.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    def fuzz(case: schemathesis.Case) -> None:
        calls.append(case)
        response = case.call_and_validate(
            headers={"X-API-Key": ADMIN_KEY},
            timeout=30,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        )
        statuses.append(response.status_code)

    fuzz()
    print(f"\n{operation}: {len(calls)} generated requests, statuses {sorted(set(statuses))}")
    # A body gives room for many cases; the model names and versions are enumerated, so an operation
    # with only those has a few; an operation without inputs has one.
    has_body = operation.startswith("POST") and operation not in WITHOUT_INPUTS
    assert len(calls) >= (20 if has_body else 1)
    if "{model_name}" in operation and not has_body:
        # The schema names the served models, so generated requests reach them rather than 404.
        assert 200 in statuses
    if has_body:  # answered or refused as bad input (a version another model has is unknown here)
        assert set(statuses) <= {200, 400, 404, 422}, sorted(set(statuses))
