"""How well a search finds the document that answers a question: recall@k over a labelled set
(firepipe/core/genai/kb/questions.json, packaged), and latency percentiles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUESTIONS = Path(__file__).resolve().parent / "questions.json"


@dataclass(frozen=True)
class Question:
    question: str
    source: str  # the document that answers it


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    rows = json.loads(path.read_text())["questions"]
    return [Question(r["question"], r["source"]) for r in rows]


def recall_at_k(ranked_sources: Sequence[Sequence[str]], expected: Sequence[str], k: int) -> float:
    """The share of questions whose answering document is among the sources of the first k
    results (a document counts once, however many of its chunks come back)."""
    if len(ranked_sources) != len(expected):
        raise ValueError(f"{len(ranked_sources)} rankings for {len(expected)} questions")
    if not expected:
        raise ValueError("no questions")
    hits = sum(
        source in ranked[:k] for ranked, source in zip(ranked_sources, expected, strict=True)
    )
    return hits / len(expected)


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))
