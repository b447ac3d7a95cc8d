"""Fine-tuned checkpoints of models with their own class (CANINE, DeBERTa, XLNet, GLM) through plm finetune ->
plm evaluate: the checkpoint reloads as that class and plm evaluate reproduces finetune's dev accuracy."""

from __future__ import annotations

import json

import pytest
import torch

import plmkit
from plmkit.cli.main import main
from plmkit.models.canine import Canine
from plmkit.tokenization.train import train_tokenizer_from_iterator


def test_canine_finetune_then_evaluate_reloads_the_same_classifier(workdir, tmp_path):
    from plmkit.tasks.checkpoint import load_checkpoint

    text = (workdir / "train.tsv").read_text() + (workdir / "dev.tsv").read_text()
    tok = train_tokenizer_from_iterator([text], kind="char", vocab_size=0)
    torch.manual_seed(0)
    model = plmkit.load("canine-tiny", vocab_size=len(tok))
    assert isinstance(model, Canine)
    model.save_pretrained(tmp_path / "canine")
    tok.save(tmp_path / "canine")
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "classification", "--model", str(tmp_path / "canine"), "--data", str(workdir),
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "--max-seq-len", "64", "--lr", "1e-3",
                 "--max-train-examples", "32", "--no-progress"]) == 0
    res = json.loads((out / "eval.json").read_text())
    loaded, obj, info, _ = load_checkpoint(out)
    assert isinstance(loaded, Canine) and info["model_config"]["family"] == "canine"
    assert obj.pooling == res["pooling"] == "cls"
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(workdir), "--out", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["accuracy"] == res["accuracy"] and ev["examples"] == res["dev_examples"]


@pytest.mark.parametrize("preset,cls", [("deberta-tiny", "DeBERTa"), ("xlnet-tiny", "XLNet"), ("glm-tiny", "GLM")])
def test_full_checkpoints_of_models_with_their_own_class_reload_as_that_class(workdir, tmp_path, preset, cls):
    """model_config.json names the class (plmkit_class): a fully fine-tuned DeBERTa / XLNet / GLM comes back as
    itself (before: DeBERTa and XLNet failed on their own config fields, GLM came back as a plain Transformer)."""
    from plmkit.tasks.checkpoint import load_checkpoint

    text = (workdir / "train.tsv").read_text() + (workdir / "dev.tsv").read_text()
    tok = train_tokenizer_from_iterator([text], kind="wordpiece", vocab_size=300)
    torch.manual_seed(0)
    model = plmkit.load(preset, vocab_size=len(tok))
    assert type(model).__name__ == cls
    model.save_pretrained(tmp_path / "m")
    tok.save(tmp_path / "m")
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "classification", "--model", str(tmp_path / "m"), "--data", str(workdir),
                 "--out", str(out), "--epochs", "1", "--batch-size", "16", "--max-seq-len", "32", "--lr", "1e-3",
                 "--max-train-examples", "32", "--no-progress"]) == 0
    res = json.loads((out / "eval.json").read_text())
    loaded, _, info, _ = load_checkpoint(out)
    assert type(loaded).__name__ == cls and info["model_config"]["plmkit_class"] == cls
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(workdir), "--out", str(tmp_path / "ev.json")]) == 0
    assert json.loads((tmp_path / "ev.json").read_text())["accuracy"] == res["accuracy"]
