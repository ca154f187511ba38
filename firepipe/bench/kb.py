"""Knowledge base: does a question find the document that answers it, and how fast.

- `recall_at_5`: the share of the labelled questions (firepipe/core/genai/kb/questions.json)
  whose answering document is among the sources of the first 5 passages of the embedding
  index (all-MiniLM-L6-v2 on ONNX Runtime, exact faiss search). Baseline: Okapi BM25 (k1 1.5,
  b 0.75) over the same chunks.
- `query_p50_ms`, `query_p95_ms`: one question to its 5 passages, in process, model and index
  loaded (embedding + search; BM25: scoring + ranking), over every question --repeats times.
- `load_s`: what a search needs before its first answer, the model's session (its ONNX graph
  already written, as after `make run`) and the index loaded, in a process that has imported
  onnxruntime and faiss (docs/knowledge-base.md has a fresh process's whole `kb search`).
- `build_s`: the whole corpus embedded and indexed from nothing; `rebuild_one_document_s`: the
  same index rebuilt after one document changed (only its chunks are embedded again).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from firepipe import settings
from firepipe.bench import BenchOptions, Figure
from firepipe.core.genai.kb.bm25 import BM25
from firepipe.core.genai.kb.documents import Document, collect_documents
from firepipe.core.genai.kb.evaluation import (
    Question,
    load_questions,
    percentile_ms,
    recall_at_k,
)
from firepipe.core.genai.kb.index import build_index, load_index
from firepipe.core.genai.kb.minilm import MiniLM

BENCH = "kb"
K = 5


def run(
    options: BenchOptions,
    *,
    documents: list[Document] | None = None,
    questions: list[Question] | None = None,
    model_cache: Path | None = None,
) -> list[Figure]:
    """The figures over firepipe's corpus and labelled questions, or those given (tests)."""
    cache = model_cache or settings.local_paths().knowledge_base / "model"
    MiniLM(cache)  # writes the ONNX graph once, outside the timings
    started = time.perf_counter()
    model = MiniLM(cache)
    model_s = time.perf_counter() - started
    documents = collect_documents() if documents is None else documents
    questions = load_questions() if questions is None else questions
    expected = [q.source for q in questions]
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-kb-") as tmp:
        root = Path(tmp) / "index"
        build = build_index(root, documents, model)
        started = time.perf_counter()
        index = load_index(root)
        load_s = model_s + time.perf_counter() - started
        changed = [replace(documents[0], text=documents[0].text + "\n\nOne more line.\n")]
        rebuild = build_index(root, changed + documents[1:], model)
    keywords = BM25([c.passage for c in index.chunks])
    dense_ranked, sparse_ranked, dense_s, sparse_s = [], [], [], []
    for _ in range(options.repeats):
        for q in questions:
            t0 = time.perf_counter()
            passages = index.search(model.embed([q.question])[0], K)
            t1 = time.perf_counter()
            top = keywords.top(q.question, K)
            t2 = time.perf_counter()
            dense_s.append(t1 - t0)
            sparse_s.append(t2 - t1)
            dense_ranked.append([p.source for p in passages])
            sparse_ranked.append([index.chunks[i].source for i in top])
    expected = expected * options.repeats
    return [
        Figure(
            BENCH,
            "recall_at_5",
            recall_at_k(dense_ranked, expected, K),
            "share",
            recall_at_k(sparse_ranked, expected, K),
        ),
        Figure(BENCH, "questions", float(len(questions)), "questions", None),
        Figure(BENCH, "chunks", float(build.chunks), "chunks", None),
        Figure(
            BENCH,
            "query_p50_ms",
            percentile_ms(dense_s, 50),
            "ms",
            percentile_ms(sparse_s, 50),
            higher_is_better=False,
        ),
        Figure(
            BENCH,
            "query_p95_ms",
            percentile_ms(dense_s, 95),
            "ms",
            percentile_ms(sparse_s, 95),
            higher_is_better=False,
        ),
        Figure(BENCH, "load_s", load_s, "s", None, higher_is_better=False),
        Figure(BENCH, "build_s", build.seconds, "s", None, higher_is_better=False),
        Figure(
            BENCH,
            "rebuild_one_document_s",
            rebuild.seconds,
            "s",
            build.seconds,
            higher_is_better=False,
        ),
    ]
