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


def _anti_checkpoint(workdir, out):
    """A copy of the ``cls`` checkpoint whose classifier is negated: its logits are exactly minus cls's, so it
    predicts the other label everywhere (accuracy 1 - cls's on this binary task)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(workdir / "cls", out)
    state = load_file(str(out / "weights.safetensors"))
    keys = [k for k in state if k.endswith("task.out.weight") or k.endswith("task.out.bias")]
    assert len(keys) == 2, sorted(state)
    for k in keys:
        state[k] = -state[k]
    save_file(state, str(out / "weights.safetensors"))
    return out


def _evaluate(capsys, data, *checkpoints, how="vote"):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", *map(str, checkpoints), "--data", str(data), "--ensemble", how]) == 0
    return json.loads(capsys.readouterr().out)


def test_ensembles(workdir, tmp_path, cls_run, cls_b_run, capsys):
    good, other = workdir / "cls", workdir / "cls_b"
    anti = _anti_checkpoint(workdir, tmp_path / "anti")
    assert cls_run["accuracy"] == 1.0
    assert _evaluate(capsys, workdir, anti)["accuracy"] == 0.0  # the control: every prediction flipped
    for how in ("vote", "average"):
        ev = _evaluate(capsys, workdir, good, other, how=how)
        assert ev["checkpoints"] == 2 and ev["ensemble"] == how and ev["accuracy"] >= 0.9  # chance is 0.5
        # the majority decides: two copies of cls outvote (vote) / outweigh (average) one negated copy, and
        # the reverse; an ensemble that read only its first, or only its last, checkpoint fails one of these
        # (vote: mean probabilities (1 + p) / 3 and (2 - p) / 3; average: logits z / 3 and -z / 3)
        assert _evaluate(capsys, workdir, good, good, anti, how=how)["accuracy"] == 1.0, how
        assert _evaluate(capsys, workdir, good, anti, anti, how=how)["accuracy"] == 0.0, how
