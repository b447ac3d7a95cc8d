"""Building blocks shared by every Transformer in plmkit.

Contents: norms (LayerNorm / RMSNorm), position encodings (learned tables live in
``Embeddings``; sinusoidal tables and rotary embeddings here), ``Embeddings`` (token + position +
token-type, optional LayerNorm and factorised projection), ``SelfAttention`` (fused q|k|v,
multi-head or grouped-query, through ``F.scaled_dot_product_attention``), ``MLP`` (GELU / ReLU /
SwiGLU), and ``Block`` (pre- or post-LN residual wiring), plus ``AttentionContext``: the per-forward
state (mask, rotary tables, KV cache) that every layer reads.

This file is the architecture; how its matrix products, activations and dropout are computed on
CPU (oneDNN fused linear, decoding weight copies, cheaper dropout masks) is ``plmkit.models.kernels``
(``linear`` and ``Dropout`` come from there).

Extension points (so later families extend rather than fork the block):
- ``ATTENTION_TYPES`` / ``MLP_TYPES`` map a name to a class; ``Block`` builds
  ``ATTENTION_TYPES[config.extra.get("attention", "self")]`` and ``MLP_TYPES[config.extra.get("mlp",
  "dense")]``, so DeBERTa's disentangled attention or a MoE feed-forward is a new class registered
  here. ``AttentionContext.bias`` is an additive (B|1, heads|1, T, S) float bias (T5 relative
  positions, ALiBi) that ``SelfAttention`` adds to the mask. ``Block(config, cross_attention=True)``
  adds ``cross_attn`` + ``cross_norm`` reading ``ctx.encoder_states`` (encoder-decoder models).

Shape legend: B batch, T query length, S key length (past + T), H hidden, E embedding width,
Nh query heads, Nkv key/value heads, D head dim, I feed-forward width.

References: Vaswani et al. 2017 (Transformer, sinusoids); Devlin et al. 2019 (BERT);
Radford et al. 2019 (GPT-2, pre-LN); Su et al. 2021 (RoFormer, rotary); Shazeer 2020 (GLU
variants, SwiGLU); Zhang & Sennrich 2019 (RMSNorm); Ainslie et al. 2023 (GQA); Lan et al. 2020
(ALBERT factorised embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.models.config import ModelConfig
from plmkit.models.kernels import Dropout, dropout, linear


# ---------------------------------------------------------------------------- norms / activations
def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    """LayerNorm (weight + bias) or RMSNorm (weight only) of width ``dim``."""
    if config.norm == "rms":
        return nn.RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


# ---------------------------------------------------------------------------- positions
def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) table: sin on even, cos on odd channels (Vaswani et al. 2017, 3.5)."""
    pos = torch.arange(num_positions, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: dim // 2])
    return table


class RotaryEmbedding(nn.Module):
    """Rotary position embedding tables (RoFormer), HF/LLaMA "rotate half" channel layout."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin of shape (B|1, 1, T, D) for ``position_ids`` (B|1, T)."""
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return emb.cos()[:, None].to(dtype), emb.sin()[:, None].to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, N, T, D) ``x`` by the position angles."""
    return x * cos + _rotate_half(x) * sin


# ---------------------------------------------------------------------------- per-forward context
@dataclass
class AttentionContext:
    """What every attention layer of one forward pass shares.

    mask: bool (B|1, 1, T, S) "may attend" mask, or None. is_causal: let SDPA apply the causal mask
    itself (only when there is no past and no explicit mask). rotary: (cos, sin) tables or None.
    cache: a ``KVCache`` (``plmkit.models.cache``) or None. bias: additive float attention bias
    or None (relative-position families). encoder_states / encoder_mask: for cross-attention.
    attentions: a list to collect each self-attention layer's probabilities (B, Nh, T, S) into
    (``output_attentions``): ``SelfAttention`` then computes them explicitly instead of through SDPA.
    """

    mask: Tensor | None = None
    is_causal: bool = False
    rotary: tuple[Tensor, Tensor] | None = None
    cache: Any = None
    bias: Tensor | None = None
    encoder_states: Tensor | None = None
    encoder_mask: Tensor | None = None
    attentions: list | None = None
    inputs: Tensor | None = None
    """the embedding output (B, T, H) of this forward pass (Star-Transformer's e_i, ``models/star.py``)"""


# ---------------------------------------------------------------------------- embeddings
class Embeddings(nn.Module):
    """Token (+ learned/sinusoidal position) (+ token-type) embeddings, optional norm, dropout,
    and the ALBERT/ELECTRA factorised projection E -> H.

    Order as in the originals: sum -> LayerNorm (BERT family) -> dropout -> project (E != H).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        E, H = config.embed_dim, config.hidden_size
        pad = config.pad_token_id if config.family not in ("gpt", "gpt2") else None
        self.word = nn.Embedding(config.vocab_size, E, padding_idx=pad)
        if config.position == "learned":
            self.position = nn.Embedding(config.max_position_embeddings, E)
        elif config.position == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_table(config.max_position_embeddings, E),
                                 persistent=False)
        if config.type_vocab_size > 0:
            self.token_type = nn.Embedding(config.type_vocab_size, E)
        if config.embedding_norm:
            self.norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        if E != H:
            self.project = nn.Linear(E, H)
        p = config.hidden_dropout if config.embedding_dropout is None else config.embedding_dropout
        self.dropout = Dropout(p)
        self.scale = config.embedding_scale
        self.kind = config.position

    def forward(self, input_ids: Tensor | None, position_ids: Tensor, token_type_ids: Tensor | None,
                inputs_embeds: Tensor | None = None) -> Tensor:
        x = self.word(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, E)
        if self.scale != 1.0:
            x = x * self.scale
        if self.kind == "learned":
            x = x + self.position(position_ids)
        elif self.kind == "sinusoidal":
            x = x + self.sinusoid[position_ids].to(x.dtype)
        if hasattr(self, "token_type"):
            if token_type_ids is None:
                x = x + self.token_type.weight[0]  # all segment 0 (no (B, T) lookup needed)
            else:
                x = x + self.token_type(token_type_ids)
        if hasattr(self, "norm"):
            x = self.norm(x)
        if self.training and self.dropout.p > 0:
            x = self.dropout(x)
        if hasattr(self, "project"):
            x = linear(x, self.project)  # (B, T, H)
        return x


# ---------------------------------------------------------------------------- attention
class SelfAttention(nn.Module):
    """Multi-head / grouped-query self-attention with a fused q|k|v projection.

    ``qkv``: Linear(H, (Nh + 2 Nkv) D), rows ordered q | k | v; ``o``: Linear(Nh D, H).
    Attention itself is ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.kv_heads, config.dim_per_head
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split = (q_dim, kv_dim, kv_dim)
        self.qkv = nn.Linear(config.hidden_size, q_dim + 2 * kv_dim, bias=config.attention_bias)
        self.o = nn.Linear(q_dim, config.hidden_size, bias=config.attention_bias)
        self.dropout = config.attention_dropout
        self.gqa = self.num_kv_heads != self.num_heads

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        B, T, _ = x.shape
        q, k, v = linear(x, self.qkv).split(self.split, dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, Nh, T, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Nkv, T, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Nkv, T, D)
        if ctx.rotary is not None:
            cos, sin = ctx.rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer_idx, k, v)  # (B, Nkv, S, D): past + new
        mask = ctx.mask
        if ctx.bias is not None:  # additive bias (relative positions): fold the bool mask into it
            bias = ctx.bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        if ctx.attentions is not None:
            probs = attention_probs(q, k, mask, ctx.is_causal)  # (B, Nh, T, S)
            ctx.attentions.append(probs)
            if self.gqa:
                v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            y = torch.matmul(dropout(probs, self.dropout, self.training), v)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=ctx.is_causal,
                dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.gqa,
            )  # (B, Nh, T, D)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)  # (B, T, H)


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None, is_causal: bool, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) written out: what SDPA computes internally, as (B, Nh, T, S) probabilities.

    ``mask``: bool "may attend" (broadcastable to (B, Nh, T, S)) or an additive float bias; ``is_causal``: the
    causal mask aligned to the last key (no past). Grouped-query keys are repeated over their query heads.
    Softmax in float32; returned in ``q``'s dtype.
    """
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # (B, Nh, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    if is_causal:
        T, S = scores.shape[-2:]
        tri = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        scores = scores.masked_fill(~tri, float("-inf"))
    return torch.softmax(scores, dim=-1).to(q.dtype)


ATTENTION_TYPES: dict[str, type[nn.Module]] = {"self": SelfAttention}


# ---------------------------------------------------------------------------- feed-forward
class MLP(nn.Module):
    """Position-wise feed-forward: down(act(up(x))), or down(act(gate(x)) * up(x)) for SwiGLU."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        H, I, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        if config.activation == "swiglu":
            self.gate = nn.Linear(H, I, bias=bias)
        self.up = nn.Linear(H, I, bias=bias)
        self.down = nn.Linear(I, H, bias=bias)
        self.activation = config.activation
        self.gated = config.activation == "swiglu"

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            return linear(linear(x, self.gate, "silu") * linear(x, self.up), self.down)
        return linear(linear(x, self.up, self.activation), self.down)


MLP_TYPES: dict[str, type[nn.Module]] = {"dense": MLP}


# ---------------------------------------------------------------------------- block
def _identity(x: Tensor) -> Tensor:
    return x


class Block(nn.Module):
    """One Transformer layer; the residual wiring is the only thing ``norm_position`` changes::

        post-LN (BERT, GPT):   x = attn_norm(x + drop(attn(x)));  x = mlp_norm(x + drop(mlp(x)))
        pre-LN (GPT-2, LLaMA): x = x + drop(attn(attn_norm(x)));  x = x + drop(mlp(mlp_norm(x)))

    With ``cross_attention`` (encoder-decoder), ``cross_attn`` attends to ``ctx.encoder_states``
    between self-attention and the feed-forward, with its own ``cross_norm``.
    """

    def __init__(self, config: ModelConfig, cross_attention: bool = False) -> None:
        super().__init__()
        attn_cls = ATTENTION_TYPES[config.extra.get("attention", "self")]
        mlp_cls = MLP_TYPES[config.extra.get("mlp", "dense")]
        self.attn = attn_cls(config)
        self.attn_norm = make_norm(config, config.hidden_size)
        if cross_attention:
            cross_cls = ATTENTION_TYPES[config.extra.get("cross_attention", "cross")]
            self.cross_attn = cross_cls(config)
            self.cross_norm = make_norm(config, config.hidden_size)
        self.mlp = mlp_cls(config)
        self.mlp_norm = make_norm(config, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout)
        self.pre_norm = config.norm_position == "pre"

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        drop = self.dropout if self.training and self.dropout.p > 0 else _identity
        if self.pre_norm:
            x = x + drop(self.attn(self.attn_norm(x), ctx, layer_idx))
            if hasattr(self, "cross_attn"):
                x = x + drop(self.cross_attn(self.cross_norm(x), ctx, layer_idx))
            return x + drop(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + drop(self.attn(x, ctx, layer_idx)))
        if hasattr(self, "cross_attn"):
            x = self.cross_norm(x + drop(self.cross_attn(x, ctx, layer_idx)))
        return self.mlp_norm(x + drop(self.mlp(x)))
