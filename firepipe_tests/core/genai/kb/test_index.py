"""The faiss index: search, incremental rebuilds, and a build that dies leaves the old index."""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from firepipe.core.genai.kb import index as kb_index
from firepipe.core.genai.kb.documents import Document
from firepipe.core.genai.kb.index import IndexMissingError, build_index, load_index
from firepipe.core.genai.kb.minilm import MiniLM


class Counting:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, model: MiniLM, sha: str | None = None) -> None:
        self.model = model
        self.model_sha256 = sha or model.model_sha256
        self.embedded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int, bool]]:
        return self.model.token_offsets(text)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.embedded += texts
        return self.model.embed(texts)


def _search(root: Path, model: MiniLM, question: str, k: int = 3) -> list[str]:
    return [p.source for p in load_index(root).search(model.embed([question])[0], k)]


def test_search_finds_the_answering_document(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document]
) -> None:
    report = build_index(tmp_path, corpus, Counting(minilm))
    assert (report.documents, report.chunks, report.reembedded, report.changed) == (3, 5, 5, True)
    assert _search(tmp_path, minilm, "which gas rises early in a smouldering fire?")[0] == (
        "docs/smoke.md"
    )
    assert _search(tmp_path, minilm, "how are the tables partitioned?")[0] == "docs/lake.md"
    passages = load_index(tmp_path).search(minilm.embed(["HTTP predictions"])[0], 10)
    assert len(passages) == 5  # no more than the index holds
    assert passages[0].source == "docs/serve.md"
    assert passages[0].heading == "Serving"
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)


def test_rebuild_embeds_only_changed_chunks(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document]
) -> None:
    build_index(tmp_path, corpus, Counting(minilm))
    first = load_index(tmp_path)
    same = Counting(minilm)
    report = build_index(tmp_path, corpus, same)
    assert (report.changed, report.reembedded, same.embedded) == (False, 0, [])
    assert report.folder == str(first.folder)
    edited = replace(corpus[1], text=corpus[1].text.replace("by day", "by month"))
    changed = Counting(minilm)
    report = build_index(tmp_path, [corpus[0], edited, corpus[2]], changed)
    assert (report.changed, report.reembedded) == (True, 1)
    assert changed.embedded == [
        "Lake > Partitions\nSilver and gold tables are partitioned by month."
    ]
    second = load_index(tmp_path)
    # Reused vectors are the old ones, the new one is the model's.
    np.testing.assert_array_equal(second.vectors()[:3], first.vectors()[:3])
    np.testing.assert_allclose(second.vectors()[3], minilm.embed(changed.embedded)[0], atol=1e-6)
    assert not first.folder.exists()  # the old version is removed once replaced


def test_another_model_reembeds_everything(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document]
) -> None:
    build_index(tmp_path, corpus, Counting(minilm))
    report = build_index(tmp_path, corpus, Counting(minilm, sha="another-model"))
    assert (report.changed, report.reembedded) == (True, 5)
    assert load_index(tmp_path).manifest["model_sha256"] == "another-model"


def test_a_build_that_dies_leaves_the_old_index(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    build_index(tmp_path, corpus[:2], Counting(minilm))
    old = load_index(tmp_path)

    def crash(root: Path, folder: Path) -> None:
        raise KeyboardInterrupt("killed before the switch")

    monkeypatch.setattr(kb_index, "_point_at", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(tmp_path, corpus, Counting(minilm))
    monkeypatch.undo()
    kept = load_index(tmp_path)
    assert kept.folder == old.folder
    assert {c.source for c in kept.chunks} == {"docs/smoke.md", "docs/lake.md"}
    assert len(list(tmp_path.glob("v-*"))) == 2  # the dead build's folder, never pointed at
    report = build_index(tmp_path, corpus, Counting(minilm))
    assert [p.name for p in tmp_path.glob("v-*")] == [Path(report.folder).name]


def test_no_index_says_so(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match=f"no knowledge base index in {tmp_path}"):
        load_index(tmp_path)


def test_k_must_be_positive(tmp_path: Path, minilm: MiniLM, corpus: list[Document]) -> None:
    build_index(tmp_path, corpus, Counting(minilm))
    with pytest.raises(ValueError, match="k must be at least 1"):
        load_index(tmp_path).search(minilm.embed(["x"])[0], 0)
