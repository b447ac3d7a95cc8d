"""TracIn: batched per-example gradients against one-at-a-time autograd, the projection, a run's
checkpoints and learning rates, and a fact seen once whose document must rank first."""

import numpy as np
import pytest
import torch

from attr_toy import FACTS, LR, STEPS, CharTok, copy_without_checkpoints, toy_run
from plmkit.attribution import Query, TracIn, TrainingExamples
from plmkit.attribution.metrics import first_gold_rank
from plmkit.attribution.tracin import _LM, _nll, run_checkpoints
from plmkit.errors import UserError
from plmkit.models import load

TEXTS = ["the cat sat on the mat", "a dog", "paris is in france", "x", "berlin is in germany ok",
         "snow in june", "france has paris", "the end of the story is near"]


def _tiny(seed=0, preset="gpt2-tiny"):
    torch.manual_seed(seed)
    extra = {"num_kv_heads": 1} if preset == "llama-tiny" else {}
    return load(preset, vocab_size=50, hidden_size=32, num_heads=2, intermediate_size=64,
                max_position_embeddings=64, **extra).eval()


def _reference_grad(model, ids, labels, names):
    """Plain autograd on one unpadded sequence: the flat gradient of the selected parameters."""
    model.zero_grad()
    logits = _LM(model)(torch.tensor([ids]))
    _nll(logits[0], torch.tensor(labels)).backward()
    params = dict(model.named_parameters())
    return torch.cat([(params[n].grad if params[n].grad is not None else torch.zeros_like(params[n])).reshape(-1)
                      for n in names]).double()


@pytest.mark.parametrize("preset, layers", [("gpt2-tiny", None), ("gpt2-tiny", [1]), ("llama-tiny", None)])
def test_one_checkpoint_is_lr_times_dot_of_single_example_gradients(preset, layers):
    model = _tiny(preset=preset)
    ex = TrainingExamples.from_texts(TEXTS, CharTok())
    lr = 0.0123
    tr = TracIn([(model, lr)], CharTok(), ex, layers=layers)
    q = Query("q", "paris is in", "france")
    got = tr.scores(q)
    gq = _reference_grad(model, *tr.query_seq(q), tr.names)
    want = np.array([lr * float(gq @ _reference_grad(model, *tr._example_seq(i), tr.names)) for i in range(len(TEXTS))])
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7 * np.abs(want).max())
    # a candidate subset gives the same numbers in the given order
    np.testing.assert_allclose(tr.scores(q, candidate_ids=[4, 0, 2]), got[[4, 0, 2]], rtol=1e-5)
    if layers:
        assert all(n.startswith("layers.1.") for n in tr.names)


def test_query_loss_is_on_the_target_tokens_only():
    tr = TracIn([(_tiny(), 1.0)], CharTok(), TrainingExamples.from_texts(TEXTS, CharTok()))
    ids, labels = tr.query_seq(Query("q", "ab", "cd"))
    assert len(ids) == 5  # "ab cd"
    # positions 1.. predict tokens 2.. ; only " cd" (after the prompt "ab") are targets
    assert [l != -100 for l in labels] == [False, True, True, True, False]


@pytest.mark.parametrize("projection", ["kronecker", "gaussian"])
def test_projected_scores_correlate_with_exact_ones(projection):
    """Bound tested: Spearman between projected (d = 512) and exact scores on 40 examples (20,800 parameters)
    >= 0.9 on average over seeds 0-4 and >= 0.85 for each (measured: kronecker mean 0.94, min 0.90;
    gaussian mean 0.93, min 0.87)."""
    rng = np.random.default_rng(0)
    words = ["paris", "france", "cat", "dog", "snow", "the", "is", "in", "a", "berlin", "june", "story"]
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 8))) for _ in range(40)]
    model = _tiny(1)
    ex = TrainingExamples.from_texts(texts, CharTok())
    q = Query("q", "paris is in", "france")
    exact = TracIn([(model, 1.0)], CharTok(), ex).scores(q)

    def proj(seed, **kw):
        return TracIn([(model, 1.0)], CharTok(), ex, proj_dim=512, seed=seed, projection=projection, **kw).scores(q)

    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    rhos = [np.corrcoef(rank(exact), rank(proj(seed)))[0, 1] for seed in range(5)]
    assert np.mean(rhos) >= 0.9 and min(rhos) >= 0.85, rhos
    p = proj(3)
    np.testing.assert_array_equal(p, proj(3))  # seeded
    assert not np.array_equal(p, proj(4))
    # matrices regenerated chunk by chunk (nothing cached) are the same matrices
    np.testing.assert_allclose(proj(3, proj_cache=0), p, rtol=1e-4, atol=1e-6 * np.abs(p).max())


def test_projection_is_unbiased_on_average():
    """Averaged over 30 seeds, projected dot products at d = 64 approach the exact ones (both kinds)."""
    model = _tiny(2)
    ex = TrainingExamples.from_texts(TEXTS[:4], CharTok())
    q = Query("q", "paris is in", "france")
    exact = TracIn([(model, 1.0)], CharTok(), ex).scores(q)
    for projection in ("kronecker", "gaussian"):
        mean = np.mean([TracIn([(model, 1.0)], CharTok(), ex, proj_dim=64, seed=s, projection=projection).scores(q)
                        for s in range(30)], axis=0)
        assert np.abs(mean - exact).max() <= 0.25 * np.abs(exact).max(), (projection, mean, exact)


def test_run_checkpoints_lrs_and_sum(tmp_path_factory):
    run = toy_run(tmp_path_factory)
    found = run_checkpoints(run)
    assert [s for s, _, _ in found] == [STEPS // 3, 2 * STEPS // 3, STEPS]
    assert [lr for _, _, lr in found] == pytest.approx([LR] * 3)  # constant schedule
    ex = TrainingExamples.from_run(run)
    q = Query("b", "bob was born in", "tokyo")
    full = TracIn.from_run(run, examples=ex).scores(q)
    parts = [TracIn.from_run(run, examples=ex, checkpoints=[s]).scores(q) for s, _, _ in found]
    np.testing.assert_allclose(full, np.sum(parts, axis=0), rtol=1e-5, atol=1e-9)


def test_fact_seen_once_ranks_its_document_first(tmp_path_factory):
    run = toy_run(tmp_path_factory)
    tr = TracIn.from_run(run)
    qs = [Query(i, p, t, [g]) for i, p, t, g in FACTS]
    S = tr.scores_many(qs)
    assert [first_gold_rank(s, q.proponents) for s, q in zip(S, qs)] == [1, 1, 1]
    assert tr.top_k(qs[0], 1)[0][0] == FACTS[0][3]


def test_run_without_checkpoints_says_how_to_keep_them(tmp_path_factory, tmp_path):
    bare = copy_without_checkpoints(toy_run(tmp_path_factory), tmp_path / "bare")
    with pytest.raises(UserError, match=r"no checkpoints.*TracIn needs.*train\.save_every.*train\.keep_last"):
        TracIn.from_run(bare)


def test_lr_follows_the_schedule_of_the_checkpoint(tmp_path_factory, tmp_path):
    """lr_t = lr * multiplier(step t - 1) from the checkpoint's own train_config (here: linear decay)."""
    import json
    import shutil

    from plmkit.training.checkpoint import checkpoint_steps

    src = checkpoint_steps(toy_run(tmp_path_factory) / "checkpoints")[0][1]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for step in (10, 20):
        d = run / "checkpoints" / f"step-{step}"
        shutil.copytree(src, d)
        meta = json.loads((d / "trainer_state.json").read_text())
        meta["step"] = step
        meta["train_config"].update(schedule="linear", warmup_steps=0, max_steps=40, lr=0.01, min_lr_ratio=0.0)
        (d / "trainer_state.json").write_text(json.dumps(meta))
    lrs = [lr for _, _, lr in run_checkpoints(run)]
    # linear: lr * (1 - (t - 1) / 40)
    assert lrs == pytest.approx([0.01 * (1 - 9 / 40), 0.01 * (1 - 19 / 40)])


def test_an_encoder_is_refused():
    torch.manual_seed(0)
    bert = load("bert-tiny", vocab_size=50).eval()
    with pytest.raises(UserError, match="needs a causal LM"):
        TracIn([(bert, 1.0)], CharTok(), TrainingExamples.from_texts(TEXTS, CharTok()))
