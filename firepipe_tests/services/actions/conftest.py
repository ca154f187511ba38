"""The action API served by uvicorn on a loopback port (as the inference tests serve theirs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from firepipe.services.actions.app import create_app
from firepipe.services.inference.keys import Access
from firepipe_tests.services.inference.serving_sample import running

KEY = "actions-key"
SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "customer_id", "type": "uuid", "constraints": {"unique": True}},
        {"name": "age", "type": "integer", "constraints": {"min": 18, "max": 90}},
        {"name": "email", "type": "email"},
        {"name": "joined", "type": "date", "constraints": {"min": "2024-01-01", "nullable": True}},
        {"name": "code", "type": "string", "constraints": {"format": "AB-###"}},
    ]
}


@pytest.fixture(scope="module")
def output_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated")


@pytest.fixture(scope="module")
def open_url(output_root: Path) -> Iterator[str]:
    """The service without keys."""
    with running(create_app(Access(None, None), output_root)) as url:
        yield url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
