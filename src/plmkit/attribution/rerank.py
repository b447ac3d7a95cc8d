"""The combined method: BM25's top-k candidates reordered by another method's scores (e.g. TracIn).

The reranked list holds only BM25's top ``k`` examples (the rest are not scored by the second method),
so it costs k gradient evaluations per query instead of N.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plmkit.attribution.bm25 import top_k


def rerank(first: Any, second: Any, query: Any, k: int = 100) -> list[tuple[int, float]]:
    """``first``'s top ``k`` ids reordered by ``second.scores(query, candidate_ids=...)``, best first."""
    cand = [i for i, _ in first.top_k(query, k)]
    if not cand:
        return []
    s = np.asarray(second.scores(query, candidate_ids=cand))
    return top_k(s, len(cand), ids=cand)


class Reranked:
    """``first`` retrieves the top ``k``, ``second`` orders them (``scores`` is -inf outside the top ``k``)."""

    def __init__(self, first: Any, second: Any, k: int = 100):
        self.first, self.second, self.k = first, second, k

    def scores(self, query: Any, candidate_ids=None) -> np.ndarray:
        full = self.first.scores(query)
        cand = np.asarray([i for i, _ in top_k(full, self.k)], dtype=np.int64)
        out = np.full(len(full), -np.inf, dtype=np.float32)
        out[cand] = self.second.scores(query, candidate_ids=cand)
        return out if candidate_ids is None else out[np.asarray(candidate_ids, dtype=np.int64)]

    def top_k(self, query: Any, k: int) -> list[tuple[int, float]]:
        return rerank(self.first, self.second, query, max(k, self.k))[:k]
