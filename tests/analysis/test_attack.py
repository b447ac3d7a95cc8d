"""BERT-Attack on the toy sentiment classifier (tests/conftest.py) with a hand-made embedding space."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plmkit.analysis import attack as A
from plmkit.errors import UserError


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, toy_words):
    """Each positive word's nearest neighbours are negative words and vice versa (cosine 0.9)."""
    rng = np.random.default_rng(0)
    base = {w: rng.normal(size=8) for w in toy_words.FILL}
    for p, n in zip(toy_words.POS, toy_words.NEG):
        v = rng.normal(size=8)
        base[p], base[n] = v, v + 0.3 * rng.normal(size=8)
    path = tmp_path_factory.mktemp("w2v") / "vec.txt"
    path.write_text(f"{len(base)} 8\n" + "".join(f"{w} " + " ".join(f"{x:.5f}" for x in v) + "\n" for w, v in base.items()))
    return path


def test_attack_flips_the_toy_classifier_and_records_are_consistent(workdir, cls_run, vectors, tmp_path):
    from plmkit.cli.main import main

    out = tmp_path / "att"
    rc = main(["attack", "--victim", str(workdir / "cls"), "--data", str(workdir / "dev.tsv"),
               "--attacker", f"embeddings:{vectors}", "--max-examples", "20", "--min-similarity", "0.3",
               "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "attack.json").read_text())
    recs = [json.loads(line) for line in (out / "adversarial.jsonl").read_text().splitlines()]
    assert len(recs) == 20 == summary["n_examples"]
    attacked = [r for r in recs if r["status"] != "skipped (misclassified)"]
    success = [r for r in attacked if r["status"] == "success"]
    assert summary["original_accuracy"] == pytest.approx(len(attacked) / 20)
    assert summary["after_attack_accuracy"] == pytest.approx((len(attacked) - len(success)) / 20)
    assert summary["success_rate"] == pytest.approx(len(success) / len(attacked))
    assert summary["queries_per_example"] == pytest.approx(np.mean([r["queries"] for r in attacked]))
    assert summary["original_accuracy"] >= 0.8 and summary["success_rate"] >= 0.5
    # every success is a real flip of the victim with the recorded number of changed words
    victim = A.Victim(str(workdir / "cls"))
    probs = victim.probs([r["adversarial"] for r in success])
    for r, p in zip(success, probs):
        assert int(p.argmax()) != r["label"]
        diff = [i for i, (a, b) in enumerate(zip(r["original"].split(), r["adversarial"].split())) if a != b]
        assert diff == r["changed"] and r["perturbed_fraction"] == pytest.approx(len(diff) / len(r["original"].split()))
        assert not any(r["original"].split()[i] in A.STOP_WORDS for i in diff)


def test_budget_and_antonym_filter(workdir, cls_run, vectors, toy_words):
    victim = A.Victim(str(workdir / "cls"))
    subs = A.EmbeddingSubstitutes(str(vectors), k=5, min_similarity=0.3)
    text = "the movie was good and fun"
    label = int(victim.probs([text])[0].argmax())
    banned = {k: set(toy_words.NEG) for k in text.split()}
    rec = A.attack_example(victim, text.split(), label, subs, budget=1.0, antonyms=banned)
    assert not set(rec.get("adversarial", "").split()) & set(toy_words.NEG)
    free = A.attack_example(victim, text.split(), label, subs, budget=0.01)
    assert len(free.get("changed", [])) <= 1 and free["queries"] > len(text.split())


def test_bad_victim_and_attacker(workdir, ner_run, cls_run, tmp_path):
    from plmkit.cli.main import main

    with pytest.raises(UserError, match="no classification head"):
        A.Victim(str(workdir / "ner"))
    vec = tmp_path / "v.txt"
    vec.write_text("2 2\nzzz 1 0\nyyy 0 1\n")
    rc = main(["attack", "--victim", str(workdir / "cls"), "--data", str(workdir / "dev.tsv"),
               "--attacker", f"embeddings:{vec}", "--out", str(tmp_path / "o")])
    assert rc == 2


def test_mlm_substitutes_are_the_top_whole_words_at_the_position(workdir, tmp_path):
    import plmkit
    import torch

    tok = plmkit.load_tokenizer(str(workdir / "model"))
    torch.manual_seed(0)
    mlm = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    tok.save(tmp_path / "mlm")
    subs = A.MLMSubstitutes(str(tmp_path / "mlm"), k=5)
    words = "the movie was good".split()
    ids = tok.encode(" ".join(words))
    assert len(ids) == 6  # [CLS] + one piece per word + [SEP]
    with torch.no_grad():
        logits = mlm(torch.tensor([ids])).logits[0, 4]
    vocab = {i: t for t, i in tok.get_vocab().items()}
    ranked = [vocab[i] for i in logits.argsort(descending=True).tolist()
              if i not in tok.all_special_ids and not vocab[i].startswith("##") and any(c.isalpha() for c in vocab[i])]
    assert subs(words, 3) == ranked[:5]
    with pytest.raises(UserError, match="no MLM head"):
        A.MLMSubstitutes(str(workdir / "model"))


def test_defend_retrains_on_the_augmented_set_and_attacks_again(workdir, cls_run, vectors, tmp_path):
    from plmkit.cli.main import main

    out = tmp_path / "def"
    rc = main(["attack", "--victim", str(workdir / "cls"), "--data", str(workdir / "dev.tsv"),
               "--attacker", f"embeddings:{vectors}", "--max-examples", "12", "--min-similarity", "0.3",
               "--defend", "--train-examples", "10", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "defend.json").read_text())
    train_recs = [json.loads(line) for line in (out / "adversarial_train.jsonl").read_text().splitlines()]
    adv = [r for r in train_recs if r["status"] == "success"]
    assert len(train_recs) == 10 == res["train_examples_attacked"] and res["adversarial_examples_added"] == len(adv) > 0
    # the augmented table: the victim's 160 training rows (no subset was asked) then the adversarial examples
    rows = (out / "train_augmented.tsv").read_text().splitlines()
    original = (workdir / "train.tsv").read_text().splitlines()
    assert rows[0] == "sentence\tlabel" and len(rows) == 1 + 160 + len(adv) == 1 + res["augmented_train_size"]
    assert sorted(rows[1:161]) == sorted(original[1:])
    assert rows[161:] == [f"{r['adversarial']}\t{r['label']}" for r in adv]
    # the defended model was fine-tuned with the victim's options and its clean / attacked scores are its own
    ev = json.loads((out / "defended" / "eval.json").read_text())
    assert ev["train_examples"] == 160 + len(adv) and res["clean_dev_after"] == ev["accuracy"]
    assert res["clean_dev_before"] == cls_run["accuracy"]
    assert res["clean_cost"] == pytest.approx(cls_run["accuracy"] - ev["accuracy"])
    recs = [json.loads(line) for line in (out / "adversarial_defended.jsonl").read_text().splitlines()]
    assert res["after"] == A.summarize(recs) == json.loads((out / "attack_defended.json").read_text())
    assert res["before"]["after_attack_accuracy"] == json.loads((out / "attack.json").read_text())["after_attack_accuracy"]
    assert res["after_attack_accuracy_gain"] == pytest.approx(res["after"]["after_attack_accuracy"]
                                                              - res["before"]["after_attack_accuracy"])
    defended = A.Victim(str(out / "defended"))
    p = defended.probs([r["original"] for r in recs])
    assert [int(x.argmax()) for x in p] == [r["original_prediction"] for r in recs]


def test_defend_needs_a_single_sentence_classifier(workdir, ner_run, tmp_path, capsys):
    with pytest.raises(UserError, match="single-sentence classifier"):
        A.victim_training_set(str(workdir / "ner"))
