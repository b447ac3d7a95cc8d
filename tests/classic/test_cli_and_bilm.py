"""``plm ngram`` / ``plm word2vec`` end to end, and the ``bilm`` objective on an ELMo model."""

from __future__ import annotations

import pytest
import torch

from plmkit.cli.main import main

TRAIN = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n\nthe cat ate the fish\n"
TEST = "the cat sat on the log\nthe zebra sat\n"


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "train.txt").write_text(TRAIN)
    (tmp_path / "test.txt").write_text(TEST)
    return tmp_path


def test_ngram_cli_train_eval_and_arpa(texts, capsys):
    out = texts / "lm"
    rc = main(["ngram", "train", "--text", str(texts / "train.txt"), "--order", "3", "--method", "kn",
               "--add-unk", "--out", str(out), "--eval", str(texts / "test.txt")])
    assert rc == 0
    assert (out / "model.arpa").is_file() and (out / "counts.json.gz").is_file()
    first = capsys.readouterr().out
    assert "perplexity" in first and "1 OOV" in first
    assert main(["ngram", "eval", str(out), "--text", str(texts / "test.txt")]) == 0
    a = capsys.readouterr().out
    assert main(["ngram", "eval", str(out / "model.arpa"), "--text", str(texts / "test.txt")]) == 0
    b = capsys.readouterr().out
    ppl = lambda s: float(s.split("perplexity ")[1].split()[0])  # noqa: E731
    assert ppl(a) == pytest.approx(ppl(b), rel=1e-4)
    assert main(["ngram", "eval", str(out), "--text", str(texts / "test.txt"), "--method", "laplace"]) == 0


@pytest.mark.parametrize("argv,msg", [
    (["--order", "0"], "argument --order: expected a positive integer, got 0"),
    (["--method", "kneser"], "did you mean"),
])
def test_ngram_cli_bad_input(texts, capsys, argv, msg):
    rc = main(["ngram", "train", "--text", str(texts / "train.txt"), "--out", str(texts / "x"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ngram_cli_empty_text_and_missing_unk(texts, capsys):
    (texts / "empty.txt").write_text("\n\n")
    assert main(["ngram", "train", "--text", str(texts / "empty.txt"), "--out", str(texts / "x")]) == 2
    assert "empty training text" in capsys.readouterr().err
    assert main(["ngram", "train", "--text", str(texts / "train.txt"), "--out", str(texts / "y"),
                 "--eval", str(texts / "test.txt")]) == 2
    assert "no <unk>" in capsys.readouterr().err


def test_word2vec_cli(texts, capsys):
    corpus = texts / "corpus.txt"
    corpus.write_text(TRAIN * 50)
    vec = texts / "vec.bin"
    assert main(["word2vec", "train", "--text", str(corpus), "--out", str(vec), "--dim", "8", "--min-count", "1",
                 "--epochs", "1", "--batch-size", "64"]) == 0
    assert main(["word2vec", "similar", str(vec), "cat", "--topn", "3"]) == 0
    assert capsys.readouterr().out.count("(") >= 3
    assert main(["word2vec", "analogy", str(vec), "cat", "dog", "mat"]) == 0
    (texts / "q.txt").write_text(": s\ncat dog mat log\ncat dog zebra log\n")
    assert main(["word2vec", "analogy", str(vec), "--questions", str(texts / "q.txt")]) == 0
    out = capsys.readouterr().out
    assert "1 questions skipped for unknown words" in out and "/1)" in out
    assert main(["word2vec", "similar", str(vec), "zebra"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_bilm_objective_trains_elmo(tmp_path):
    import plmkit
    from plmkit.objectives.bilm import BiLM
    from plmkit.errors import UserError
    from plmkit.classic.recurrent import build

    (tmp_path / "t.txt").write_text(TRAIN * 20)
    tok = plmkit.train_tokenizer([str(tmp_path / "t.txt")], kind="char", vocab_size=0)
    torch.manual_seed(0)
    obj = BiLM(tokenizer=tok)
    model = build("elmo-tiny", vocab_size=len(tok))
    obj.prepare(model)
    assert model.token_chars[tok.convert_tokens_to_ids(["c"])[0], 1] == ord("c") + 3  # spelled from the tokenizer
    with pytest.raises(UserError, match="elmo"):
        obj.prepare(build("lstm-tiny", vocab_size=len(tok)))
    ids = tok.encode(TRAIN, add_special_tokens=False)
    batch = obj.make_batch([ids[:40], ids[40:70]])
    assert batch["attention_mask"][1].sum() == 30 and (batch["labels"][1, 29:] == -100).all()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, m = obj.loss(model, batch)
        first = first or m
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["fwd_ppl"] < 0.7 * first["fwd_ppl"] and m["bwd_ppl"] < 0.7 * first["bwd_ppl"]
