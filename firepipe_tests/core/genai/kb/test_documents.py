"""The corpus and its chunks: what is in it, and chunks the model reads whole."""

from pathlib import Path

import pytest

from firepipe.core.genai.kb import catalog
from firepipe.core.genai.kb.documents import (
    NIST_SOURCE,
    CorpusError,
    Document,
    chunk_corpus,
    chunk_document,
    collect_documents,
    corpus_sha256,
    project_root,
    sections,
)
from firepipe.core.genai.kb.evaluation import load_questions
from firepipe.core.genai.kb.minilm import MAX_TOKENS, MiniLM
from firepipe.core.simulation.scenarios import CATALOG, FAMILIES


def _project(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "runbooks").mkdir(parents=True)
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "README.md").write_text("# Readme\n\nHello.\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n\nBee.\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\nAy.\n")
    (tmp_path / "docs" / "runbooks" / "restore.md").write_text("# Restore\n\nSteps.\n")
    (tmp_path / "runbooks" / "oncall.md").write_text("# On call\n\nPage.\n")
    (tmp_path / "docs" / "notes.txt").write_text("not markdown")
    return tmp_path


def test_corpus_holds_readme_docs_runbooks_nist_note_and_catalog(tmp_path: Path) -> None:
    sources = [d.source for d in collect_documents(_project(tmp_path))]
    assert sources == [
        "README.md",
        "docs/a.md",
        "docs/b.md",
        "docs/runbooks/restore.md",
        "runbooks/oncall.md",
        NIST_SOURCE,
        catalog.SOURCE,
    ]


def test_missing_project_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"no README.md and no docs"):
        project_root(tmp_path)
    (tmp_path / "README.md").write_text("# x\n")
    with pytest.raises(CorpusError, match=rf"{tmp_path} holds no docs"):
        project_root(tmp_path)


def test_catalog_lists_every_family_and_scenario_with_its_sensors() -> None:
    text = catalog.render_catalog()
    for family in FAMILIES:
        assert f"## Family {family}" in text
    for scenario in CATALOG:
        assert f"### {scenario.name}" in text
    cotton = text.split("### smouldering_cotton")[1].split("###")[0]
    assert "room emission co: 0.3-2 mg/s, raises co_ppm" in cotton
    assert "mass extinction 4.4 m^2/g" in cotton
    assert "alpha 0.1876 kW/s^2" in text.split("### flaming_ultra_fast")[1].split("###")[0]


def test_sections_follow_headings_but_not_inside_code_fences() -> None:
    doc = Document(
        "d.md",
        "# Top\n\nintro\n\n## Run\n\n```sh\n# not a heading\nmake run\n```\n\n"
        "### Deep\n\ndeep text\n\n## Next\n\nnext text\n",
    )
    got = list(sections(doc))
    assert [h for h, _ in got] == ["Top", "Top > Run", "Top > Run > Deep", "Top > Next"]
    assert "# not a heading" in got[1][1]


def test_long_sections_are_cut_within_the_limit_keeping_every_word(minilm: MiniLM) -> None:
    paragraphs = [" ".join(f"p{p}w{i}" for i in range(30)) for p in range(6)]
    one_long_line = " ".join(f"long{i}" for i in range(200))
    doc = Document("d.md", "# Title\n\n" + "\n\n".join([*paragraphs, one_long_line]) + "\n")
    chunks = chunk_document(doc, minilm, max_tokens=64)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.heading == "Title"
        assert chunk.tokens == minilm.count_tokens(chunk.passage) <= 64
    words = " ".join(c.text for c in chunks).split()
    assert words == " ".join([*paragraphs, one_long_line]).split()


def test_a_short_section_is_one_chunk(minilm: MiniLM) -> None:
    doc = Document("d.md", "# A\n\nfirst paragraph\n\nsecond paragraph\n")
    (chunk,) = chunk_document(doc, minilm)
    assert chunk.text == "first paragraph\n\nsecond paragraph"
    assert chunk.passage == "A\nfirst paragraph\n\nsecond paragraph"


def test_real_corpus_chunks_fit_the_model_and_answer_the_questions(minilm: MiniLM) -> None:
    documents = collect_documents()
    chunks = chunk_corpus(documents, minilm)
    assert max(c.tokens for c in chunks) <= MAX_TOKENS
    assert {c.source for c in chunks} == {d.source for d in documents}
    questions = load_questions()
    assert len(questions) >= 30
    assert {q.source for q in questions} <= {d.source for d in documents}


def test_corpus_hash_changes_with_any_document() -> None:
    a, b = Document("a.md", "one"), Document("b.md", "two")
    assert corpus_sha256([a, b]) == corpus_sha256([a, b])
    assert corpus_sha256([a, b]) != corpus_sha256([a, Document("b.md", "two!")])
