"""The batched CounterFact / zsRE scoring and fluency sampling of ``plmkit.knowledge.edit.evaluate``
against independent one-row computations."""

from __future__ import annotations

import pytest
import torch

from plmkit.knowledge.edit import common
from plmkit.knowledge.edit import evaluate as ev
from plmkit.knowledge.structure import locate

import plmkit

CASES = [ev.Case(i, common.Request(f"{s} is located in", s, new, true), f"the city {s} is located in",
                 f"{o} is located in", true)
         for i, (s, new, true, o) in enumerate([("Paris", "Japan", "France", "Rome"),
                                                ("Bob Jones", "Spain", "Germany", "Tokyo"),
                                                ("Madrid", "English", "Spain", "Alice Smith")])]


def tiny(tok, seed=0):
    torch.manual_seed(seed)
    return plmkit.load("llama-tiny", vocab_size=len(tok), bos_token_id=None, eos_token_id=None, num_layers=3).eval()


def logp_one(model, tok, prompt, target) -> float:
    """log P(" " + target | prompt) from one unpadded forward of the whole sequence."""
    p = common.encode(tok, prompt).ids
    t = list(tok.encode(" " + target, add_special_tokens=False))
    lp = model(torch.tensor([p + t])).logits[0].log_softmax(-1)
    return float(sum(lp[len(p) - 1 + j, t[j]] for j in range(len(t))))


@torch.no_grad()
def test_batched_counterfact_scores_equal_one_forward_per_string(bpe_tok, monkeypatch):
    model = tiny(bpe_tok)
    s = locate(model)
    monkeypatch.setattr(ev, "ROWS_PER_FORWARD", 4)  # rows split over several forwards too
    got = ev.counterfact_scores_many(s, bpe_tok, CASES)
    assert len(got) == 3
    for c, g in zip(CASES, got):
        r = c.request
        want = {"prompt_new": (r.prompt, r.target_new), "prompt_true": (r.prompt, r.target_true),
                "rephrase_new": (c.rephrase, r.target_new), "rephrase_true": (c.rephrase, r.target_true),
                "locality_new": (c.locality, r.target_new), "locality_true": (c.locality, c.locality_target)}
        for k, (p, t) in want.items():
            assert abs(g["logp"][k] - logp_one(model, bpe_tok, p, t)) < 1e-4, k
        lp = g["logp"]
        assert g["es"] == float(lp["prompt_new"] > lp["prompt_true"])
        assert g["ns"] == float(lp["locality_true"] > lp["locality_new"])


@torch.no_grad()
def test_batched_zsre_accuracy_equals_argmax_of_one_forward(bpe_tok):
    model = tiny(bpe_tok, seed=1)
    s = locate(model)
    got = ev.zsre_scores_many(s, bpe_tok, CASES)
    for c, g in zip(CASES, got):
        for key, (p, t) in {"efficacy": (c.request.prompt, c.request.target_new),
                            "specificity": (c.locality, c.locality_target)}.items():
            pi = common.encode(bpe_tok, p).ids
            ti = list(bpe_tok.encode(" " + t, add_special_tokens=False))
            arg = model(torch.tensor([pi + ti])).logits[0].argmax(-1)
            want = sum(int(arg[len(pi) - 1 + j] == ti[j]) for j in range(len(ti))) / len(ti)
            assert abs(g[key] - want) < 1e-9


@torch.no_grad()
def test_fluency_samples_follow_the_model_and_do_not_depend_on_the_batch(bpe_tok):
    model = tiny(bpe_tok, seed=3)
    s = locate(model)
    prompts = [c.request.prompt for c in CASES]
    seeds = [5, 6, 7]
    batched = ev.sample_continuations(s, bpe_tok, prompts, 6, seeds)
    single = [ev.sample_continuations(s, bpe_tok, [p], 6, [sd])[0] for p, sd in zip(prompts, seeds)]
    assert batched == single
    # every sampled token is among the top 5 of a full (uncached) forward over the text so far
    for p, sd in zip(prompts, seeds):
        ids = common.encode(bpe_tok, p).ids
        enc = torch.tensor([ids])
        g = torch.Generator().manual_seed(sd)
        for _ in range(6):
            logits = model(enc).logits[0, -1]
            top = logits.topk(5)
            nxt = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=g)]
            enc = torch.cat((enc, nxt.view(1, 1)), 1)
        assert bpe_tok.decode(enc[0, len(ids):].tolist()) == ev.sample_continuations(s, bpe_tok, [p], 6, [sd])[0]


@pytest.mark.parametrize("batch_size, block", [(1, 3), (2, 3), (3, 2), (2, 16)])
def test_run_scores_every_case_before_and_after_in_blocks(bpe_tok, monkeypatch, batch_size, block):
    """The unedited scores come in blocks (a multiple of the batch size) and equal the scores of the
    untouched model; each batch is edited, scored and undone."""
    from plmkit.knowledge.edit import load_hparams

    model = tiny(bpe_tok, seed=4)
    s = locate(model)
    cases = CASES + [ev.Case(3 + i, c.request, c.rephrase, c.locality, c.locality_target)
                     for i, c in enumerate(CASES[:2])]
    want = ev.scores_many("counterfact", s, bpe_tok, cases, 4, 0)
    monkeypatch.setattr(ev, "PRE_BLOCK", block)
    hp = load_hparams("ft", {"layers": [1], "steps": 2, "lr": 0.01})
    seen = []
    metrics, rows = ev.run("counterfact", s, bpe_tok, cases, "ft", hp, None, batch_size, 4, 0,
                           log=lambda _: None, on_rows=lambda r: seen.append(len(r)))
    assert [r["id"] for r in rows] == [c.id for c in cases]
    step = block if batch_size == 1 else batch_size  # one edit at a time: a block's edited cases scored together
    assert seen == list(range(step, len(cases), step)) + [len(cases)]
    for r, w in zip(rows, want):
        assert r["unedited"]["logp"] == pytest.approx(w["logp"], abs=1e-5)
        assert r["unedited"]["generation"] == w["generation"]
    assert any(r["edited"]["logp"]["prompt_new"] != r["unedited"]["logp"]["prompt_new"] for r in rows)


@pytest.mark.parametrize("method, kind", [("ft", "counterfact"), ("rome", "counterfact"), ("kn", "counterfact"),
                                          ("ft", "zsre")])
def test_one_at_a_time_edits_scored_together_equal_scoring_each_edited_model(bpe_tok, monkeypatch, method, kind):
    """RowDeltas: the edited scores and fluency samples of a block of one-at-a-time edits, computed in
    shared forwards of the unedited model (row b adds its case's delta), equal editing the model,
    scoring that case alone and undoing the edit, case by case (ROME's deltas themselves come from
    ``edit_each`` then, equal up to rounding)."""
    from plmkit.knowledge.edit import load_hparams

    model = tiny(bpe_tok, seed=5)
    s = locate(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hp = {"ft": {"layers": [1], "steps": 3, "lr": 0.05},
          "rome": {"layers": [1], "n_context": 0, "covariance": False,
                   "v": {"steps": 4, "weight_decay": 0.0, "clamp_norm_factor": 1e4}},
          "kn": {"layers": [0, 1, 2], "steps": 4, "n_context": 0, "threshold": 0.1, "share": 0.5, "lambda2": 3.0}}
    hp = load_hparams(method, hp[method])
    cases = CASES + [ev.Case(3, CASES[0].request, CASES[1].rephrase, CASES[2].locality, "Spain")]
    monkeypatch.setattr(ev, "ROWS_PER_FORWARD", 12 if kind == "counterfact" else 6)  # cases split over forwards
    monkeypatch.setattr(ev, "PRE_BLOCK", 3)  # blocks of 3 and 1
    runs = {}
    for flag in (False, True):
        monkeypatch.setattr(ev, "ROW_DELTAS", flag)
        runs[flag] = ev.run(kind, s, bpe_tok, cases, method, hp, None, 1, 5, 0, log=lambda _: None)[1]
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k  # every edit undone
    n_changed = 0
    for one, shared in zip(runs[False], runs[True]):
        assert one["id"] == shared["id"]
        if kind == "counterfact":
            assert shared["edited"]["logp"] == pytest.approx(one["edited"]["logp"], abs=1e-4)
            assert shared["edited"]["generation"] == one["edited"]["generation"]
            n_changed += shared["edited"]["logp"]["prompt_new"] != pytest.approx(
                shared["unedited"]["logp"]["prompt_new"], abs=1e-3)
        else:
            assert shared["edited"] == one["edited"]
            n_changed += 1
        assert shared["delta_norm"] == pytest.approx(one["delta_norm"], rel=1e-4)  # ROME: v* of the block together
    assert n_changed >= 3  # the edits did change what is scored


def test_row_deltas_refuse_a_parameter_that_is_not_a_value_matrix(bpe_tok):
    model = tiny(bpe_tok)
    s = locate(model)
    name = next(n for n, _ in model.named_parameters() if "embed" in n)
    with pytest.raises(ValueError, match="not an FFN value matrix"):
        ev.RowDeltas(s, [{name: torch.zeros(1)}])
