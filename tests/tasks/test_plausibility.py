"""Plausibility scoring (plmkit.tasks.plausibility): S(context | choice) equals an explicit loop of masked forward
passes, the margin loss equals a hand computation, and ``plm finetune --plausibility`` trains, saves and reloads
(toy multiple-choice data and tokenizer of tests/conftest.py, a tiny random BERT with its MLM head)."""

from __future__ import annotations

import json

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.plausibility import PlausibilityObjective, margin_loss
from plmkit.tasks.readers import ChoiceExample


@pytest.fixture(scope="module")
def mlm_dir(workdir):
    tok = plmkit.load_tokenizer(str(workdir / "model"))
    torch.manual_seed(0)
    bert = plmkit.load("bert-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    assert bert.config.head == "mlm"
    bert.save_pretrained(workdir / "mlm_plaus")
    tok.save(workdir / "mlm_plaus")
    return workdir / "mlm_plaus"


def test_score_equals_explicit_masked_passes(mlm_dir):
    tok = plmkit.load_tokenizer(str(mlm_dir))
    model = plmkit.load(str(mlm_dir)).eval()
    obj = PlausibilityObjective(tok)
    obj.prepare(model)
    exs = [ChoiceExample("the movie was very good", ["it was fun", "it was awful"], 0, "x:1"),
           ChoiceExample("a dull story", ["superb", "boring plot", "bad"], 2, "x:2")]
    want = []
    with torch.no_grad():
        for e in exs:
            row = []
            for h in e.choices:
                enc = tok(h, e.context)
                ids, tt = enc["input_ids"], enc["token_type_ids"]
                premise = [j for j in range(len(ids)) if tt[j] == 1][:-1]  # the context's tokens, not its [SEP]
                assert len(premise) == len(tok.encode(e.context, add_special_tokens=False))
                s = 0.0
                for j in premise:
                    masked = list(ids)
                    masked[j] = tok.mask_token_id
                    logits = model(torch.tensor([masked]), token_type_ids=torch.tensor([tt])).logits[0, j]
                    s += float(torch.log_softmax(logits.double(), -1)[ids[j]])
                row.append(s)
            want.append(row)
        for e, w in zip(exs, want):  # batches of one example (the choice counts differ)
            feats = obj.encode_examples(tok, [e], None, 64)
            _, scores = obj.forward(model, obj.make_batch(feats))
            assert torch.allclose(scores[0].double(), torch.tensor(w, dtype=torch.float64), atol=1e-4), (scores, w)


def test_margin_loss_by_hand():
    scores = torch.tensor([[-3.0, -2.5, -6.0], [-1.0, -4.0, -1.2]])
    labels = torch.tensor([0, 2])
    m = 1.0
    # example 0: gold -3; wrong -2.5 -> max(0, 1 + 3 - 2.5) = 1.5, wrong -6 -> max(0, 1 + 3 - 6) = 0 -> mean 0.75
    # example 1: gold -1.2; wrong -1 -> 1 + 1.2 - 1 = 1.2, wrong -4 -> max(0, 1 + 1.2 - 4) = 0 -> mean 0.6
    assert abs(float(margin_loss(scores, labels, m)) - (0.75 + 0.6) / 2) < 1e-6


def test_finetune_plausibility_end_to_end(workdir, mlm_dir, ft):
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.readers import read_choices

    res = ft("plaus", "--plausibility", "--epochs", "3", "--model", str(mlm_dir), task="multiple-choice",
             data=workdir / "mc")
    log = [json.loads(x) for x in (workdir / "plaus" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    model, obj, info, tok = load_checkpoint(workdir / "plaus")
    assert isinstance(obj, PlausibilityObjective) and info["plausibility"]["margin"] == 0.5
    dev = read_choices(workdir / "mc" / "dev.jsonl")
    feats = obj.encode_examples(tok, dev, None, 32)
    pred = [int(o.argmax()) for o in run_model(model, obj, feats)]
    assert sum(p == e.label for p, e in zip(pred, dev)) / len(dev) == res["accuracy"]


def test_plausibility_needs_mlm_head_and_multiple_choice(workdir, mlm_dir):
    from plmkit.cli.main import main

    base = ["finetune", "--plausibility", "--out", str(workdir / "plaus_bad"), "--max-seq-len", "32"]
    assert main(base + ["--task", "multiple-choice", "--data", str(workdir / "mc"), "--model",
                        str(workdir / "model")]) == 2  # no MLM head
    assert main(base + ["--task", "classification", "--data", str(workdir), "--model", str(mlm_dir)]) == 2
    with pytest.raises(UserError, match="MLM head|mlm"):
        PlausibilityObjective(plmkit.load_tokenizer(str(mlm_dir))).prepare(plmkit.load("bert-tiny", vocab_size=200,
                                                                                         head=None))
