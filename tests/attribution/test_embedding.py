"""Embedding similarity: the float16 memmap index equals a direct per-example computation."""

import numpy as np
import pytest
import torch

from attr_toy import CharTok
from plmkit.attribution import EmbeddingIndex, Query, TrainingExamples
from plmkit.errors import UserError
from plmkit.models import load

TEXTS = ["the cat sat on the mat", "a dog", "paris is in france", "x", "berlin is in germany ok",
         "snow in june", "france has paris", "the end of the story is near", "a", "cats"]


def _model():
    torch.manual_seed(0)
    return load("gpt2-tiny", vocab_size=50, hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64,
                max_position_embeddings=64).eval()


def _direct(model, ids, layer):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer][0].double().mean(0).numpy()


def test_index_equals_direct_computation(tmp_path):
    model, tok = _model(), CharTok()
    ex = TrainingExamples.from_texts(TEXTS, tok)
    emb = EmbeddingIndex.build(model, tok, ex, path=tmp_path / "e.f16", batch_tokens=40)
    assert emb.layer == 2  # middle of 4 layers
    assert emb.vectors.dtype == np.float16 and emb.vectors.shape == (len(TEXTS), 32)
    direct = np.stack([_direct(model, tok.encode(t), 2) for t in TEXTS])
    np.testing.assert_allclose(np.asarray(emb.vectors, dtype=np.float64), direct, rtol=2e-3, atol=2e-3)
    q = Query("q", "paris is in", "france")
    qv = _direct(model, tok.encode(q.text), 2)
    want = direct @ qv / (np.linalg.norm(direct, axis=1) * np.linalg.norm(qv))
    np.testing.assert_allclose(emb.scores(q), want, atol=2e-3)
    np.testing.assert_allclose(emb.scores(q, candidate_ids=[5, 1]), emb.scores(q)[[5, 1]], rtol=1e-6)
    assert emb.top_k(q, 1)[0][0] == 2  # the query is document 2 plus nothing


def test_memmap_is_reused_and_layer_checked(tmp_path):
    model, tok = _model(), CharTok()
    ex = TrainingExamples.from_texts(TEXTS, tok)
    a = EmbeddingIndex.build(model, tok, ex, layer=1, path=tmp_path / "e.f16")
    mtime = (tmp_path / "e.f16").stat().st_mtime_ns
    b = EmbeddingIndex.build(model, tok, ex, layer=1, path=tmp_path / "e.f16")
    assert (tmp_path / "e.f16").stat().st_mtime_ns == mtime  # not recomputed
    np.testing.assert_array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
    c = EmbeddingIndex.build(model, tok, ex, layer=3, path=tmp_path / "e.f16")  # another layer: recomputed
    assert not np.array_equal(np.asarray(c.vectors), np.asarray(a.vectors))
    d = EmbeddingIndex.build(model, tok, TrainingExamples.from_texts(TEXTS[::-1], tok), layer=3, path=tmp_path / "e.f16")
    np.testing.assert_allclose(np.asarray(d.vectors, dtype=np.float32), np.asarray(c.vectors, dtype=np.float32)[::-1],
                               atol=1e-3)  # other texts (same N): recomputed, not reused
    with pytest.raises(UserError, match="hidden states 0..4"):
        EmbeddingIndex.build(model, tok, ex, layer=5, path=tmp_path / "x.f16")


def test_every_layer_matches_the_full_forward():
    """Layers below the last stop the pass early (a hook); every layer equals output_hidden_states."""
    from plmkit.attribution.embedding import mean_pooled

    model, tok = _model(), CharTok()
    seqs = [tok.encode(t) for t in TEXTS[:4]]
    for layer in range(5):
        got = mean_pooled(model, seqs, layer).double().numpy()
        want = np.stack([_direct(model, s, layer) for s in seqs])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
