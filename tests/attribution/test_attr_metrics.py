"""MRR, recall@k and the first gold rank over a full score vector."""

import numpy as np

from plmkit.attribution import mrr, recall_at_k, top_k
from plmkit.attribution.metrics import first_gold_rank


def test_mrr_and_recall():
    ranked = [5, 3, 9, 1, 7]
    assert mrr(ranked, [9, 1]) == 1 / 3
    assert mrr(ranked, [42]) == 0.0
    assert recall_at_k(ranked, [9, 1, 42], 3) == 1 / 3
    assert recall_at_k(ranked, [9, 1, 42], 10) == 2 / 3
    assert recall_at_k(ranked, [], 10) == 0.0


def test_first_gold_rank_matches_a_full_sort():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.integers(0, 6, size=30).astype(float)  # many ties
        gold = rng.choice(30, size=rng.integers(1, 4), replace=False)
        order = [i for i, _ in top_k(s, len(s))]
        assert first_gold_rank(s, gold) == 1 / mrr(order, gold)
