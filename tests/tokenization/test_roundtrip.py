"""decode(encode(text)) == text for the char and byte-level BPE tokenizers, whitespace included.

Both are trained the way ``plm tokenizer train`` trains them: from files read one line per
document, so the training text never holds a newline or a carriage return. The char tokenizer
keeps them anyway (issue 24: every "\\n" of tinyshakespeare was lost). WordPiece and Unigram
normalise whitespace by design; their tests pin what they do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.cli.main import main as plm
from plmkit.tokenization import load_tokenizer
from tests.tokenization.conftest import need

# spaces, runs of spaces, tabs, blank lines, CRLF, trailing whitespace, non-ASCII, CJK, emoji (+ modifier)
WS = ("  two  spaces\tTab\t\tx\n\nnewlines\r\nCRLF\r\n   \n\t trailing   \nünïcödé Ωμέγα 中文 😀👍🏽 end   \r\n\r\n"
      "last line without newline  ")


def _train(tmp_path: Path, kind: str, text: str, **kw):
    """Train through the CLI from a file (one line per document) and load the saved tokenizer."""
    f = tmp_path / "corpus.txt"
    f.write_bytes(text.encode("utf-8"))
    out = tmp_path / f"tok-{kind}"
    args = ["tokenizer", "train", "--kind", kind, "--out", str(out), "--min-frequency", "1", str(f)]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert plm(args) == 0
    return load_tokenizer(out)


def _round_trip(tok, text: str) -> str:
    return tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True)


@pytest.mark.parametrize("kind,kw", [("char", {}), ("char", {"vocab_size": 30}), ("bpe", {"vocab_size": 400}),
                                     ("bpe", {"vocab_size": 400, "style": "gpt2"})])
def test_whitespace_heavy_text_round_trips(tmp_path, kind, kw):
    tok = _train(tmp_path, kind, WS, **kw)
    # char with vocab_size 30: 5 specials + 4 whitespace characters always kept + the 21 most frequent
    if kw.get("vocab_size") == 30 and kind == "char":
        assert tok.vocab_size == 30
        assert all(tok.backend.token_to_id(c) is not None for c in " \n\t\r")
        kept = "".join(c for c in WS if tok.backend.token_to_id(c) is not None)
        assert _round_trip(tok, WS) == kept and len(kept) < len(WS)  # the rest is [UNK], skipped
        return
    assert _round_trip(tok, WS) == WS
    assert tok.decode(tok.encode(WS, add_special_tokens=False)) == WS
    for s in ("\n", "\r\n", "\t", "   ", "a\n\n\nb", " \n \n"):
        assert _round_trip(tok, s) == s, repr(s)


def test_byte_level_bpe_round_trips_text_it_never_saw(tmp_path):
    tok = _train(tmp_path, "bpe", "the quick brown fox\n" * 20, vocab_size=300)
    assert _round_trip(tok, WS) == WS  # every byte is a symbol: no [UNK] on any UTF-8 text
    assert _round_trip(tok, "\x00\x7f\u200b\ufeff𝔘𝔫𝔦") == "\x00\x7f\u200b\ufeff𝔘𝔫𝔦"


def test_char_tokenizer_unseen_characters_are_unk(tmp_path):
    tok = _train(tmp_path, "char", "abc\nabc\n")
    assert _round_trip(tok, "ab\n\tc\r\n") == "ab\n\tc\r\n"  # whitespace is always in the alphabet
    ids = tok.encode("a😀b", add_special_tokens=False)
    assert tok.decode(ids) == "a[UNK]b"


def test_char_and_bpe_round_trip_tinyshakespeare(shared_data, tmp_path):
    """The issue's repro: plm tokenizer train --kind char --vocab-size 3000 on tinyshakespeare."""
    path = need(shared_data / "tinyshakespeare" / "input.txt")
    text = path.read_text(encoding="utf-8")
    assert "\n" in text
    out = tmp_path / "char"
    assert plm(["tokenizer", "train", "--kind", "char", "--vocab-size", "3000", "--out", str(out), str(path)]) == 0
    tok = load_tokenizer(out)
    assert tok.vocab_size == 5 + len(set(text) | {"\t", "\r"})  # specials + the 65 characters + tab, CR
    assert _round_trip(tok, text[:20000]) == text[:20000]
    assert _round_trip(tok, text) == text
    assert len(tok.encode(text, add_special_tokens=False)) == len(text)  # one token per character
    out = tmp_path / "bpe"
    assert plm(["tokenizer", "train", "--kind", "bpe", "--style", "gpt2", "--vocab-size", "1000", "--out", str(out),
                str(path)]) == 0
    assert _round_trip(load_tokenizer(out), text) == text


def test_wordpiece_and_unigram_normalise_whitespace_by_design(tmp_path):
    """WordPiece (BERT) splits on whitespace and lower-cases: decode joins words with one space.
    Unigram (T5) applies NFKC and collapses runs of spaces; tabs and newlines are not in its
    vocabulary unless seen as pieces. Neither round-trips whitespace, and neither is meant to."""
    corpus = "the quick brown fox jumps\nover the lazy dog\n" * 20
    wp = _train(tmp_path, "wordpiece", corpus, vocab_size=100)
    assert _round_trip(wp, "The  quick\tbrown\nfox") == "the quick brown fox"
    (tmp_path / "u").mkdir()
    uni = _train(tmp_path / "u", "unigram", corpus, vocab_size=60, sentinels=0)
    assert _round_trip(uni, "the  quick   fox") == "the quick fox"
