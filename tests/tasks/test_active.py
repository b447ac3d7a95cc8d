"""Active learning (plmkit.tasks.active): entropy against a hand computation, k-means selection picks one example
per cluster (the one nearest the cluster's mean), and ``plm finetune --active-learning`` respects its labelling
budget and never labels an example twice (toy data of tests/conftest.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from plmkit.tasks.active import entropy, kmeans, select


def test_entropy_by_hand():
    probs = [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]
    want = [math.log(3), 0.0, -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))]
    assert np.allclose(entropy(np.array(probs)), want, atol=1e-12)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(2), size=50)
    h = [-(a * math.log(a) + b * math.log(b)) for a, b in p]
    assert select("entropy", 7, probs=p) == sorted(np.argsort(h)[::-1][:7].tolist())


def test_kmeans_picks_one_per_cluster():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    x = np.concatenate([c + rng.normal(size=(12, 2)) for c in centres])
    blob = np.repeat(np.arange(4), 12)
    picked = select("kmeans", 4, reps=x, seed=3)
    assert len(picked) == 4 and sorted(blob[picked].tolist()) == [0, 1, 2, 3]  # one example from each blob
    for i in picked:  # the member nearest its cluster's mean (here: the blob mean)
        members = np.flatnonzero(blob == blob[i])
        mean = x[members].mean(0)
        assert i == members[((x[members] - mean) ** 2).sum(-1).argmin()]
    c, assign = kmeans(x, 4, seed=0)
    for j in range(4):
        assert np.allclose(c[j], x[assign == j].mean(0))
    assert select("random", 5, reps=x, seed=2) == select("random", 5, reps=x, seed=2)
    assert len(set(select("random", 5, reps=x, seed=2))) == 5


@pytest.mark.parametrize("strategy", ["entropy", "kmeans", "random"])
def test_loop_budget_and_no_double_labels(workdir, ft, strategy):
    res = ft(f"al_{strategy}", "--active-learning", "--al-strategy", strategy, "--al-init", "16", "--al-batch", "24",
             "--al-rounds", "2", "--epochs", "3", "--max-train-examples", "100")
    lab = json.loads((workdir / f"al_{strategy}" / "labelled.json").read_text())
    flat = [i for r in lab["rounds"] for i in r]
    assert [len(r) for r in lab["rounds"]] == [16, 24, 24]
    assert len(flat) == len(set(flat)) == 64 == res["active_learning"]["budget"]  # no example twice, budget spent
    assert sorted(flat) == lab["labelled"] and all(0 <= i < 100 for i in flat)
    assert [c["labelled"] for c in res["curve"]] == [16, 40, 64]
    assert res["curve"][-1]["accuracy"] == res["accuracy"]


def test_budget_over_the_pool_is_refused(workdir, capsys):
    from plmkit.cli.main import main

    rc = main(["finetune", "--task", "classification", "--model", str(workdir / "model"), "--data", str(workdir),
               "--out", str(workdir / "al_bad"), "--active-learning", "--al-batch", "50", "--al-rounds", "3",
               "--max-train-examples", "100"])
    assert rc == 2 and "exceeds the pool of 100" in capsys.readouterr().err
    assert not (workdir / "al_bad").exists()
