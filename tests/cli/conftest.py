"""Shared set-up of the CLI tests: a tiny corpus (the recipe that trains on it: ``pretrain_recipes.py``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """600 short synthetic sentences: train.txt (500) and valid.txt (100)."""
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "my friend", "the king"], ["sees", "likes", "finds"], [
        "the ball", "a house", "the sea", "bread"]
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(600)]
    (d / "train.txt").write_text("\n".join(lines[:500]) + "\n")
    (d / "valid.txt").write_text("\n".join(lines[500:]) + "\n")
    return d
