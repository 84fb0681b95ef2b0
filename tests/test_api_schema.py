"""The API against its own OpenAPI document, by schemathesis, on the real listener: for
every operation, generated requests (valid and not) with a fixed budget; no answer is a
5xx, and every answer matches the document (status documented, content type, body schema).
GATEWAY_SCHEMA_EXAMPLES sets the budget per operation (default 30)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_server import RunningApi, running_api
from tests.conftest import DEFAULT_NOW, seeded_gateway, write_config
from tests.support import FixedClock

EXAMPLES = int(os.environ.get("GATEWAY_SCHEMA_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    tmp = tmp_path_factory.mktemp("schema")
    database = f"sqlite:///{Path(tmp) / 'gateway.db'}"
    path = write_config(tmp, database, api={"rate_per_second": 100000, "rate_burst": 100000})
    with running_api(seeded_gateway(path, FixedClock(DEFAULT_NOW))) as api:
        yield api


def test_no_5xx_and_every_answer_matches_the_document(live_api: RunningApi) -> None:
    # Schemathesis's pytest plugin does not follow this pytest's internals: each operation's
    # strategy is run by hypothesis directly, with the same checks.
    schema = schemathesis.openapi.from_url(f"{live_api.base}/openapi.json")
    token = live_api.token("admin")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=live_api.base, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
            )

        run()
