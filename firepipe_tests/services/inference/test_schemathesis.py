"""schemathesis over the committed OpenAPI document against the running service: whatever it
generates, the service answers without a 5xx and as the document says (status codes, content
types, bodies)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from firepipe.services.inference.app import create_app
from firepipe.services.inference.keys import load_access
from firepipe.services.inference.source import FolderSource, ModelHolder
from firepipe_tests.services.inference.serving_sample import OPENAPI_PATH, running

KEY = "fuzz-key"
schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))


@schemathesis.serializer("application/jsonlines")
def _jsonlines(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    return orjson.dumps(value) + b"\n"


@schemathesis.serializer("text/csv")
def _csv(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    out = io.StringIO()
    csv.writer(out).writerow([value])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def fuzzed_server(detector_dir: Path) -> Iterator[str]:
    holder = ModelHolder(FolderSource(detector_dir))
    holder.load_now()
    access = load_access({"FIREPIPE_API_KEYS": KEY}, sagemaker=False)
    with running(create_app(holder, access)) as url:
        yield url


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_answers_as_documented(case: schemathesis.Case, fuzzed_server: str) -> None:
    case.call_and_validate(
        base_url=fuzzed_server,
        headers={"x-api-key": KEY},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
