from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from firepipe.services.inference.app import create_app
from firepipe.services.inference.keys import Access
from firepipe.services.inference.source import FolderSource, ModelHolder
from firepipe_tests.services.inference.serving_sample import running, saved_detector


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("detector")
    saved_detector(folder)
    return folder


@pytest.fixture(scope="module")
def open_server(detector_dir: Path) -> Iterator[str]:
    """The service without keys, serving the sample detector."""
    holder = ModelHolder(FolderSource(detector_dir))
    holder.load_now()
    with running(create_app(holder, Access(None, None))) as url:
        yield url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
