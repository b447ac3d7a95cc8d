"""Shared toys for the attribution tests: a character tokenizer and one tiny pretraining run (cached)."""

from __future__ import annotations

import shutil
from pathlib import Path

DOCS = ["the river flows to the sea in spring", "alice lives in paris near the tower",
        "the old man sat by the fire", "bob was born in tokyo in june", "a cat sleeps on the warm mat",
        "the moon rose over the hills", "carol works in lima every day", "snow fell on the quiet town"]
# each fact appears in exactly one document (its gold proponent)
FACTS = [("bob", "bob was born in", "tokyo", 3), ("alice", "alice lives in", "paris", 1),
         ("carol", "carol works in", "lima", 6)]
STEPS, LR = 150, 3e-3

_RUN: list[Path] = []


class CharTok:
    """A stand-in tokenizer: one id per character (mod ``vocab``)."""

    def __init__(self, vocab: int = 50):
        self.vocab = vocab

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % self.vocab for c in text]

    def encode_batch(self, texts, add_special_tokens=False):
        return [self.encode(t) for t in texts]


def recipe(corpus: Path) -> dict:
    return {"model": {"preset": "gpt2-tiny", "overrides": {
                "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 64, "hidden_dropout": 0.0, "attention_dropout": 0.0}},
            "tokenizer": {"train": {"kind": "char", "vocab_size": 0}},
            "data": {"train": [str(corpus)], "seq_len": 16},
            "objective": {"name": "clm"},
            "train": {"max_steps": STEPS, "batch_size": 8, "lr": LR, "seed": 1, "save_every": STEPS // 3,
                      "keep_last": 0, "log_every": 1000, "eval_every": 0, "schedule": "constant"}}


def toy_run(tmp_factory) -> Path:
    """A char-level 2-layer GPT pretrained 150 steps on DOCS (checkpoints at 50, 100, 150); made once."""
    if _RUN and _RUN[0].is_dir():
        return _RUN[0]
    from plmkit.pipelines import run_pretraining

    root = tmp_factory.mktemp("attr_toy")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    run = root / "run"
    run_pretraining(recipe(corpus), run, progress=False, log=lambda m: None)
    _RUN[:] = [run]
    return run


def queries_file(path: Path, with_gold: bool = True) -> Path:
    import json

    with open(path, "w", encoding="utf-8") as f:
        for qid, prompt, target, gold in FACTS:
            row = {"id": qid, "prompt": prompt, "target": target}
            if with_gold:
                row["proponents"] = [gold]
            f.write(json.dumps(row) + "\n")
    return path


def copy_without_checkpoints(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints"))
    return dest
