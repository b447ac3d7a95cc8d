"""``plm predict`` on toy fine-tuned checkpoints (session fixtures in tests/conftest.py): one JSONL line per
input, in order, truncation flagged; classification from a .txt file, NER from CoNLL, QA from SQuAD JSON."""

from __future__ import annotations

import json

from plmkit.cli.main import main


def test_classification_from_a_text_file(workdir, cls_run, capsys):
    inp = workdir / "in.txt"
    inp.write_text("the movie was good\n\n" + " ".join(["very"] * 60) + " awful\n")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(workdir / "cls"), "--input", str(inp), "--out", str(workdir / "p.jsonl")]) == 0
    preds = [json.loads(x) for x in (workdir / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and preds[0]["label"] == "1" and preds[1]["truncated"] is True
    assert "1 inputs were truncated" in capsys.readouterr().err


def test_ner_and_qa(workdir, ner_run, qa_run, toy_words):
    assert main(["predict", "--checkpoint", str(workdir / "ner"), "--input", str(workdir / "ner" / "dev.txt"),
                 "--out", str(workdir / "ner.jsonl")]) == 0
    rows = [json.loads(x) for x in (workdir / "ner.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and len(rows[0]["tags"]) == len(rows[0]["tokens"]) == 5
    assert main(["predict", "--checkpoint", str(workdir / "qa"), "--input", str(workdir / "qa" / "dev.json"),
                 "--out", str(workdir / "qa.jsonl")]) == 0
    rows = [json.loads(x) for x in (workdir / "qa.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and sum(r["answer"] in toy_words.POS + toy_words.NEG for r in rows) >= 10
