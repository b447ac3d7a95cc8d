"""Encoder-decoder models (plmkit.models.seq2seq): presets, masks, cache == no cache, generation,
bad input. Parity with transformers lives in tests/interop/test_hf_seq2seq.py."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models import presets
from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig, relative_position_bucket



TINY = ["t5-tiny", "t5-v1_1-tiny", "bart-tiny", "mass-tiny", "switch-tiny"]


def _model(name: str, **over) -> EncoderDecoder:
    torch.manual_seed(0)
    m = presets.build(name, hidden_dropout=0.0, attention_dropout=0.0, **over)
    return m.eval()


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_shapes(name):
    m = _model(name)
    m.train()
    ids = torch.randint(5, 1000, (2, 9))
    dec = torch.randint(5, 1000, (2, 4))
    out = m(ids, decoder_input_ids=dec)
    assert out.logits.shape == (2, 4, 1000)
    assert out.encoder_last_hidden_state.shape == (2, 9, 64)
    out.logits.float().pow(2).mean().backward()
    assert m.shared.weight.grad is not None and m.shared.weight.grad.abs().sum() > 0
    if name == "switch-tiny":
        assert out.aux_loss is not None and out.z_loss is not None
    else:
        assert out.aux_loss is None


@pytest.mark.parametrize("name", TINY)
def test_cache_equals_no_cache(name):
    over = {"expert_capacity": 64} if name == "switch-tiny" else {}  # capacity groups differ per call otherwise
    m = _model(name, **over)
    ids = torch.randint(5, 1000, (2, 7))
    am = torch.ones(2, 7, dtype=torch.long)
    am[1, 4:] = 0
    dec = torch.randint(5, 1000, (2, 6))
    with torch.no_grad():
        full = m(ids, am, dec).logits
        first = m(ids, am, dec[:, :2], use_cache=True)
        enc = first.encoder_last_hidden_state
        parts = [first.logits]
        cache = first.past_key_values
        for t in range(2, 6):
            parts.append(m(None, am, dec[:, t:t + 1], encoder_outputs=enc, past_key_values=cache).logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_decoder_is_causal_and_source_padding_is_ignored():
    m = _model("t5-tiny")
    ids = torch.randint(5, 1000, (1, 6))
    dec = torch.randint(5, 1000, (1, 5))
    dec2 = dec.clone()
    dec2[0, 3:] = 7
    with torch.no_grad():
        a, b = m(ids, decoder_input_ids=dec).logits, m(ids, decoder_input_ids=dec2).logits
    torch.testing.assert_close(a[:, :3], b[:, :3])  # earlier positions never see later tokens
    assert not torch.allclose(a[:, 3:], b[:, 3:])
    # padding the source (masked) leaves the decoder output unchanged
    padded = torch.cat([ids, torch.full((1, 3), 0)], 1)
    am = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], 1).long()
    with torch.no_grad():
        c = m(padded, am, dec).logits
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["t5-tiny", "bart-tiny"])
def test_generate_cache_matches_recompute(name):
    m = _model(name)
    ids = torch.randint(5, 1000, (3, 6))
    am = torch.ones(3, 6, dtype=torch.long)
    am[2, :2] = 0
    for kw in (dict(), dict(num_beams=3), dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.8)):
        g1 = torch.Generator().manual_seed(1)
        g2 = torch.Generator().manual_seed(1)
        extra1 = {"generator": g1} if kw.get("do_sample") else {}
        extra2 = {"generator": g2} if kw.get("do_sample") else {}
        a = m.generate(ids, am, max_new_tokens=8, eos_token_id=-1 if name == "t5-tiny" else None, **kw, **extra1)
        b = m.generate(ids, am, max_new_tokens=8, use_cache=False,
                       eos_token_id=-1 if name == "t5-tiny" else None, **kw, **extra2)
        assert torch.equal(a, b), kw
        assert a[:, 0].eq(m.config.decoder_start_token_id).all()
    # greedy = argmax of the teacher-forced logits of its own output
    g = m.generate(ids, am, max_new_tokens=6, eos_token_id=[])
    with torch.no_grad():
        logits = m(ids, am, g[:, :-1]).logits
    assert torch.equal(logits.argmax(-1), g[:, 1:])


def test_bart_forced_eos_and_eos_padding():
    m = _model("bart-tiny")
    ids = torch.randint(5, 1000, (2, 5))
    g = m.generate(ids, max_new_tokens=5)
    assert g.shape[1] <= 6 and (g[:, -1] == 2).all() | (g == 2).any(1).all()


def test_relative_position_bucket_known_values():
    rel = torch.tensor([-200, -20, -5, -1, 0, 1, 5, 20, 200])
    bi = relative_position_bucket(rel, True, 32, 128).tolist()
    # exact buckets 0..7 for |d| < 8, positive side offset by 16, log buckets up to 15 / 31
    assert bi[3:6] == [1, 0, 17] and bi[2] == 5 and bi[6] == 21
    assert bi[0] == 15 and bi[8] == 31 and 8 <= bi[1] < 15
    uni = relative_position_bucket(rel, False, 32, 128).tolist()
    assert uni[4:] == [0, 0, 0, 0, 0] and uni[3] == 1 and uni[0] == 31


def test_shift_right_and_decoder_positions():
    m = _model("mass-tiny")
    labels = torch.tensor([[5, 6, -100]])
    assert m.shift_right(labels).tolist() == [[1, 5, 6]]
    ids = torch.randint(5, 1000, (1, 8))
    dec = torch.randint(5, 1000, (1, 3))
    with torch.no_grad():
        a = m(ids, decoder_input_ids=dec, decoder_position_ids=torch.tensor([[3, 4, 5]])).logits
        b = m(ids, decoder_input_ids=dec).logits
    assert not torch.allclose(a, b)


def test_labels_mask_and_untied_head():
    m = _model("t5-v1_1-tiny")
    assert m.head.decoder.weight is not m.shared.weight
    ids = torch.randint(5, 1000, (2, 5))
    dec = torch.randint(5, 1000, (2, 4))
    sel = torch.tensor([[True, False, True, False], [False, False, False, True]])
    with torch.no_grad():
        full = m(ids, decoder_input_ids=dec).logits
        part = m(ids, decoder_input_ids=dec, labels_mask=sel).logits
    torch.testing.assert_close(part, full[sel])


def test_bad_input_raises_user_error():
    m = _model("bart-tiny")
    ids = torch.randint(5, 1000, (2, 5))
    with pytest.raises(UserError, match="decoder_input_ids"):
        m(ids)
    with pytest.raises(UserError, match="vocab_size=1000"):
        m(ids, decoder_input_ids=torch.full((2, 2), 1000))
    with pytest.raises(UserError, match="attention_mask"):
        m(ids, torch.ones(2, 4), torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(UserError, match="position table"):
        m(torch.randint(5, 1000, (1, 600)), decoder_input_ids=ids[:1])
    with pytest.raises(UserError, match="num_beams"):
        m.generate(ids, num_beams=0)
    with pytest.raises(UserError, match="unknown model preset 't5-smal' \\(did you mean 't5-small'\\?\\)"):
        presets.build("t5-smal")
    with pytest.raises(ValueError, match="num_decoder_layers"):
        Seq2SeqConfig(num_decoder_layers=0)


def test_real_size_presets_have_published_parameter_counts():
    # t5-small: 60.5M parameters (tied head), bart-base 139.4M (HF counts)
    with torch.device("meta"):  # shapes only
        t5 = presets.build("t5-small")
        bart = presets.build("bart-base")
    assert abs(t5.num_parameters() - 60_506_624) < 1000
    assert abs(bart.num_parameters() - 139_420_416) < 1000


def test_every_preset_is_reachable_through_models_load():
    from plmkit.models import load

    want = {"seq2seq": "EncoderDecoder", "deberta": "DeBERTa", "xlnet": "XLNet", "glm": "GLM", "unilm": "Transformer",
            "transformer": "Transformer", "recurrent": ("FFNNLM", "RNNLM", "ELMo", "CoVe"), "canine": "Canine"}
    for name, (kind, _) in presets.PRESETS.items():
        if name.endswith("-tiny"):
            assert type(load(name)).__name__ in want[kind], name
    with torch.device("meta"):  # real sizes: shapes only
        for name in ("t5-base", "t5-v1_1-small", "mass-base", "switch-base-8", "deberta-base", "deberta-v3-small",
                     "xlnet-base", "unilm-base", "glm-base"):
            assert type(load(name)).__name__ == want[presets.PRESETS[name][0]], name


def test_trained_bias_attention_equals_sdpa_forward_and_backward():
    """The written-out attention used when T5's relative bias is trained gives SDPA's output and gradients."""
    from plmkit.models.seq2seq import ScaledSelfAttention

    torch.manual_seed(0)
    attn = _model("t5-tiny").encoder.layers[0].attn
    assert isinstance(attn, ScaledSelfAttention)
    B, Nh, T, D = 3, attn.num_heads, 7, attn.head_dim
    for scale in (None, 1.0):
        attn.scale = scale
        q, k, v = (torch.randn(B, Nh, T, D, requires_grad=True) for _ in range(3))
        bias = torch.randn(1, Nh, T, T, requires_grad=True)
        key_mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
        key_mask[0, ..., -2:] = False  # padded keys get the dtype's minimum, as the stack does
        ref_in = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
        masked = bias.masked_fill(~key_mask, torch.finfo(bias.dtype).min)
        y = attn._bias_attention(q, k, v, masked)
        rq, rk, rv, rb = ref_in
        ref = torch.nn.functional.scaled_dot_product_attention(
            rq, rk, rv, attn_mask=rb.masked_fill(~key_mask, torch.finfo(rb.dtype).min), scale=scale)
        g = torch.randn_like(y)
        y.backward(g)
        ref.backward(g)
        assert torch.allclose(y, ref, atol=1e-5)
        for a, b in zip((q, k, v, bias), ref_in):
            assert torch.allclose(a.grad, b.grad, atol=1e-5)
