"""Okapi BM25 over the knowledge base's chunks: the keyword baseline the embedding index is
measured against (`firepipe bench kb`). A few hundred chunks fit a dense term matrix."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

K1 = 1.5
B = 0.75
_WORD = re.compile(r"[a-z0-9]+")


def terms(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: `co_ppm` is `co` and `ppm`."""
    return _WORD.findall(text.lower())


class BM25:
    def __init__(self, texts: Sequence[str], k1: float = K1, b: float = B) -> None:
        counts = [Counter(terms(t)) for t in texts]
        self.vocabulary = {term: i for i, term in enumerate(sorted(set().union(*counts)))}
        tf = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float64)
        for row, c in enumerate(counts):
            for term, n in c.items():
                tf[row, self.vocabulary[term]] = n
        lengths = tf.sum(axis=1)
        average = lengths.mean() if len(texts) else 0.0
        df = (tf > 0).sum(axis=0)
        # Lucene's idf: never negative, so a term in most chunks still counts a little.
        self.idf = np.log1p((len(texts) - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / average) if average else np.full_like(lengths, k1)
        self._weights = tf * (k1 + 1) / (tf + norm[:, None])

    def scores(self, query: str) -> NDArray[np.float64]:
        """Each text's BM25 score for `query` (a repeated query term counts once per use)."""
        columns = [self.vocabulary[t] for t in terms(query) if t in self.vocabulary]
        if not columns:
            return np.zeros(self._weights.shape[0])
        return np.asarray(self._weights[:, columns] @ self.idf[columns], dtype=np.float64)

    def top(self, query: str, k: int) -> list[int]:
        """The k best texts' positions, best first (ties: the earlier text first)."""
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")
        return [int(i) for i in order[:k]]
