"""bench/pretrain_parity.py's core on tiny shapes: both sides train on the same token ids in the same order, and
with the same initial weights, no dropout and identical masks one plmkit step and one transformers step give the
same loss (and the same weights after the update) -- the comparison is apples to apples."""

from __future__ import annotations

import importlib.util
import random
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "pretrain_parity.py"

pytest.importorskip("transformers", reason="the parity bench compares against transformers")
if not (REPO.parent / "shared" / "bench" / "hf_baseline.py").is_file():
    pytest.skip("shared/bench/hf_baseline.py (the optimiser constants) is not beside the repository",
                allow_module_level=True)


@pytest.fixture(scope="module")
def pp():
    spec = importlib.util.spec_from_file_location("pretrain_parity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


WORDS = ("the cat dog sat on a mat and ran to house tree river stone light dark red blue green quick slow "
         "over under near far big small old new").split()


@pytest.fixture(scope="module")
def setup(pp):
    rnd = random.Random(0)
    lines = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 15))) + " ." for _ in range(300)]
    s = pp.default_settings(steps=2, batch_size=4, seq_len=16, hidden=32, layers=2, heads=2, intermediate=64,
                            vocab_size=120, dropout=0.0, eval_every=1, eval_batches=2,
                            weight_decay=1.0)  # large: a wrong decay split would show after one step
    tok = pp.train_tokenizer(lines, s["vocab_size"])
    stream = pp.token_stream(tok, lines)
    return s, tok, stream


def originals(batch: dict) -> torch.Tensor:
    """The uncorrupted token ids of an MLM batch (labels where selected, inputs elsewhere)."""
    labels = batch["labels"]
    return torch.where(labels != -100, labels, batch["input_ids"])


@pytest.mark.parametrize("model,swap", [("mlm", False), ("clm", False), ("mlm", True)])
def test_both_sides_train_on_the_same_token_batches(pp, setup, model, swap):
    s, tok, stream = setup
    data = pp.windows(stream, s["seq_len"], model, tok)
    evals = pp.eval_batches(model, pp.windows(stream[::-1], s["seq_len"], model, tok), tok, s)
    order = pp.batch_order(len(data), s["batch_size"], 3, s["steps"])
    want = [torch.tensor([data[j] for j in idx]) for idx in order]

    plm = pp.PlmRun(model, tok, s, data, evals, seed=3, threads=0, swap_masks=swap)
    seen_plm = []
    make_batch = plm.obj.make_batch
    plm.obj.make_batch = lambda ex: (seen_plm.append(b := make_batch(ex)), b)[1]
    hf = pp.HfRun(model, tok, s, data, order, evals, seed=3, threads=0, swap_masks=swap)
    seen_hf = []
    collate = hf.collator
    hf.collator = lambda rows: (seen_hf.append(b := collate(rows)), b)[1]
    for _ in range(s["steps"]):
        assert torch.isfinite(torch.tensor(plm.step())) and torch.isfinite(torch.tensor(hf.step()))
    assert plm.data.seen == hf.seen == [j for idx in order for j in idx]
    assert len(seen_plm) == len(seen_hf) == s["steps"]
    if swap:  # --swap-masks: plmkit's objective selects floor/ceil(15% x 14) tokens a row, the collator a
        # Bernoulli(0.15) number (deterministic here: the runs seed torch's global RNG)
        counts = lambda batches: {int(n) for b in batches for n in (b["labels"] != -100).sum(1)}  # noqa: E731
        assert counts(seen_hf) <= {2, 3} and not counts(seen_plm) <= {2, 3}
    for w, bp, bh in zip(want, seen_plm, seen_hf):
        if model == "mlm":  # each side masked its own way; the tokens under the masks are the same
            assert torch.equal(originals(bp), w) and torch.equal(originals(bh), w)
            assert not torch.equal(bp["input_ids"], w) and not torch.equal(bh["input_ids"], w)  # masks were drawn
        else:
            assert torch.equal(bp["input_ids"], w) and torch.equal(bh["input_ids"], w)
            assert torch.equal(bp["labels"][:, :-1], w[:, 1:])  # plmkit shifts in the batch, HF in the model
            assert torch.equal(bh["labels"], w)


def premasked(pp, data, tok, s):
    """The training windows with one fixed set of masks (pp.fixed_mlm_masks), as plmkit's MLM takes pre-masked
    records ({"input_ids", "mlm_labels"}: static masking) and as a transformers batch."""
    ex = pp.fixed_mlm_masks(data, tok, s, seed=7)
    return [{"input_ids": e["input_ids"].tolist(), "mlm_labels": e["labels"].tolist()} for e in ex]


@pytest.mark.parametrize("model", ["mlm", "clm"])
def test_one_step_same_loss_with_identical_weights_and_masks(pp, setup, model):
    from plmkit.interop import from_hf

    s, tok, stream = setup
    rows = pp.windows(stream, s["seq_len"], model, tok)
    evals = pp.eval_batches(model, pp.windows(stream[::-1], s["seq_len"], model, tok), tok, s)
    order = pp.batch_order(len(rows), s["batch_size"], 5, s["steps"])
    if model == "mlm":
        data = premasked(pp, rows, tok, s)

        def collator(items):
            return {"input_ids": torch.tensor([r["input_ids"] for r in items]),
                    "labels": torch.tensor([r["mlm_labels"] for r in items])}
    else:
        data = rows

        def collator(items):
            ids = torch.tensor(items)
            return {"input_ids": ids, "labels": ids}

    hf = pp.HfRun(model, tok, s, data, order, evals, seed=5, threads=0, collator=collator)
    hf_state = {k: v.detach().clone() for k, v in hf.model.state_dict().items()}
    with warnings.catch_warnings():  # the HF dict has both tied copies of the MLM bias: "not used" is expected
        warnings.simplefilter("ignore")
        converted = from_hf(hf.model.config.to_dict(), {k: v.clone() for k, v in hf_state.items()})
    # the converted model's config is the one the bench builds plmkit's side from (same shape, same eps, ...)
    ours = pp.plm_config(model, tok, s)
    for f in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "activation",
              "norm_position", "layer_norm_eps", "tie_word_embeddings", "causal", "type_vocab_size",
              "max_position_embeddings", "hidden_dropout", "attention_dropout"):
        assert getattr(converted.config, f) == getattr(ours, f), f
    plm = pp.PlmRun(model, tok, s, data, evals, seed=5, threads=0, init_state=converted.state_dict())
    # both start from the same weights: same held-out loss before training
    assert abs(plm.evaluate() - hf.evaluate()) < 1e-5
    for k in range(s["steps"]):
        a, b = plm.step(), hf.step()
        assert abs(a - b) < 1e-5, (k, a, b)
    assert plm.data.seen == hf.seen
    # after the AdamW updates (decay groups, clipping, schedule) the weights are still the same
    after = pp.plm_as_hf_state(model, plm.model)
    hf_after = hf.model.state_dict()
    worst = max(float((v - hf_after[k]).abs().max()) for k, v in after.items())
    assert worst < 1e-5, worst
    changed = max(float((v - hf_state[k]).abs().max()) for k, v in after.items())
    assert changed > 1e-3  # the step did move the weights
    assert abs(plm.evaluate() - hf.evaluate()) < 1e-5


def test_init_stds_comparable_and_verdict_rule(pp, setup):
    s, tok, _ = setup
    for model in ("mlm", "clm"):
        st = pp.init_stats(model, tok, s)
        assert st["constant_tensors_equal"] and st["missing_in_hf"] == []
        assert st["compared"] >= 8
        assert all(r["hf_std"] > 0 for r in st["tensors"].values() if r["plmkit_std"] > 0)
    # the summary's rule: |diff| <= 2 pooled sd -> agree
    res = {"runs": {"mlm": {"plmkit": {}, "hf": {}}}}
    for i, (a, b) in enumerate([(5.0, 5.1), (5.2, 5.0), (5.1, 5.2)], start=1):
        res["runs"]["mlm"]["plmkit"][str(i)] = {"curve": [[0, 8.0], [2, a]], "tokens_per_cpu_s": 10.0, "train_cpu_s": 1}
        res["runs"]["mlm"]["hf"][str(i)] = {"curve": [[0, 8.0], [2, b]], "tokens_per_cpu_s": 5.0, "train_cpu_s": 2}
    sm = pp.summarise(res)["mlm"]
    assert sm["verdict"] == "agree" and sm["speed_ratio_plmkit_over_hf"] == 2.0
    for i in range(1, 4):
        res["runs"]["mlm"]["hf"][str(i)]["curve"][-1][1] += 1.0
    assert pp.summarise(res)["mlm"]["verdict"] == "differ"
