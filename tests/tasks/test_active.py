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


# ---------------------------------------------------------------- reconstruction-loss criteria (coverage, noise)
@pytest.fixture(scope="module")
def tiny_lm(workdir):
    """A tiny random GPT-2 with a byte-level BPE tokenizer (BOS id 0), saved as a model directory."""
    import plmkit
    import torch

    d = workdir / "al_lm"
    if not d.exists():
        tok = plmkit.train_tokenizer([str(workdir / "corpus.txt")], kind="bpe", vocab_size=300)
        torch.manual_seed(0)
        lm = plmkit.load("gpt2", vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                         max_position_embeddings=64, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
        lm.save_pretrained(d)
        tok.save(d)
    return d


def test_token_surprisal_equals_a_prefix_by_prefix_loop(tiny_lm):
    import plmkit
    import torch

    from plmkit.tasks.active import token_surprisal

    lm, tok = plmkit.load(str(tiny_lm)), plmkit.load_tokenizer(str(tiny_lm))
    lm.eval()
    texts = ["good movie", "the answer is positive for the word", "bad", "what a great and fine film it was"]
    got = token_surprisal(lm, tok, texts, batch_size=3)
    for text, prof in zip(texts, got):
        ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)
        assert [t for t, _ in prof] == ids[1:]
        for p in range(1, len(ids)):  # -log p(x_p | x_<p), each prefix run alone, full logits
            with torch.no_grad():
                logits = lm(torch.tensor([ids[:p]])).logits
            want = -float(torch.log_softmax(logits.reshape(-1, logits.shape[-1])[-1].double(), -1)[ids[p]])
            assert prof[p - 1][1] == pytest.approx(want, abs=1e-4)


def test_coverage_and_noise_by_hand():
    from plmkit.tasks.active import coverage_gain, noise_weights, select

    p = [[(1, 3.0), (5, 1.0), (1, 2.0)], [(1, 3.0), (6, 0.5)], [(7, 2.0)], [(5, 0.2)]]
    assert coverage_gain(p[0], set()) == 4.0  # type 1 once, at its largest surprisal (3.0), + type 5
    assert coverage_gain(p[0], {1}) == 1.0 and coverage_gain(p[3], {5}) == 0.0
    # greedy: 0 (gain 4) first; then 1 gains only 0.5 (type 1 is covered) and 2 gains 2 -> 2, not 1
    assert select("coverage", 2, profiles=p, covered=set()) == [0, 2]
    assert select("coverage", 2, profiles=p, covered={7}) == [0, 1]
    # losses 1,1,1,1,5: mean 1.8, std 1.6; z(5) = 2 -> weight exp(-(2 - 1)); z = -0.5 elsewhere -> 1
    w = noise_weights(np.array([1.0, 1.0, 1.0, 1.0, 5.0]))
    assert np.allclose(w, [1, 1, 1, 1, math.exp(-1)])
    assert np.allclose(noise_weights(np.full(3, 2.0)), 1.0)
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.95, 0.05], [0.99, 0.01], [0.5, 0.5]])
    prof = [[(1, v)] for v in (1.0, 1.0, 1.0, 1.0, 5.0)]
    assert select("entropy", 1, probs=probs) == [4]  # the most uncertain ...
    assert select("noise", 1, probs=probs, profiles=prof) == [0]  # ... is the noisy one: ln2 / e < H(0.6, 0.4)
    # H(0.9, 0.1) = 0.325 > ln2 / e = 0.255: the noisy one drops behind a confident example too
    assert select("entropy", 2, probs=probs) == [0, 4] and select("noise", 2, probs=probs, profiles=prof) == [0, 1]


@pytest.mark.parametrize("strategy", ["coverage", "noise"])
def test_loop_with_reconstruction_criteria(workdir, ft, tiny_lm, strategy):
    res = ft(f"al_{strategy}", "--active-learning", "--al-strategy", strategy, "--al-lm", str(tiny_lm),
             "--al-init", "16", "--al-batch", "24", "--al-rounds", "2", "--epochs", "2", "--max-train-examples", "100")
    lab = json.loads((workdir / f"al_{strategy}" / "labelled.json").read_text())
    flat = [i for r in lab["rounds"] for i in r]
    assert [len(r) for r in lab["rounds"]] == [16, 24, 24] and len(set(flat)) == 64
    rec = json.loads((workdir / f"al_{strategy}" / "reconstruction.json").read_text())
    assert len(rec["mean_surprisal"]) == 100 and all(v > 0 for v in rec["mean_surprisal"])
    assert res["active_learning"]["lm"] == str(tiny_lm)
    if strategy == "coverage":  # round 1 is the greedy coverage batch given the initial labels
        import plmkit
        from plmkit.tasks.active import example_profile, select
        from plmkit.tasks.finetuning import read_task_data
        from plmkit.tasks.config import FinetuneConfig
        from plmkit.tasks.data import task_spec

        cfg = FinetuneConfig(task="classification", model=str(workdir / "model"), data=str(workdir),
                             out=str(workdir / "x"), max_train_examples=100, max_seq_len=32)
        train = read_task_data(cfg, task_spec(cfg)).train
        prof = example_profile(plmkit.load(str(tiny_lm)), plmkit.load_tokenizer(str(tiny_lm)), train, max_len=32)
        init = lab["rounds"][0]
        pool = [i for i in range(100) if i not in init]
        want = [pool[j] for j in select("coverage", 24, profiles=[prof[i] for i in pool],
                                        covered={t for i in init for t, _ in prof[i]})]
        assert lab["rounds"][1] == want


def test_reconstruction_criteria_need_a_causal_lm(workdir, capsys):
    from plmkit.cli.main import main

    base = ["finetune", "--task", "classification", "--model", str(workdir / "model"), "--data", str(workdir),
            "--active-learning", "--al-strategy", "coverage", "--al-batch", "8", "--al-rounds", "1",
            "--max-train-examples", "40"]
    assert main(base + ["--out", str(workdir / "al_nolm")]) == 2
    assert "give --al-lm" in capsys.readouterr().err
    assert main(base + ["--out", str(workdir / "al_enc"), "--al-lm", str(workdir / "model")]) == 2
    assert "causal decoder" in capsys.readouterr().err
