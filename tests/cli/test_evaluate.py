"""``plm evaluate`` on toy fine-tuned checkpoints (session fixtures in tests/conftest.py): one checkpoint
scores what ``plm finetune`` reported, and vote / weight-averaging ensembles of two."""

from __future__ import annotations

import json

import pytest

from plmkit.cli.main import main


def test_evaluate_reproduces_the_finetune_score(workdir, cls_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(workdir / "cls"), "--data", str(workdir)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["accuracy"] == pytest.approx(cls_run["accuracy"])


def test_ensembles(workdir, cls_run, cls_b_run, capsys):
    capsys.readouterr()
    for how in ("vote", "average"):
        assert main(["evaluate", "--checkpoint", str(workdir / "cls"), str(workdir / "cls_b"), "--data", str(workdir), "--ensemble", how]) == 0
        ev = json.loads(capsys.readouterr().out)
        assert ev["checkpoints"] == 2 and 0.5 <= ev["accuracy"] <= 1.0
