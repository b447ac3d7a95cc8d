"""Star-Transformer attention (Guo et al. 2019, arXiv:1902.09113) as a configuration of ``Transformer``.

    plmkit.load("bert-tiny", extra={"attention": "star"})      # any encoder preset

Token 0 of every sequence ([CLS] / <s>) is the *relay* node; tokens 1..L-1 are the *satellites*
(L = the sequence's unpadded length; padding must be on the right). In every layer, with ``h`` the
layer input and ``e`` the embedding output of the same forward pass (``AttentionContext.inputs``):

* satellite i attends to its context ``C_i = [h_{i-1}, h_i, h_{i+1}, e_i, h_0]``: its ring
  neighbours (the first and last satellites are neighbours of each other), itself, its own token
  embedding and the relay;
* the relay attends to ``[h_0; h_1 .. h_{L-1}]`` (itself and every satellite).

Keys and values of ``C_i`` come from the layer's fused q|k|v projection (the embeddings ``e`` go
through its k|v rows). The context is a concatenation: with one or two satellites a key can occur
twice in ``C_i`` and then counts twice in the softmax, as in the paper's definition.

Cost is O(L) per layer: the satellite contexts are gathered into a (B, Nh, L-1, 5, D) tensor and the
relay row is one (B, Nh, 1, L) product; no L x L score or mask tensor is ever built.

What is the same as, and what differs from, the paper: the multi-head attention over the star
contexts is the paper's. Everything else is plmkit's ``Block``: residual connections, the position-wise
feed-forward, pre/post-LN and dropout as the base preset sets them, and satellites and relay updated
*together* from the same layer input (the paper updates satellites first and then the relay from
the new satellites, and it has no feed-forward). The relay starts from the [CLS] embedding (the paper
initialises it with the mean of the token embeddings). Encoders only: no causal masks, no KV cache,
no custom (B, T, S) attention masks, no ``output_attentions``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.kernels import dropout, linear
from plmkit.models.layers import ATTENTION_TYPES, AttentionContext, apply_rotary


def star_neighbours(lengths: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """(B, T-1) indices of the previous and next ring neighbour of positions 1..T-1.

    Satellites of a sequence of length L are 1..L-1 on a ring; positions >= L (padding) get
    in-range indices whose outputs are never used."""
    idx = torch.arange(1, T, device=lengths.device)[None, :]  # (1, T-1)
    last = (lengths - 1).clamp(min=1)[:, None]  # (B, 1)
    prev = torch.where(idx == 1, last, idx - 1)
    nxt = torch.where(idx >= last, torch.ones_like(idx), idx + 1)
    return prev.clamp(max=T - 1), nxt.clamp(max=T - 1)


class StarAttention(nn.Module):
    """Star-Transformer attention with the parameters of ``SelfAttention`` (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.causal:
            raise ConfigError("ModelConfig.extra.attention='star': expected an encoder (causal=False); "
                              "Star-Transformer attention is bidirectional")
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.kv_heads, config.dim_per_head
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split = (q_dim, kv_dim, kv_dim)
        self.qkv = nn.Linear(config.hidden_size, q_dim + 2 * kv_dim, bias=config.attention_bias)
        self.o = nn.Linear(q_dim, config.hidden_size, bias=config.attention_bias)
        self.dropout = config.attention_dropout

    def _heads(self, t: Tensor, n: int) -> Tensor:
        B, T, _ = t.shape
        t = t.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, D)
        if n != self.num_heads:
            t = t.repeat_interleave(self.num_heads // n, dim=1)
        return t

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        if ctx.cache is not None or ctx.is_causal:
            raise UserError("star attention: no causal decoding or KV cache (it is an encoder attention)")
        if ctx.inputs is None:
            raise UserError("star attention needs the embedding output (AttentionContext.inputs)")
        if ctx.bias is not None:
            raise UserError("star attention: additive attention biases are not supported")
        if ctx.attentions is not None:
            raise UserError("star attention: output_attentions is not supported")
        B, T, _ = x.shape
        q, k, v = linear(x, self.qkv).split(self.split, dim=-1)
        q_dim = self.split[0]
        w, b = self.qkv.weight[q_dim:], None if self.qkv.bias is None else self.qkv.bias[q_dim:]
        ke, ve = F.linear(ctx.inputs.to(x.dtype), w, b).split(self.split[1:], dim=-1)
        q = self._heads(q, self.num_heads)  # (B, Nh, T, D)
        k, v = self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)
        ke, ve = self._heads(ke, self.num_kv_heads), self._heads(ve, self.num_kv_heads)
        if ctx.rotary is not None:
            cos, sin = ctx.rotary
            q, k, ke = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), apply_rotary(ke, cos, sin)

        keep = self._key_padding(ctx.mask, B, T, x.device)  # (B, T) bool or None
        lengths = keep.sum(-1) if keep is not None else torch.full((B,), T, device=x.device)
        scale = 1.0 / math.sqrt(self.head_dim)
        p_drop = self.dropout if self.training else 0.0

        # relay (token 0): attends to itself and every (unpadded) satellite -- one row, O(T)
        r_scores = torch.matmul(q[:, :, :1].float(), k.float().transpose(-1, -2)) * scale  # (B, Nh, 1, T)
        if keep is not None:
            r_scores = r_scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        r_probs = dropout(torch.softmax(r_scores, dim=-1).to(q.dtype), p_drop, self.training)
        y_relay = torch.matmul(r_probs, v)  # (B, Nh, 1, D)
        if T == 1:
            y = y_relay
        else:
            prev, nxt = star_neighbours(lengths, T)  # (B, T-1)

            def gather(t: Tensor, idx: Tensor) -> Tensor:  # (B, Nh, T, D) at (B, T-1) -> (B, Nh, T-1, D)
                return t.gather(2, idx[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[-1]))

            relay_k = k[:, :, :1].expand(-1, -1, T - 1, -1)
            relay_v = v[:, :, :1].expand(-1, -1, T - 1, -1)
            ck = torch.stack([gather(k, prev), k[:, :, 1:], gather(k, nxt), ke[:, :, 1:], relay_k], dim=3)
            cv = torch.stack([gather(v, prev), v[:, :, 1:], gather(v, nxt), ve[:, :, 1:], relay_v], dim=3)
            # ck, cv: (B, Nh, T-1, 5, D) -- the five context keys / values of each satellite
            s_scores = torch.einsum("bhtd,bhtcd->bhtc", q[:, :, 1:].float(), ck.float()) * scale
            s_probs = dropout(torch.softmax(s_scores, dim=-1).to(q.dtype), p_drop, self.training)
            y_sat = torch.einsum("bhtc,bhtcd->bhtd", s_probs, cv)  # (B, Nh, T-1, D)
            y = torch.cat([y_relay, y_sat], dim=2)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)  # (B, T, H)

    @staticmethod
    def _key_padding(mask: Tensor | None, B: int, T: int, device) -> Tensor | None:
        """The (B, T) key-padding mask from the backbone's (B, 1, 1, T) mask (None: no padding)."""
        if mask is None:
            return None
        if mask.dim() != 4 or mask.shape[-2] != 1:
            raise UserError("star attention takes a (batch, seq_len) padding attention_mask only, "
                            f"not a custom mask of shape {tuple(mask.shape)}")
        keep = mask[:, 0, 0, :].expand(B, T)
        lengths = keep.sum(-1, keepdim=True)
        if not bool((keep == (torch.arange(T, device=device)[None, :] < lengths)).all()):
            raise UserError("star attention needs right padding (attention_mask = 1 ... 1 0 ... 0)")
        return keep


ATTENTION_TYPES.setdefault("star", StarAttention)
