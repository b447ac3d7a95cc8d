"""Word boundaries for whole-word masking, and a rule-based sentence splitter.

* ``word_ids_for(text, offsets, word_ids)`` turns the pre-tokenizer's word index per token
  (``tokenizers.Encoding.word_ids``) into contiguous word ids. Where the text contains CJK
  characters, tokens that cover CJK characters are regrouped by the words of the ``jieba``
  segmenter, as Chinese whole-word-masking models do (Cui et al. 2021, "Pre-Training with
  Whole Word Masking for Chinese BERT", arXiv:1906.08101, segment with LTP; we use jieba).
* ``sentence_starts(text)`` returns the character offsets where sentences start. The rule:
  a sentence ends after ``.``, ``!``, ``?`` or ``…`` (optionally followed by closing quotes or
  brackets) when whitespace follows, and after ``。！？；`` (full-width) unconditionally; line
  breaks also end a sentence. It is a heuristic (abbreviations such as "Mr." split), good
  enough for NSP/SOP segment boundaries and BART sentence permutation.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

# CJK Unified Ideographs (+ extension A, compatibility ideographs, extension B..F).
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ceaf"
CJK_RE = re.compile(f"[{_CJK}]")

_jieba = None


def _get_jieba():
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return _jieba


def has_cjk(text: str) -> bool:
    """True when ``text`` contains at least one CJK ideograph."""
    return CJK_RE.search(text) is not None


JIEBA_HMM = False
"""jieba's HMM guesses unknown words; off, segmentation is ~2x faster (jieba is pure Python)."""


def jieba_word_index(text: str) -> list[int]:
    """Index of the jieba word (dictionary words, ``HMM=JIEBA_HMM``) covering each character of ``text``."""
    import numpy as np

    jieba = _get_jieba()
    lens = [len(w) for w in jieba.cut(text, HMM=JIEBA_HMM)]
    return np.repeat(np.arange(len(lens)), lens).tolist()


def word_ids_for(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    chinese_words: bool = True,
) -> list[int | None]:
    """Contiguous word index per token (``None`` for special tokens).

    ``offsets``/``word_ids`` come from one ``tokenizers.Encoding`` of one sequence (``word_ids``
    may restart per sequence of a pair; pass one sequence at a time). A new word starts where
    the grouping key changes from the previous token, so ids are non-decreasing.
    """
    cjk_word = None
    if chinese_words and has_cjk(text):
        cjk_word = jieba_word_index(text)
    keys: list[object] = []
    for (s, e), w in zip(offsets, word_ids):
        if w is None:
            keys.append(None)
            continue
        key: object = ("t", w)
        if cjk_word is not None and e > s:
            m = CJK_RE.search(text, s, e)
            if m is not None:
                key = ("j", cjk_word[m.start()])
        keys.append(key)
    if cjk_word is not None:
        # a token with no visible text (a Metaspace "▁", a space) joins the CJK word after it
        # when both belong to the same pre-tokenizer word
        for i in range(len(keys) - 2, -1, -1):
            nxt = keys[i + 1]
            if (keys[i] is not None and isinstance(nxt, tuple) and nxt[0] == "j"
                    and word_ids[i] == word_ids[i + 1] and not text[offsets[i][0]:offsets[i][1]].strip()):
                keys[i] = nxt
    out: list[int | None] = []
    prev_key: object = None
    current = -1
    for key in keys:
        if key is None:
            out.append(None)
            prev_key = None
            continue
        if key != prev_key:
            current += 1
            prev_key = key
        out.append(current)
    return out


_SENT_END = re.compile(r"""[.!?…]['"”’)\]]*\s+|[。！？；][”’」』）)]*\s*|\n\s*""")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences start (the first non-space character always starts one)."""
    n = len(text)
    first = n - len(text.lstrip())
    if first >= n:
        return []
    ends = [m.end() for m in _SENT_END.finditer(text, first)]
    return [first] + [e for e in ends if e < n]
