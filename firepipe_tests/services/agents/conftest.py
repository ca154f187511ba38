"""Shared by the agents' tests: the sample detector (fires when hot or smoky), saved once."""

from __future__ import annotations

from pathlib import Path

import pytest

from firepipe_tests.services.inference.serving_sample import saved_detector


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("detector")
    saved_detector(folder)
    return folder
