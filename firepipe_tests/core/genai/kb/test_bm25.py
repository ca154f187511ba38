"""Okapi BM25, the keyword baseline, on a toy corpus worked by hand."""

import math

import numpy as np
import pytest

from firepipe.core.genai.kb.bm25 import BM25, terms

TEXTS = [
    "smoke smoke alarm",  # 3 terms
    "carbon monoxide alarm",  # 3 terms
    "the kitchen the kitchen the kitchen smoke",  # 7 terms
]


def test_terms_split_identifiers() -> None:
    assert terms("co_ppm rose to 12.5 ppm, Smoke!") == [
        "co",
        "ppm",
        "rose",
        "to",
        "12",
        "5",
        "ppm",
        "smoke",
    ]


def test_score_matches_the_formula() -> None:
    bm25 = BM25(TEXTS)
    avgdl = 13 / 3
    idf_smoke = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected_0 = idf_smoke * 2 * 2.5 / (2 + 1.5 * (1 - 0.75 + 0.75 * 3 / avgdl))
    expected_2 = idf_smoke * 1 * 2.5 / (1 + 1.5 * (1 - 0.75 + 0.75 * 7 / avgdl))
    np.testing.assert_allclose(bm25.scores("smoke"), [expected_0, 0.0, expected_2])


def test_rare_terms_outrank_common_ones() -> None:
    bm25 = BM25(TEXTS)
    assert bm25.top("monoxide alarm", 3)[0] == 1
    assert bm25.top("smoke", 2) == [0, 2]  # more smoke in a shorter text first
    assert bm25.top("kitchen smoke", 1) == [2]


def test_unknown_words_score_nothing() -> None:
    bm25 = BM25(TEXTS)
    assert bm25.scores("zebra").tolist() == [0.0, 0.0, 0.0]
    assert bm25.top("zebra", 2) == [0, 1]  # ties keep the corpus order


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_returns_at_most_k(k: int) -> None:
    assert len(BM25(TEXTS).top("alarm", k)) == min(k, 3)
