"""DeBERTa (plmkit.models.deberta): disentangled attention pieces, log buckets, the enhanced mask
decoder, bad input. Parity with transformers: tests/interop/test_hf_deberta.py."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models import presets
from plmkit.models.deberta import DebertaConfig, log_bucket_position, relative_positions




def _model(name="deberta-v3-tiny", **over):
    torch.manual_seed(0)
    return presets.build(name, hidden_dropout=0.0, attention_dropout=0.0, **over).eval()


@pytest.mark.parametrize("name", ["deberta-tiny", "deberta-v3-tiny"])
def test_forward_backward(name):
    m = _model(name)
    m.train()
    ids = torch.randint(5, 1000, (2, 12))
    out = m(ids)
    assert out.logits.shape == (2, 12, 1000) and out.last_hidden_state.shape == (2, 12, 64)
    out.logits.pow(2).mean().backward()
    assert m.rel_embeddings.weight.grad.abs().sum() > 0
    assert m.emd_position.weight.grad.abs().sum() > 0


def test_log_buckets_match_transformers_and_are_exact_near_zero():
    hf = pytest.importorskip("transformers.models.deberta_v2.modeling_deberta_v2")
    rel = torch.arange(-300, 301)[None]
    ours = log_bucket_position(rel, 256, 512)
    want = hf.make_log_bucket_position(rel, 256, 512).long()
    assert torch.equal(ours, want)
    assert torch.equal(ours[0, 300 - 127:300 + 128], torch.arange(-127, 128))  # |d| < 128: exact
    assert int(ours.abs().max()) <= 255


def test_relative_positions_are_query_minus_key():
    cfg = DebertaConfig(vocab_size=10, hidden_size=8, num_heads=2, num_layers=1, intermediate_size=8)
    r = relative_positions(3, 3, cfg, "cpu")
    assert r.tolist() == [[0, -1, -2], [1, 0, -1], [2, 1, 0]]


def test_position_information_comes_from_relative_terms():
    m = _model("deberta-v3-tiny", emd_layers=0)
    ids = torch.randint(5, 1000, (1, 8))
    with torch.no_grad():
        h = m(ids).last_hidden_state
        m.rel_embeddings.weight.mul_(0.0)  # no relative terms -> no position information at all
        h0 = m(ids).last_hidden_state
        hperm = m(ids.flip(1)).last_hidden_state
    assert not torch.allclose(h, h0)
    torch.testing.assert_close(hperm.flip(1), h0, atol=1e-5, rtol=1e-5)  # permutation-equivariant now


def test_enhanced_mask_decoder_changes_mlm_logits_only():
    m = _model("deberta-tiny")
    ids = torch.randint(5, 1000, (2, 9))
    with torch.no_grad():
        out = m(ids)
        plain = m.head(out.last_hidden_state)
    assert not torch.allclose(out.logits, plain)
    m_no = _model("deberta-tiny", emd_layers=0)
    m_no.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("emd_position")})
    with torch.no_grad():
        out_no = m_no(ids)
    torch.testing.assert_close(out_no.last_hidden_state, out.last_hidden_state)
    torch.testing.assert_close(out_no.logits, plain)
    # EMD = last layer applied twice over h^(L-1) with absolute positions in the queries
    with torch.no_grad():
        full = m(ids, output_hidden_states=True)
        prev = full.hidden_states[-2]
        pos = torch.arange(9)[None]
        from plmkit.models.layers import AttentionContext

        ctx = AttentionContext(mask=None)
        ctx.rel_embeddings = m._rel_table()
        ctx.relative_pos = relative_positions(9, 9, m.config, "cpu")
        ctx.kv_states = prev
        q = prev + m.emd_position(pos)
        for _ in range(2):
            q = m.layers[-1](q, ctx, 1)
    torch.testing.assert_close(m.head(q), out.logits, atol=1e-5, rtol=1e-5)
    sel = torch.zeros(2, 9, dtype=torch.bool)
    sel[0, 3] = sel[1, 5] = True
    with torch.no_grad():
        torch.testing.assert_close(m(ids, labels_mask=sel).logits, out.logits[sel], atol=1e-5, rtol=1e-5)


def test_padding_is_masked():
    m = _model("deberta-v3-tiny")
    ids = torch.randint(5, 1000, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    am = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], 1).long()
    with torch.no_grad():
        a = m(ids).logits
        b = m(padded, am).logits[:, :6]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_input():
    m = _model()
    with pytest.raises(UserError, match="no KV cache"):
        m(torch.randint(5, 1000, (1, 4)), use_cache=True)
    with pytest.raises(UserError, match="vocab_size=1000"):
        m(torch.full((1, 4), 1000))
    with pytest.raises(ValueError, match="pos_att_type"):
        DebertaConfig(pos_att_type="c2c")
    with pytest.raises(ValueError, match="emd_layers"):
        DebertaConfig(emd_layers=-1)
