"""MT-DNN multi-task fine-tuning (plmkit.tasks.multitask): the mixed-task batch sampler, separate heads over one
shared encoder, the distillation loss against a hand computation, and ``plm finetune --multi-task`` end to end on
the toy data of tests/conftest.py (a classification and a regression task)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.tasks.multitask import MultiTaskObjective, distillation_loss, head_name, mixed_task_batches
from plmkit.tasks.objective import TaskObjective


def test_sampler_single_task_batches_in_proportion_to_size():
    sizes, B = {"a": 1000, "b": 300, "c": 45}, 16
    batches = mixed_task_batches(sizes, B, seed=3)
    for t, n in sizes.items():
        mine = [idx for task, idx in batches if task == t]
        assert len(mine) == math.ceil(n / B)
        flat = sorted(i for idx in mine for i in idx)
        assert flat == list(range(n))  # every example once per epoch, no other task's indices
        assert all(1 <= len(idx) <= B for idx in mine)
    # the tasks are interleaved, not one block per task
    switches = sum(batches[i][0] != batches[i + 1][0] for i in range(len(batches) - 1))
    assert switches > 20
    # share of batches per task vs share of examples, over many epochs drawn by the Trainer's cursor
    from plmkit.training import distributed as D
    from plmkit.training.trainer import _Cursor

    cur = _Cursor(len(batches), 5, 1, D.current())
    drawn = [batches[cur.next()[0]][0] for _ in range(50 * len(batches) + 17)]
    total = sum(sizes.values())
    for t, n in sizes.items():
        assert abs(drawn.count(t) / len(drawn) - n / total) < 0.01, (t, drawn.count(t) / len(drawn), n / total)
    assert mixed_task_batches(sizes, B, seed=4) != batches


def test_distillation_loss_by_hand():
    logits = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
    soft = [[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]
    want = 0.0
    for z, q in zip(logits, soft):
        lse = math.log(sum(math.exp(v) for v in z))
        want += -sum(qc * (zc - lse) for zc, qc in zip(z, q))
    want /= 2
    got = distillation_loss("classification", torch.tensor(logits), torch.tensor(soft))
    assert abs(float(got) - want) < 1e-6
    pred, target = [[0.3], [-1.2], [2.0]], [0.5, -1.0, 1.0]
    want_r = sum((p[0] - t) ** 2 for p, t in zip(pred, target)) / 3
    assert abs(float(distillation_loss("regression", torch.tensor(pred), torch.tensor(target))) - want_r) < 1e-6


class _Tok:
    pad_token_id = cls_token_id = sep_token_id = 0


def _tiny_model():
    torch.manual_seed(0)
    return plmkit.load("bert-tiny", vocab_size=50, head=None)


def _feats(n, label, seed):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 50, (6,), generator=g).tolist(), "token_type_ids": [0] * 6,
             "label": label(i)} for i in range(n)]


def test_heads_separate_and_distillation_mix():
    model = _tiny_model()
    objs = {"a": TaskObjective("classification", 3, _Tok(), pooling="cls", head_name=head_name("a")),
            "b": TaskObjective("regression", 1, _Tok(), pooling="cls", head_name=head_name("b"),
                               target_scale=(1.0, 2.0))}
    mt = MultiTaskObjective(objs, distill_alpha=0.25)
    mt.prepare(model)
    assert set(model.heads) == {"task_a", "task_b"}
    assert model.heads["task_a"].out.out_features == 3 and model.heads["task_b"].out.out_features == 1
    model.eval()  # no dropout: the losses below are deterministic
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    feats = _feats(4, lambda i: i % 3, 0)
    batch = mt.make_batch([{"task": "a", "features": feats}])
    loss, metrics = mt.loss(model, batch)
    assert "a_loss" in metrics and "distill_loss" not in metrics
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("heads.task_a.") for k in changed)
    assert not any(k.startswith("heads.task_b.") for k in changed)  # the other task's head is untouched
    assert any(not k.startswith("heads.") for k in changed)  # the shared encoder learns from task a

    # with soft targets: (1 - alpha) * gold CE + alpha * soft CE, by hand from the head's logits
    soft = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]])
    for f, q in zip(feats, soft):
        f["soft"] = q
    batch = mt.make_batch([{"task": "a", "features": feats}])
    with torch.no_grad():
        loss, metrics = mt.loss(model, batch)
        _, logits = objs["a"].forward(model, batch)
    logp = torch.log_softmax(logits.double(), -1).numpy()
    gold = -np.mean([logp[i, f["label"]] for i, f in enumerate(feats)])
    soft_ce = -np.mean((soft * logp).sum(-1))
    assert abs(float(loss) - (0.75 * gold + 0.25 * soft_ce)) < 1e-5
    assert abs(metrics["distill_loss"] - soft_ce) < 1e-5
    with pytest.raises(ValueError):
        mt.make_batch([{"task": "a", "features": feats}, {"task": "b", "features": feats}])


@pytest.fixture(scope="module")
def mt_data(workdir, tmp_path_factory):
    """--data root with one folder per task: the toy sentiment set and the toy regression pairs."""
    root = tmp_path_factory.mktemp("mt")
    (root / "classification").mkdir()
    (root / "regression").mkdir()
    for f in ("train.tsv", "dev.tsv"):
        os.symlink(workdir / f, root / "classification" / f)
        # the generic regression task reads a "label" column: the toy pairs name it "score"
        text = (workdir / "reg" / f).read_text()
        (root / "regression" / f).write_text(text.replace("\tscore\n", "\tlabel\n", 1))
    return root


def _run(workdir, mt_data, out, *extra):
    from plmkit.cli.main import main

    argv = ["finetune", "--multi-task", "--tasks", "classification,regression", "--model", str(workdir / "model"),
            "--data", str(mt_data), "--out", str(workdir / out), "--epochs", "6", "--lr", "2e-3",
            "--batch-size", "16", "--max-seq-len", "32", *extra]
    assert main(argv) == 0
    return json.loads((workdir / out / "eval.json").read_text())


def test_multitask_cli_end_to_end(workdir, mt_data, monkeypatch):
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.data import encode, task_spec
    from plmkit.tasks.finetuning import read_task_data
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.scoring import score

    seen = []
    orig = MultiTaskObjective.loss

    def spy(self, model, batch):  # what the Trainer feeds the objective at each step
        seen.append((batch["task"], batch["labels"].dtype, len(batch["labels"])))
        return orig(self, model, batch)

    monkeypatch.setattr(MultiTaskObjective, "loss", spy)
    res = _run(workdir, mt_data, "mt", "--task-epochs", "1")
    # one task per batch, its own labels (classes: long, regression: float); each task 10 of every 20 steps
    assert len(seen) == 120 and {(t, d) for t, d, _ in seen} == {("classification", torch.long),
                                                                 ("regression", torch.float)}
    for e in range(6):
        assert [t for t, _, _ in seen[20 * e:20 * e + 20]].count("classification") == 10
    assert sum(n for t, _, n in seen if t == "classification") == 6 * 160
    cls, reg = res["tasks"]["classification"], res["tasks"]["regression"]
    assert cls["batches_per_epoch"] == reg["batches_per_epoch"] == 10  # 160 examples / 16 each
    assert res["train_steps"] == res["planned_steps"] == 6 * 20
    assert cls["multi_task"]["accuracy"] >= 0.85 and reg["multi_task"]["pearson"] >= 0.6, res
    assert cls["task_finetune_steps"] == 10 and cls["accuracy"] == cls["task_finetuned"]["accuracy"]
    # each task's checkpoint is an ordinary single-task model: reloaded, it scores what eval.json says
    model, obj, info, tok = load_checkpoint(workdir / "mt" / "classification")
    assert list(model.heads) == ["task"] and info["multi_task"]["tasks"] == ["classification", "regression"]
    cfg = FinetuneConfig(task="classification", model=str(workdir / "model"), data=str(mt_data / "classification"),
                         out="x", max_seq_len=32)
    spec = task_spec(cfg)
    data = read_task_data(cfg, spec)
    dev = encode(spec, tok, data.dev, data.labels, 32, False)
    obj.pad_id = info["pad_id"]
    assert score(spec, data.labels, data.dev, dev, run_model(model, obj, dev))["accuracy"] == cls["accuracy"]


def test_multitask_distillation_from_teachers(workdir, mt_data, cls_run, cls_b_run):
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.multitask import teacher_targets
    from plmkit.tasks.data import encode, task_spec
    from plmkit.tasks.finetuning import read_task_data
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.inference import run_model

    teachers = [str(workdir / "cls"), str(workdir / "cls_b")]
    # the averaged soft targets: mean over the teachers of softmax(logits), each teacher run on its own
    cfg = FinetuneConfig(task="classification", model=str(workdir / "model"), data=str(mt_data / "classification"),
                         out="x", max_seq_len=32)
    spec = task_spec(cfg)
    data = read_task_data(cfg, spec)
    tok = plmkit.load_tokenizer(str(workdir / "model"))
    feats = encode(spec, tok, data.train[:20], data.labels, 32, True)
    probs = []
    for t in teachers:
        m, o, info, _ = load_checkpoint(t)
        o.pad_id = info["pad_id"]
        probs.append([torch.softmax(torch.tensor(z, dtype=torch.float64), -1).numpy() for z in run_model(m, o, feats)])
    want = (np.array(probs[0]) + np.array(probs[1])) / 2
    got = teacher_targets(teachers, "classification", spec, data.labels, feats, None, 8)
    assert np.allclose(got, want, atol=1e-6)

    res = _run(workdir, mt_data, "mt_kd", "--epochs", "3", "--teachers", ",".join(teachers), "--distill-alpha", "0.7")
    assert res["distillation"]["tasks"]["classification"]["teachers"] == teachers
    assert "regression" not in res["distillation"]["tasks"]
    log = [json.loads(x) for x in (workdir / "mt_kd" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("distill_loss" in r for r in log)
    assert res["tasks"]["classification"]["accuracy"] >= 0.85


def test_multitask_bad_input(workdir, mt_data):
    from plmkit.cli.main import main

    base = ["finetune", "--model", str(workdir / "model"), "--data", str(mt_data), "--out", str(workdir / "bad")]
    with pytest.raises(UserError, match="add --multi-task"):
        from plmkit.tasks.config import FinetuneConfig
        from plmkit.tasks.finetuning import finetune

        finetune(FinetuneConfig(task="classification", model=str(workdir / "model"), data=str(mt_data), out="x",
                                tasks=("classification",)))
    assert main(base + ["--multi-task", "--tasks", "classification,sst2"]) == 2  # no SST-2 folder under --data
    assert main(base + ["--multi-task", "--tasks", "classification,regression", "--mode", "lora"]) == 2
    assert main(base + ["--multi-task", "--tasks", "classification,classification"]) == 2
    assert not Path(workdir / "bad").exists()
