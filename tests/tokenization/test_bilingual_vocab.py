"""XLM's shared vocabulary (Lample & Conneau 2019): one WordPiece vocabulary trained on English and Chinese text
covers both scripts: every Chinese character of the training text is its own token and every English word
splits into known pieces, so held-out text of both languages encodes without [UNK] except for the characters (and
punctuation marks) the training text never had, counted character by character."""

from __future__ import annotations

import unicodedata

from tests.conftest import data_dir
from tests.tokenization.conftest import need


def _is_cjk(ch: str) -> bool:
    return "CJK UNIFIED IDEOGRAPH" in unicodedata.name(ch, "")


def _single(ch: str) -> bool:
    """A character the BERT pre-tokenizer makes a word of its own: a CJK ideograph or a punctuation mark."""
    return _is_cjk(ch) or unicodedata.category(ch)[0] in "PS"


def test_shared_vocabulary_covers_english_and_chinese():
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    pairs = [ln.split("\t") for ln in need(data_dir() / "parallel" / "cmn-eng.tsv").read_text(
        encoding="utf-8").splitlines() if ln.count("\t") == 1]
    zh_mono = [ln for ln in need(data_dir() / "chinese" / "raw-text" / "zhwiki" / "wiki_00").read_text(
        encoding="utf-8").splitlines()[:300] if ln.strip()]
    train = [p[0] for p in pairs[:3000]] + [p[1] for p in pairs[:3000]] + zh_mono
    tok = train_tokenizer_from_iterator(train, kind="wordpiece", vocab_size=3000)
    seen = {ch for line in train for ch in line if _single(ch)}
    assert sum(map(_is_cjk, seen)) > 1000
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else tok.vocab
    assert all(ch in vocab for ch in seen)  # each training character is a token of its own
    held = pairs[15000:15200]
    n_unk_en = n_unk_zh = 0
    expect_unk_zh = 0
    for en, zh in held:
        ids_en = tok.encode(en, add_special_tokens=False)
        ids_zh = tok.encode(zh, add_special_tokens=False)
        n_unk_en += ids_en.count(tok.unk_token_id)
        n_unk_zh += ids_zh.count(tok.unk_token_id)
        expect_unk_zh += sum(1 for ch in zh if _single(ch) and ch not in seen)
        # a Chinese sentence has at least one token per Chinese character
        assert len(ids_zh) >= sum(1 for ch in zh if _is_cjk(ch))
    assert n_unk_en == 0
    assert n_unk_zh == expect_unk_zh  # [UNK] exactly for the characters never seen in training
    mixed = tok.encode("我喜欢 this movie", add_special_tokens=False)
    assert tok.unk_token_id not in mixed and len(mixed) >= 5
