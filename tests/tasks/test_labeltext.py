"""Classification as text matching (--label-as-text): the pairs, the argmax over labels' yes probabilities,
the shipped label-text files, and a toy run that learns the task through the pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import plmkit.tasks.labeltext as LT
from plmkit.errors import UserError
from plmkit.tasks.readers import TextExample

REPO = Path(__file__).resolve().parents[2]


def test_pairs_one_per_label_gold_is_yes():
    ex = [TextExample("a fine film", None, "1", "f:2"), TextExample("dull", None, "0", "f:3")]
    rows = LT.expand(ex, ["0", "1"], {"0": "negative", "1": "positive"})
    assert [(r.text, r.text_pair, r.label, r.source) for r in rows] == [
        ("a fine film", "negative", "0", "f:2"), ("a fine film", "positive", "1", "f:2"),
        ("dull", "negative", "1", "f:3"), ("dull", "positive", "0", "f:3")]
    assert LT.expand([TextExample("x", None, None, "f:1")], ["0", "1"], {"0": "n", "1": "p"})[0].label is None
    with pytest.raises(UserError, match="f:9.*single-sentence"):
        LT.expand([TextExample("x", "y", "0", "f:9")], ["0"], {"0": "n"})


def test_argmax_over_labels_yes_probability():
    # 2 examples x 3 labels, (no, yes) per pair; example 0: label 2 has the highest yes; example 1: label 0
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.5, 0.5], [0.8, 0.2]])
    yes = LT.label_scores(probs, 3)
    np.testing.assert_allclose(yes, [[0.1, 0.4, 0.7], [0.55, 0.5, 0.2]])
    assert list(yes.argmax(1)) == [2, 0]
    with pytest.raises(ValueError):
        LT.label_scores(probs, 4)


def test_label_text_files(tmp_path):
    assert LT.load_label_texts(str(REPO / "recipes/label-text/sst2.yaml"), ["0", "1"]) == {"0": "negative", "1": "positive"}
    cats = ["ambience", "anecdotes/miscellaneous", "food", "price", "service"]
    assert set(LT.load_label_texts(str(REPO / "recipes/label-text/semeval-category.yaml"), cats)) == set(cats)
    assert LT.load_label_texts("names", ["a", "b"]) == {"a": "a", "b": "b"}
    f = tmp_path / "l.yaml"
    f.write_text('"0": negative\n')
    with pytest.raises(UserError, match="no text for label '1'"):
        LT.load_label_texts(str(f), ["0", "1"])
    f.write_text("[1, 2]\n")
    with pytest.raises(UserError, match="expected a mapping"):
        LT.load_label_texts(str(f), ["0"])


def test_toy_task_learns_through_pairs(workdir, ft):
    # matching needs the two segments to interact (an XOR of keyword and label text): more epochs than a head
    res = ft("cls_label_text", "--label-as-text", str(REPO / "recipes/label-text/sst2.yaml"), "--epochs", "20")
    assert res["train_pairs"] == 2 * res["train_examples"] and res["dev_pairs"] == 2 * res["dev_examples"]
    assert res["label_as_text"] == {"0": "negative", "1": "positive"}
    assert res["accuracy"] >= 0.8, res
    task = json.loads((workdir / "cls_label_text" / "task.json").read_text())
    assert task["task_labels"] == ["0", "1"] and task["labels"] == ["0", "1"]
    # plm evaluate / predict would feed plain rows to the yes/no head: refused in one line
    from plmkit.cli.main import main

    assert main(["evaluate", "--checkpoint", str(workdir / "cls_label_text"), "--data", str(workdir)]) == 2


def test_semeval_category_task_reads_single_category_sentences(shared_data):
    from plmkit.tasks.specs import get_task, read_split

    p = shared_data / "absa" / "semeval2014" / "Restaurants_Test_Gold.xml"
    if not p.is_file():
        pytest.skip("no SemEval-2014 data")
    rows = read_split(get_task("absa-semeval-category"), p, "dev")
    import xml.etree.ElementTree as ET

    single = [s for s in ET.parse(p).getroot().iter("sentence") if len(list(s.iter("aspectCategory"))) == 1]
    assert len(rows) == len(single)
    assert [r.label for r in rows] == [next(s.iter("aspectCategory")).get("category") for s in single]
