"""Metrics against reference implementations (seqeval, numpy/scipy-free formulas) on random data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from plmkit.tasks import metrics as M


def test_entity_f1_matches_seqeval_on_random_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold, pred = [], []
    for _ in range(300):
        n = rng.randint(1, 12)
        g = [rng.choice(tags) for _ in range(n)]
        # prediction: mostly the gold, with noise, so scores are neither 0 nor 1
        p = [t if rng.random() < 0.7 else rng.choice(tags) for t in g]
        gold.append(g)
        pred.append(p)
    ours = M.entity_scores(gold, pred)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
    assert 0.2 < ours["f1"] < 0.95


def test_get_entities_conlleval_rules():
    assert M.get_entities(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"]) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),
        ("LOC", 5, 5),
    ]
    # a type change inside I- starts a new entity
    assert M.get_entities(["B-PER", "I-ORG"]) == [("PER", 0, 0), ("ORG", 1, 1)]


def test_classification_metrics_against_formulas():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.8, y, 1 - y)
    tp = ((p == 1) & (y == 1)).sum()
    fp = ((p == 1) & (y == 0)).sum()
    fn = ((p == 0) & (y == 1)).sum()
    tn = ((p == 0) & (y == 0)).sum()
    assert M.f1(p, y) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert M.matthews_corrcoef(p, y) == pytest.approx(mcc)
    assert M.accuracy(p, y) == pytest.approx((tp + tn) / 500)
    assert M.f1(p, y, average="micro") == pytest.approx(M.accuracy(p, y))
    assert M.f1(p, y, average="macro") == pytest.approx((M.f1(p, y, pos_label=1) + M.f1(p, y, pos_label=0)) / 2)
    assert M.matthews_corrcoef(y, y) == pytest.approx(1.0)


def test_correlations():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 2 * x + rng.normal(size=200)
    assert M.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Spearman is invariant to monotone transforms and handles ties with average ranks
    assert M.spearman(x, np.exp(x)) == pytest.approx(1.0)
    a = [1, 2, 2, 3]
    assert list(M._rankdata(np.array(a, dtype=float))) == [1.0, 2.5, 2.5, 4.0]
    scipy_stats = pytest.importorskip("scipy.stats")
    yt = np.round(y)  # ties
    assert M.spearman(x, yt) == pytest.approx(scipy_stats.spearmanr(x, yt)[0])


def test_squad_official_normalisation_and_scores():
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.squad_exact("the Denver Broncos", "Denver Broncos") == 1.0
    assert M.squad_f1("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    s = M.squad_scores({"q1": "Broncos", "q2": "nothing"}, {"q1": ["Denver Broncos", "Broncos"], "q2": ["x"], "q3": ["y"]})
    assert s["exact_match"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(1 / 3)
