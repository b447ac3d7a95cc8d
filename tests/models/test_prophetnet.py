"""ProphetNet's n-stream decoder (plmkit.models.prophetnet) against an explicit per-stream, per-position
computation written with loops, and the main stream against the plain decoder."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models.layers import AttentionContext
from plmkit.models.prophetnet import ngram_attention_mask, ngram_decode
from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig

FAMILIES = {
    "bart": dict(family="bart", position="learned", max_position_embeddings=64, norm_position="post",
                 embedding_norm=True),
    "t5": dict(family="t5", norm="rms", norm_position="pre", embedding_norm=False, position="none",
               relative_attention_num_buckets=8, relative_attention_max_distance=16, attention_bias=False,
               mlp_bias=False, activation="relu", attention_scale=1.0),
}


def tiny(family: str) -> EncoderDecoder:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=50, hidden_size=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                        intermediate_size=48, type_vocab_size=0, head="lm", pad_token_id=0, hidden_dropout=0.0,
                        attention_dropout=0.0, **FAMILIES[family])
    return EncoderDecoder(cfg).eval()


def test_mask_definition():
    T, n = 4, 3
    m = ngram_attention_mask(T, n)
    assert m.shape == (n * T, n * T)
    for s in range(n):
        for t in range(T):
            for s2 in range(n):
                for u in range(T):
                    want = (s2 == 0 and u <= t) or (s > 0 and s2 == s and u == t)
                    assert bool(m[s * T + t, s2 * T + u]) == want, (s, t, s2, u)


def _explicit(model: EncoderDecoder, table, enc, src_mask, dec_ids):
    """Streams computed one (stream, position) at a time: queries from the stream's own state, keys/values
    from the main-stream states 0..t of the layer below (+ the stream's own state for j > 0)."""
    dec = model.decoder
    cfg = model.config
    n, (B, T) = table.shape[0] + 1, dec_ids.shape
    Nh, D = cfg.num_heads, cfg.dim_per_head
    emb = dec.embeddings
    pos = torch.arange(T)[None]
    states = [emb(dec_ids, pos + cfg.position_offset, None)]
    for j in range(1, n):
        states.append(emb(None, pos + j + cfg.position_offset, None, table[j - 1].expand(B, T, -1)))
    rel = dec.relative_bias(T + n, T + n, 0) if hasattr(dec, "relative_bias") else None  # (1, Nh, q, k)
    ctx = AttentionContext(encoder_states=enc, encoder_mask=model.encoder_key_mask(src_mask))
    ctx.cross_cache = None
    for li, layer in enumerate(dec.layers):
        attn = layer.attn
        Wq, Wk, Wv = attn.qkv.weight.split(Nh * D, dim=0)
        bq, bk, bv = (attn.qkv.bias.split(Nh * D) if attn.qkv.bias is not None else (None, None, None))
        scale = attn.scale if attn.scale is not None else 1 / math.sqrt(D)
        pre = layer.pre_norm
        normed = [layer.attn_norm(s) if pre else s for s in states]

        def proj(x, W, b):
            y = x @ W.T
            return y + b if b is not None else y

        new = []
        for j in range(n):
            out = torch.zeros_like(states[j])
            for b in range(B):
                for t in range(T):
                    q = proj(normed[j][b, t], Wq, bq).view(Nh, D)
                    keys = [(normed[0][b, u], u) for u in range(t + 1)]
                    if j > 0:
                        keys.append((normed[j][b, t], t + j))
                    K = torch.stack([proj(x, Wk, bk).view(Nh, D) for x, _ in keys], dim=1)  # (Nh, S, D)
                    V = torch.stack([proj(x, Wv, bv).view(Nh, D) for x, _ in keys], dim=1)
                    scores = torch.einsum("hd,hsd->hs", q, K) * scale
                    if rel is not None:
                        qp = t + j
                        scores = scores + torch.stack([rel[0, :, qp, kp] for _, kp in keys], dim=1)
                    a = torch.einsum("hs,hsd->hd", torch.softmax(scores, dim=-1), V).reshape(-1)
                    out[b, t] = proj(a, attn.o.weight, attn.o.bias)
            x = states[j]
            if pre:
                x = x + out
                x = x + layer.cross_attn(layer.cross_norm(x), ctx, li)
                x = x + layer.mlp(layer.mlp_norm(x))
            else:
                x = layer.attn_norm(x + out)
                x = layer.cross_norm(x + layer.cross_attn(x, ctx, li))
                x = layer.mlp_norm(x + layer.mlp(x))
            new.append(x)
        states = new
    if hasattr(dec, "final_norm"):
        states = [dec.final_norm(s) for s in states]
    return states


@pytest.mark.parametrize("family", ["bart", "t5"])
@pytest.mark.parametrize("ngram", [2, 3])
def test_streams_equal_explicit_per_stream_attention(family, ngram):
    model = tiny(family)
    torch.manual_seed(1)
    src = torch.randint(3, 50, (2, 7))
    src_mask = torch.ones_like(src)
    src_mask[1, 5:] = 0
    dec_ids = torch.randint(3, 50, (2, 5))
    table = torch.randn(ngram - 1, model.config.embed_dim)
    with torch.no_grad():
        enc, _ = model.encode(src, src_mask)
        main, pred = ngram_decode(model, table, enc, src_mask, dec_ids)
        want = _explicit(model, table, enc, src_mask, dec_ids)
    assert pred.shape == (2, ngram - 1, 5, model.config.hidden_size)
    torch.testing.assert_close(main, want[0], atol=2e-5, rtol=1e-4)
    for j in range(1, ngram):
        torch.testing.assert_close(pred[:, j - 1], want[j], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_main_stream_is_the_plain_decoder(family):
    model = tiny(family)
    torch.manual_seed(2)
    src = torch.randint(3, 50, (3, 6))
    dec_ids = torch.randint(3, 50, (3, 8))
    dmask = torch.ones_like(dec_ids)
    dmask[2, 6:] = 0
    with torch.no_grad():
        plain = model(src, decoder_input_ids=dec_ids, decoder_attention_mask=dmask)
        enc = plain.encoder_last_hidden_state
        for n in (2, 4):
            main, _ = ngram_decode(model, torch.randn(n - 1, model.config.embed_dim), enc, None, dec_ids, dmask)
            torch.testing.assert_close(main[dmask.bool()], plain.last_hidden_state[dmask.bool()], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model.head_logits(main)[dmask.bool()], plain.logits[dmask.bool()],
                                       atol=1e-4, rtol=1e-4)


def test_stream_reads_only_the_past_of_the_main_stream():
    model = tiny("bart")
    torch.manual_seed(3)
    src = torch.randint(3, 50, (1, 6))
    dec_ids = torch.randint(3, 50, (1, 6))
    table = torch.randn(2, model.config.embed_dim)
    with torch.no_grad():
        enc, _ = model.encode(src)
        _, a = ngram_decode(model, table, enc, None, dec_ids)
        changed = dec_ids.clone()
        changed[0, 3] = (changed[0, 3] + 7) % 47 + 3
        _, b = ngram_decode(model, table, enc, None, changed)
    torch.testing.assert_close(a[..., :3, :], b[..., :3, :])  # rows before the change: untouched
    assert (a[..., 3:, :] - b[..., 3:, :]).abs().amax() > 1e-3  # rows from it on: read it


def test_position_table_overflow_is_a_user_error():
    model = tiny("bart")
    dec_ids = torch.randint(3, 50, (1, 63))
    enc = torch.zeros(1, 2, model.config.hidden_size)
    with pytest.raises(UserError, match="predicting-stream position"):
        ngram_decode(model, torch.zeros(2, model.config.embed_dim), enc, None, dec_ids)
