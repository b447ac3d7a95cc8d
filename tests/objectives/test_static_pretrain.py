"""``objective.mode: static`` through ``plm pretrain``: each example has ``dup_factor`` fixed masked
copies (the same mask every epoch, different masks across copies), exact resume, and the loss falls."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import plmkit
from plmkit.cli.main import main
from plmkit.objectives.base import IGNORE
from plmkit.objectives.mlm import MLM


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("static")
    rng = random.Random(0)
    words = "the cat a dog my friend king sees likes finds ball house sea bread".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 9))) + "." for _ in range(40)]
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    tok = plmkit.train_tokenizer([d / "train.txt"], kind="wordpiece", vocab_size=60)
    tok.save(d / "tok")
    return d


def _recipe(d: Path, tmp: Path, **train) -> Path:
    r = {
        "model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                       "intermediate_size": 64, "hidden_dropout": 0.0,
                                                       "attention_dropout": 0.0}},
        "tokenizer": {"path": str(d / "tok")},
        "data": {"train": [str(d / "train.txt")], "seq_len": 64, "valid_fraction": 0.1},
        "objective": {"name": "mlm", "mode": "static", "dup_factor": 3, "seed": 5},
        "train": {"max_steps": 24, "batch_size": 8, "lr": 3e-3, "schedule": "constant", "warmup_steps": 0,
                  "log_every": 1, "eval_every": 0, "save_every": 6, "tensorboard": False, "plots": False,
                  "num_threads": 1, **train},
    }
    p = tmp / "static.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_static_masks_fixed_per_copy_through_cli(setup, tmp_path, monkeypatch, capsys):
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    make_batch = MLM.make_batch

    def spy(self, examples):
        batch = make_batch(self, examples)
        for ids, lab, att in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(att.sum())
            ids, lab = ids[:n].tolist(), lab[:n].tolist()
            original = tuple(l if l != IGNORE else i for i, l in zip(ids, lab))
            seen.append((original, tuple(ids)))
        return batch

    monkeypatch.setattr(MLM, "make_batch", spy)
    out = tmp_path / "run"
    assert main(["pretrain", str(_recipe(setup, tmp_path)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n_windows = summary["train_examples"] // 3
    assert summary["train_examples"] == 3 * n_windows and n_windows >= 2
    # 24 steps x 8 = 192 training rows = at least two passes over the 3 copies.
    assert 24 * 8 >= 2 * 3 * n_windows
    masks: dict[tuple[int, ...], list[tuple[int, ...]]] = defaultdict(list)
    for original, masked in seen[: 24 * 8]:
        masks[original].append(masked)
    assert len(masks) == n_windows
    for original, ms in masks.items():
        distinct = set(ms)
        # every example shows up as its 3 copies, each with one fixed mask, in every epoch
        assert len(distinct) == 3, (len(distinct), len(ms))
        assert all(m != original for m in distinct)  # something is masked in each copy
    # Copies are seen equally often: each full epoch visits each copy once.
    full_epochs = 24 * 8 // (3 * n_windows)
    for ms in masks.values():
        counts = sorted(ms.count(m) for m in set(ms))
        assert counts[0] >= full_epochs
    losses = [l for _, l in _losses(out)]
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6 - 0.3, losses


def test_static_resume_is_exact(setup, tmp_path):
    recipe = _recipe(setup, tmp_path)
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["pretrain", str(recipe), "--out", str(ref), "--no-progress"]) == 0
    assert main(["pretrain", str(recipe), "--out", str(run), "--no-progress", "train.max_steps=12"]) == 0
    assert main(["pretrain", str(recipe), "--out", str(run), "--no-progress", "--resume"]) == 0
    assert _losses(run) == _losses(ref)
    assert [s for s, _ in _losses(run)] == list(range(1, 25))


def test_static_and_dynamic_mlm_side_by_side(setup, tmp_path, capsys):
    r = yaml.safe_load(_recipe(setup, tmp_path).read_text())
    r["objective"] = [{"name": "mlm", "mode": "static", "dup_factor": 2}, {"name": "mlm", "key": "dyn"}]
    p = tmp_path / "two.yaml"
    p.write_text(yaml.safe_dump(r))
    # a static and a dynamic MLM side by side: each reads its own view
    assert main(["pretrain", str(p), "--out", str(tmp_path / "two"), "--no-progress", "train.max_steps=2"]) == 0
