"""Bad input never gives a traceback or a wrong number (issue 25, the input half).

Every bad input below goes through the CLI (``plmkit.cli.main.main`` in-process, a few in a real subprocess)
and must be refused with exit code 2, one line on stderr naming the option / file:line / key, no traceback,
and nothing written (the ``--out`` path absent, or unchanged when it existed). The toy checkpoint and data are
the session fixtures of tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plmkit.cli.main import build_parser, main

SRC = Path(__file__).resolve().parents[2] / "src"
HINT = "pass --encoding-errors replace"


def refused(capsys, argv: list[str], *expected: str, lines: int | None = 1) -> str:
    """Run ``plm ARGV``; assert exit 2, no traceback, the error as one line containing every ``expected``
    (``lines``: how many stderr lines in all; pretrain may print progress lines before the error)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    err_lines = err.strip("\n").split("\n")
    if lines is not None:
        assert len(err_lines) == lines, err
    errors = [x for x in err_lines if ": error: " in x]
    assert len(errors) == 1 and errors[0] == err_lines[-1], err
    for e in expected:
        assert e in errors[0], (e, errors[0])
    return errors[0]


def _bad_utf8(path: Path, good: str = "good\n", bad: bytes = b"caf\xe9 bad\n") -> Path:
    path.write_bytes(good.encode() + bad)
    return path


# ------------------------------------------------------------------ 1. numeric options, one place for all


@pytest.fixture
def ckpt(workdir, cls_run):
    return workdir / "cls"


NUMERIC = [
    # evaluate / predict: --batch-size -1 used to score every example as class 0 with exit 0
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--batch-size", "-1"],
     "argument --batch-size: expected a positive integer, got -1"),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--batch-size", "0"], "expected a positive integer, got 0"),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--batch-size", "abc"], "expected an integer, got 'abc'"),
    (["evaluate", "--checkpoint", "{ckpt}", "--data", "{data}", "--max-examples", "0"],
     "argument --max-examples: expected a positive integer, got 0"),
    (["predict", "--checkpoint", "{ckpt}", "--input", "{data}/dev.tsv", "--out", "{out}", "--batch-size", "-1"],
     "argument --batch-size: expected a positive integer, got -1"),
    (["predict", "--checkpoint", "{ckpt}", "--input", "{data}/dev.tsv", "--out", "{out}", "--batch-size", "0"],
     "argument --batch-size: expected a positive integer, got 0"),
    # finetune: flags generated from FinetuneConfig carry the fields' bounds
    (["finetune", "{ft}", "--mode", "lora", "--lora-rank", "0"], "argument --lora-rank: expected a positive integer, got 0"),
    (["finetune", "{ft}", "--max-seq-len", "0"], "argument --max-seq-len: expected an integer >= 4, got 0"),
    (["finetune", "{ft}", "--epochs", "0"], "argument --epochs: expected a positive number, got 0.0"),
    (["finetune", "{ft}", "--warmup", "2"], "argument --warmup: expected a number in [0, 1), got 2.0"),
    (["finetune", "{ft}", "--lr", "nan"], "argument --lr: expected a positive number, got nan (not a finite number)"),
    (["finetune", "{ft}", "--lr", "inf"], "argument --lr: expected a positive number, got inf"),
    (["finetune", "{ft}", "--batch-size", "-3"], "argument --batch-size: expected a positive integer, got -3"),
    (["finetune", "{ft}", "--head-lr", "0"], "argument --head-lr: expected a positive number, got 0.0"),
    (["finetune", "{ft}", "--max-train-examples", "0"], "argument --max-train-examples: expected a positive integer"),
    (["finetune", "{ft}", "--exit-thresholds", "0.1,-1"], "argument --exit-thresholds: expected a number >= 0, got -1.0"),
    (["finetune", "{ft}", "--weight-decay", "-0.1"], "argument --weight-decay: expected a number >= 0, got -0.1"),
    # the other commands' hand-written options
    (["generate", "gpt2-tiny", "hi", "--max-new-tokens", "0"], "argument --max-new-tokens: expected a positive integer"),
    (["generate", "gpt2-tiny", "hi", "--top-p", "1.5"], "argument --top-p: expected a number in (0, 1], got 1.5"),
    (["generate", "gpt2-tiny", "hi", "--temperature", "0"], "argument --temperature: expected a positive number"),
    (["generate", "gpt2-tiny", "hi", "--num-beams", "0"], "argument --num-beams: expected a positive integer"),
    (["fill-mask", "{model}", "a [MASK]", "--top-k", "0"], "argument --top-k: expected a positive integer, got 0"),
    (["tokenizer", "train", "--kind", "bpe", "--vocab-size", "-5", "--out", "{out}", "{data}/train.tsv"],
     "argument --vocab-size: expected a positive integer, got -5"),
    (["prepare", "--tokenizer", "{model}", "--out", "{out}", "--shard-tokens", "0", "{data}/train.tsv"],
     "argument --shard-tokens: expected a positive integer, got 0"),
    (["ngram", "train", "--text", "{data}/train.tsv", "--out", "{out}", "--order", "0"], "argument --order: expected a positive integer"),
    (["ngram", "train", "--text", "{data}/train.tsv", "--out", "{out}", "--k", "nan"], "argument --k: expected a positive number, got nan"),
    (["ngram", "train", "--text", "{data}/train.tsv", "--out", "{out}", "--discount", "1.5"],
     "argument --discount: expected a number in (0, 1), got 1.5"),
    (["word2vec", "train", "--text", "{data}/train.tsv", "--out", "{out}", "--dim", "0"], "argument --dim: expected a positive integer"),
    (["word2vec", "train", "--text", "{data}/train.tsv", "--out", "{out}", "--alpha=-inf"], "argument --alpha: expected a positive number"),
    (["word2vec", "similar", "{data}/train.tsv", "good", "--topn", "0"], "argument --topn: expected a positive integer"),
    (["quickstart", "--out", "{out}", "--lr", "inf"], "argument --lr: expected a positive number, got inf"),
    (["quickstart", "--out", "{out}", "--seq-len", "4"], "argument --seq-len: expected an integer >= 8, got 4"),
]


@pytest.mark.parametrize("argv, message", NUMERIC, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NUMERIC])
def test_numeric_options_are_checked(workdir, ckpt, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    ft = ["--task", "classification", "--model", str(workdir / "model"), "--data", str(workdir), "--out", str(out)]
    args: list[str] = []
    for a in argv:
        if a == "{ft}":
            args += ft
        else:
            args.append(a.format(ckpt=ckpt, data=workdir, out=out, model=workdir / "model"))
    refused(capsys, args, message)
    assert not out.exists()


def test_evaluate_batch_size_refusal_in_a_real_process(workdir, ckpt):
    """The silent wrong score (accuracy of "all class 0", exit 0) is now a refusal, also from a shell."""
    res = subprocess.run([sys.executable, "-m", "plmkit", "evaluate", "--checkpoint", str(ckpt), "--data",
                          str(workdir), "--batch-size", "-1"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "--batch-size: expected a positive integer, got -1" in res.stderr


def test_library_calls_refuse_a_bad_batch_size_too(workdir, ckpt, tmp_path):
    from plmkit.errors import UserError
    from plmkit.tasks.evaluation import evaluate_checkpoints
    from plmkit.tasks.prediction import predict

    with pytest.raises(UserError, match="batch_size: expected a positive integer, got -1"):
        evaluate_checkpoints([str(ckpt)], str(workdir), batch_size=-1)
    with pytest.raises(UserError, match="batch_size: expected a positive integer, got 0"):
        predict(str(ckpt), str(workdir / "dev.tsv"), str(tmp_path / "p.jsonl"), batch_size=0)
    assert not (tmp_path / "p.jsonl").exists()


FT_RECIPES = [
    ("epochs: one", 4, "epochs: expected a number, got 'one'"),
    ("warmup: 2", 4, "warmup: expected a number in [0, 1), got 2.0"),
    ("lr: .inf", 4, "lr: expected a finite number, got inf"),
    ("max_seq_len: 0", 4, "max_seq_len: expected an integer >= 4, got 0"),
    ("lora_rank: -1", 4, "lora_rank: expected a positive integer, got -1"),
]


@pytest.mark.parametrize("line, lineno, message", FT_RECIPES, ids=[x[0] for x in FT_RECIPES])
def test_finetune_recipe_values_are_checked_at_their_line(workdir, tmp_path, capsys, line, lineno, message):
    out = tmp_path / "out"
    recipe = tmp_path / "ft.yaml"
    recipe.write_text(f"task: classification\nmodel: {workdir / 'model'}\ndata: {workdir}\n{line}\nout: {out}\n")
    refused(capsys, ["finetune", "--recipe", recipe], f"{recipe}:{lineno}: {message}")
    assert not out.exists()


# ------------------------------------------------------------------ pretrain recipes and overrides


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A tiny pretraining recipe (char tokenizer, 1-layer GPT) and its corpus."""
    (tmp_path / "train.txt").write_text("".join(f"the cat sees the {w}.\n" for w in ["sea", "ball", "bread"] * 40))
    r = {"model": {"preset": "gpt2-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                         "intermediate_size": 64, "max_position_embeddings": 64}},
         "tokenizer": {"train": {"kind": "char", "vocab_size": 0}},
         "data": {"train": ["train.txt"], "seq_len": 32},
         "objective": {"name": "clm"},
         "train": {"max_steps": 2, "batch_size": 4, "lr": 1.0e-3, "eval_every": 0, "save_every": 0,
                   "tensorboard": False, "plots": False, "num_threads": 1}}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(r, sort_keys=False))
    return p


def _line_of(path: Path, text: str) -> int:
    return next(i for i, x in enumerate(path.read_text().splitlines(), 1) if text in x)


PRETRAIN_OVERRIDES = [
    ("train.lr=.inf", "command line: train.lr=.inf: expected a finite number, got inf"),
    ("train.lr=.nan", "command line: train.lr=.nan: expected a finite number, got nan"),
    ("train.lr=-1", "command line: train.lr=-1: expected a positive number, got -1.0"),
    ("train.batch_size=abc", "command line: train.batch_size=abc: expected an integer, got 'abc'"),
    ("train.warmup_steps=-1", "command line: train.warmup_steps=-1: expected an integer >= 0, got -1"),
    ("train.clip_grad_norm=.inf", "command line: train.clip_grad_norm=.inf: expected a finite number"),
    ("data.valid_fraction=1.5", "command line: data.valid_fraction=1.5: expected a number in [0, 1), got 1.5"),
    ("data.seq_len=0", "command line: data.seq_len=0: expected an integer >= 2, got 0"),
    ("model.overrides.hidden_dropout=.nan", "command line: model.overrides.hidden_dropout=.nan: expected a finite number"),
    ("objective.0.weight=.inf", "command line: objective.0.weight=.inf: expected a finite number"),
]


@pytest.mark.parametrize("override, message", PRETRAIN_OVERRIDES, ids=[o for o, _ in PRETRAIN_OVERRIDES])
def test_pretrain_overrides_are_reported_at_the_command_line(tiny, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    refused(capsys, ["pretrain", tiny, "--out", out, override], message)
    assert not out.exists()


def test_pretrain_recipe_values_are_reported_at_their_line(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    tiny.write_text(tiny.read_text().replace("lr: 0.001", "lr: .inf"))
    refused(capsys, ["pretrain", tiny, "--out", out], f"{tiny}:{_line_of(tiny, 'lr: .inf')}: train.lr: expected a finite number")
    tiny.write_text(tiny.read_text().replace("lr: .inf", "lr: 0.001").replace("max_steps: 2", "max_steps: 0"))
    refused(capsys, ["pretrain", tiny, "--out", out],
            f"{tiny}:{_line_of(tiny, 'max_steps: 0')}: train.max_steps: expected a positive integer, got 0")
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ("objective.0.foo=1", "clm: unknown option 'foo'"),   # found once the (in-memory) tokenizer exists
    ("data.seq_len=200", "data.seq_len 200 (+ special tokens) exceeds the model's max_position_embeddings 64"),
])
def test_a_recipe_rejected_at_validation_leaves_nothing_behind(tiny, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    refused(capsys, ["pretrain", tiny, "--out", out, override], message, lines=None)
    assert not out.exists()
    (out).mkdir()  # an empty --out stays empty
    refused(capsys, ["pretrain", tiny, "--out", out, override], message, lines=None)
    assert list(out.iterdir()) == []


def test_pretrain_data_failure_of_a_fresh_run_leaves_nothing_behind(tiny, tmp_path, capsys):
    """Non-UTF-8 training data read only when the token store is built (tokenizer.path given): the recipe.yaml
    and tokenizer/ written by then are removed, so the corrected recipe is not refused as 'already a run'."""
    import plmkit

    tok_dir = tmp_path / "tok"
    plmkit.train_tokenizer([tmp_path / "train.txt"], kind="char", vocab_size=0).save(tok_dir)
    _bad_utf8(tmp_path / "train.txt", "the cat sees the sea.\n" * 20)
    out = tmp_path / "run"
    refused(capsys, ["pretrain", tiny, "--out", out, f"tokenizer.path={tok_dir}", "tokenizer.train=null"],
            f"train.txt:21: invalid UTF-8 at byte {22 * 20 + 3}; fix the file or {HINT}", lines=None)
    assert not out.exists()


# ------------------------------------------------------------------ 2. non-UTF-8 input: one reader, a hint that works


def test_predict_non_utf8_text_names_file_line_and_offset(ckpt, tmp_path, capsys):
    inp = _bad_utf8(tmp_path / "x.txt")
    out = tmp_path / "p.jsonl"
    refused(capsys, ["predict", "--checkpoint", ckpt, "--input", inp, "--out", out],
            f"{inp}:2: invalid UTF-8 at byte 8; fix the file or {HINT}")
    assert not out.exists()
    # the hinted option exists and works: the bad byte reads as U+FFFD
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--out", str(out),
                 "--encoding-errors", "replace"]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_predict_non_utf8_in_a_real_process(ckpt, tmp_path):
    inp = _bad_utf8(tmp_path / "x.txt")
    res = subprocess.run([sys.executable, "-m", "plmkit", "predict", "--checkpoint", str(ckpt), "--input", str(inp),
                          "--out", str(tmp_path / "p.jsonl")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert f"x.txt:2: invalid UTF-8 at byte 8; fix the file or {HINT}" in res.stderr


def _task_dir(workdir: Path, tmp: Path, bad_file: str) -> Path:
    d = tmp / "data"
    d.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (d / name).write_bytes((workdir / name).read_bytes())
    raw = (d / bad_file).read_bytes()
    lines = raw.split(b"\n")
    lines[5] = lines[5].replace(b"the", b"th\xe9", 1) if b"the" in lines[5] else lines[5] + b"\xe9"
    (d / bad_file).write_bytes(b"\n".join(lines))
    return d


def test_finetune_and_evaluate_non_utf8_tsv(workdir, ckpt, tmp_path, capsys):
    d = _task_dir(workdir, tmp_path, "train.tsv")
    out = tmp_path / "out"
    refused(capsys, ["finetune", "--task", "classification", "--model", workdir / "model", "--data", d, "--out", out],
            f"{d / 'train.tsv'}:6: invalid UTF-8 at byte", HINT)
    assert not out.exists()
    (d / "dev.tsv").write_bytes((d / "dev.tsv").read_bytes() + b"bad \xff row\t1\n")
    n = len((workdir / "dev.tsv").read_text().splitlines())
    refused(capsys, ["evaluate", "--checkpoint", ckpt, "--data", d], f"{d / 'dev.tsv'}:{n + 1}: invalid UTF-8", HINT)


def test_finetune_non_utf8_conll_and_recipe(workdir, tmp_path, capsys):
    d = tmp_path / "ner"
    d.mkdir()
    (d / "train.txt").write_bytes((workdir / "ner" / "train.txt").read_bytes()[:300] + b"\nZo\xeb B-PER\n")
    (d / "dev.txt").write_bytes((workdir / "ner" / "dev.txt").read_bytes())
    out = tmp_path / "out"
    line = (workdir / "ner" / "train.txt").read_bytes()[:300].count(b"\n") + 2
    refused(capsys, ["finetune", "--task", "ner", "--model", workdir / "model", "--data", d, "--out", out],
            f"train.txt:{line}: invalid UTF-8", HINT)
    recipe = tmp_path / "ft.yaml"
    recipe.write_bytes(b"task: ner  # caf\xe9\nmodel: m\n")
    refused(capsys, ["finetune", "--recipe", recipe], f"{recipe}:1: invalid UTF-8 at byte 16", HINT)
    assert not out.exists()


def test_ngram_and_word2vec_non_utf8(tmp_path, capsys):
    text = _bad_utf8(tmp_path / "latin1.txt", "a b c\n" * 3)
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out"
    refused(capsys, ["ngram", "train", "--text", text, "--out", out], f"{text}:4: invalid UTF-8 at byte 21", HINT)
    refused(capsys, ["ngram", "train", "--text", binary, "--out", out], "looks like a binary file (NUL byte at offset 0)")
    refused(capsys, ["word2vec", "train", "--text", text, "--out", out / "v.txt"], f"{text}:4: invalid UTF-8", HINT)
    assert not out.exists()
    good = tmp_path / "good.txt"
    good.write_text("a b c\na b d\n" * 5)
    assert main(["ngram", "train", "--text", str(good), "--out", str(out), "--order", "2", "--add-unk"]) == 0
    refused(capsys, ["ngram", "eval", out, "--text", text], f"{text}:4: invalid UTF-8", HINT)
    # the hinted option works
    assert main(["ngram", "eval", str(out), "--text", str(text), "--encoding-errors", "replace"]) == 0


def test_pretrain_and_tokenizer_non_utf8_hint_works(tiny, tmp_path, capsys):
    """pretrain / quickstart used to hint at ``--errors replace``, which they did not accept."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(tiny.read_bytes().replace(b"model:", b"# caf\xe9 au lait\nmodel:", 1))
    out = tmp_path / "run"
    refused(capsys, ["pretrain", latin, "--out", out], f"{latin}:1: invalid UTF-8 at byte 5", HINT)
    assert not out.exists()
    corpus = _bad_utf8(tmp_path / "corpus.txt", "the cat sees the sea.\n" * 30)
    refused(capsys, ["tokenizer", "train", "--kind", "char", "--out", out, corpus], f"{corpus}:31: invalid UTF-8", HINT)
    refused(capsys, ["quickstart", "--corpus", corpus, "--out", out, "--mlm-steps", "1", "--clm-steps", "1"],
            f"{corpus}:31: invalid UTF-8", HINT, lines=None)
    assert not out.exists()
    # --encoding-errors replace reads the recipe and the data; the run trains
    tiny_bad = tmp_path / "tiny_bad.yaml"
    tiny_bad.write_bytes(latin.read_bytes().replace(b"- train.txt", b"- corpus.txt"))
    assert main(["pretrain", str(tiny_bad), "--out", str(out), "--encoding-errors", "replace", "--no-progress"]) == 0
    assert yaml.safe_load((out / "recipe.yaml").read_text())["data"]["encoding_errors"] == "replace"


@pytest.mark.parametrize("command", ["finetune", "evaluate", "predict", "pretrain", "quickstart", "tokenizer train",
                                     "prepare", "ngram train", "ngram eval", "word2vec train", "word2vec analogy",
                                     "distill"])
def test_every_command_that_reads_text_takes_the_hinted_option(command):
    """The hint ``pass --encoding-errors replace`` names an option that each of these commands accepts."""
    parser = build_parser(command.split()[0])
    sub = parser._subparsers._group_actions[0].choices[command.split()[0]]
    for word in command.split()[1:]:
        sub = sub._subparsers._group_actions[0].choices[word]
    options = {s for a in sub._actions for s in a.option_strings}
    assert "--encoding-errors" in options


# ------------------------------------------------------------------ 3. an existing path of the wrong kind as --out


def test_existing_paths_as_out_are_refused_and_kept(workdir, ckpt, tmp_path, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("keep me\n")
    a_dir = tmp_path / "taken_dir"
    a_dir.mkdir()
    (a_dir / "x").write_text("keep me too\n")
    refused(capsys, ["finetune", "--task", "classification", "--model", workdir / "model", "--data", workdir,
                     "--out", a_file], f"--out {a_file}: exists and is not a directory")
    refused(capsys, ["tokenizer", "train", "--kind", "char", "--out", a_file, workdir / "train.tsv"],
            f"--out {a_file}: exists and is not a directory")
    refused(capsys, ["predict", "--checkpoint", ckpt, "--input", workdir / "dev.tsv", "--out", a_dir],
            f"--out {a_dir}: is a directory")
    refused(capsys, ["evaluate", "--checkpoint", ckpt, "--data", workdir, "--out", a_dir], f"--out {a_dir}: is a directory")
    refused(capsys, ["ngram", "train", "--text", workdir / "train.tsv", "--out", a_file],
            f"--out {a_file}: exists and is not a directory")
    refused(capsys, ["word2vec", "train", "--text", workdir / "train.tsv", "--out", a_dir], f"--out {a_dir}: is a directory")
    assert a_file.read_text() == "keep me\n" and [p.name for p in a_dir.iterdir()] == ["x"]
    assert (a_dir / "x").read_text() == "keep me too\n"


# ------------------------------------------------------------------ 6. labels outside a named task's label set


def test_a_label_outside_a_named_tasks_labels(workdir, tmp_path, capsys):
    d = tmp_path / "sst2"
    d.mkdir()
    rows = (workdir / "train.tsv").read_text().splitlines()
    rows[7] = rows[7].rsplit("\t", 1)[0] + "\tpositive"
    (d / "train.tsv").write_text("\n".join(rows) + "\n")
    (d / "dev.tsv").write_bytes((workdir / "dev.tsv").read_bytes())
    out = tmp_path / "out"
    refused(capsys, ["finetune", "--task", "sst2", "--model", workdir / "model", "--data", d, "--out", out],
            f"{d / 'train.tsv'}:8: label 'positive' is not one of the sst2 labels (0, 1)")
    assert not out.exists()
    # --skip-bad counts and skips the row; the task keeps its two classes
    capsys.readouterr()
    assert main(["finetune", "--task", "sst2", "--model", str(workdir / "model"), "--data", str(d), "--out", str(out),
                 "--skip-bad", "--epochs", "1", "--max-seq-len", "16", "--batch-size", "32"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["skipped_bad_rows"] == 1 and "label 'positive'" in res["skipped"][0]
    assert json.loads((out / "task.json").read_text())["labels"] == ["0", "1"]


def test_a_tag_outside_conll2003s_tags(workdir, tmp_path, capsys):
    d = tmp_path / "conll"
    d.mkdir()
    (d / "train.txt").write_text("EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-FOO\nBlackburn I-FOO\n")
    (d / "valid.txt").write_text("EU B-ORG\n")
    out = tmp_path / "out"
    refused(capsys, ["finetune", "--task", "conll2003", "--model", workdir / "model", "--data", d, "--out", out],
            f"{d / 'train.txt'}:5: tag 'B-FOO' is not one of the conll2003 tags")
    assert not out.exists()


# ------------------------------------------------------------------ 7. a pathological single 1 MB line


def test_tokenizer_train_on_a_one_megabyte_line_finishes_fast(tmp_path, capsys):
    import random

    rng = random.Random(0)
    line = tmp_path / "one_line_1MB.txt"
    # half a long run without whitespace (quadratic inside the BPE trainer), half words
    line.write_text("".join(rng.choice("abcdefghij") for _ in range(500_000))
                    + " ".join("w%d" % rng.randrange(1000) for _ in range(125_000))[:500_000] + "\n")
    out = tmp_path / "T"
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out", str(out), str(line)]) == 0
    assert time.perf_counter() - t0 < 30  # minutes before the guard
    err = capsys.readouterr().err.strip().splitlines()
    assert any("cut 1 text(s) longer than 10,000 characters" in x for x in err), err
    assert (out / "tokenizer.json").is_file()


def test_the_cut_keeps_every_character_and_the_words(tmp_path):
    from plmkit.tokenization.train import LINE_CAP, WORD_CAP, _pieces

    text = " ".join(["word"] * 5000) + " " + "x" * (3 * WORD_CAP + 7) + "  tail "
    pieces = _pieces(text)
    assert "".join(pieces) == text
    assert all(len(p) <= LINE_CAP for p in pieces)
    assert all(len(w) <= WORD_CAP for p in pieces for w in p.split())
    assert sum(p.split().count("word") for p in pieces) == 5000


@pytest.mark.parametrize("name, content, line", [
    ("x.jsonl", b'{"sentence": "good"}\n{"sentence": "caf\xe9"}\n', 2),
    ("x.csv", b"sentence\ngood\n\"caf\xe9\"\n", 3),
    ("x.tsv", b"sentence\ngood\nfine\ncaf\xe9\n", 4),
])
def test_predict_non_utf8_table_inputs(ckpt, tmp_path, capsys, name, content, line):
    inp = tmp_path / name
    inp.write_bytes(content)
    out = tmp_path / "p.jsonl"
    refused(capsys, ["predict", "--checkpoint", ckpt, "--input", inp, "--out", out], f"{inp}:{line}: invalid UTF-8", HINT)
    assert not out.exists()


def test_every_task_reader_uses_the_one_reader(tmp_path):
    """SQuAD JSON, multiple-choice JSONL and the MRPC id list: the same one-line error (and replace works)."""
    from plmkit.errors import UserError
    from plmkit.tasks import readers

    squad = tmp_path / "s.json"
    squad.write_bytes(b'{"data": [\n{"title": "caf\xe9", "paragraphs": []}]}')
    mc = tmp_path / "mc.jsonl"
    mc.write_bytes(b'{"context": "c", "choices": ["a", "b"], "label": 0}\n{"context": "\xff", "choices": ["a", "b"], "label": 1}\n')
    for path, read, line in ((squad, readers.read_squad, 2), (mc, readers.read_choices, 2)):
        with pytest.raises(UserError, match=rf"{path.name}:{line}: invalid UTF-8 at byte \d+; fix the file or {HINT}"):
            read(path)
    assert len(readers.read_choices(mc, bad=readers.BadRows(encoding_errors="replace"))) == 2


def test_non_utf8_stdin_and_machine_files(workdir, tmp_path, capsys):
    """stdin (generate / fill-mask / tokenizer encode), ARPA files and analogy question files."""
    res = subprocess.run([sys.executable, "-m", "plmkit", "tokenizer", "encode", str(workdir / "model")],
                         input=b"good\ncaf\xe9\n", capture_output=True, env={**os.environ, "PYTHONPATH": str(SRC)},
                         timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "<stdin>:2: invalid UTF-8 at byte 8; the input must be UTF-8 text" in err
    arpa = tmp_path / "lm.arpa"
    arpa.write_bytes(b"\\data\\\nngram 1=2\n\n\\1-grams:\n-0.3\t<s>\n-0.3\tcaf\xe9\n\n\\end\\\n")
    refused(capsys, ["ngram", "eval", arpa, "--text", workdir / "train.tsv"], f"{arpa}:6: invalid UTF-8", HINT)
    vectors = tmp_path / "v.txt"
    vectors.write_text("3 2\na 1 0\nb 0 1\nc 1 1\n")
    questions = tmp_path / "q.txt"
    questions.write_bytes(b": s\na b c \xe9\n")
    refused(capsys, ["word2vec", "analogy", vectors, "--questions", questions], f"{questions}:2: invalid UTF-8", HINT)


def test_resume_of_a_run_made_before_encoding_errors_existed(tiny, tmp_path, capsys):
    """Its recipe.yaml lacks data.encoding_errors: it read strictly, so it resumes; another setting would change
    the token stores, so that is refused as a different data section, in one line."""
    out = tmp_path / "run"
    assert main(["pretrain", str(tiny), "--out", str(out), "--no-progress"]) == 0
    rec = yaml.safe_load((out / "recipe.yaml").read_text())
    del rec["data"]["encoding_errors"]
    (out / "recipe.yaml").write_text(yaml.safe_dump(rec))
    refused(capsys, ["pretrain", tiny, "--out", out, "--resume", "--encoding-errors", "replace"],
            "holds a run with a different data section")
    assert main(["pretrain", str(tiny), "--out", str(out), "--resume", "--no-progress"]) == 0
