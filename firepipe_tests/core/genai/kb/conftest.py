"""The knowledge base tests share one embedder: writing the model's ONNX graph takes seconds."""

from pathlib import Path

import pytest

from firepipe.core.genai.kb.documents import Document
from firepipe.core.genai.kb.minilm import MiniLM
from firepipe_tests.core.genai.kb.shared import MODEL_CACHE


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return MODEL_CACHE


@pytest.fixture(scope="session")
def minilm(model_cache: Path) -> MiniLM:
    return MiniLM(model_cache)


SMOKE = Document(
    "docs/smoke.md",
    "# Smoke\n\nSmouldering fires raise carbon monoxide long before the temperature climbs.\n\n"
    "## Obscuration\n\nOptical smoke obscuration is measured in percent per metre.\n",
)
LAKE = Document(
    "docs/lake.md",
    "# Lake\n\nThe Iceberg catalog stores table snapshots in SQLite.\n\n"
    "## Partitions\n\nSilver and gold tables are partitioned by day.\n",
)
SERVE = Document(
    "docs/serve.md",
    "# Serving\n\nThe inference service answers predictions over HTTP with an API key.\n",
)


@pytest.fixture
def corpus() -> list[Document]:
    return [SMOKE, LAKE, SERVE]
