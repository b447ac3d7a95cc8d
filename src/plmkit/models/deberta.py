"""DeBERTa v1 / v2 (v3 shape): disentangled attention and the enhanced mask decoder, on the
shared ``Transformer`` (embeddings, post-LN ``Block``, MLM head, pooler).

Attention score of query i and key j (He et al. 2021, eq. 4), per head, with relative distance
delta(i, j) = bucket(i - j) in [0, 2A):

    s_ij = [ q_i . k_j  +  q_i . Kr_delta(i,j)  (c2p)  +  k_j . Qr_delta(j,i)  (p2c) ] / sqrt(3 D)

where Kr / Qr project the shared relative-position table ``rel_embeddings`` (2A, H) with separate
``pos_key_proj`` / ``pos_query_proj`` (v1, v2) or with the content key / query projections
(``share_att_key``, v3). v1 uses plain distances clamped to +-A (A = ``max_relative_positions``);
v2/v3 use log buckets (``position_buckets`` > 0): exact for |d| < A/2, logarithmic beyond, and
normalise ``rel_embeddings`` with a LayerNorm (``norm_rel_ebd``). Absolute positions are not added
to the input (``position_biased_input=False``); they enter only in the enhanced mask decoder (EMD):
the last layer is applied ``emd_layers`` (= 2) more times with queries = h^(L-1) + P (absolute
position table ``emd_position``) over keys/values h^(L-1), and the MLM head reads its output.

``DisentangledAttention`` is registered as ``ATTENTION_TYPES["disentangled"]``; the model class
``DeBERTa`` subclasses ``Transformer`` and only replaces ``backbone`` (relative positions in the
attention context) and the MLM path (EMD). transformers has no EMD: imported checkpoints set
``emd_layers=0`` so that logits equal ``DebertaV2ForMaskedLM``'s.

References: He et al. 2021 (DeBERTa, arXiv:2006.03654); He et al. 2023 (DeBERTaV3); microsoft/DeBERTa
``disentangled_attention.py``, ``masked_language_model.py`` (EMD); transformers
``modeling_deberta{,_v2}.py`` (v5) for the numerics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.kernels import Dropout, dropout, linear
from plmkit.models.layers import ATTENTION_TYPES, AttentionContext, SelfAttention
from plmkit.models.transformer import Transformer

POS_ATT_TYPES = ("c2p", "p2c")


@dataclass(kw_only=True)
class DebertaConfig(ModelConfig):
    """``ModelConfig`` + DeBERTa's relative-attention settings (family "deberta" or "deberta-v2")."""

    family: str = "deberta-v2"
    max_relative_positions: int = -1
    """A: distances are clamped to +-A (-1: max_position_embeddings)."""
    position_buckets: int = -1
    """> 0: v2 log buckets, the table has 2 * position_buckets rows."""
    pos_att_type: str = "c2p|p2c"
    """Which disentangled terms are used ("c2p", "p2c", "c2p|p2c")."""
    share_att_key: bool = False
    """v3: project relative embeddings with the content query/key projections."""
    norm_rel_ebd: bool = False
    """v2/v3: LayerNorm on the relative embedding table."""
    emd_layers: int = 0
    """Enhanced mask decoder: extra applications of the last layer for the MLM head (paper: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        kinds = [k for k in self.pos_att_type.split("|") if k]
        if any(k not in POS_ATT_TYPES for k in kinds):
            raise ConfigError(f"DebertaConfig.pos_att_type: expected 'c2p', 'p2c' or 'c2p|p2c', got {self.pos_att_type!r}")
        if self.emd_layers < 0:
            raise ConfigError(f"DebertaConfig.emd_layers: expected >= 0, got {self.emd_layers}")
        if self.embedding_size not in (None, self.hidden_size):
            raise ConfigError("DebertaConfig.embedding_size: factorised DeBERTa embeddings are not supported")

    @property
    def att_span(self) -> int:
        """A: half the number of relative-embedding rows."""
        if self.position_buckets > 0:
            return self.position_buckets
        return self.max_relative_positions if self.max_relative_positions > 0 else self.max_position_embeddings

    @property
    def max_relative(self) -> int:
        return self.max_relative_positions if self.max_relative_positions > 0 else self.max_position_embeddings


def log_bucket_position(rel: Tensor, bucket_size: int, max_position: int) -> Tensor:
    """DeBERTa v2 log buckets: |d| < bucket_size/2 exact, larger distances log-spaced up to max_position."""
    sign = torch.sign(rel)
    mid = bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel.to(log_pos.dtype), log_pos * sign).to(torch.long)


def relative_positions(T: int, S: int, config: DebertaConfig, device) -> Tensor:
    """(T, S) long: query position - key position (log-bucketed in v2)."""
    rel = torch.arange(T, device=device)[:, None] - torch.arange(S, device=device)[None, :]
    if config.position_buckets > 0:
        rel = log_bucket_position(rel, config.position_buckets, config.max_relative)
    return rel


class DisentangledAttention(SelfAttention):
    """Shared fused q|k|v ``SelfAttention`` + content->position / position->content scores.

    Reads ``ctx.rel_embeddings`` (2A, H), ``ctx.relative_pos`` (T, S), and for the EMD
    ``ctx.kv_states`` (B, S, H): keys/values from those states, queries from the input.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if not isinstance(config, DebertaConfig):
            raise ConfigError("disentangled attention needs a DebertaConfig")
        self.kinds = tuple(k for k in config.pos_att_type.split("|") if k)
        self.share = config.share_att_key
        self.span = config.att_span
        qd = self.num_heads * self.head_dim
        if not self.share:
            if "c2p" in self.kinds:
                self.pos_key_proj = nn.Linear(config.hidden_size, qd)
            if "p2c" in self.kinds:
                self.pos_query_proj = nn.Linear(config.hidden_size, qd)
        self.scale = math.sqrt(self.head_dim * (1 + len(self.kinds)))
        self.pos_dropout = Dropout(config.hidden_dropout)
        if self.gqa:
            raise ConfigError("DeBERTa does not use grouped-query attention (num_kv_heads)")

    def _proj(self, x: Tensor, which: int) -> Tensor:
        """Slice of the fused projection: 0 = query, 1 = key, 2 = value."""
        n = self.split[0]
        w = self.qkv.weight[which * n:(which + 1) * n]
        b = self.qkv.bias[which * n:(which + 1) * n] if self.qkv.bias is not None else None
        return F.linear(x, w, b)

    def _heads(self, x: Tensor) -> Tensor:  # (..., L, Nh D) -> (..., Nh, L, D)
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim).transpose(-3, -2)

    def forward(self, x: Tensor, ctx: AttentionContext, layer_idx: int) -> Tensor:
        B, T, _ = x.shape
        kv_states = getattr(ctx, "kv_states", None)
        if kv_states is None:
            q, k, v = linear(x, self.qkv).split(self.split, dim=-1)
        else:
            q, k, v = self._proj(x, 0), self._proj(kv_states, 1), self._proj(kv_states, 2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, Nh, T|S, D)
        S = k.shape[2]
        scores = q @ k.transpose(-1, -2) / self.scale  # (B, Nh, T, S)
        rel = self.pos_dropout(ctx.rel_embeddings[: 2 * self.span])  # (2A, H)
        relative_pos = ctx.relative_pos  # (T, S)
        A = self.span
        if "c2p" in self.kinds:
            pk = self._heads(self._proj(rel, 1) if self.share else self.pos_key_proj(rel))  # (Nh, 2A, D)
            c2p = q @ pk.transpose(-1, -2)  # (B, Nh, T, 2A)
            idx = (relative_pos + A).clamp(0, 2 * A - 1)
            scores = scores + c2p.gather(-1, idx.expand(B, self.num_heads, T, S)) / self.scale
        if "p2c" in self.kinds:
            pq = self._heads(self._proj(rel, 0) if self.share else self.pos_query_proj(rel))  # (Nh, 2A, D)
            p2c = k @ pq.transpose(-1, -2)  # (B, Nh, S, 2A)
            r_kk = relative_pos if T == S else ctx.relative_pos_kk
            idx = (-r_kk + A).clamp(0, 2 * A - 1)  # (S, S)
            scores = scores + p2c.gather(-1, idx.expand(B, self.num_heads, S, S)).transpose(-1, -2) / self.scale
        if ctx.mask is not None:
            scores = scores.masked_fill(~ctx.mask, torch.finfo(scores.dtype).min)
        probs = dropout(scores.softmax(-1), self.dropout, self.training)
        y = probs @ v  # (B, Nh, T, D)
        return linear(y.transpose(1, 2).reshape(B, T, -1), self.o)


ATTENTION_TYPES.setdefault("disentangled", DisentangledAttention)


class DeBERTa(Transformer):
    """DeBERTa encoder (see module docstring). ``forward`` follows the ``Transformer`` contract."""

    def __init__(self, config: DebertaConfig) -> None:
        if not isinstance(config, DebertaConfig):
            raise ConfigError(f"DeBERTa needs a DebertaConfig, got {type(config).__name__}")
        if config.causal or config.share_layers or config.position == "rotary":
            raise ConfigError("DeBERTa is a bidirectional encoder without layer sharing or rotary positions")
        extra = dict(config.extra, attention="disentangled")
        config = config.replace(extra=extra)
        super().__init__(config)
        self.rel_embeddings = nn.Embedding(2 * config.att_span, config.hidden_size)
        if config.norm_rel_ebd:
            self.rel_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.emd_layers:
            self.emd_position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.init_weights()
        self.tie_weights()

    def _rel_table(self) -> Tensor:
        t = self.rel_embeddings.weight
        return self.rel_norm(t) if hasattr(self, "rel_norm") else t

    def backbone(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 output_hidden_states=False, past_key_values=None, use_cache=False, inputs_embeds=None,
                 attention_bias=None):
        if past_key_values is not None or use_cache:
            raise UserError("DeBERTa is an encoder: no KV cache (past_key_values / use_cache)")
        cfg = self.config
        ref = input_ids if input_ids is not None else inputs_embeds
        B, T = ref.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(T, device=ref.device)[None]
        x = self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds)  # (B, T, H)
        mask, _ = self._attention_mask(attention_mask, B, T, 0, None, ref.device)
        if attention_mask is not None and attention_mask.dim() == 2:
            x = x * attention_mask.to(x.dtype)[..., None]  # HF zeroes padded embeddings
        ctx = AttentionContext(mask=mask)
        ctx.rel_embeddings = self._rel_table()  # type: ignore[attr-defined]
        ctx.relative_pos = relative_positions(T, T, cfg, ref.device)  # type: ignore[attr-defined]
        hidden = [x]
        for i in range(cfg.num_layers):
            x = self.layers[i](x, ctx, i)
            hidden.append(x)
        self._emd_inputs = (hidden[-2], ctx, position_ids)
        return x, (tuple(hidden) if output_hidden_states else None), None

    def emd(self, hidden_prev: Tensor, ctx: AttentionContext, position_ids: Tensor) -> Tensor:
        """Enhanced mask decoder: queries h^(L-1) + P through the last layer ``emd_layers`` times."""
        q = hidden_prev + self.emd_position(position_ids)
        ctx.kv_states = hidden_prev  # type: ignore[attr-defined]
        last = self.layers[self.config.num_layers - 1]
        for _ in range(self.config.emd_layers):
            q = last(q, ctx, self.config.num_layers - 1)
        ctx.kv_states = None  # type: ignore[attr-defined]
        return q

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                labels_mask=None, output_hidden_states=False, past_key_values=None, use_cache=False,
                inputs_embeds=None):
        """As ``Transformer.forward``; with ``emd_layers`` the MLM logits come from the EMD."""
        out = super().forward(input_ids, attention_mask, token_type_ids, position_ids, labels_mask,
                              output_hidden_states, past_key_values, use_cache, inputs_embeds)
        if self.config.emd_layers and self.head is not None:
            prev, ctx, pos = self._emd_inputs
            h = self.emd(prev, ctx, pos)
            out.logits = self.head(h[labels_mask.to(torch.bool)] if labels_mask is not None else h)
        self._emd_inputs = None
        return out
