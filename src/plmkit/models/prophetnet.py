"""ProphetNet's n-stream self-attention decoder on plmkit's ``EncoderDecoder`` (Qi et al. 2020, arXiv:2001.04063).

Future n-gram prediction trains the decoder to predict, at every step t, the next ``n`` target tokens
y_t, y_{t+1}, ..., y_{t+n-1} from the same context y_{<t} (and the source). ProphetNet does it with n
streams that share every weight of the decoder layers:

- the **main stream** is the ordinary causal decoder: row t reads decoder input t (= y_{t-1}, teacher
  forcing) and attends to main-stream states 0..t of the layer below;
- **predicting stream j** (j = 1 .. n-1) at row t starts from a learned n-gram embedding ``e_j`` (one per
  stream, ``NgramEmbedding``) plus the position embedding of the token it predicts (position t + j) and,
  in every layer, attends to the main-stream states 0..t of the layer below **and to itself** (its own
  state at row t, nothing else of any predicting stream); cross-attention and the feed-forward are
  position-wise, as in the main stream. Stream j at row t predicts y_{t+j}: it has seen exactly the
  context y_{<t} that the main stream has seen at row t.

Visibility, written as the (n T) x (n T) "may attend" mask of :func:`ngram_attention_mask` (rows and
columns ordered main 0..T-1, stream 1 0..T-1, ...): main row t -> main columns <= t; stream-j row t ->
main columns <= t and column (j, t).

Relation to the paper. In the paper every one of the n predicting streams reads H_{<=t} of the main
stream and stream k predicts y_{t+k} (k = 0..n-1 in its loss, eq. 5); the main stream's own top-layer
output is not scored. Here the paper's first predicting stream (the one-step-ahead one, which sees
exactly what the main stream sees) is the main stream itself: its LM head output is the ordinary
next-token prediction. So a model trained with future n-gram prediction is an unchanged
``EncoderDecoder`` at inference: ``generate`` runs only the main stream, with its KV cache, and the
extra streams and their embeddings are training-time machinery (the n-gram table lives in
``model.heads``, which HF-format checkpoints do not write). The main-stream states are exactly those of
``model.decoder`` (no main row reads a predicting stream; tested).

T5-style relative position biases are supported: each row and column gets the position of its input
(main row t: t; stream-j row t: t + j) and the bias is looked up for those positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.layers import AttentionContext

__all__ = ["NgramEmbedding", "ngram_attention_mask", "ngram_positions", "ngram_decode"]


class NgramEmbedding(nn.Module):
    """``weight`` (n - 1, E): the input embedding of predicting streams 1 .. n-1 (ProphetNet's
    ``ngram_embeddings``; the main stream reads the tokens)."""

    def __init__(self, ngram: int, embed_dim: int) -> None:
        super().__init__()
        if not isinstance(ngram, int) or ngram < 2:
            raise UserError(f"NgramEmbedding: ngram must be an integer >= 2, got {ngram!r}")
        self.ngram = ngram
        self.weight = nn.Parameter(torch.empty(ngram - 1, embed_dim))
        nn.init.normal_(self.weight, 0.0, 0.02)


def ngram_attention_mask(T: int, ngram: int, device: torch.device | None = None) -> Tensor:
    """(n T, n T) bool "may attend" mask of the n-stream self-attention (see the module docstring)."""
    idx = torch.arange(T, device=device)
    causal = idx[None, :] <= idx[:, None]  # (T, T)
    m = torch.zeros(ngram * T, ngram * T, dtype=torch.bool, device=device)
    for s in range(ngram):
        m[s * T:(s + 1) * T, :T] = causal
        if s > 0:
            m[s * T + idx, s * T + idx] = True
    return m


def ngram_positions(positions: Tensor, ngram: int) -> Tensor:
    """(B|1, T) positions of the main stream -> (B|1, n T): stream j's rows get position + j."""
    return torch.cat([positions + j for j in range(ngram)], dim=-1)


def ngram_decode(model, ngram_table: Tensor, encoder_outputs: Tensor, attention_mask: Tensor | None,
                 decoder_input_ids: Tensor, decoder_attention_mask: Tensor | None = None,
                 decoder_position_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run ``model.decoder``'s layers over the main stream and n - 1 predicting streams at once.

    ``model``: an ``EncoderDecoder``; ``ngram_table`` (n - 1, E); ``encoder_outputs`` (B, S, H);
    ``attention_mask`` (B, S) of the source; ``decoder_input_ids`` (B, T). Returns the main stream
    (B, T, H) and the predicting streams (B, n - 1, T, H), both after the decoder's final norm.
    """
    dec = model.decoder
    cfg = dec.config
    n = ngram_table.shape[0] + 1
    B, T = decoder_input_ids.shape
    dev = decoder_input_ids.device
    if decoder_position_ids is None:
        base = torch.arange(T, device=dev)[None]  # (1, T)
    else:
        if decoder_position_ids.shape != (B, T):
            raise UserError(f"decoder_position_ids shape {tuple(decoder_position_ids.shape)}: expected ({B}, {T})")
        base = decoder_position_ids
    pos = ngram_positions(base, n)  # (B|1, n T)
    if cfg.position == "learned" and pos.numel() and int(pos.max()) + cfg.position_offset >= cfg.max_position_embeddings:
        raise UserError(f"ProphetNet: predicting-stream position {int(pos.max())} exceeds the decoder's position "
                        f"table (max {cfg.max_position_embeddings - cfg.position_offset - 1}); shorten the targets "
                        f"by ngram - 1 = {n - 1} tokens")
    emb = dec.embeddings
    main = emb(decoder_input_ids, pos[:, :T].expand(B, T) + cfg.position_offset, None)  # (B, T, H)
    streams = [main]
    for j in range(1, n):
        e = ngram_table[j - 1].to(main.dtype).expand(B, T, -1)  # (B, T, E)
        streams.append(emb(None, pos[:, j * T:(j + 1) * T].expand(B, T) + cfg.position_offset, None, e))
    x = torch.cat(streams, dim=1)  # (B, n T, H)

    mask = ngram_attention_mask(T, n, dev)[None, None]  # (1, 1, nT, nT)
    if decoder_attention_mask is not None:
        am = decoder_attention_mask.to(torch.bool)
        if am.shape != (B, T):
            raise UserError(f"decoder_attention_mask shape {tuple(am.shape)}: expected ({B}, {T})")
        keys = torch.cat([am, torch.ones(B, (n - 1) * T, dtype=torch.bool, device=dev)], dim=1)
        mask = mask & keys[:, None, None, :]
        mask = mask | ~mask.any(dim=-1, keepdim=True)  # a padded main row may attend nothing: keep it finite
    bias = None
    if hasattr(dec, "relative_bias"):
        p = pos[0] if pos.shape[0] == 1 else pos[0]
        if pos.shape[0] > 1 and not bool((pos == pos[0:1]).all()):
            raise UserError("ProphetNet with relative position buckets takes no per-example decoder_position_ids")
        top = int(p.max()) + 1
        table = dec.relative_bias(top, top, 0)  # (1, Nh, top, top): query position i, key position j
        bias = table[:, :, p][:, :, :, p].to(x.dtype)  # (1, Nh, nT, nT)
        bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)
    ctx = AttentionContext(mask=mask, is_causal=False, cache=None, bias=bias, encoder_states=encoder_outputs,
                           encoder_mask=model.encoder_key_mask(attention_mask))
    ctx.cross_cache = None  # type: ignore[attr-defined]
    for i, layer in enumerate(dec.layers):
        x = layer(x, ctx, i)
    if hasattr(dec, "final_norm"):
        x = dec.final_dropout(dec.final_norm(x))
    return x[:, :T], x[:, T:].reshape(B, n - 1, T, x.shape[-1])
