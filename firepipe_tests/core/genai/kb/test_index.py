"""The faiss index: search, incremental rebuilds, a build that dies leaves the old index, a
dangling or damaged index is rebuilt, and two builds at once take turns."""

import shutil
import threading
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


def test_a_pointer_to_a_removed_version_is_rebuilt(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document]
) -> None:
    gone = Path(build_index(tmp_path, corpus, Counting(minilm)).folder)
    shutil.rmtree(gone)
    with pytest.raises(IndexMissingError, match=f"names version {gone.name}, which is gone"):
        load_index(tmp_path)
    again = Counting(minilm)
    report = build_index(tmp_path, corpus, again)
    assert (report.changed, report.reembedded, len(again.embedded)) == (True, 5, 5)
    assert _search(tmp_path, minilm, "how are the tables partitioned?")[0] == "docs/lake.md"


@pytest.mark.parametrize(
    ("damaged", "content"),
    [("manifest.json", "{not json"), ("chunks.json", "[{}]"), ("index.faiss", "not faiss")],
)
def test_a_damaged_version_is_rebuilt(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document], damaged: str, content: str
) -> None:
    folder = Path(build_index(tmp_path, corpus, Counting(minilm)).folder)
    (folder / damaged).write_text(content)
    report = build_index(tmp_path, corpus, Counting(minilm))
    assert (report.changed, report.reembedded) == (True, 5)
    assert load_index(tmp_path).folder == Path(report.folder)
    assert not folder.exists()


def test_a_reader_on_a_replaced_version_reads_the_new_one(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = Path(build_index(tmp_path, corpus[:2], Counting(minilm)).folder)
    new = Path(build_index(tmp_path, corpus, Counting(minilm)).folder)
    assert not old.exists()
    # The reader took CURRENT just before the second build switched it and removed `old`.
    answers = iter([old])
    real = kb_index.current_folder
    monkeypatch.setattr(kb_index, "current_folder", lambda root: next(answers, None) or real(root))
    loaded = load_index(tmp_path)
    assert (loaded.folder, len(loaded.chunks)) == (new, 5)


class Held(Counting):
    """An embedder that stops inside the build until released, holding the build lock."""

    def __init__(self, model: MiniLM) -> None:
        super().__init__(model)
        self.entered, self.release = threading.Event(), threading.Event()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.entered.set()
        assert self.release.wait(30)
        return super().embed(texts)


def test_a_second_build_waits_then_embeds_nothing(
    tmp_path: Path, minilm: MiniLM, corpus: list[Document]
) -> None:
    first, second = Held(minilm), Counting(minilm)
    reports: dict[str, kb_index.BuildReport] = {}

    def build(name: str, embedder: Counting) -> None:
        reports[name] = build_index(tmp_path, corpus, embedder)

    one = threading.Thread(target=build, args=("first", first))
    two = threading.Thread(target=build, args=("second", second))
    one.start()
    assert first.entered.wait(30)
    two.start()
    two.join(timeout=1.0)
    assert two.is_alive()  # waiting for the first build's lock, not building beside it
    first.release.set()
    one.join(30)
    two.join(30)
    assert (reports["first"].changed, reports["first"].reembedded) == (True, 5)
    assert (reports["second"].changed, reports["second"].reembedded) == (False, 0)
    assert second.embedded == []
    assert reports["second"].folder == reports["first"].folder
    assert [p.name for p in tmp_path.glob("v-*")] == [Path(reports["first"].folder).name]
    assert load_index(tmp_path).folder == Path(reports["first"].folder)


def test_no_index_says_so(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match=f"no knowledge base index in {tmp_path}"):
        load_index(tmp_path)


def test_k_must_be_positive(tmp_path: Path, minilm: MiniLM, corpus: list[Document]) -> None:
    build_index(tmp_path, corpus, Counting(minilm))
    with pytest.raises(ValueError, match="k must be at least 1"):
        load_index(tmp_path).search(minilm.embed(["x"])[0], 0)
