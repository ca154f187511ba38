"""schemathesis over the committed document, against the app in process: whatever it sends, the
service answers without a 5xx and with the status codes and bodies the document lists."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from firepipe.services.actions.app import create_app
from firepipe.services.inference.keys import load_access
from firepipe_tests.services.actions.conftest import KEY, recording_actions
from firepipe_tests.services.actions.test_fire import FakeKnowledgeBase
from firepipe_tests.services.actions.test_openapi import OPENAPI_PATH

# The app is bound before parametrize copies the schema; its files, history and lake go to a
# folder of its own, removed after the module. Fire requests are recorded, never run.
ROOT = Path(tempfile.mkdtemp(prefix="firepipe-actions-fuzz-"))
schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))
schema.app = create_app(
    load_access({"FIREPIPE_API_KEYS": KEY}, sagemaker=False),
    actions=recording_actions(ROOT, knowledge_base=FakeKnowledgeBase()),
)


@pytest.fixture(scope="module", autouse=True)
def _remove_root() -> Iterator[None]:
    yield
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"x-api-key": KEY},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
