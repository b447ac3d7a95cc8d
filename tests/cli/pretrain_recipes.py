"""A tiny causal-LM pretraining recipe for the CLI tests (imported by name: pytest puts tests/cli on sys.path)."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny_clm_recipe(corpus: Path, tmp: Path, **train) -> Path:
    """A 1-layer char-level GPT-2 CLM recipe on ``corpus`` (6 steps), written to ``tmp/recipe.yaml``;
    ``train`` keys override the train section."""
    r = {
        "model": {"preset": "gpt2-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                       "intermediate_size": 64, "max_position_embeddings": 64}},
        "tokenizer": {"train": {"kind": "char", "vocab_size": 0}},
        "data": {"train": [str(corpus / "train.txt")], "valid": [str(corpus / "valid.txt")], "seq_len": 32},
        "objective": {"name": "clm"},
        "train": {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "log_every": 1, "eval_every": 3, "eval_batches": 0,
                  "save_every": 3, "tensorboard": False, "plots": False, "num_threads": 1, **train},
    }
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(r))
    return p
