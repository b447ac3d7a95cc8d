"""ABSA via auxiliary sentences (plmkit.tasks.absa): the sentences of each format as the paper / the authors'
generation scripts write them, the readers, the yes/no argmax, and the metrics against brute-force versions
written from the authors' evaluation.py layout (groups of 4 / 5 consecutive rows)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import plmkit.tasks.absa as A
from plmkit.errors import UserError
from plmkit.tasks.metrics import roc_auc


# ------------------------------------------------------------------------------------------ sentences


def test_auxiliary_sentences_as_the_paper():
    # Sun et al. 2019, section 3.2 / the authors' generate_*.py
    assert A.auxiliary_sentence("qa-m", "safety", "LOCATION1") == "what do you think of the safety of location - 1 ?"
    assert A.auxiliary_sentence("nli-m", "safety", "LOCATION1") == "location - 1 - safety"
    assert (A.auxiliary_sentence("qa-b", "safety", "LOCATION1", "Positive")
            == "the polarity of the aspect safety of location - 1 is positive .")
    assert A.auxiliary_sentence("nli-b", "safety", "LOCATION1", "Negative") == "negative - location - 1 - safety"
    assert (A.auxiliary_sentence("qa-m", "transit-location", "LOCATION2")
            == "what do you think of the transit location of location - 2 ?")
    # SemEval: no target ("of it"), anecdotes/miscellaneous reads "anecdotes"
    assert A.auxiliary_sentence("qa-m", "food") == "what do you think of the food of it ?"
    assert A.auxiliary_sentence("nli-m", "anecdotes/miscellaneous") == "anecdotes"
    assert A.auxiliary_sentence("qa-b", "service", None, "conflict") == "the polarity of the aspect service is conflict ."
    assert A.auxiliary_sentence("nli-b", "price", None, "none") == "none - price"
    with pytest.raises(UserError):
        A.auxiliary_sentence("qa-x", "food")


def _sentihood_file(tmp_path, items):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(items))
    return p


def test_read_sentihood_targets_aspects_and_none(tmp_path):
    p = _sentihood_file(tmp_path, [
        {"id": 7, "text": "  LOCATION1 is cheap but LOCATION2 is unsafe  ", "opinions": [
            {"target_entity": "LOCATION1", "aspect": "price", "sentiment": "Positive"},
            {"target_entity": "LOCATION2", "aspect": "safety", "sentiment": "Negative"},
            {"target_entity": "LOCATION1", "aspect": "nightlife", "sentiment": "Positive"}]},  # not one of the 4
        {"id": 8, "text": "LOCATION1 is fine", "opinions": []}])
    inst = A.read_sentihood(p)
    assert len(inst) == 4 * 3  # (7, LOC1), (7, LOC2), (8, LOC1)
    assert inst[0].text == "location - 1 is cheap but location - 2 is unsafe"
    got = {(i.sentence_id, i.target, i.aspect): i.label for i in inst}
    assert got[("7", "LOCATION1", "price")] == "Positive" and got[("7", "LOCATION2", "safety")] == "Negative"
    assert sum(v != "None" for v in got.values()) == 2
    assert [i.aspect for i in inst[:4]] == list(A.SENTIHOOD_ASPECTS)
    bad = _sentihood_file(tmp_path, [{"id": 1, "text": "LOCATION1 x", "opinions": [
        {"target_entity": "LOCATION1", "aspect": "price", "sentiment": "Positive"},
        {"target_entity": "LOCATION1", "aspect": "price", "sentiment": "Negative"}]}])
    with pytest.raises(UserError, match="id 1.*disagree"):
        A.read_sentihood(bad)


def test_read_semeval_categories(tmp_path):
    p = tmp_path / "r.xml"
    p.write_text('<?xml version="1.0"?><sentences><sentence id="3"><text>Great food, rude staff.</text>'
                 '<aspectCategories><aspectCategory category="food" polarity="positive"/>'
                 '<aspectCategory category="service" polarity="negative"/></aspectCategories></sentence></sentences>')
    inst = A.read_semeval(p)
    assert [(i.aspect, i.label) for i in inst] == [("price", "none"), ("anecdotes/miscellaneous", "none"),
                                                  ("food", "positive"), ("ambience", "none"), ("service", "negative")]
    p.write_text("<sentences><sentence id='1'><text>x</text></sentences>")
    with pytest.raises(UserError, match="not well-formed"):
        A.read_semeval(p)


def test_real_files_instance_counts(shared_data):
    d = shared_data / "absa"
    if not (d / "sentihood" / "sentihood-test.json").is_file():
        pytest.skip("no SentiHood data")
    items = json.loads((d / "sentihood" / "sentihood-test.json").read_text())
    inst = A.read_sentihood(d / "sentihood" / "sentihood-test.json")
    assert len(inst) == 4 * sum(1 + ("LOCATION2" in it["text"]) for it in items)
    n_op = sum(len({(o["target_entity"], o["aspect"]) for o in it["opinions"] if o["aspect"] in A.SENTIHOOD_ASPECTS})
               for it in items)
    assert sum(i.label != "None" for i in inst) == n_op
    sem = A.read_semeval(d / "semeval2014" / "Restaurants_Test_Gold.xml")
    assert len(sem) == 5 * 800


def test_b_formats_one_row_per_label_and_argmax_of_yes():
    ds = A.SENTIHOOD
    inst = [A.Instance("1", "location - 1 is safe", "LOCATION1", "safety", "Positive", "f:1"),
            A.Instance("1", "location - 1 is safe", "LOCATION1", "price", "None", "f:1")]
    rows = A.build_examples(inst, "qa-b", ds)
    assert len(rows) == 6 and [r.label for r in rows] == ["0", "1", "0", "1", "0", "0"]
    assert rows[1].text_pair == "the polarity of the aspect safety of location - 1 is positive ."
    assert A.build_examples(inst, "single", ds)[0].text_pair is None
    # classifier probabilities (no, yes) per row -> normalised yes per instance; the argmax is the label
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.5, 0.5], [0.9, 0.1]])
    s = A.instance_scores("qa-b", ds, probs)
    np.testing.assert_allclose(s, [[0.1 / 1.2, 0.8 / 1.2, 0.3 / 1.2], [0.6 / 1.2, 0.5 / 1.2, 0.1 / 1.2]])
    assert [ds.labels[k] for k in s.argmax(1)] == ["Positive", "None"]


# ------------------------------------------------------------------------------------------ metrics


def _brute_auc(y, s):
    pos = [b for a, b in zip(y, s) if a]
    neg = [b for a, b in zip(y, s) if not a]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def test_roc_auc_against_pairwise_count():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 30)
        y = [rng.random() < 0.4 for _ in range(n)]
        if all(y) or not any(y):
            assert np.isnan(roc_auc(y, [0.0] * n))
            continue
        s = [rng.choice([0.1, 0.2, 0.5, rng.random()]) for _ in range(n)]  # with ties
        assert roc_auc(y, s) == pytest.approx(_brute_auc(y, s))
    assert roc_auc([1, 0], [0.9, 0.1]) == 1.0 and roc_auc([1, 0], [0.1, 0.9]) == 0.0


def _random_sentihood(rng, n_groups):
    inst, scores = [], []
    for g in range(n_groups):
        for a in A.SENTIHOOD_ASPECTS:
            inst.append(A.Instance(str(g), "t", "LOCATION1", a, rng.choice(["None", "None", "Positive", "Negative"]), f"f:{g}"))
            p = np.array([rng.random() for _ in range(3)])
            scores.append(p / p.sum())
    return inst, np.array(scores)


def _brute_sentihood(y_true, y_pred, score):
    """The authors' evaluation.py definitions over rows in groups of four (indices i*4 + j)."""
    n = len(y_true) // 4
    strict = sum(all(y_true[i * 4 + j] == y_pred[i * 4 + j] for j in range(4)) for i in range(n)) / n
    p_all = r_all = count = 0
    for i in range(n):
        a = {j for j in range(4) if y_pred[i * 4 + j] != 0}
        b = {j for j in range(4) if y_true[i * 4 + j] != 0}
        if not b:
            continue
        ab = a & b
        p_all += len(ab) / len(a) if ab else 0
        r_all += len(ab) / len(b) if ab else 0
        count += 1
    mp, mr = p_all / count, r_all / count
    f1 = 2 * mp * mr / (mp + mr)
    aucs, s_aucs, right, total = [], [], 0, 0
    for j in range(4):
        rows = range(j, len(y_true), 4)
        aucs.append(_brute_auc([y_true[r] == 0 for r in rows], [score[r][0] for r in rows]))
        op = [r for r in rows if y_true[r] > 0]
        ns = [score[r][2] / (score[r][1] + score[r][2]) for r in op]
        s_aucs.append(_brute_auc([y_true[r] == 2 for r in op], ns))
        right += sum((x > 0.5) == (y_true[r] == 2) for r, x in zip(op, ns))
        total += len(op)
    return strict, f1, sum(aucs) / 4, right / total, sum(s_aucs) / 4


def test_sentihood_metrics_against_brute_force():
    rng = random.Random(1)
    inst, scores = _random_sentihood(rng, 60)
    y_true = [A.SENTIHOOD_LABELS.index(i.label) for i in inst]
    y_pred = list(scores.argmax(1))
    m = A.sentihood_metrics(inst, scores)
    want = _brute_sentihood(y_true, y_pred, scores)
    got = (m["aspect_accuracy"], m["aspect_f1"], m["aspect_auc"], m["sentiment_accuracy"], m["sentiment_auc"])
    assert got == pytest.approx(want)


def test_sentihood_metrics_hand_example():
    # one (sentence, target): gold price Positive, safety Negative; predicted price Positive, general Positive
    inst = [A.Instance("1", "t", "LOCATION1", a, lab, "f:1")
            for a, lab in zip(A.SENTIHOOD_ASPECTS, ["None", "Positive", "None", "Negative"])]
    scores = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.6, 0.1, 0.3]])
    m = A.sentihood_metrics(inst, scores)
    assert m["aspect_accuracy"] == 0.0
    # P = 1/2 (price of {general, price}), R = 1/2 (price of {price, safety}) -> F1 1/2
    assert m["aspect_f1"] == pytest.approx(0.5)
    assert m["sentiment_accuracy"] == pytest.approx(1.0)  # price: 0.1/0.9 < .5 -> Pos; safety 0.3/0.4 > .5 -> Neg


def test_semeval_metrics_against_brute_force():
    rng = random.Random(2)
    inst, rows = [], []
    for g in range(50):
        for a in A.SEMEVAL_ASPECTS:
            inst.append(A.Instance(str(g), "t", None, a, rng.choice(["none", "none", "positive", "negative",
                                                                     "neutral", "conflict"]), f"f:{g}"))
            p = np.array([rng.random() for _ in range(5)])
            rows.append(p / p.sum())
    scores = np.array(rows)
    y_true = [A.SEMEVAL_LABELS.index(i.label) for i in inst]
    y_pred = list(scores.argmax(1))
    # semeval_PRF over groups of five rows
    s_all = g_all = sg = 0
    for i in range(len(y_true) // 5):
        s = {j for j in range(5) if y_pred[i * 5 + j] != 4}
        g = {j for j in range(5) if y_true[i * 5 + j] != 4}
        if g:
            s_all, g_all, sg = s_all + len(s), g_all + len(g), sg + len(s & g)
    p, r = sg / s_all, sg / g_all
    m = A.semeval_metrics(inst, scores)
    assert (m["aspect_precision"], m["aspect_recall"], m["aspect_f1"]) == pytest.approx((p, r, 2 * p * r / (p + r)))
    for classes, key in ((4, "sentiment_accuracy"), (3, "sentiment_accuracy_3way"), (2, "sentiment_accuracy_binary")):
        keep = {4: [0, 1, 2, 3], 3: [0, 1, 2], 2: [0, 2]}[classes]
        right = total = 0
        for t, pr, sc in zip(y_true, y_pred, scores):
            if t not in keep:
                continue
            total += 1
            if pr not in keep:  # the best-scoring kept class (first on ties, as the >= chains)
                pr = max(keep, key=lambda c: (sc[c], -c))
            right += pr == t
        assert m[key] == pytest.approx(right / total)


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_absa_model(tmp_path_factory):
    import plmkit
    import torch

    from tests.conftest import data_dir

    d = data_dir() / "absa" / "sentihood"
    if not (d / "sentihood-train.json").is_file():
        pytest.skip("no SentiHood data")
    w = tmp_path_factory.mktemp("absa")
    words = set()
    for it in json.loads((d / "sentihood-train.json").read_text())[:300]:
        words.update(A._sentihood_text(it["text"]).lower().split())
    corpus = w / "corpus.txt"
    corpus.write_text(" ".join(sorted(words)) + " what do you think of the it polarity aspect is none positive "
                      "negative transit location general price safety - 1 2 ? . neutral conflict food service "
                      "ambience anecdotes")
    tok = plmkit.train_tokenizer([str(corpus)], kind="wordpiece", vocab_size=400)
    torch.manual_seed(0)
    plmkit.load("bert-tiny", vocab_size=len(tok), head=None).save_pretrained(w / "model")
    tok.save(w / "model")
    return w


@pytest.mark.parametrize("fmt", A.FORMATS)
def test_finetune_sentihood_each_format(tiny_absa_model, shared_data, fmt):
    from plmkit.cli.main import main

    out = tiny_absa_model / fmt
    rc = main(["finetune", "--task", "absa-sentihood", "--absa-format", fmt, "--model", str(tiny_absa_model / "model"),
               "--data", str(shared_data / "absa" / "sentihood"), "--out", str(out), "--max-train-examples", "8",
               "--max-eval-examples", "8", "--epochs", "1", "--batch-size", "8", "--max-seq-len", "48"])
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    for k in ("aspect_accuracy", "aspect_f1", "aspect_auc", "sentiment_accuracy", "sentiment_auc"):
        assert k in res and (np.isnan(res[k]) or 0.0 <= res[k] <= 1.0), (k, res[k])
    n_inst = res["train_examples"]
    assert res["train_sentences"] == 8 and n_inst % 4 == 0
    rows = sum(r["train_rows"] for r in res["runs"])
    assert rows == (3 * n_inst if fmt.endswith("-b") else n_inst)
    assert res["models"] == (len(res["runs"]) if fmt == "single" else 1)
    if fmt == "single":  # one model per (target, aspect): at least the 4 aspects of LOCATION1
        assert res["models"] >= 4 and (out / "LOCATION1_safety" / "weights.safetensors").is_file()
    else:
        assert json.loads((out / "task.json").read_text())["absa_format"] == fmt


def test_finetune_semeval_qa_b(tiny_absa_model, shared_data):
    from plmkit.cli.main import main

    out = tiny_absa_model / "semeval"
    rc = main(["finetune", "--task", "absa-semeval", "--absa-format", "nli-b", "--model", str(tiny_absa_model / "model"),
               "--data", str(shared_data / "absa" / "semeval2014"), "--out", str(out), "--max-train-examples", "6",
               "--max-eval-examples", "6", "--epochs", "1", "--max-seq-len", "48"])
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["runs"][0]["train_rows"] == 6 * 5 * 5 and res["dev_examples"] == 30
    assert 0.0 <= res["aspect_f1"] <= 1.0 and "sentiment_accuracy_3way" in res


def test_bad_format_is_a_user_error(tmp_path, shared_data, capsys):
    from plmkit.cli.main import main

    assert main(["finetune", "--task", "absa-sentihood", "--absa-format", "qa", "--model", "x", "--data",
                 str(shared_data), "--out", str(tmp_path / "o")]) == 2
    assert "--absa-format: invalid choice: 'qa'" in capsys.readouterr().err

