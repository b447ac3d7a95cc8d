"""Helpers for the objective tests: WikiText-2 lines, tokenizers trained on them, packed windows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


def wikitext_lines(split: str = "valid") -> list[str]:
    p = data_dir() / "wikitext-2" / f"{split}.txt"
    if not p.is_file():
        pytest.skip(f"WikiText-2 not found at {p} (set PLMKIT_DATA)")
    return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.strip().startswith("=")]


_CACHE: dict = {}


def trained_tokenizer(kind: str = "wordpiece", vocab_size: int = 2000, **kw):
    """A tokenizer trained on WikiText-2 valid (cached per session)."""
    key = (kind, vocab_size, tuple(sorted(kw.items())))
    if key not in _CACHE:
        from plmkit.tokenization.train import train_tokenizer_from_iterator

        _CACHE[key] = train_tokenizer_from_iterator(wikitext_lines(), kind=kind, vocab_size=vocab_size, **kw)
    return _CACHE[key]



def windows(ids_list, tok, T: int = 128, n: int | None = None):
    """Pack paragraphs (specials stripped) into records of T tokens with doc_boundaries."""
    special = set(tok.all_special_ids)
    stream, bounds = [], []
    for ids in ids_list:
        bounds.append(len(stream))
        stream += [i for i in ids if i not in special]
    out = []
    for s in range(0, len(stream) - T + 1, T):
        b = [x - s for x in bounds if s < x < s + T]
        out.append({"input_ids": stream[s:s + T], "doc_boundaries": b})
        if n is not None and len(out) >= n:
            break
    return out
