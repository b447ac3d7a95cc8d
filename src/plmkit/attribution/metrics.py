"""Ranking metrics for attribution: MRR (first gold hit) and recall@k (Akyürek et al. 2022)."""

from __future__ import annotations

from typing import Iterable, Sequence


def mrr(ranked_ids: Sequence[int], gold_ids: Iterable[int]) -> float:
    """1 / (1-based rank of the first gold id in ``ranked_ids``); 0 when none is ranked."""
    gold = set(int(g) for g in gold_ids)
    for r, i in enumerate(ranked_ids, 1):
        if int(i) in gold:
            return 1.0 / r
    return 0.0


def recall_at_k(ranked_ids: Sequence[int], gold_ids: Iterable[int], k: int) -> float:
    """Fraction of the gold ids found in the top ``k`` of ``ranked_ids`` (0 when there is no gold id)."""
    gold = set(int(g) for g in gold_ids)
    if not gold:
        return 0.0
    return len(gold.intersection(int(i) for i in list(ranked_ids)[:k])) / len(gold)


def first_gold_rank(scores, gold_ids: Iterable[int]) -> int:
    """1-based rank of the best-ranked gold id when all examples are sorted by ``scores`` (descending,
    ties by smaller id, as :func:`plmkit.attribution.bm25.top_k`), without sorting everything."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    gold = np.unique(np.asarray(list(gold_ids), dtype=np.int64))
    if not len(gold):
        raise ValueError("no gold ids")
    best = s[gold].max()
    first = gold[s[gold] == best].min()
    return int((s > best).sum() + (s[:first] == best).sum() + 1)
