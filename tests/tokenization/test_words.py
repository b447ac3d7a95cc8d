"""Sentence splitter and word-id grouping rules."""

from __future__ import annotations

from plmkit.tokenization.words import has_cjk, sentence_starts, word_ids_for


def _split(text):
    s = sentence_starts(text)
    return [text[a:b].strip() for a, b in zip(s, s[1:] + [len(text)])]


def test_sentence_starts_english_and_chinese():
    assert _split("  Hello there. How are you? Fine!  ") == ["Hello there.", "How are you?", "Fine!"]
    assert _split('He said "stop." Then left.') == ['He said "stop."', "Then left."]
    assert _split("Pi is 3.14 exactly.") == ["Pi is 3.14 exactly."]  # no whitespace after the dot
    assert _split("第一句。第二句！第三句？") == ["第一句。", "第二句！", "第三句？"]
    assert _split("line one\nline two") == ["line one", "line two"]
    assert sentence_starts("   ") == [] and sentence_starts("") == []


def test_word_ids_contiguous_and_cjk_grouping():
    text = "ab cd中国人民"
    offsets = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 6), (6, 7), (7, 8), (8, 9)]
    raw = [0, 0, 1, 2, 2, 2, 2, 2]
    assert has_cjk(text) and not has_cjk("plain")
    out = word_ids_for(text, offsets, raw)
    assert out[:4] == [0, 0, 1, 2]
    # the CJK characters are regrouped by jieba (中国/人民 or 中国人民), never one id per char
    assert out[4] == 3 and len(set(out[4:])) <= 2
    assert out == sorted(out)
    assert word_ids_for("ab", [(0, 1), (1, 2)], [None, 0]) == [None, 0]
