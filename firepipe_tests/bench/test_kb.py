"""`firepipe bench kb` on a small corpus and question set: its figures, recall within [0, 1]
with the BM25 baseline beside it, and the rebuild after one edit embedding only that document."""

from firepipe.bench import BenchOptions
from firepipe.bench.kb import run
from firepipe.bench.suites import SUITES
from firepipe.core.genai.kb.documents import Document
from firepipe.core.genai.kb.evaluation import Question
from firepipe_tests.core.genai.kb.shared import MODEL_CACHE

TOPICS = {
    "docs/smoke.md": "Smouldering fires raise carbon monoxide long before the temperature climbs.",
    "docs/lake.md": "The Iceberg catalog stores table snapshots in SQLite.",
    "docs/serve.md": "The inference service answers predictions over HTTP with an API key.",
    "docs/train.md": "LightGBM learns the detector from labelled synthetic readings.",
    "docs/agents.md": "The response agent escalates an alert nobody acknowledged.",
    "docs/nist.md": "The NIST home smoke alarm tests give the real fires for evaluation.",
    "docs/bench.md": "Benchmarks print figures beside a baseline; tests never assert timings.",
    "docs/cloud.md": "Setting FIREPIPE_ENV to aws moves storage to S3 and Glue.",
}
QUESTIONS = [
    Question("Which gas rises early in a smouldering fire?", "docs/smoke.md"),
    Question("Where are the table snapshots kept?", "docs/lake.md"),
    Question("How do I get predictions over HTTP?", "docs/serve.md"),
    Question("What happens when nobody acknowledges an alert?", "docs/agents.md"),
    Question("How do I run firepipe on AWS?", "docs/cloud.md"),
]


def test_bench_kb_reports_recall_against_bm25_and_timings() -> None:
    documents = [Document(source, f"# {source}\n\n{text}\n") for source, text in TOPICS.items()]
    figures = {
        f.name: f
        for f in run(
            BenchOptions(repeats=2),
            documents=documents,
            questions=QUESTIONS,
            model_cache=MODEL_CACHE,
        )
    }
    assert list(figures) == [
        "recall_at_5",
        "questions",
        "chunks",
        "query_p50_ms",
        "query_p95_ms",
        "load_s",
        "build_s",
        "rebuild_one_document_s",
    ]
    assert {f.bench for f in figures.values()} == {"kb"}
    recall = figures["recall_at_5"]
    assert recall.baseline is not None  # BM25 over the same chunks
    assert 0.0 <= recall.value <= 1.0
    assert 0.0 <= recall.baseline <= 1.0
    # 5 of 8 one-chunk documents come back per question: chance alone would miss some.
    assert recall.value == 1.0
    assert (figures["questions"].value, figures["chunks"].value) == (5.0, 8.0)
    for name in ("query_p50_ms", "query_p95_ms"):
        assert figures[name].baseline is not None, name  # BM25's latency
        assert figures[name].value > 0, name
        assert figures[name].higher_is_better is False
    assert figures["query_p95_ms"].value >= figures["query_p50_ms"].value
    for name in ("load_s", "build_s", "rebuild_one_document_s"):
        assert figures[name].value > 0, name
    # The rebuild's baseline is the build from nothing.
    assert figures["rebuild_one_document_s"].baseline == figures["build_s"].value


def test_bench_kb_is_a_suite() -> None:
    assert SUITES["kb"] is run
