"""One model cache for every knowledge base test on this machine: the ONNX graph is written
from the weights once (seconds, 90 MB), keyed by the weights' sha256 and written atomically,
so sessions and test files share it safely."""

import tempfile
from pathlib import Path

MODEL_CACHE = Path(tempfile.gettempdir()) / "firepipe-tests-minilm"


def write_project(root: Path) -> Path:
    """A small firepipe project folder: a README and two docs."""
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Demo\n\nThe two commands: make venv, then make run.\n")
    (root / "docs" / "smoke.md").write_text(
        "# Smoke\n\nSmouldering fires raise carbon monoxide long before the temperature climbs.\n"
    )
    (root / "docs" / "lake.md").write_text(
        "# Lake\n\nThe Iceberg catalog stores table snapshots in SQLite.\n"
    )
    return root
