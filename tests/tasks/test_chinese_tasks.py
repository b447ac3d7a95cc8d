"""Named tasks for the shipped Chinese sets: chnsenticorp, weibo-ner, msra-ner, peoples-daily-ner.

Reading + label-set checks against the counts in shared/data/README.md for each, and a few fine-tuning steps
of a tiny BERT through ``plm finetune`` for ChnSentiCorp and Weibo NER (whose digit-suffix option is a CLI
flag). Skipped when the shared data is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.cli.main import main
from plmkit.tasks.readers import BadRows, check_bio, read_conll
from plmkit.tasks.specs import get_task, read_split, repair_bio, resolve_file

PER_ORG_LOC = ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
WEIBO = sorted(f"{b}-{t}.{k}" for b in "BI" for t in ("PER", "ORG", "LOC", "GPE") for k in ("NAM", "NOM")) + ["O"]


def _data_dir() -> Path:
    """$PLMKIT_DATA, else ``shared/data`` beside the repository (as tests/conftest.py's ``data_dir``)."""
    return Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _chinese(shared_data: Path) -> Path:
    d = shared_data / "chinese"
    if not d.is_dir():
        pytest.skip(f"Chinese sets not found at {d}")
    return d


def _read(d: Path, task: str, **over):
    spec = get_task(task, **over)
    bad = BadRows()  # strict: any bad row raises
    train = read_split(spec, resolve_file(d, spec.train_file, "train"), "train", bad)
    dev = read_split(spec, resolve_file(d, spec.dev_file, "dev"), "dev", bad)
    return train, dev


@pytest.mark.parametrize("task,folder,n_train,n_dev,labels", [
    ("chnsenticorp", "chnsenticorp", 9600, 1200, ["0", "1"]),
    ("weibo-ner", "weibo-ner", 1350, 270, WEIBO),
    ("msra-ner", "msra-ner", 2754, 688, PER_ORG_LOC),  # 3,442 sentences of one file, split 80/20
    ("peoples-daily-ner", "peoples-daily-ner", 2318, 4636, PER_ORG_LOC),  # dev trains, test evaluates
])
def test_read_and_label_sets(shared_data, task, folder, n_train, n_dev, labels):
    train, dev = _read(_chinese(shared_data) / folder, task)
    assert (len(train), len(dev)) == (n_train, n_dev)
    if task == "chnsenticorp":
        assert sorted({e.label for e in train}) == sorted({e.label for e in dev}) == labels
        assert sum(e.label == "1" for e in train) == 4799  # README: 0: 4,801, 1: 4,799
        assert all(e.text and not e.text.isascii() for e in train[:50])
        return
    assert sorted({t for e in train for t in e.tags}) == labels
    assert {t for e in dev for t in e.tags} <= set(labels)
    assert all(check_bio(e.tags) is None for e in train + dev)
    # one character per token (Weibo has 44 lines whose character arrived as two U+FFFD)
    assert all(len(tok) == 1 or set(tok) == {"\ufffd"} for e in train + dev for tok in e.tokens)
    if task == "msra-ner":  # the two parts do not overlap
        assert {e.source for e in train}.isdisjoint({e.source for e in dev})


def test_weibo_digit_suffix_and_bio_repair(shared_data):
    d = _chinese(shared_data) / "weibo-ner"
    stripped, _ = _read(d, "weibo-ner")
    kept, _ = _read(d, "weibo-ner", strip_digit_suffix=False)
    assert all(t[-1].isdigit() for e in kept[:50] for t in e.tokens)
    assert [t[:-1] for t in kept[0].tokens] == stripped[0].tokens
    # segment positions of 10 and more have two digits: 'e12' is the letter e, '312' the digit 3
    long_pos = [(k, s) for ek, es in zip(kept, stripped) for k, s in zip(ek.tokens, es.tokens) if len(k) > 2
                and k[-2:].isdigit() and "\ufffd" not in k]
    assert len(long_pos) > 100 and all(s == k[0] for k, s in long_pos)
    # 8 training sentences carry an I- tag that starts an entity; the task reads them as conlleval does
    raw = BadRows(skip=True)
    read_conll(d / "weiboNER_2nd_conll.train", strip_digit_suffix=True, bad=raw)
    assert raw.count == 8
    assert repair_bio(["O", "I-PER.NOM", "I-PER.NOM", "B-LOC.NAM", "I-PER.NAM"]) == \
        ["O", "B-PER.NOM", "I-PER.NOM", "B-LOC.NAM", "B-PER.NAM"]


@pytest.fixture(scope="module")
def tiny_zh(tmp_path_factory, request):
    d = _data_dir() / "chinese"
    if not d.is_dir():
        pytest.skip(f"Chinese sets not found at {d}")
    w = tmp_path_factory.mktemp("zh")
    text = (d / "chnsenticorp" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:2000]
    chars = [l.split("\t")[0][:-1] for l in (d / "weibo-ner" / "weiboNER_2nd_conll.train").read_text(
        encoding="utf-8").splitlines() if l.strip()]
    (w / "corpus.txt").write_text("\n".join(text) + "\n" + "".join(chars) + "\n", encoding="utf-8")
    tok = plmkit.train_tokenizer([w / "corpus.txt"], kind="wordpiece", vocab_size=3000)
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), head=None, hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64)
    model.save_pretrained(w / "model")
    tok.save(w / "model")
    return w, d


def _finetune(w: Path, d: Path, task: str, folder: str, out: str, *extra) -> tuple[dict, list[float], dict]:
    argv = ["finetune", "--task", task, "--model", str(w / "model"), "--data", str(d / folder), "--out", str(w / out),
            "--max-train-examples", "128", "--max-eval-examples", "64", "--epochs", "3", "--lr", "3e-3",
            "--batch-size", "16", "--max-seq-len", "64", "--warmup", "0", *extra]
    assert main(argv) == 0
    losses = [json.loads(x)["loss"] for x in (w / out / "logs" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]
    return json.loads((w / out / "eval.json").read_text()), losses, json.loads((w / out / "task.json").read_text())


def test_finetune_chnsenticorp(tiny_zh):
    w, d = tiny_zh
    res, losses, info = _finetune(w, d, "chnsenticorp", "chnsenticorp", "senti", "--epochs", "10", "--no-epoch-eval")
    assert info["labels"] == ["0", "1"] and res["dev_examples"] == 64
    # 80 steps on 128 reviews: the tiny model fits its training set (chance loss is ln 2 = 0.69)
    assert len(losses) >= 6 and sum(losses[-3:]) / 3 < 0.5, losses


def test_finetune_weibo_ner_and_the_digit_flag(tiny_zh):
    w, d = tiny_zh
    res, losses, info = _finetune(w, d, "weibo-ner", "weibo-ner", "weibo")
    assert info["spec"]["strip_digit_suffix"] is True and info["labels"][0] == "O" and len(info["labels"]) == 17
    assert len(losses) >= 3 and losses[-1] < 0.6 * losses[0], losses  # most characters are O: learnt first
    assert "f1" in res and res["dev_examples"] == 64
    _, _, info = _finetune(w, d, "weibo-ner", "weibo-ner", "weibo-digits", "--no-strip-digit-suffix", "--epochs", "1")
    assert info["spec"]["strip_digit_suffix"] is False
