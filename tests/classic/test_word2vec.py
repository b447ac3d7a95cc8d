"""Tests for plmkit.classic.word2vec: Huffman codes, training on structured text, formats, analogies."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from plmkit.classic.word2vec import (WordVectors, Word2VecConfig, analogy_questions, huffman_codes,
                                     read_questions, train_word2vec, write_questions)
from plmkit.errors import UserError


def _topic_corpus(n_sent: int = 1500, seed: int = 0) -> list[list[str]]:
    """Sentences drawn from one of three disjoint 12-word topics (+ shared function words)."""
    rng = random.Random(seed)
    topics = [[f"{t}{i}" for i in range(12)] for t in "xyz"]
    out = []
    for _ in range(n_sent):
        topic = rng.choice(topics)
        out.append([rng.choice(topic) if rng.random() < 0.8 else rng.choice(["the", "of", "and"]) for _ in range(10)])
    return out


def test_huffman_codes_are_a_prefix_code_with_short_codes_for_frequent_words():
    counts = np.array([50, 30, 10, 5, 3, 1, 1])
    codes, points, lengths = huffman_codes(counts)
    words = ["".join(map(str, codes[i, :lengths[i]])) for i in range(len(counts))]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # prefix-free
    assert list(lengths) == sorted(lengths)  # more frequent -> not longer
    p = counts / counts.sum()
    entropy = -(p * np.log2(p)).sum()
    assert entropy <= (p * lengths).sum() < entropy + 1  # optimal code bound
    assert points.max() <= len(counts) - 2 and (points[:, 0] == points[0, 0]).all()  # all paths start at the root


@pytest.mark.parametrize("arch,loss", [("skipgram", "ns"), ("skipgram", "hs"), ("cbow", "ns"), ("cbow", "hs")])
def test_training_separates_topics(arch, loss):
    wv = train_word2vec(_topic_corpus(), architecture=arch, loss=loss, vector_size=16, window=3, min_count=1,
                        epochs=4, sample=0, seed=3, batch_size=128)  # small batches: a 39-word vocabulary
    losses = wv.train_stats["epoch_loss"]
    assert losses[-1] < losses[0]
    hits = 0
    for t in "xyz":
        for i in range(4):
            hits += sum(n[0] == t for n, _ in wv.most_similar(f"{t}{i}", topn=5))
    assert hits / (3 * 4 * 5) > 0.9, hits
    within = np.mean([wv.similarity("x0", f"x{i}") for i in range(1, 12)])
    across = np.mean([wv.similarity("x0", f"y{i}") for i in range(12)])
    assert within > across + 0.3


def test_subsampling_and_counts_recorded():
    corpus = _topic_corpus(300)
    a = train_word2vec(corpus, vector_size=8, min_count=1, epochs=1, sample=0)
    b = train_word2vec(corpus, vector_size=8, min_count=1, epochs=1, sample=1e-3)
    assert b.train_stats["examples_per_epoch"] < a.train_stats["examples_per_epoch"]  # 'the/of/and' dropped often
    assert a.counts[a.index["the"]] == sum(s.count("the") for s in corpus)


def test_word2vec_formats_read_by_gensim_and_us(tmp_path):
    from gensim.models import KeyedVectors

    rng = np.random.default_rng(0)
    wv = WordVectors(["the", "cat", "naïve", "</s>"], rng.normal(size=(4, 7)).astype(np.float32))
    for binary, name in ((False, "v.txt"), (True, "v.bin")):
        wv.save_word2vec_format(tmp_path / name, binary=binary)
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        assert list(kv.index_to_key) == wv.words
        ours = WordVectors.load_word2vec_format(tmp_path / name)
        assert ours.words == wv.words
        tol = 0 if binary else 1e-5
        assert np.allclose(kv.vectors, wv.vectors, atol=tol) and np.allclose(ours.vectors, wv.vectors, atol=tol)


def test_analogies_and_unknown_words(tmp_path):
    # a hand-made space where 3CosAdd is exact: word = gender + royalty
    g = {"man": [1, 0, 0], "woman": [0, 1, 0], "king": [1, 0, 1], "queen": [0, 1, 1], "apple": [0.2, 0.2, -1]}
    wv = WordVectors(list(g), np.array(list(g.values()), dtype=np.float32))
    assert wv.most_similar(["king", "woman"], ["man"], topn=1)[0][0] == "queen"
    qs = [("gender", "man", "king", "woman", "queen"), ("gender", "man", "woman", "king", "queen"),
          ("gender", "man", "king", "girl", "princess")]
    r = wv.evaluate_analogies(qs)
    assert r["evaluated"] == 2 and r["correct"] == 2 and r["skipped"] == 1 and r["accuracy"] == 1.0
    write_questions(qs, tmp_path / "q.txt")
    assert read_questions(tmp_path / "q.txt") == qs
    with pytest.raises(UserError, match="not in the vocabulary"):
        wv.most_similar("zebra")
    builtin = analogy_questions()
    assert len(builtin) > 1000 and len({q[0] for q in builtin}) == 6
    assert all(len(set(q[1:])) == 4 for q in builtin)


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="empty training text"):
        train_word2vec([[], []])
    with pytest.raises(UserError, match="empty vocabulary"):
        train_word2vec([["a", "b"]], min_count=5)
    with pytest.raises(UserError, match="did you mean"):
        Word2VecConfig(architecture="skipgrm")
    with pytest.raises(UserError, match="vector_size"):
        Word2VecConfig(vector_size=0)
    (tmp_path / "bad.txt").write_text("2 3\nthe 1 2\n")
    with pytest.raises(UserError, match="bad.txt:2"):
        WordVectors.load_word2vec_format(tmp_path / "bad.txt")
    (tmp_path / "q.txt").write_text(": s\na b c\n")
    with pytest.raises(UserError, match="q.txt:2"):
        read_questions(tmp_path / "q.txt")


def test_neighbours_on_real_text(shared_data):
    """On ~200k words of WikiText-2, frequent function words find their kind."""
    path = shared_data / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip(f"WikiText-2 not found at {path}")
    sents = [l.lower().split() for l in path.read_text().splitlines() if l.split()]
    wv = train_word2vec(sents, architecture="cbow", vector_size=50, epochs=3, min_count=5, seed=1)
    near = [w for w, _ in wv.most_similar("he", topn=5)]
    assert "she" in near or "it" in near, near
    months = {"january", "february", "march", "april", "june", "july", "august", "september", "october",
              "november", "december"}
    assert len(months & {w for w, _ in wv.most_similar("may", topn=20)} | months & {w for w, _ in wv.most_similar("june", topn=10)}) >= 3
    assert math.isfinite(wv.train_stats["epoch_loss"][-1])
