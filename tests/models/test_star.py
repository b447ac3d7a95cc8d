"""Star-Transformer attention (models/star.py) against a dense masked attention written from the
definition, padding invariance, and training through the ordinary Transformer."""

from __future__ import annotations

import math

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.models.config import ConfigError
from plmkit.models.layers import AttentionContext
from plmkit.models.star import StarAttention

torch.set_num_threads(1)


def _star_model(**kw):
    torch.manual_seed(0)
    return plmkit.load("bert-tiny", vocab_size=100, extra={"attention": "star"}, **kw).eval()


def _context_counts(L: int, T: int) -> torch.Tensor:
    """(T, 2T) multiplicity of key j in the context of query i; keys 0..T-1 are h, T..2T-1 are e.

    Written from the paper's definition: relay 0 sees [h_0; h_1..h_{L-1}]; satellite i (1 <= i < L)
    sees [h_{i-1}, h_i, h_{i+1}, e_i, h_0] with the satellites 1..L-1 on a ring."""
    C = torch.zeros(T, 2 * T)
    for j in range(L):
        C[0, j] += 1
    n = L - 1  # number of satellites
    for i in range(1, L):
        prev = 1 + (i - 2) % n
        nxt = 1 + i % n
        for j in (prev, i, nxt, 0):
            C[i, j] += 1
        C[i, T + i] += 1
    return C


def _dense_reference(attn: StarAttention, x, e, lengths):
    B, T, H = x.shape
    Nh, D = attn.num_heads, attn.head_dim
    W, bias = attn.qkv.weight, attn.qkv.bias
    out = torch.zeros(B, T, H)
    for b in range(B):
        qkv_h = x[b] @ W.T + bias
        qkv_e = e[b] @ W.T + bias
        q = qkv_h[:, :H]
        keys = torch.cat([qkv_h[:, H:2 * H], qkv_e[:, H:2 * H]])  # (2T, H)
        vals = torch.cat([qkv_h[:, 2 * H:], qkv_e[:, 2 * H:]])
        C = _context_counts(int(lengths[b]), T)
        bias_mask = torch.where(C > 0, C.clamp(min=1e-30).log(), torch.tensor(float("-inf")))  # dense (T, 2T)
        heads = []
        for h in range(Nh):
            sl = slice(h * D, (h + 1) * D)
            s = q[:, sl] @ keys[:, sl].T / math.sqrt(D) + bias_mask
            s = torch.where(torch.isinf(s).all(-1, keepdim=True), torch.zeros_like(s), s)  # padded rows
            heads.append(torch.softmax(s, -1) @ vals[:, sl])
        out[b] = torch.cat(heads, -1) @ attn.o.weight.T + attn.o.bias
    return out


@pytest.mark.parametrize("lengths", [[9, 9], [9, 5], [3, 2], [4, 1]])
def test_star_attention_equals_dense_masked_definition(lengths):
    model = _star_model()
    attn = model.layers[0].attn
    assert isinstance(attn, StarAttention)
    B, T, H = len(lengths), max(lengths), model.config.hidden_size
    x, e = torch.randn(B, T, H), torch.randn(B, T, H)
    keep = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    mask = None if all(L == T for L in lengths) else keep[:, None, None, :]
    got = attn(x, AttentionContext(mask=mask, inputs=e), 0)
    want = _dense_reference(attn, x, e, lengths)
    for b, L in enumerate(lengths):
        torch.testing.assert_close(got[b, :L], want[b, :L], atol=1e-5, rtol=1e-5)


def test_star_model_padding_invariant_and_differs_from_full():
    model = _star_model()
    a, b = torch.randint(5, 100, (1, 12)), torch.randint(5, 100, (1, 7))
    ids = torch.zeros(2, 12, dtype=torch.long)
    ids[0], ids[1, :7] = a[0], b[0]
    am = (torch.arange(12)[None] < torch.tensor([[12], [7]])).long()
    with torch.no_grad():
        both = model(ids, attention_mask=am).last_hidden_state
        alone = model(b).last_hidden_state
        torch.testing.assert_close(both[1, :7], alone[0], atol=1e-5, rtol=1e-5)
        full = plmkit.load("bert-tiny", vocab_size=100).eval()
        full.load_state_dict(model.state_dict())  # same parameter names and shapes
        assert not torch.allclose(full(a).last_hidden_state, model(a).last_hidden_state, atol=1e-3)
    # locality: in a 1-layer star model, changing token 6 leaves satellites 1..3 unchanged
    one = _star_model(num_layers=1)
    x1 = torch.randint(5, 100, (1, 12))
    x2 = x1.clone()
    x2[0, 6] = (x2[0, 6] + 1) % 95 + 5
    with torch.no_grad():
        h1, h2 = one(x1).last_hidden_state, one(x2).last_hidden_state
    assert torch.allclose(h1[0, 1:4], h2[0, 1:4], atol=1e-6)
    assert not torch.allclose(h1[0, 0], h2[0, 0], atol=1e-4)  # the relay sees everything


def test_star_trains_and_rejects_what_it_cannot_do():
    model = _star_model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.randint(5, 100, (4, 16))
    first = None
    for _ in range(20):
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 100), ids.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss) < first - 1.0
    with pytest.raises(ConfigError, match="star"):
        plmkit.load("gpt2-tiny", vocab_size=100, extra={"attention": "star"})
    with pytest.raises(UserError, match="right padding"):
        model(ids[:2, :5], attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]))
    with pytest.raises(UserError, match="output_attentions"):
        model(ids, output_attentions=True)


def test_star_model_round_trips_through_save_pretrained(tmp_path):
    model = _star_model()
    model.add_head("extra", torch.nn.Linear(model.config.hidden_size, 2))
    with pytest.warns(UserWarning, match="not written"):
        model.save_pretrained(tmp_path / "m")
    assert "extra" in model.heads  # the caller's model keeps its heads
    back = plmkit.load(tmp_path / "m")
    assert isinstance(back.layers[0].attn, StarAttention)  # not silently loaded as full attention
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits)
