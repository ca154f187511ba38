"""`firepipe kb search|build`: passages with their sources, from the index under the home."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from firepipe import settings
from firepipe.cli import main
from firepipe.core.genai.kb.documents import collect_documents
from firepipe.core.genai.kb.index import build_index
from firepipe.core.genai.kb.minilm import MiniLM
from firepipe_tests.core.genai.kb.shared import MODEL_CACHE, write_project


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["kb", *args])


@pytest.fixture
def built(firepipe_home: Path, tmp_path: Path) -> Path:
    """An index of a small project under the home, as `make run` would leave one; the model's
    graph linked in from the tests' cache rather than written again."""
    model = MiniLM(MODEL_CACHE)
    cache = settings.local_paths().knowledge_base / "model"
    cache.mkdir(parents=True)
    for file in MODEL_CACHE.iterdir():
        if file.suffix in (".onnx", ".json"):
            os.link(file, cache / file.name)
    documents = collect_documents(write_project(tmp_path / "project"))
    build_index(settings.local_paths().knowledge_base / "index", documents, model)
    return firepipe_home


def test_search_without_an_index_is_one_error_line(firepipe_home: Path) -> None:
    result = invoke("search", "what is firepipe?")
    assert result.exit_code == 1
    index = firepipe_home / "knowledge_base" / "index"
    assert result.output == (
        f"Error: no knowledge base index in {index}: run `firepipe kb build` (or `make run`) "
        "first\n"
    )


def test_search_json_lists_passages_with_sources(built: Path) -> None:
    result = invoke("search", "Where are Iceberg table snapshots stored?", "--k", "3", "--json")
    assert result.exit_code == 0, result.output
    passages = json.loads(result.output)
    assert len(passages) == 3
    assert passages[0]["source"] == "docs/lake.md"
    assert passages[0]["text"] == "The Iceberg catalog stores table snapshots in SQLite."
    assert set(passages[0]) == {"source", "heading", "text", "score"}
    assert passages[0]["score"] >= passages[1]["score"] >= passages[2]["score"]


def test_search_prints_ranked_passages(built: Path) -> None:
    result = invoke("search", "Where are Iceberg table snapshots stored?", "--k", "1")
    assert result.exit_code == 0, result.output
    first, text = result.output.splitlines()[:2]
    assert first.startswith("1. docs/lake.md - Lake (score 0.")
    assert text == "   The Iceberg catalog stores table snapshots in SQLite."


def test_k_is_checked(built: Path) -> None:
    result = invoke("search", "x", "--k", "0")
    assert result.exit_code == 2
    assert "0 is not in the range 1<=x<=50" in result.output


def test_build_reports_an_unchanged_index(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The project folder is the checkout's; its documents differ from the fixture's small
    # project, so build the same small project by pointing the resource at it.
    from firepipe.resources.knowledge_base import LocalKnowledgeBase

    monkeypatch.setattr(
        LocalKnowledgeBase, "documents", lambda self: collect_documents(built.parent / "project")
    )
    result = invoke("build")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("knowledge base unchanged: 5 documents, ")
    assert ", 0 updated, at " in result.output


def test_kb_cli_does_not_load_the_definitions() -> None:
    code = (
        "import sys, firepipe.cli.kb, firepipe.resources.knowledge_base;"
        "print(any(m.startswith('firepipe.defs') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
