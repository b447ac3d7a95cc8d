"""Readers: real GLUE / CoNLL / SQuAD files when present, and every bad-input path on tiny files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from plmkit.errors import UserError
from plmkit.tasks.readers import BadRows, check_labels, read_conll, read_mrpc_train, read_squad, read_table

DATA = Path(os.environ.get("PLMKIT_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def need(rel: str) -> Path:
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"dataset {rel} not found under PLMKIT_DATA={DATA}")
    return p


def test_real_glue_layouts():
    sst = read_table(need("glue/SST-2/dev.tsv"))
    assert len(sst) == 872 and {e.label for e in sst} == {"0", "1"}
    cola = read_table(need("glue/CoLA/dev.tsv"), text_column=3, label_column=1, header=False)
    assert len(cola) == 1043
    rte = read_table(need("glue/RTE/dev.tsv"), "sentence1", "sentence2", "label")
    assert len(rte) == 277 and rte[0].label == "not_entailment"
    sts = read_table(need("glue/STS-B/dev.tsv"), "sentence1", "sentence2", "score", label_type="float")
    assert len(sts) == 1500 and sts[0].label == 5.0
    mrpc = read_mrpc_train(need("glue/MRPC"))
    assert len(mrpc) == 3668


def test_real_conll_and_squad():
    conll = read_conll(need("conll2003/valid.txt"))
    assert len(conll) == 3250 and sum(len(s.tokens) for s in conll) == 51362
    sq = read_squad(need("squad-v1.1/dev-v1.1.json"))
    assert len(sq) == 10570
    first36 = read_squad(need("squad-v1.1/dev-v1.1.json"), articles=slice(0, 36))
    rest = read_squad(need("squad-v1.1/dev-v1.1.json"), articles=slice(36, None))
    assert len(first36) + len(rest) == 10570 and not {e.context for e in first36} & {e.context for e in rest}


def test_wrong_column_count_names_file_line(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("sentence\tlabel\ngood film\t1\nbad\tfilm\t0\nok\t1\n")
    with pytest.raises(UserError, match=r"train.tsv:3: expected 2 tab-separated columns, got 3"):
        read_table(f)
    bad = BadRows(skip=True)
    rows = read_table(f, bad=bad)
    assert [r.text for r in rows] == ["good film", "ok"] and bad.count == 1
    assert "train.tsv:3" in bad.summary()


def test_csv_jsonl_named_columns_and_missing_column(tmp_path):
    c = tmp_path / "d.csv"
    c.write_text('text,other,label\n"a, quoted",x,pos\nplain,y,neg\n')
    rows = read_table(c, text_column="text")
    assert rows[0].text == "a, quoted" and rows[1].label == "neg"
    with pytest.raises(UserError, match=r"no label column 'lable'.*did you mean 'label'"):
        read_table(c, label_column="lable")
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "a", "label": ["x", "y"]}\n\n{"text": "b"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:3: missing key 'label'"):
        read_table(j, label_type="multi")


def test_empty_files(tmp_path):
    for name in ("e.tsv", "e.jsonl", "e.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(UserError, match="empty file"):
        read_table(tmp_path / "e.tsv")
    with pytest.raises(UserError, match="empty file"):
        read_table(tmp_path / "e.jsonl")
    with pytest.raises(UserError, match="empty file"):
        read_conll(tmp_path / "e.txt")
    (tmp_path / "h.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(UserError, match="header but no data rows"):
        read_table(tmp_path / "h.tsv")


def test_unseen_dev_labels(tmp_path):
    f = tmp_path / "dev.tsv"
    f.write_text("sentence\tlabel\na\tpos\nb\tneutral\n")
    dev = read_table(f)
    with pytest.raises(UserError, match=r"dev.tsv:3: label 'neutral' not seen in training"):
        check_labels(dev, ["neg", "pos"])
    bad = BadRows(skip=True)
    assert len(check_labels(dev, ["neg", "pos"], bad)) == 1 and bad.count == 1


def test_bio_i_after_o(tmp_path):
    f = tmp_path / "ner.txt"
    f.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\n\nin O\nNew I-LOC\nYork I-LOC\n\nParis B-LOC\n")
    with pytest.raises(UserError, match=r"ner.txt:7: tag I-LOC follows O"):
        read_conll(f)
    bad = BadRows(skip=True)
    sents = read_conll(f, bad=bad)
    assert [s.tokens for s in sents] == [["John", "lives"], ["Paris"]] and bad.count == 1
    g = tmp_path / "cols.txt"
    g.write_text("a NN O\nb B-PER\n")
    with pytest.raises(UserError, match=r"cols.txt:2: expected 3 columns, got 2"):
        read_conll(g)


def test_squad_offsets_must_match(tmp_path):
    obj = {"data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "ok", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "off", "question": "What?", "answers": [{"text": "Paris", "answer_start": 3}]},
    ]}]}]}
    f = tmp_path / "sq.json"
    f.write_text(json.dumps(obj))
    with pytest.raises(UserError, match=r"sq.json:off: answer 'Paris' does not match the context at offset 3"):
        read_squad(f)
    bad = BadRows(skip=True)
    assert [e.id for e in read_squad(f, bad=bad)] == ["ok"] and bad.count == 1
