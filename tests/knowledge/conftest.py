"""Tiny models, tokenizers and a tiny LAMA folder for the knowledge tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plmkit.models import load

SUBJECTS = ["Paris", "Berlin", "Rome", "Madrid", "Tokyo", "Alice Smith", "Bob Jones", "Carol Stone"]
OBJECTS = ["France", "Germany", "Italy", "Spain", "Japan", "French", "German", "English"]
TEXT = ([f"{s} is located in {o} ." for s, o in zip(SUBJECTS[:5], OBJECTS[:5])]
        + [f"the native language of {s} is {o} ." for s, o in zip(SUBJECTS[5:], OBJECTS[5:])]
        + ["Bob Jones is a common name in the following language : English .", "Paris Parisville",
           "the capital city of the country is big and old", "Berlin is in Germanyland"]) * 10


def write_lama(root: Path) -> Path:
    """A LAMA-shaped folder: two T-REx relations, one Google-RE relation, SQuAD."""
    (root / "TREx").mkdir(parents=True)
    (root / "Google_RE").mkdir()
    (root / "Squad").mkdir()
    rels = [{"relation": "P17", "template": "[X] is located in [Y] ."},
            {"relation": "P103", "template": "The native language of [X] is [Y] ."},
            {"relation": "P27", "template": "[X] is [Y] citizen ."}]
    (root / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rels))
    p17 = [(s, o) for s, o in zip(SUBJECTS[:5], OBJECTS[:5])] + [("Parisville", "Paris"), ("Kyoto", "Germanyland")]
    p103 = [(s, o) for s, o in zip(SUBJECTS[5:], OBJECTS[5:])]
    p27 = [("Alice Smith", "France"), ("Bob Jones", "Germany"), ("Carol Stone", "Italy")]
    for rel, facts in (("P17", p17), ("P103", p103), ("P27", p27)):
        (root / "TREx" / f"{rel}.jsonl").write_text("".join(
            json.dumps({"uuid": f"{rel}-{i}", "sub_label": s, "obj_label": o, "predicate_id": rel}) + "\n"
            for i, (s, o) in enumerate(facts)))
    (root / "Google_RE" / "place_of_birth_test.jsonl").write_text("".join(
        json.dumps({"uuid": f"g{i}", "sub_label": s, "obj_label": o}) + "\n"
        for i, (s, o) in enumerate([("Alice Smith", "Paris"), ("Bob Jones", "Rome")])))
    (root / "Squad" / "test.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "sub_label": "Squad", "obj_label": o, "masked_sentences": [m]}) + "\n"
        for i, (m, o) in enumerate([("The capital of France is [MASK] .", "Paris"),
                                    ("[MASK] is the capital of Italy .", "Rome")])))
    return root


@pytest.fixture(scope="session")
def lama_dir(tmp_path_factory) -> Path:
    return write_lama(tmp_path_factory.mktemp("lama"))


def _train(kind: str, size: int):
    from plmkit.tokenization import train_tokenizer_from_iterator

    return train_tokenizer_from_iterator(TEXT, kind=kind, vocab_size=size, min_frequency=1)


@pytest.fixture(scope="session")
def wordpiece_tok():
    return _train("wordpiece", 150)


@pytest.fixture(scope="session")
def bpe_tok():
    return _train("bpe", 600)


def tiny(name: str, tok, seed: int = 0, **kw):
    torch.manual_seed(seed)
    extra = dict(pad_token_id=tok.pad_token_id, mask_token_id=tok.mask_token_id) if name.startswith("bert") else \
        dict(bos_token_id=None, eos_token_id=None)
    return load(name, vocab_size=len(tok), **extra, **kw).eval()


@pytest.fixture(scope="session")
def unigram_tok():
    """T5-style SentencePiece tokenizer with sentinels <extra_id_0..9>."""
    from plmkit.tokenization import train_tokenizer_from_iterator

    return train_tokenizer_from_iterator(TEXT, kind="unigram", vocab_size=120, sentinels=10, min_frequency=1)


@pytest.fixture(scope="session")
def t5(unigram_tok):
    torch.manual_seed(0)
    return load("t5-tiny", vocab_size=len(unigram_tok), hidden_dropout=0.0, attention_dropout=0.0).eval()


@pytest.fixture(scope="session")
def bart(bpe_tok):
    torch.manual_seed(0)
    return load("bart-tiny", vocab_size=len(bpe_tok), hidden_dropout=0.0, attention_dropout=0.0).eval()


@pytest.fixture(scope="session")
def bert(wordpiece_tok):
    return tiny("bert-tiny", wordpiece_tok)


@pytest.fixture(scope="session")
def gpt2(bpe_tok):
    return tiny("gpt2-tiny", bpe_tok)


@pytest.fixture(scope="session")
def llama(bpe_tok):
    return tiny("llama-tiny", bpe_tok)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, bert, gpt2, wordpiece_tok, bpe_tok):
    """Saved HF-format directories (model + tokenizer) for the CLI tests."""
    out = {}
    for name, model, tok in (("bert", bert, wordpiece_tok), ("gpt2", gpt2, bpe_tok)):
        d = tmp_path_factory.mktemp(name)
        model.save_pretrained(d)
        tok.save(d)
        out[name] = d
    return out


@pytest.fixture(scope="session")
def text_lines() -> list[str]:
    return list(TEXT)
