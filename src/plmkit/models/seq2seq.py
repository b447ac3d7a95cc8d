"""Encoder-decoder Transformers (T5 / T5.1.1, BART, MASS, Switch) built from the shared layers.

Topology (``Seq2SeqConfig`` fields in brackets)::

    input_ids ─► encoder: Embeddings(shared word table (+ learned positions, offset [position_offset])
                          (+ layernorm_embedding [embedding_norm])) ─► Block x L_enc ─► final_norm (pre-LN)
                          self-attention bias: T5 relative buckets [relative_attention_num_buckets]
    decoder_input_ids ─► decoder: same embeddings (word table shared) ─► Block(cross_attention) x L_dec
                          causal self-attention (KV cache) + cross-attention to the encoder (K/V cached)
              ─► final_norm (pre-LN) ─► [* d_model**-0.5: scale_decoder_outputs] ─► head (+ final_logits_bias)

Every layer is ``plmkit.models.layers.Block``; this file adds what changes the data flow: the
cross-attention class (registered as ``ATTENTION_TYPES["cross"]``, read by ``Block(cross_attention=True)``),
a self-attention with a configurable score scale (T5 does not divide by sqrt(D);
``ATTENTION_TYPES["seq2seq_self"]``), the gated-GELU feed-forward of T5.1.1 (``MLP_TYPES["gated"]``),
T5's relative position buckets, the encoder/decoder stacks and the cache (decoder self-attention in a
static ``KVCache``, cross-attention keys/values computed once per layer).

Switch Transformer stacks replace every ``moe_every``-th feed-forward by ``plmkit.models.moe.SwitchFFN``;
their load-balancing and z-losses come back on the output (``out.aux_loss``, ``out.z_loss``).

The model never computes a loss: ``out.logits`` are the decoder's next-token logits;
``model.shift_right(labels)`` builds teacher-forcing ``decoder_input_ids``.

References: Raffel et al. 2020 (T5, relative position buckets); Shazeer 2020 (GLU variants, T5.1.1);
Lewis et al. 2020 (BART); Song et al. 2019 (MASS); Fedus et al. 2022 (Switch Transformers);
transformers ``modeling_t5.py`` / ``modeling_bart.py`` (v5) for the exact numerics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.base import PretrainedModel
from plmkit.models.cache import Seq2SeqCache
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.kernels import Dropout, TiedGrad, TiedHead, TiedLookup, dropout, linear
from plmkit.models.layers import (ATTENTION_TYPES, MLP, MLP_TYPES, AttentionContext, Block,
                                  Embeddings, SelfAttention, make_norm)

SEQ2SEQ_FAMILIES = ("t5", "bart", "mass", "switch")


# ---------------------------------------------------------------------------- config
@dataclass(kw_only=True)
class Seq2SeqConfig(ModelConfig):
    """``ModelConfig`` plus what an encoder-decoder needs. ``num_layers`` is the encoder depth."""

    family: str = "t5"
    num_decoder_layers: int | None = None
    """Decoder depth; None means ``num_layers``."""
    relative_attention_num_buckets: int = 0
    """T5 relative position buckets (0: no relative bias)."""
    relative_attention_max_distance: int = 128
    """Distance from which all relative positions share the last (log-spaced) bucket."""
    attention_scale: float | None = None
    """Multiplier of q.k scores; None means 1/sqrt(head_dim) (T5: 1.0)."""
    decoder_start_token_id: int | None = 0
    """First decoder input (T5: pad = 0; BART: eos = 2)."""
    scale_decoder_outputs: bool = False
    """Multiply decoder outputs by d_model**-0.5 before a tied head (T5)."""
    final_logits_bias: bool = False
    """Add a (V,) bias buffer to the logits (BART's ``final_logits_bias``)."""
    gated_mlp: bool = False
    """Gated feed-forward act(gate(x)) * up(x) with ``activation`` (T5.1.1 gated-GELU)."""
    num_experts: int = 0
    """Switch MoE: experts per sparse feed-forward (0: dense model)."""
    moe_every: int = 2
    """Layer i is sparse when i % moe_every == 1 (every layer when 1), as HF's sparse_step."""
    expert_capacity: int | None = None
    """Tokens per expert per sequence; None means ceil(capacity_factor * T / num_experts)."""
    capacity_factor: float = 1.0
    """Used when ``expert_capacity`` is None."""
    router_jitter_noise: float = 0.0
    """Multiplicative uniform noise on router inputs during training (Switch: 0.01)."""

    def __post_init__(self) -> None:
        super().__post_init__()

        def bad(name: str, expected: str) -> None:
            raise ConfigError(f"Seq2SeqConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if self.num_decoder_layers is not None and (not isinstance(self.num_decoder_layers, int)
                                                    or self.num_decoder_layers <= 0):
            bad("num_decoder_layers", "a positive integer or null")
        if not isinstance(self.relative_attention_num_buckets, int) or self.relative_attention_num_buckets < 0 \
                or self.relative_attention_num_buckets == 1:
            bad("relative_attention_num_buckets", "0 or an integer >= 2")
        if self.relative_attention_max_distance <= 1:
            bad("relative_attention_max_distance", "an integer > 1")
        if self.num_experts < 0 or self.num_experts == 1:
            bad("num_experts", "0 (dense) or >= 2")
        if self.moe_every < 1:
            bad("moe_every", "an integer >= 1")
        if self.expert_capacity is not None and self.expert_capacity < 1:
            bad("expert_capacity", "a positive integer or null")
        if not self.capacity_factor > 0:
            bad("capacity_factor", "a positive float")
        if self.share_layers:
            bad("share_layers", "False for encoder-decoder models")
        if self.decoder_start_token_id is not None and not 0 <= self.decoder_start_token_id < self.vocab_size:
            bad("decoder_start_token_id", f"null or a token id in [0, vocab_size={self.vocab_size})")

    @property
    def is_encoder_decoder(self) -> bool:
        return True

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    def is_sparse(self, layer: int) -> bool:
        """Whether layer ``layer`` of a stack has a Switch feed-forward."""
        from plmkit.models.moe import sparse_layer

        return self.num_experts > 0 and sparse_layer(layer, self.moe_every)


# ---------------------------------------------------------------------------- layers
class ScaledSelfAttention(SelfAttention):
    """The shared ``SelfAttention`` (fused q|k|v, SDPA, KV cache, additive bias) with a configurable
    score scale (``config.attention_scale``; T5 uses 1.0)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.scale = getattr(config, "attention_scale", None)

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        B, T, _ = x.shape
        q, k, v = linear(x, self.qkv).split(self.split, dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, Nh, T, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Nkv, T, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if ctx.cache is not None:
            k, v = ctx.cache.update(layer_idx, k, v)  # (B, Nkv, S, D)
        mask = ctx.bias if ctx.bias is not None else ctx.mask  # the stack folds the bool mask into the bias
        if mask is not None and mask.requires_grad and q.device.type == "cpu" and not self.gqa:
            y = self._bias_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=ctx.is_causal and mask is None,
                dropout_p=self.dropout if self.training else 0.0, scale=self.scale, enable_gqa=self.gqa)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)  # (B, T, H)

    def _bias_attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """softmax(q k^T * scale + bias) v, written out. When the additive bias is trained (T5's relative
        positions), SDPA on CPU takes this same math path but adds a fully-masked-row check
        (``_safe_softmax``), a copy of the expanded bias and two scalings by sqrt(scale): ~8 ms of a T5-small
        training step at batch 4. The bias never holds -inf here (masked keys get the dtype's minimum),
        so no row can be all -inf."""
        scores = torch.matmul(q, k.transpose(-1, -2))  # (B, Nh, T, S)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        if scale != 1.0:
            scores = scores * scale
        probs = dropout(torch.softmax(scores + bias, dim=-1), self.dropout, self.training)
        return torch.matmul(probs, v)  # (B, Nh, T, D)


class CrossAttention(nn.Module):
    """Decoder -> encoder attention: ``q`` Linear(H, Nh D), fused ``kv`` Linear(H, 2 Nkv D), ``o``.

    Reads ``ctx.encoder_states`` (B, S, H) and ``ctx.encoder_mask`` (B, 1, 1, S) bool or None. With
    ``ctx.cross_cache`` (a list per layer) the encoder keys/values are computed once and reused.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.kv_heads, config.dim_per_head
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q = nn.Linear(config.hidden_size, q_dim, bias=config.attention_bias)
        self.kv = nn.Linear(config.hidden_size, 2 * kv_dim, bias=config.attention_bias)
        self.o = nn.Linear(q_dim, config.hidden_size, bias=config.attention_bias)
        self.dropout = config.attention_dropout
        self.scale = getattr(config, "attention_scale", None)
        self.gqa = self.num_kv_heads != self.num_heads

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        B, T, _ = x.shape
        q = linear(x, self.q).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, Nh, T, D)
        cache = getattr(ctx, "cross_cache", None)
        if cache is not None and cache[layer_idx] is not None:
            k, v = cache[layer_idx]
        else:
            enc = ctx.encoder_states  # (B, S, H)
            k, v = linear(enc, self.kv).view(B, enc.shape[1], 2, self.num_kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if cache is not None:
                cache[layer_idx] = (k, v)  # (B, Nkv, S, D) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.encoder_mask,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           scale=self.scale, enable_gqa=self.gqa)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)


class GatedMLP(MLP):
    """Gated feed-forward down(act(gate(x)) * up(x)) for any activation (T5.1.1: gelu_new)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if not hasattr(self, "gate"):
            self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.gated = True
        self.gate_activation = "silu" if config.activation == "swiglu" else config.activation

    def forward(self, x: Tensor) -> Tensor:
        return linear(linear(x, self.gate, self.gate_activation) * linear(x, self.up), self.down)


ATTENTION_TYPES.setdefault("cross", CrossAttention)
ATTENTION_TYPES.setdefault("seq2seq_self", ScaledSelfAttention)
MLP_TYPES.setdefault("gated", GatedMLP)


# ---------------------------------------------------------------------------- relative positions
def relative_position_bucket(relative_position: Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Tensor:
    """T5 bucket of each ``key_pos - query_pos``: exact buckets for small distances, log-spaced up to
    ``max_distance``; bidirectional uses half of the buckets per direction (Raffel et al. 2020)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(torch.long) * num_buckets
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class RelativePositionBias(nn.Embedding):
    """(num_buckets, Nh) table; ``forward(T, S, past)`` -> (1, Nh, T, S) additive score bias."""

    def __init__(self, config: Seq2SeqConfig, bidirectional: bool) -> None:
        super().__init__(config.relative_attention_num_buckets, config.num_heads)
        self.bidirectional = bidirectional
        self.max_distance = config.relative_attention_max_distance

    def forward(self, T: int, S: int, past: int = 0) -> Tensor:  # type: ignore[override]
        dev = self.weight.device
        rel = torch.arange(S, device=dev)[None, :] - torch.arange(past, past + T, device=dev)[:, None]  # (T, S)
        b = relative_position_bucket(rel, self.bidirectional, self.num_embeddings, self.max_distance)
        return super().forward(b).permute(2, 0, 1).unsqueeze(0)  # (1, Nh, T, S)


# ---------------------------------------------------------------------------- outputs
@dataclass
class Seq2SeqOutput:
    """What ``EncoderDecoder.forward`` returns."""

    last_hidden_state: Tensor  # (B, T, H) decoder output (after the final norm)
    logits: Tensor | None = None  # (B, T, V) or (N, V) with labels_mask
    encoder_last_hidden_state: Tensor | None = None  # (B, S, H)
    past_key_values: Any = None  # Seq2SeqCache when use_cache
    hidden_states: tuple[Tensor, ...] | None = None  # decoder: embeddings + every layer
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    aux_loss: Tensor | None = None  # Switch load-balancing loss (mean over sparse layers)
    z_loss: Tensor | None = None  # Switch router z-loss (mean over sparse layers)
    expert_counts: Tensor | None = None  # (num_sparse_layers, E) tokens routed per expert (kept)
    pooled: Tensor | None = None


# ---------------------------------------------------------------------------- stacks
def _layer_config(config: Seq2SeqConfig, causal: bool) -> Seq2SeqConfig:
    extra = dict(config.extra)
    extra["attention"] = "seq2seq_self"
    extra.setdefault("cross_attention", "cross")
    if config.gated_mlp:
        extra["mlp"] = "gated"
    return config.replace(causal=causal, extra=extra)


class Stack(nn.Module):
    """Embeddings + Blocks (+ final norm) of the encoder or the decoder."""

    def __init__(self, config: Seq2SeqConfig, decoder: bool, word: nn.Embedding) -> None:
        super().__init__()
        from plmkit.models.moe import SwitchFFN

        self.config, self.is_decoder = config, decoder
        lc = _layer_config(config, causal=decoder)
        self.embeddings = Embeddings(lc)
        self.embeddings.word = word  # one table for encoder, decoder (and a tied head)
        n = config.decoder_layers if decoder else config.num_layers
        self.layers = nn.ModuleList(Block(lc, cross_attention=decoder) for _ in range(n))
        for i, layer in enumerate(self.layers):
            if config.is_sparse(i):
                layer.mlp = SwitchFFN(lc)
        if config.relative_attention_num_buckets:
            self.relative_bias = RelativePositionBias(config, bidirectional=not decoder)
        if config.norm_position == "pre":
            self.final_norm = make_norm(config, config.hidden_size)
            self.final_dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, cache: Seq2SeqCache | None = None,
                encoder_states: Tensor | None = None, encoder_mask: Tensor | None = None,
                output_hidden_states: bool = False, inputs_embeds: Tensor | None = None,
                position_ids: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        ref = input_ids if input_ids is not None else inputs_embeds
        B, T = ref.shape[:2]
        dev = ref.device
        self_cache = cache.self_cache if cache is not None else None
        past = len(self_cache) if self_cache is not None else 0
        S = past + T
        cfg = self.config
        if position_ids is None:
            pos = torch.arange(past + cfg.position_offset, S + cfg.position_offset, device=dev)[None]  # (1, T)
        else:
            if position_ids.shape[-1] != T or position_ids.dim() != 2:
                raise UserError(f"position ids shape {tuple(position_ids.shape)}: expected ({B}, {T})")
            pos = position_ids + cfg.position_offset
            if cfg.position == "learned" and pos.numel() and int(pos.max()) >= cfg.max_position_embeddings:
                raise UserError(f"position id {int(position_ids.max())} exceeds the position table "
                                f"(max {cfg.max_position_embeddings - cfg.position_offset - 1})")
        x = self.embeddings(input_ids, pos, None, inputs_embeds)  # (B, T, H)

        # bool "may attend" key mask (B, S) or None; a decoder cache remembers padded keys
        key_mask = None
        if attention_mask is not None:
            am = attention_mask.to(torch.bool)
            if am.shape[1] not in (T, S):
                raise UserError(f"attention_mask shape {tuple(am.shape)}: expected ({B}, {T})"
                                + (f" or ({B}, {S})" if past else ""))
            if self_cache is not None:
                if not bool(am.all()) or self_cache.key_mask is not None:
                    key_mask = self_cache.set_key_mask(am, 0 if am.shape[1] == S else past)
            elif not bool(am.all()):
                key_mask = am
        elif self_cache is not None and self_cache.key_mask is not None:
            key_mask = self_cache.set_key_mask(torch.ones(B, T, dtype=torch.bool, device=dev), past)
        mask = key_mask[:, None, None, :] if key_mask is not None else None  # (B, 1, 1, S)
        causal_fast = False
        if self.is_decoder and T > 1:
            tri = (torch.arange(S, device=dev)[None, :] <= torch.arange(past, S, device=dev)[:, None])[None, None]
            if mask is None and past == 0 and not hasattr(self, "relative_bias"):
                causal_fast = True
            else:
                mask = tri if mask is None else mask & tri
        bias = None
        if hasattr(self, "relative_bias"):
            bias = self._position_bias(T, S, past, cache).to(x.dtype)  # (1, Nh, T, S)
            if mask is not None:
                bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)
        elif mask is not None and mask.shape[-2] > 1:
            mask = mask | ~mask.any(dim=-1, keepdim=True)  # fully masked rows would give NaN
        ctx = AttentionContext(mask=mask, is_causal=causal_fast, cache=self_cache, bias=bias,
                               encoder_states=encoder_states, encoder_mask=encoder_mask)
        ctx.cross_cache = cache.cross if cache is not None else None  # type: ignore[attr-defined]

        hidden = [x] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            x = layer(x, ctx, i)
            if hidden is not None:
                hidden.append(x)
        if hasattr(self, "final_norm"):
            x = self.final_dropout(self.final_norm(x))
            if hidden is not None:
                hidden[-1] = x
        if self_cache is not None:
            self_cache.advance(T)
        return x, (tuple(hidden) if hidden is not None else None)

    def _position_bias(self, T: int, S: int, past: int, cache: Seq2SeqCache | None) -> Tensor:
        """The relative bias (1, Nh, T, S) of queries past..past+T-1 over keys 0..S-1. Decoding without
        autograd slices it from one (1, Nh, n, n) table kept in the cache (built on the first step, as
        HF keeps its position bias) instead of rebuilding the buckets every step."""
        if cache is None or torch.is_grad_enabled():
            return self.relative_bias(T, S, past)
        table = cache.position_bias
        if table is None or table.shape[-1] < S or table.device != self.relative_bias.weight.device:
            n = max(S, cache.self_cache.capacity)
            table = cache.position_bias = self.relative_bias(n, n, 0)
        return table[:, :, past:past + T, :S]


class LMHead(nn.Module):
    """``decoder`` Linear(H, V) without bias (tied to the shared embeddings unless configured)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return linear(hidden, self.decoder)


# ---------------------------------------------------------------------------- model
class EncoderDecoder(PretrainedModel):
    """Encoder-decoder Transformer (see module docstring). ``forward`` follows the ``Transformer``
    contract plus ``decoder_input_ids`` / ``decoder_attention_mask`` / ``encoder_outputs``."""

    def auxiliary_losses(self) -> dict[str, tuple[Tensor, float]]:
        """Switch router losses of the last forward with their coefficients (empty for dense models);
        the Trainer adds ``coef * loss`` to the objective's loss."""
        from plmkit.models.moe import auxiliary_losses

        return auxiliary_losses(self)

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise ConfigError(f"EncoderDecoder needs a Seq2SeqConfig, got {type(config).__name__}")
        self.config = config
        pad = config.pad_token_id if config.family in ("bart", "mass") else None
        self.shared = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=pad)
        self.encoder = Stack(config, decoder=False, word=self.shared)
        self.decoder = Stack(config, decoder=True, word=self.shared)
        self.head = LMHead(config) if config.head is not None else None
        if config.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(config.vocab_size))
        self.init_heads()
        self.init_weights()
        self.tie_weights()

    # ------------------------------------------------------------------ construction helpers
    def init_weights(self, module: nn.Module | None = None) -> None:
        """N(0, initializer_range) for Linear / Embedding weights, zero biases, unit norms; a whole T5 or
        Switch model then gets Mesh TensorFlow's per-shape scales (:meth:`_t5_init`). New heads added
        later (``module`` given) keep N(0, initializer_range)."""
        self._normal_init(self if module is None else module)
        if module is None and self.config.family in ("t5", "switch"):
            self._t5_init()

    def _t5_init(self) -> None:
        """T5's initialisation, as transformers' T5 / SwitchTransformers ``_init_weights`` (factor 1):
        embeddings and an untied LM head N(0, 1); attention q N(0, (H d_kv)^-1/2), k and v N(0, H^-1/2),
        o N(0, (Nh d_kv)^-1/2); feed-forward in (and gate) N(0, H^-1/2), out N(0, d_ff^-1/2) (experts' out
        N(0, H^-1/2) as transformers has it); router N(0, 1); relative position biases N(0, H^-1/2).

        T5 scores attention without 1/sqrt(d) and scales the tied output by H^-1/2, so with BERT's N(0, 0.02)
        everywhere its attention starts uniform and its logits near zero: a 2-layer T5 trained from that
        init never learns a keyword-to-label toy task (loss stuck at the label entropy after 80 epochs,
        in plmkit and in transformers alike on the same weights), while from this init it learns it in 5."""
        from plmkit.models.moe import SwitchFFN

        cfg = self.config
        H, d_kv, d_ff = cfg.hidden_size, cfg.dim_per_head, cfg.intermediate_size
        q_dim = cfg.num_heads * d_kv
        experts = {id(e) for s in self.modules() if isinstance(s, SwitchFFN) for e in s.experts}
        with torch.no_grad():
            self.shared.weight.normal_(0.0, 1.0)
            if self.head is not None and not cfg.tie_word_embeddings:
                self.head.decoder.weight.normal_(0.0, 1.0)
            for m in self.modules():
                if isinstance(m, ScaledSelfAttention):
                    w = m.qkv.weight  # rows: q | k | v
                    w[:q_dim].normal_(0.0, (H * d_kv) ** -0.5)
                    w[q_dim:].normal_(0.0, H ** -0.5)
                    m.o.weight.normal_(0.0, q_dim ** -0.5)
                elif isinstance(m, CrossAttention):
                    m.q.weight.normal_(0.0, (H * d_kv) ** -0.5)
                    m.kv.weight.normal_(0.0, H ** -0.5)
                    m.o.weight.normal_(0.0, q_dim ** -0.5)
                elif isinstance(m, RelativePositionBias):
                    m.weight.normal_(0.0, H ** -0.5)
                elif isinstance(m, SwitchFFN):
                    m.router.weight.normal_(0.0, 1.0)
                elif isinstance(m, MLP):
                    for name in ("up", "gate"):
                        if hasattr(m, name):
                            getattr(m, name).weight.normal_(0.0, H ** -0.5)
                    m.down.weight.normal_(0.0, (H if id(m) in experts else d_ff) ** -0.5)

    def _normal_init(self, root: nn.Module) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            for m in root.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    m.weight.normal_(0.0, std)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        m.bias.zero_()
                    if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                        m.weight[m.padding_idx].zero_()
                elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                    if m.weight is not None:
                        m.weight.fill_(1.0)
                    if getattr(m, "bias", None) is not None:
                        m.bias.zero_()

    def tie_weights(self) -> None:
        if self.head is not None and self.config.tie_word_embeddings:
            self.head.decoder.weight = self.shared.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def get_encoder(self) -> Stack:
        return self.encoder

    @property
    def num_layers(self) -> int:
        """Encoder + decoder layers."""
        return self.config.num_layers + self.config.decoder_layers

    def embedding_parameters(self):
        return (list(self.shared.parameters()) + list(self.encoder.embeddings.parameters())
                + list(self.decoder.embeddings.parameters()))

    def layer_modules(self) -> list[nn.Module]:
        """Encoder layers, then decoder layers."""
        return list(self.encoder.layers) + list(self.decoder.layers)

    def shift_right(self, labels: Tensor) -> Tensor:
        """Teacher-forcing decoder inputs: [start, labels[:-1]] with -100 replaced by pad."""
        cfg = self.config
        if cfg.decoder_start_token_id is None:
            raise UserError(f"{cfg.family} config has no decoder_start_token_id")
        out = labels.new_empty(labels.shape)
        out[:, 0] = cfg.decoder_start_token_id
        out[:, 1:] = labels[:, :-1]
        return out.masked_fill(out == -100, cfg.pad_token_id if cfg.pad_token_id is not None else 0)

    # ------------------------------------------------------------------ forward
    def _check_ids(self, ids: Tensor | None, name: str, limit: int | None) -> None:
        if ids is None:
            return
        if ids.dim() != 2 or ids.is_floating_point():
            raise UserError(f"{name} must be an integer (batch, seq_len) tensor, got shape {tuple(ids.shape)} "
                            f"dtype {ids.dtype}")
        if ids.numel():
            lo, hi = torch.aminmax(ids)
            if int(hi) >= self.config.vocab_size or int(lo) < 0:
                bad = int(hi) if int(hi) >= self.config.vocab_size else int(lo)
                raise UserError(f"{name}: token id {bad} is outside the vocabulary: expected 0 <= id < "
                                f"vocab_size={self.config.vocab_size}")
        if limit is not None and ids.shape[1] > limit:
            raise UserError(f"{name}: sequence length {ids.shape[1]} exceeds the position table "
                            f"(max {limit})")

    def _limit(self) -> int | None:
        cfg = self.config
        return cfg.max_position_embeddings - cfg.position_offset if cfg.position == "learned" else None

    def _check_mask(self, mask: Tensor | None, ids: Tensor | None, name: str) -> None:
        if mask is not None and ids is not None and (mask.dim() != 2 or mask.shape[0] != ids.shape[0]):
            raise UserError(f"{name} must be (batch, seq_len) matching the ids {tuple(ids.shape)}, "
                            f"got {tuple(mask.shape)}")

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None,
               output_hidden_states: bool = False, inputs_embeds: Tensor | None = None,
               _tied: TiedGrad | None = None) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """Encoder output (B, S, H) (+ per-layer states when asked)."""
        self._check_ids(input_ids, "input_ids", self._limit())
        self._check_mask(attention_mask, input_ids, "attention_mask")
        if attention_mask is not None and input_ids is not None and attention_mask.shape != input_ids.shape:
            raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                            f"{tuple(input_ids.shape)}")
        if _tied is not None and inputs_embeds is None and input_ids is not None:
            inputs_embeds = self._tied_lookup(input_ids, _tied)
        return self.encoder(input_ids, attention_mask, output_hidden_states=output_hidden_states,
                            inputs_embeds=inputs_embeds)

    def _tied_state(self) -> TiedGrad | None:
        """A fresh ``TiedGrad`` when this forward's head and word lookups go through ``TiedHead`` /
        ``TiedLookup``: the head is the plain bias-free Linear tied to the word table, neither it nor the
        table carries hooks or options, both stacks read that table, the table is trained, on CPU, without
        autocast and not under ``torch.compile``; None otherwise (the modules run as usual)."""
        w, emb, head = self.shared.weight, self.shared, self.head
        if (head is None or type(head) is not LMHead or type(head.decoder) is not nn.Linear
                or head.decoder.weight is not w or head.decoder.bias is not None
                or not (torch.is_grad_enabled() and w.requires_grad) or w.device.type != "cpu"
                or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()
                or type(emb) is not nn.Embedding or emb.max_norm is not None or emb.scale_grad_by_freq
                or emb.sparse or self.encoder.embeddings.word is not emb or self.decoder.embeddings.word is not emb
                or any(m._forward_hooks or m._forward_pre_hooks for m in (emb, head, head.decoder))):
            return None
        return TiedGrad()

    def _tied_lookup(self, ids: Tensor, state: TiedGrad) -> Tensor:
        return TiedLookup.apply(self.shared.weight, ids, self.shared.padding_idx, state)

    @staticmethod
    def encoder_key_mask(attention_mask: Tensor | None) -> Tensor | None:
        """(B, S) 0/1 mask -> (B, 1, 1, S) bool for cross-attention (None when nothing is padded)."""
        if attention_mask is None:
            return None
        am = attention_mask.to(torch.bool)
        return None if bool(am.all()) else am[:, None, None, :]

    def head_logits(self, hidden: Tensor, _tied: TiedGrad | None = None) -> Tensor:
        """LM head on any (..., H) decoder hidden tensor (T5's output scaling and BART's bias included)."""
        if self.head is None:
            raise UserError(f"model family {self.config.family!r} has no LM head (config.head=None)")
        if self.config.scale_decoder_outputs:
            hidden = hidden * (self.config.hidden_size ** -0.5)
        if _tied is not None:
            logits = TiedHead.apply(hidden, self.shared.weight, _tied)
        else:
            logits = self.head(hidden)
        if self.config.final_logits_bias:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        return logits

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        encoder_outputs: Tensor | None = None,
        labels_mask: Tensor | None = None,
        output_hidden_states: bool = False,
        past_key_values: Seq2SeqCache | None = None,
        use_cache: bool = False,
        inputs_embeds: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        decoder_position_ids: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Encode ``input_ids`` (unless ``encoder_outputs`` (B, S, H) is given) and decode
        ``decoder_input_ids`` (B, T). With ``past_key_values`` only the new decoder tokens are passed.
        ``decoder_position_ids`` (B, T) (MASS: the target's positions in the source) replace
        0..T-1 for learned position tables."""
        if token_type_ids is not None or position_ids is not None:
            raise UserError(f"{self.config.family} encoder-decoder models take no token_type_ids / position_ids")
        if decoder_input_ids is None:
            raise UserError("encoder-decoder models need decoder_input_ids (B, T); build them from labels with "
                            "model.shift_right(labels)")
        from plmkit.models.moe import collect_router_stats, reset_router_stats

        reset_router_stats(self)
        tied = self._tied_state()
        enc_hidden = None
        if encoder_outputs is None:
            if input_ids is None and inputs_embeds is None:
                raise UserError("pass input_ids (or inputs_embeds, or encoder_outputs) for the encoder")
            encoder_outputs, enc_hidden = self.encode(input_ids, attention_mask, output_hidden_states,
                                                      inputs_embeds, _tied=tied)
        elif encoder_outputs.dim() != 3 or encoder_outputs.shape[-1] != self.config.hidden_size:
            raise UserError(f"encoder_outputs must be (batch, src_len, {self.config.hidden_size}), got "
                            f"{tuple(encoder_outputs.shape)}")
        self._check_ids(decoder_input_ids, "decoder_input_ids", None)
        self._check_mask(decoder_attention_mask, decoder_input_ids, "decoder_attention_mask")
        cache = past_key_values
        B, T = decoder_input_ids.shape
        if cache is None and use_cache:
            cache = Seq2SeqCache(self.config, B, T, decoder_input_ids.device)
        limit = self._limit()
        if limit is not None and (len(cache) if cache is not None else 0) + T > limit:
            raise UserError(f"decoder length {(len(cache) if cache is not None else 0) + T} exceeds the position "
                            f"table (max {limit})")
        dec_embeds = self._tied_lookup(decoder_input_ids, tied) if tied is not None else None
        hidden, dec_hidden = self.decoder(decoder_input_ids, decoder_attention_mask, cache, encoder_outputs,
                                          self.encoder_key_mask(attention_mask), output_hidden_states,
                                          inputs_embeds=dec_embeds, position_ids=decoder_position_ids)
        logits = None
        if self.head is not None:
            if labels_mask is not None:
                if labels_mask.shape != hidden.shape[:2]:
                    raise UserError(f"labels_mask shape {tuple(labels_mask.shape)} != decoder input shape "
                                    f"{tuple(hidden.shape[:2])}")
                logits = self.head_logits(hidden[labels_mask.to(torch.bool)], tied)
            else:
                logits = self.head_logits(hidden, tied)
        aux, z, counts = collect_router_stats(self)
        return Seq2SeqOutput(hidden, logits, encoder_outputs, cache, dec_hidden, enc_hidden, aux, z, counts)
