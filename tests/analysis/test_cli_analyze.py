"""plm analyze contextuality / probe on the tiny toy BERT (tests/conftest.py): outputs and bad input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from plmkit.analysis import probes as P
from plmkit.cli.main import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, toy_words):
    rng = random.Random(0)
    lines = [toy_words.sentence(rng, rng.random() < 0.5) + " ." for _ in range(40)]
    path = tmp_path_factory.mktemp("ctx") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def conll(tmp_path_factory, toy_words):
    """POS is a function of the word; NER marks positive words."""
    rng = random.Random(1)
    d = tmp_path_factory.mktemp("conll")
    tag = {w: ("JJ" if w in toy_words.POS + toy_words.NEG else "DT" if w in ("the", "a") else "NN") for w in
           toy_words.POS + toy_words.NEG + toy_words.FILL}
    for split, n in (("train", 60), ("valid", 20)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            for w in toy_words.sentence(rng, rng.random() < 0.5).split():
                lines.append(f"{w} {tag[w]} {'B-NP' if tag[w] != 'JJ' else 'I-NP'} {'B-MISC' if w in toy_words.POS else 'O'}")
            lines.append("")
        (d / f"{split}.txt").write_text("\n".join(lines))
    return d


def test_contextuality_cli_writes_json_and_png(workdir, corpus, tmp_path):
    out = tmp_path / "ctx"
    rc = main(["analyze", "contextuality", "--model", str(workdir / "model"), "--corpus", str(corpus),
               "--random-words", "100", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "contextuality.json").read_text())
    assert [r["layer"] for r in res["layers"]] == [0, 1, 2]  # embeddings + bert-tiny's 2 layers
    for r in res["layers"]:
        assert {"self_similarity", "intra_sentence", "mev", "anisotropy", "self_similarity_adjusted"} <= set(r)
        assert -1 <= r["self_similarity"] <= 1 and 0 < r["mev"] <= 1
    assert (out / "contextuality.png").stat().st_size > 1000


def test_contextuality_bad_input_is_one_line_exit_2(workdir, corpus, tmp_path, capsys):
    rc = main(["analyze", "contextuality", "--model", str(workdir / "model"), "--corpus", str(corpus),
               "--layers", "0,5", "--out", str(tmp_path / "a")])
    assert rc == 2 and "layer 5 is out of range: this model has layers 0..2" in capsys.readouterr().err
    rc = main(["analyze", "contextuality", "--model", str(workdir / "model"), "--corpus", str(corpus),
               "--max-sentences", "2", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "too few repeated words: 0 word types occur >= 5 times in the 2 sentences read" in err
    assert len(err.strip().splitlines()) == 1


def test_probe_cli_learns_word_level_pos(workdir, conll, tmp_path):
    out = tmp_path / "probe"
    rc = main(["analyze", "probe", "--model", str(workdir / "model"), "--data", str(conll), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "probe.json").read_text())
    assert set(res["tasks"]) == {"pos", "chunk", "ner"} and res["layers"] == [0, 1, 2]
    pos0 = res["tasks"]["pos"]["per_layer"][0]
    assert pos0["accuracy"] == 1.0  # the tag is a function of the word: linearly separable from the embeddings
    assert pos0["selectivity"] == pytest.approx(pos0["accuracy"] - pos0["control_accuracy"])
    assert (out / "probe.png").is_file()


def test_control_labels_are_per_type_and_follow_the_label_distribution():
    types = [f"w{i}" for i in range(4000)]
    ctrl = P.control_labels(types + types[:10], [0] * 90 + [1] * 10, 2, seed=0)
    assert len(ctrl) == 4000
    assert np.mean([ctrl[t] for t in types]) == pytest.approx(0.1, abs=0.02)
    assert P.control_labels(types, [0, 1], 2, seed=0) == P.control_labels(types, [0, 1], 2, seed=0)


def test_probe_bad_layer(workdir, conll, tmp_path, capsys):
    rc = main(["analyze", "probe", "--model", str(workdir / "model"), "--data", str(conll), "--layers", "3",
               "--out", str(tmp_path / "p")])
    assert rc == 2 and "layer 3 is out of range" in capsys.readouterr().err


def test_mlp_probe_learns_what_a_linear_probe_cannot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)  # XOR of two signs: not linearly separable
    tr, te = slice(0, 400), slice(400, 600)
    lin = P.accuracy(P.train_probe(x[tr], y[tr], 2, max_iter=100), x[te], y[te])
    mlp = P.accuracy(P.train_probe(x[tr], y[tr], 2, max_iter=200, hidden=32), x[te], y[te])
    assert lin < 0.7 and mlp > 0.9, (lin, mlp)


def test_probe_cli_mlp_with_the_lama_curve(workdir, conll, tmp_path, capsys):
    lama = tmp_path / "lama"
    lama.mkdir()
    (lama / "metrics.json").write_text(json.dumps({"overall": {}, "layers": [0.1, 0.25, 0.4],
                                                   "uhn": {"layers": [0.05, 0.2, 0.3]}}))
    out = tmp_path / "probe"
    rc = main(["analyze", "probe", "--model", str(workdir / "model"), "--data", str(conll), "--probe", "mlp",
               "--hidden", "16", "--tasks", "pos", "--layers", "0,2", "--lama", str(lama), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "probe.json").read_text())
    assert res["probe_hidden"] == 16 and res["probe"].startswith("MLP")
    assert res["lama"]["p_at_1"] == [0.1, 0.4] and res["lama"]["uhn_p_at_1"] == [0.05, 0.3]
    assert res["tasks"]["pos"]["per_layer"][0]["accuracy"] == 1.0
    assert (out / "probe.png").stat().st_size > 1000
    (lama / "metrics.json").write_text(json.dumps({"overall": {}, "layers": [0.1, 0.2]}))
    rc = main(["analyze", "probe", "--model", str(workdir / "model"), "--data", str(conll), "--lama", str(lama),
               "--out", str(tmp_path / "p2")])
    err = capsys.readouterr().err
    assert rc == 2 and "the LAMA curve has 2 layers (0..1) but the probed model has layer 2" in err
    (lama / "metrics.json").write_text(json.dumps({"overall": {}}))
    rc = main(["analyze", "probe", "--model", str(workdir / "model"), "--data", str(conll), "--lama", str(lama),
               "--out", str(tmp_path / "p3")])
    err = capsys.readouterr().err
    assert rc == 2 and "run plm probe lama with --layers" in err and len(err.strip().splitlines()) == 1


def test_elmo_contextuality_and_probe_run_attention_is_refused(corpus, conll, tmp_path, capsys):
    """ELMo (classic/) returns its L + 1 layer representations as hidden_states: the per-layer analyses run on
    it; it has no attention, so attention analysis says so in one line."""
    import torch

    from plmkit.classic.elmo import save_elmo
    from plmkit.classic.recurrent import build

    words = sorted({w for f in (corpus, conll / "train.txt") for line in f.read_text().splitlines() for w in line.split()})
    vocab = ["<eos>", "<pad>", "<unk>"] + words
    torch.manual_seed(0)
    save_elmo(build("elmo-tiny", vocab_size=len(vocab)), vocab, tmp_path / "elmo")
    assert main(["analyze", "contextuality", "--model", str(tmp_path / "elmo"), "--corpus", str(corpus),
                 "--random-words", "50", "--out", str(tmp_path / "ctx")]) == 0
    res = json.loads((tmp_path / "ctx" / "contextuality.json").read_text())
    assert [r["layer"] for r in res["layers"]] == [0, 1, 2]  # char-CNN output + 2 biLSTM layers
    assert main(["analyze", "probe", "--model", str(tmp_path / "elmo"), "--data", str(conll),
                 "--out", str(tmp_path / "probe")]) == 0
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["layers"] == [0, 1, 2]
    capsys.readouterr()
    assert main(["analyze", "attention", "--model", str(tmp_path / "elmo"), "--text", "the movie",
                 "--out", str(tmp_path / "att")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not return attention probabilities" in err[0]
