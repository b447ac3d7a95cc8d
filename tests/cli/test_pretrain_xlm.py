"""``plm pretrain`` with objectives that read their own files (XLM: an MLM stream per language + TLM on pairs):
each gets its own token store and examples, its own held-out slice, and its own metrics; the shipped
recipes/xlm recipes parse and name their files; bad entries are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plmkit.cli.main import main
from plmkit.config import load_recipe
from plmkit.data import TokenStore
from plmkit.errors import UserError
from plmkit.pipelines.pretrain import run_pretraining

REPO = Path(__file__).resolve().parents[2]
EN = ["the cat sees the sea .", "a dog likes bread .", "my friend finds a house .", "the king sees the ball ."]
ZH = ["猫看见了大海。", "一只狗喜欢面包。", "我的朋友找到了一所房子。", "国王看见了球。"]


def _xlm_recipe(tmp: Path, with_tlm: bool = True, **extra) -> Path:
    (tmp / "en.txt").write_text("\n".join(EN * 30) + "\n", encoding="utf-8")
    (tmp / "zh.txt").write_text("\n".join(ZH * 30) + "\n", encoding="utf-8")
    (tmp / "pairs.tsv").write_text("\n".join(f"{e}\t{z}" for e, z in zip(EN, ZH)) * 1 + "\n" +
                                   "\n".join(f"{e}\t{z}" for e, z in zip(EN, ZH) for _ in range(10)) + "\n",
                                   encoding="utf-8")
    objective = [{"name": "mlm", "key": "mlm_en", "language": 0},
                 {"name": "mlm", "key": "mlm_zh", "language": 1, "data": ["zh.txt"]}]
    if with_tlm:
        objective.append({"name": "tlm", "data": "pairs.tsv"})
    r = {
        "model": {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                       "intermediate_size": 64, "type_vocab_size": 2}},
        "tokenizer": {"train": {"kind": "wordpiece", "vocab_size": 200, "files": ["en.txt", "zh.txt"]}},
        "data": {"train": ["en.txt"], "valid_fraction": 0.1, "seq_len": 16},
        "objective": objective,
        "train": {"max_steps": 3, "batch_size": 4, "lr": 3e-3, "log_every": 1, "eval_every": 3, "eval_batches": 2,
                  "save_every": 0, "tensorboard": False, "plots": False, "num_threads": 1},
        **extra,
    }
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(r, allow_unicode=True), encoding="utf-8")
    return p


def test_objectives_with_their_own_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", str(_xlm_recipe(tmp_path)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # one store per stream: English from data.train, Chinese and the pairs from the entries' own files
    en, zh, par = (TokenStore(out / "data" / d) for d in ("train", "objective-mlm_zh", "objective-tlm"))
    assert par.manifest["example_kind"] == "parallel" and par.num_documents == 44
    assert [f["path"] for f in zh.manifest["input"]["per_file"]] == [str(tmp_path / "zh.txt")]
    assert [f["path"] for f in en.manifest["input"]["per_file"]] == [str(tmp_path / "en.txt")]
    tok_zh = set(zh.tokens(0, zh.num_tokens)[0].tolist())
    tok_en = set(en.tokens(0, en.num_tokens)[0].tolist())
    assert not tok_zh & tok_en - {0, 1, 2, 3, 4}  # the Chinese store holds Chinese tokens only
    for name in ("mlm_en", "mlm_zh", "tlm"):  # each stream trained and was evaluated on its own held-out slice
        assert f"eval_{name}/loss" in summary, sorted(summary)
    n_par = 44
    assert summary["valid_examples"] >= 3 and summary["train_examples"] > n_par
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(f"{n}/loss" in steps[0] for n in ("mlm_en", "mlm_zh", "tlm"))


def test_bad_objective_data_is_refused(tmp_path):
    r = yaml.safe_load(_xlm_recipe(tmp_path).read_text(encoding="utf-8"))
    r["objective"][1]["data"] = ["missing.txt"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(r, allow_unicode=True), encoding="utf-8")
    with pytest.raises(UserError, match=r"objective\[1\]\.data: no such file or directory: .*missing.txt"):
        run_pretraining(tmp_path / "bad.yaml", tmp_path / "o1")
    r["objective"][1]["data"] = []
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(r, allow_unicode=True), encoding="utf-8")
    with pytest.raises(UserError, match=r"objective\[1\]\.data: expected a file path or a non-empty list"):
        run_pretraining(tmp_path / "bad.yaml", tmp_path / "o2")
    r["objective"][1]["data"] = ["zh.txt"]
    r["objective"][1]["key"] = "mlm_en"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(r, allow_unicode=True), encoding="utf-8")
    with pytest.raises(UserError, match=r"distinct names; 'mlm_en' repeats"):
        run_pretraining(tmp_path / "bad.yaml", tmp_path / "o3")
    assert not (tmp_path / "o3").exists()  # a run refused before training leaves nothing behind


@pytest.mark.parametrize("name", ["mlm-en-zh.yaml", "mlm+tlm-en-zh.yaml"])
def test_shipped_xlm_recipes_parse(name):
    r = load_recipe(REPO / "recipes" / "xlm" / name)
    own = {o.get("key", o["name"]): o.get("data") for o in r.objective}
    assert own["mlm_en"] is None and own["mlm_zh"][0].endswith("zhwiki/wiki_00")
    assert ("tlm" in own) == ("tlm" in name)
    if "tlm" in own:
        assert own["tlm"][0].endswith("parallel/cmn-eng.tsv")
    assert all(Path(p).is_absolute() for p in r.tokenizer.train.files + own["mlm_zh"])
