"""Building blocks shared by every Transformer in plmkit.

Contents: norms (LayerNorm / RMSNorm), activations, position encodings (learned tables live in
``Embeddings``; sinusoidal tables and rotary embeddings here), ``Embeddings`` (token + position +
token-type, optional LayerNorm and factorised projection), ``SelfAttention`` (fused q|k|v,
multi-head or grouped-query, through ``F.scaled_dot_product_attention``), ``MLP`` (GELU / ReLU /
SwiGLU), and ``Block`` (pre- or post-LN residual wiring), plus ``AttentionContext``: the per-forward
state (mask, rotary tables, KV cache) that every layer reads.

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

import contextlib
import contextvars
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from plmkit.models.config import ModelConfig
from plmkit.models.dropout import Dropout


# ---------------------------------------------------------------------------- norms / activations
def make_norm(config: ModelConfig, dim: int) -> nn.Module:
    """LayerNorm (weight + bias) or RMSNorm (weight only) of width ``dim``."""
    if config.norm == "rms":
        return nn.RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


def _gelu_new(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, BERT / HF "gelu"
    "gelu_new": _gelu_new,  # tanh approximation, GPT-2 / ALBERT
    "relu": F.relu,
    "silu": F.silu,
    "swiglu": F.silu,  # the gate's activation; MLP multiplies by up(x)
}


# ---------------------------------------------------------------------------- fast CPU linear
# ``F.linear`` with a bias runs ``addmm``, which first copies the broadcast bias into the output and
# then lets BLAS accumulate into it: one extra pass over every activation. oneDNN's
# ``mkldnn._linear_pointwise`` (the kernel torch.compile's CPU backend emits) adds the bias and an
# optional activation (GELU / SiLU / ReLU) inside the GEMM, ~1.5-2x faster for our shapes. Used on
# CPU for fp32 and bf16; the backward is the usual two GEMMs. Elsewhere: plain F.linear.
_POINTWISE: dict[str, tuple[str, str]] = {
    "gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "relu": ("relu", ""), "silu": ("swish", ""),
    "swiglu": ("swish", ""),
}


def _probe_onednn() -> bool:
    try:
        # A private generator: probing at import time must not advance the global RNG (a model built
        # right after ``torch.manual_seed`` gets the same weights whether or not this module was imported).
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return torch.backends.mkldnn.is_available() and bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5))
    except Exception:  # noqa: BLE001 - any failure means: not available in this build
        return False


FAST_LINEAR = _probe_onednn()


def _cpu_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The compute dtype for the oneDNN path, or None when it does not apply."""
    if not FAST_LINEAR or x.device.type != "cpu" or weight.device.type != "cpu":
        return None
    if torch.compiler.is_compiling():  # inductor cannot trace the oneDNN op: plain F.linear there
        return None
    if torch.is_autocast_enabled("cpu"):
        dt = torch.get_autocast_dtype("cpu")
        return dt if dt in (torch.bfloat16, torch.float32) else None
    if x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16):
        return x.dtype
    return None


# ---------------------------------------------------------------------------- decoding weights
# A decoding step multiplies a few rows (batch x beams) by every weight matrix: the time is reading
# the weights. BLAS reads a (out, in) weight used as ``x @ W.T`` slower than the same weight stored
# as a contiguous (in, out) matrix, and oneDNN is no better: T5-small shapes, one thread, 2048x512
# at 4 rows 0.29 -> 0.16 ms, at 16 rows 0.39 -> 0.26; the 32128x512 table at 4 rows 4.4 -> 3.4 ms.
# At 1-3 rows MKL's ``x @ W.T`` is a matrix-vector kernel that matches the copy when the weight is
# cache-hot, but in the decoding loop (weights streamed from memory) the copy still wins: T5-small
# generate, 32 tokens, 2-7% faster at batch 1-3, ~30% at batch 4. So inside ``decoding_weights()``
# (what ``generate`` enters) ``linear`` multiplies PACK_MIN_ROWS..PACK_MAX_ROWS rows by such a
# transposed copy, made once per weight and kept until the weight changes (its storage or version
# counter), so repeated generate calls on a fixed model pay the copy once. The cost is one extra copy
# of the weights that decoding touches; ``release_decoding_weights`` frees it,
# ``generate(..., pack_weights=False)`` never makes it. Outside the context nothing changes.
PACK_MIN_ROWS = 1
PACK_MAX_ROWS = 64
PACK_AUTO_MAX_BYTES = 2 * 1024 ** 3
"""``pack_weights=None`` (generate's default) packs when the model's parameters take at most this
many bytes, so the copy never doubles the memory of a large model unasked."""
_PACKING: contextvars.ContextVar[bool] = contextvars.ContextVar("plmkit_decoding_weights", default=False)
_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> (data_ptr, _version, transposed copy)


@contextlib.contextmanager
def decoding_weights(model: nn.Module | None = None, enabled: bool | None = None) -> Iterator[bool]:
    """Use cached (in, out) weight copies for few-row linears inside the block (see above).

    ``enabled=None`` decides from ``model``'s parameter bytes (<= ``PACK_AUTO_MAX_BYTES``); yields
    whether packing is on."""
    if enabled is None:
        enabled = model is not None and sum(
            p.numel() * p.element_size() for p in model.parameters()) <= PACK_AUTO_MAX_BYTES
    token = _PACKING.set(bool(enabled))
    try:
        yield bool(enabled)
    finally:
        _PACKING.reset(token)


def transposed_weight(weight: Tensor) -> Tensor:
    """``weight.t()`` as a contiguous tensor, cached until ``weight`` is modified or replaced."""
    hit = _PACKED.get(weight)
    if hit is not None and hit[0] == weight.data_ptr() and hit[1] == weight._version:
        return hit[2]
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
        wt = weight.detach().t().contiguous()
    _PACKED[weight] = (weight.data_ptr(), weight._version, wt)
    return wt


def release_decoding_weights(model: nn.Module | None = None) -> int:
    """Drop the cached decoding copies of ``model``'s weights (all, when None); returns bytes freed."""
    keys = list(_PACKED.keys()) if model is None else [p for p in model.parameters() if p in _PACKED]
    freed = 0
    for k in keys:
        freed += _PACKED[k][2].numel() * _PACKED[k][2].element_size()
        del _PACKED[k]
    return freed


def _packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """``F.linear`` through the cached transposed weight, or None when packing does not apply."""
    if (not _PACKING.get() or torch.is_grad_enabled()
            or not PACK_MIN_ROWS * x.shape[-1] <= x.numel() <= PACK_MAX_ROWS * x.shape[-1]
            or x.device.type != "cpu" or x.dtype != weight.dtype or weight.dim() != 2
            or torch.compiler.is_compiling()):
        return None
    x2 = x.reshape(-1, x.shape[-1])
    wt = transposed_weight(weight)
    y = torch.mm(x2, wt) if bias is None else torch.addmm(bias.to(x.dtype), x2, wt)
    return y.view(*x.shape[:-1], wt.shape[1])


class _OneDNNLinear(torch.autograd.Function):
    """``linear`` (and ``relu(linear)``: the ReLU runs inside the GEMM and its backward masks the
    gradient with the saved output, so no separate activation pass and no pre-activation kept)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype, relu=False):
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = bias.to(dtype) if bias is not None else None
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        y = torch.ops.mkldnn._linear_pointwise(xc, wc, bc, "relu" if relu else "none", [], "")
        ctx.save_for_backward(xc, wc, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        xc, wc, y = ctx.saved_tensors
        if y is not None:  # d relu(z) / dz = [z > 0] = [y > 0]
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        g = grad.to(wc.dtype)
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (g @ wc).to(ctx.dtypes[0])  # (..., in)
        if ctx.needs_input_grad[1]:
            gw = (g2.t() @ xc.reshape(-1, xc.shape[-1])).to(ctx.dtypes[1])  # (out, in)
        if ctx.dtypes[2] is not None and ctx.needs_input_grad[2]:
            gb = g2.sum(0, dtype=torch.float32).to(ctx.dtypes[2])
        return gx, gw, gb, None, None


def linear(x: Tensor, layer: nn.Linear, activation: str | None = None) -> Tensor:
    """``act(layer(x))``, through oneDNN's fused linear on CPU when available (same numbers).

    A layer that is not a plain ``nn.Linear`` (a LoRA / quantised / pruned wrapper, a subclass) or
    that carries forward hooks is called as a module, so wrappers and hooks are never bypassed."""
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        y = layer(x)
        return ACTIVATIONS[activation](y) if activation else y
    y = _packed_linear(x, layer.weight, layer.bias)
    if y is not None:
        return ACTIVATIONS[activation](y) if activation else y
    dtype = _cpu_dtype(x, layer.weight)
    if dtype is None or x.numel() <= 4 * x.shape[-1]:  # <= 4 rows (decoding): BLAS is 1.1-3x faster there
        y = F.linear(x, layer.weight, layer.bias)
        return ACTIVATIONS[activation](y) if activation else y
    if torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad):
        fused = activation == "relu"  # the one activation whose backward needs only the output
        y = _OneDNNLinear.apply(x, layer.weight, layer.bias, dtype, fused)
        return ACTIVATIONS[activation](y) if activation and not fused else y
    b = layer.bias.to(dtype) if layer.bias is not None else None
    attr, algo = _POINTWISE[activation] if activation else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), layer.weight.to(dtype), b, attr, [], algo)


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
    cache: a ``KVCache`` (``plmkit.generation.cache``) or None. bias: additive float attention bias
    or None (relative-position families). encoder_states / encoder_mask: for cross-attention.
    """

    mask: Tensor | None = None
    is_causal: bool = False
    rotary: tuple[Tensor, Tensor] | None = None
    cache: Any = None
    bias: Tensor | None = None
    encoder_states: Tensor | None = None
    encoder_mask: Tensor | None = None


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
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=ctx.is_causal,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.gqa,
        )  # (B, Nh, T, D)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)  # (B, T, H)


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
