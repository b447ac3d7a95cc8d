"""BM25: scores equal bm25s's own on a toy corpus and one value computed by hand; the IDF pitfall;
save / load; top-k order."""

import math

import numpy as np
import pytest

from plmkit.attribution import BM25Index, Query, top_k
from plmkit.attribution.bm25 import tokenize

CORPUS = ["The cat sat on the mat.", "The dog chased the cat!", "Paris is the capital of France.",
          "Dogs and cats, cats and dogs.", "The the the."]


def test_tokenisation_is_lowercased_word_runs():
    assert tokenize("Paris, FRANCE's 2nd-city: Lyon!") == ["paris", "france", "s", "2nd", "city", "lyon"]


def test_scores_equal_the_library_and_a_hand_computed_value():
    import bm25s

    idx = BM25Index.build(CORPUS)
    ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ref.index([tokenize(t) for t in CORPUS], show_progress=False)
    for q in ["cat", "the cat", "capital of france", "dogs cats", "the"]:
        want = ref.get_scores(tokenize(q))
        np.testing.assert_allclose(idx.scores(q), want, rtol=1e-6)
    # by hand: "cat" in doc 0 ("the cat sat on the mat", 6 tokens). N = 5, df(cat) = 2 (docs 0, 1;
    # doc 3 has "cats"); avgdl = (6 + 5 + 6 + 6 + 3) / 5 = 5.2
    idf = math.log(1 + (5 - 2 + 0.5) / (2 + 0.5))
    tf, k1, b = 1, 1.5, 0.75
    hand = idf * tf / (tf + k1 * (1 - b + b * 6 / 5.2))
    assert idx.scores("cat")[0] == pytest.approx(hand, rel=1e-6)
    assert idx.scores("cat")[2] == 0.0


def test_a_word_in_most_documents_still_counts():
    """Robertson's IDF is <= 0 for a word in more than half the documents (rank-bm25 floors it, bm25s's
    robertson clamps it to 0); the lucene IDF used here stays positive, so 'the' still ranks docs."""
    idx = BM25Index.build(CORPUS)
    s = idx.scores("the")  # "the" is in 4 of 5 documents
    assert (s[[0, 1, 2, 4]] > 0).all() and s[3] == 0
    assert int(np.argmax(s)) == 4  # three "the" in a short document


def test_unknown_words_score_zero_and_queries_use_prompt_and_target():
    idx = BM25Index.build(CORPUS)
    assert not idx.scores("zebra quux").any()
    q = Query("q", "The capital of France is", "Paris")
    assert idx.top_k(q, 1)[0][0] == 2
    np.testing.assert_allclose(idx.scores(q), idx.scores("The capital of France is Paris"))


def test_save_and_load(tmp_path):
    idx = BM25Index.build(CORPUS, k1=1.2, b=0.5)
    idx.save(tmp_path / "bm25")
    back = BM25Index.load(tmp_path / "bm25")
    assert len(back) == len(CORPUS) and (back.k1, back.b) == (1.2, 0.5)
    for q in ["cat", "paris france", "dogs"]:
        np.testing.assert_array_equal(back.scores(q), idx.scores(q))
    np.testing.assert_array_equal(back.scores("cat", candidate_ids=[3, 0]), idx.scores("cat")[[3, 0]])


def test_top_k_order_and_ties():
    s = np.array([0.5, 2.0, 2.0, -1.0, 0.5])
    assert top_k(s, 3) == [(1, 2.0), (2, 2.0), (0, 0.5)]
    assert top_k(s, 10) == [(1, 2.0), (2, 2.0), (0, 0.5), (4, 0.5), (3, -1.0)]
    assert top_k(s, 2, ids=[10, 11, 12, 13, 14]) == [(11, 2.0), (12, 2.0)]
    assert top_k(s, 0) == []
