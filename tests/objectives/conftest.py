"""Fixtures for the objective tests (helpers live in objective_fixtures.py)."""

from __future__ import annotations

import pytest
import torch

from objective_fixtures import trained_tokenizer, wikitext_lines


@pytest.fixture(scope="session")
def tok():
    return trained_tokenizer("wordpiece", 2000)


@pytest.fixture(scope="session")
def bpe_tok():
    return trained_tokenizer("bpe", 2000)


@pytest.fixture(scope="session")
def wiki_ids(tok):
    """WikiText-2 valid encoded with special tokens: list of id lists (one per paragraph)."""
    return [tok.encode(line) for line in wikitext_lines()]


# Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription
# (measured 40x faster than 2 threads under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
