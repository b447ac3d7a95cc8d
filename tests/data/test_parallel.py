"""Parallel pairs in the token store (``plm prepare --parallel``) and TLM trained through ``plm pretrain``,
on the shipped English-Chinese Tatoeba pairs (skipped when the data is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import plmkit
from plmkit.cli.main import main
from plmkit.data import TokenStore
from plmkit.data.parallel import ParallelPairs, prepare_parallel, read_pairs
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.base import IGNORE

N_PAIRS = 3000


def _data_dir() -> Path:
    """$PLMKIT_DATA, else ``shared/data`` beside the repository (as tests/conftest.py's ``data_dir``)."""
    return Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    src = _data_dir() / "parallel" / "cmn-eng.tsv"
    if not src.is_file():
        pytest.skip(f"{src} not found (set PLMKIT_DATA)")
    d = tmp_path_factory.mktemp("tlm")
    lines = src.read_text(encoding="utf-8").splitlines()
    # every 6th pair: short and long sentences alike (the file is sorted by length)
    (d / "pairs.tsv").write_text("\n".join(lines[::6][:N_PAIRS]) + "\n", encoding="utf-8")
    tok = plmkit.train_tokenizer([d / "pairs.tsv"], kind="wordpiece", vocab_size=2000)
    tok.save(d / "tok")
    return d


def test_cli_prepare_parallel_stores_each_pair(pairs, capsys):
    out = pairs / "store"
    assert main(["prepare", "--tokenizer", str(pairs / "tok"), "--out", str(out), "--parallel",
                 "--langs", "en,zh", str(pairs / "pairs.tsv")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["pairs"] == N_PAIRS and info["languages"] == ["en", "zh"]
    tok = plmkit.load_tokenizer(pairs / "tok")
    view = ParallelPairs(TokenStore(out))
    assert len(view) == N_PAIRS
    texts = [l.split("\t") for l in (pairs / "pairs.tsv").read_text(encoding="utf-8").splitlines()]
    for i in (0, 1234, N_PAIRS - 1):
        rec = view[i]
        assert rec["src"] == tok.encode(texts[i][0], add_special_tokens=False)
        assert rec["tgt"] == tok.encode(texts[i][1], add_special_tokens=False)
        assert (rec["src_lang"], rec["tgt_lang"]) == (0, 1)
    # Two aligned files give the same pairs as the TSV.
    (pairs / "a.en").write_text("\n".join(t[0] for t in texts[:50]) + "\n", encoding="utf-8")
    (pairs / "a.zh").write_text("\n".join(t[1] for t in texts[:50]) + "\n", encoding="utf-8")
    prepare_parallel([pairs / "a.en", pairs / "a.zh"], tok, pairs / "store2")
    two = ParallelPairs(TokenStore(pairs / "store2"))
    assert [two[i] for i in range(50)] == [view[i] for i in range(50)]


def test_bad_parallel_input_names_file_and_line(tmp_path):
    (tmp_path / "bad.tsv").write_text("a\tb\nc d\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.tsv:2: expected 2 tab-separated columns"):
        list(read_pairs([tmp_path / "bad.tsv"]))
    (tmp_path / "x.en").write_text("a\nb\nc\n")
    (tmp_path / "x.zh").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"x.en:3: the two parallel files have different numbers of lines"):
        list(read_pairs([tmp_path / "x.en", tmp_path / "x.zh"]))


def test_tlm_batch_aligns_the_two_languages(pairs):
    tok = plmkit.load_tokenizer(pairs / "tok")
    prepare_parallel([pairs / "pairs.tsv"], tok, pairs / "store_b")
    view = ParallelPairs(TokenStore(pairs / "store_b"))
    obj = build("tlm", tokenizer=tok)
    recs = [view[i] for i in range(0, N_PAIRS, 60)]
    b = obj.make_batch(recs)
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    masked_src = masked_tgt = 0
    for r, ids, tt, pos, lab, att in zip(recs, b["input_ids"], b["token_type_ids"], b["position_ids"],
                                         b["labels"], b["attention_mask"]):
        ls, lt = len(r["src"]) + 2, len(r["tgt"]) + 2
        assert int(att.sum()) == ls + lt
        assert tt[:ls].tolist() == [0] * ls and tt[ls:ls + lt].tolist() == [1] * lt  # language ids per side
        assert pos[:ls].tolist() == list(range(ls)) and pos[ls:ls + lt].tolist() == list(range(lt))  # restart
        assert int(ids[0]) == cls_id and int(ids[ls - 1]) == sep_id and int(ids[ls]) == cls_id
        original = [l if l != IGNORE else i for i, l in zip(ids[:ls + lt].tolist(), lab[:ls + lt].tolist())]
        assert original == [cls_id, *r["src"], sep_id, cls_id, *r["tgt"], sep_id]
        masked_src += int((lab[:ls] != IGNORE).sum())
        masked_tgt += int((lab[ls:ls + lt] != IGNORE).sum())
    n_src = sum(len(r["src"]) for r in recs)
    n_tgt = sum(len(r["tgt"]) for r in recs)
    # ~15% of each side's tokens are selected: masks land in both languages
    assert 0.08 < masked_src / n_src < 0.25 and 0.08 < masked_tgt / n_tgt < 0.25


def test_plm_pretrain_trains_tlm_on_the_pairs(pairs, tmp_path, capsys):
    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / "xlm" / "tlm-cmn-eng.yaml").read_text())
    recipe["model"]["overrides"] |= {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}
    recipe["tokenizer"] = {"path": str(pairs / "tok")}
    recipe["data"] = {"train": [str(pairs / "pairs.tsv")], "valid_fraction": 0.05, "seq_len": 48}
    recipe["train"] |= {"max_steps": 40, "batch_size": 32, "lr": 3e-3, "warmup_steps": 4, "log_every": 1,
                        "eval_every": 0, "eval_batches": 4, "save_every": 0, "tensorboard": False,
                        "plots": False, "num_threads": 1}
    p = tmp_path / "tlm.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["pretrain", str(p), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_examples"] + summary["valid_examples"] == N_PAIRS
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"TLM loss: first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < first - 1.0, (first, last)
    assert TokenStore(out / "data" / "train").manifest["example_kind"] == "parallel"
