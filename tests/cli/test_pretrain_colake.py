"""``plm pretrain`` with an objective that reads its own files (CoLAKE on T-REx facts): the examples come from
the objective, its head is attached before training, completion metrics are reported on held-out triples,
the shipped recipes parse, and an entry without its data is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plmkit.cli.main import main
from plmkit.config import load_recipe
from plmkit.errors import UserError
from plmkit.pipelines.pretrain import run_pretraining
from tests.conftest import data_dir

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp: Path, trex: Path, knowledge: bool = True) -> Path:
    words = tmp / "words.txt"
    words.write_text(" ".join(json.loads(ln)["sub_label"] + " " + json.loads(ln)["obj_label"]
                              for ln in (trex / "P101.jsonl").read_text().splitlines()[:150]) + "\n")
    r = {"model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                        "intermediate_size": 64, "type_vocab_size": 3}},
         "tokenizer": {"train": {"kind": "wordpiece", "vocab_size": 400, "files": [str(words)]}},
         "data": {"seq_len": 32},
         "objective": [{"name": "colake", "knowledge": knowledge, "data": str(trex), "max_facts": 150,
                        "eval_examples": 8}],
         "train": {"max_steps": 3, "batch_size": 4, "lr": 3e-3, "log_every": 1, "eval_every": 3, "eval_batches": 0,
                   "save_every": 0, "tensorboard": False, "plots": False, "num_threads": 1}}
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(r))
    return p


@pytest.fixture
def trex():
    d = data_dir() / "lama" / "TREx"
    if not d.is_dir():
        pytest.skip(f"{d} not found (set PLMKIT_DATA)")
    return d


def test_colake_pretrains_through_the_cli(tmp_path, trex, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", str(_recipe(tmp_path, trex)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("eval_kgc_object_acc", "eval_kgc_object_mrr", "eval_kgc_relation_acc", "eval_kgc_relation_mrr"):
        assert 0.0 <= summary[k] <= 1.0, k
    assert summary["valid_examples"] == 8 and summary["train_examples"] > 100
    assert (out / "final" / "config.json").is_file()
    step = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "entity_loss" in step or "word_loss" in step


def test_colake_entry_without_data_is_refused(tmp_path, trex):
    r = yaml.safe_load(_recipe(tmp_path, trex).read_text())
    del r["objective"][0]["data"]
    r["data"]["train"] = [r["tokenizer"]["train"]["files"][0]]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(r))
    with pytest.raises(UserError, match=r"objective\[0\] \(colake\): needs its own data"):
        run_pretraining(tmp_path / "bad.yaml", tmp_path / "o")


@pytest.mark.parametrize("name", ["colake-trex.yaml", "mlm-trex.yaml"])
def test_shipped_colake_recipes_parse(name):
    r = load_recipe(REPO / "recipes" / "colake" / name)
    (o,) = r.objective
    assert o["name"] == "colake" and o["knowledge"] == (name.startswith("colake"))
    assert Path(o["data"]).is_absolute() and o["data"].endswith("lama/TREx")
    assert not r.data.train
