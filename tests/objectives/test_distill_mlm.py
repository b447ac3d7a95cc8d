"""General distillation on MLM (``distill_mlm``): a student identical to its teacher gets zero distillation
loss; the terms equal plmkit.compression.losses' formulas on the same tensors; DistilBERT's init copies every
other teacher layer; ``plm pretrain`` runs the recipe shape end to end and the shipped recipes are valid."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

import plmkit
from plmkit.compression.losses import cosine_loss, kd_loss
from plmkit.errors import UserError
from plmkit.objectives import build


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gd")
    rng = random.Random(0)
    words = "the cat a dog my friend king sees likes finds ball house sea bread".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 9))) + "." for _ in range(40)]
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    tok = plmkit.train_tokenizer([d / "train.txt"], kind="wordpiece", vocab_size=60)
    torch.manual_seed(0)
    teacher = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=4, num_heads=2,
                          intermediate_size=64, hidden_dropout=0.0, attention_dropout=0.0)
    teacher.save_pretrained(d / "teacher")
    tok.save(d / "teacher")
    return d


def _batch(obj, tok):
    torch.manual_seed(1)
    return obj.make_batch([tok.encode(t) for t in ("the cat sees a dog .", "my friend likes the ball house sea .")])


def test_identical_student_gets_zero_distillation_loss(setup):
    tok = plmkit.load_tokenizer(str(setup / "teacher"))
    obj = build("distill_mlm", tokenizer=tok, teacher=str(setup / "teacher"), alpha_mlm=0.0)
    student = plmkit.load(str(setup / "teacher"))
    obj.prepare(student)
    student.eval()
    batch = _batch(obj, tok)
    assert int((batch["labels"] != -100).sum()) > 0
    loss, metrics = obj.loss(student, batch)
    assert abs(float(loss.detach())) < 1e-6 and metrics["kd_loss"] < 1e-6 and metrics["cos_loss"] < 1e-6
    assert metrics["mlm_loss"] > 1.0  # the MLM term itself is not zero (weight 0 here)


def test_terms_equal_the_compression_losses(setup):
    tok = plmkit.load_tokenizer(str(setup / "teacher"))
    obj = build("distill_mlm", tokenizer=tok, teacher=str(setup / "teacher"), temperature=3.0)
    torch.manual_seed(2)
    student = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                          intermediate_size=64).eval()
    obj.prepare(student)
    batch = _batch(obj, tok)
    terms, logits, y = obj.terms(student, batch)
    sel = batch["labels"] != -100
    with torch.no_grad():
        s = student(batch["input_ids"], attention_mask=batch["attention_mask"])
        t = obj.teacher(batch["input_ids"], attention_mask=batch["attention_mask"])
    assert float(terms["kd"]) == pytest.approx(float(kd_loss(s.logits[sel], t.logits[sel], 3.0)), rel=1e-5)
    assert float(terms["cos"]) == pytest.approx(float(cosine_loss(s.last_hidden_state, t.last_hidden_state,
                                                                  batch["attention_mask"])), rel=1e-5)
    assert float(terms["mlm"]) == pytest.approx(float(torch.nn.functional.cross_entropy(s.logits[sel], y)), rel=1e-5)
    loss, _ = obj.loss(student, batch)
    want = 2.0 * terms["mlm"] + 5.0 * terms["kd"] + 1.0 * terms["cos"]
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def test_init_from_teacher_copies_every_other_layer(setup):
    tok = plmkit.load_tokenizer(str(setup / "teacher"))
    obj = build("distill_mlm", tokenizer=tok, teacher=str(setup / "teacher"), init_from_teacher=True)
    student = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=2,
                          intermediate_size=64)
    obj.prepare(student)
    for j, i in enumerate([0, 2]):
        for a, b in zip(student.layers[j].state_dict().values(), obj.teacher.layers[i].state_dict().values()):
            assert torch.equal(a, b)
    assert torch.equal(student.embeddings.word.weight, obj.teacher.embeddings.word.weight)
    wide = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=48, num_layers=2, num_heads=2,
                       intermediate_size=64)
    with pytest.raises(UserError, match="equal widths"):
        obj.prepare(wide)
    other = plmkit.load("bert-tiny", vocab_size=len(tok) + 5, hidden_size=32, num_layers=2, num_heads=2,
                        intermediate_size=64)
    with pytest.raises(UserError, match="share one tokenizer"):
        build("distill_mlm", tokenizer=tok, teacher=str(setup / "teacher")).prepare(other)


def test_plm_pretrain_general_distillation(setup, tmp_path, capsys):
    from plmkit.cli.main import main

    r = {"model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                                        "intermediate_size": 64}},
         "tokenizer": {"path": str(setup / "teacher")},
         "data": {"train": [str(setup / "train.txt")], "seq_len": 32, "valid_fraction": 0.1},
         "objective": {"name": "distill_mlm", "teacher": "teacher", "init_from_teacher": True},
         "train": {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "log_every": 1, "eval_every": 0, "save_every": 0,
                   "tensorboard": False, "plots": False, "num_threads": 1}}
    (setup / "gd.yaml").write_text(yaml.safe_dump(r))  # teacher: resolved against the recipe's folder
    out = tmp_path / "run"
    assert main(["pretrain", str(setup / "gd.yaml"), "--out", str(out), "--no-progress"]) == 0
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([x for x in logs if "kd_loss" in x]) == 6 and all(x["cos_loss"] >= 0 for x in logs if "cos_loss" in x)
    final = plmkit.load(str(out / "final"))
    assert final.num_layers == 2
