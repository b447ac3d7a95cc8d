"""``Transformer``: the one backbone for every encoder and decoder family in plmkit.

Topology (fields of ``ModelConfig`` in brackets)::

    input_ids ─► embeddings: word (+ position [learned|sinusoidal]) (+ token_type) ─► norm? ─► dropout
                 ─► project E->H? [embedding_size]
              ─► layers[0..L-1]  (one shared layers.0 when [share_layers])
                   Block: SelfAttention (fused qkv, SDPA, MHA/GQA, rotary?) + MLP, pre/post-LN
              ─► final_norm (pre-LN only)                      = last_hidden_state (B, T, H)
              ─► head: "mlm" transform+decoder | "lm" decoder  = logits (B, T, V) or (N, V)
              ─► pooler (tanh over token 0)                    = pooled (B, H)
              heads: ModuleDict of objective / task heads (``add_head``, ``PretrainedModel``)

The model never computes a loss. With ``labels_mask`` the head runs only on the selected rows.
``past_key_values`` is a ``plmkit.models.cache.KVCache`` updated in place.

References: Vaswani et al. 2017; Devlin et al. 2019 (BERT); Radford et al. 2018/2019 (GPT, GPT-2);
Liu et al. 2019 (RoBERTa); Lan et al. 2020 (ALBERT); Clark et al. 2020 (ELECTRA);
Touvron et al. 2023 (LLaMA). Code layout after nanoGPT / litgpt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.base import PretrainedModel
from plmkit.models.cache import KVCache
from plmkit.models.config import ModelConfig
from plmkit.models.heads import build_head, Pooler
from plmkit.models.layers import AttentionContext, Block, Embeddings, RotaryEmbedding, make_norm
from plmkit.models.star import StarAttention


EXTRA_ATTENTIONS = (StarAttention,)
"""Attention classes registered in ``layers.ATTENTION_TYPES`` by the modules imported here
(``config.extra["attention"]``: "star")."""


@dataclass
class TransformerOutput:
    """What ``Transformer.forward`` returns (see docs/CONTRACTS.md "Models")."""

    last_hidden_state: Tensor
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    pooled: Tensor | None = None
    past_key_values: Any = None
    attentions: tuple[Tensor, ...] | None = None
    """with ``output_attentions``: one (B, Nh, T, S) probability tensor per layer (explicit softmax, not SDPA)"""


class Transformer(PretrainedModel):
    """Encoder or decoder Transformer configured by a ``ModelConfig`` (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layer_modules))
        if config.norm_position == "pre":
            self.final_norm = make_norm(config, config.hidden_size)
        if config.position == "rotary":
            self.rotary = RotaryEmbedding(config.dim_per_head, config.rope_theta)
        if config.pooler:
            self.pooler = Pooler(config)
        self.head = build_head(config)
        self.init_heads()
        self.init_weights()
        self.tie_weights()

    # ------------------------------------------------------------------ construction helpers
    def init_weights(self, module: nn.Module | None = None) -> None:
        """HF-style init: Linear/Embedding ~ N(0, initializer_range), biases 0, norms 1/0.

        GPT-2 additionally scales the residual output projections by 1/sqrt(2 L) (Radford et al. 2019).
        """
        std = self.config.initializer_range
        root = self if module is None else module
        with torch.no_grad():
            for m in root.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, std)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.Embedding):
                    m.weight.normal_(0.0, std)
                    if m.padding_idx is not None:
                        m.weight[m.padding_idx].zero_()
                elif isinstance(m, nn.LayerNorm):
                    if m.weight is not None:
                        m.weight.fill_(1.0)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.RMSNorm) and m.weight is not None:
                    m.weight.fill_(1.0)
            if module is None and self.config.family == "gpt2":
                scaled = std / math.sqrt(2 * self.config.num_layers)
                for layer in self.layers:
                    layer.attn.o.weight.normal_(0.0, scaled)
                    layer.mlp.down.weight.normal_(0.0, scaled)

    def tie_weights(self) -> None:
        """Share ``head.decoder.weight`` with ``embeddings.word.weight`` when configured."""
        if self.head is not None and self.config.tie_word_embeddings:
            self.head.decoder.weight = self.embeddings.word.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        """Replace the token embeddings (e.g. share them between ELECTRA's generator and
        discriminator) and re-tie the head."""
        if embedding.weight.shape != self.embeddings.word.weight.shape:
            raise ValueError(f"embedding shape {tuple(embedding.weight.shape)} != "
                             f"{tuple(self.embeddings.word.weight.shape)}")
        self.embeddings.word = embedding
        self.tie_weights()

    def resize_token_embeddings(self, vocab_size: int) -> None:
        """Grow or shrink the vocabulary (new rows initialised like the rest)."""
        old = self.embeddings.word
        new = nn.Embedding(vocab_size, old.embedding_dim, padding_idx=old.padding_idx
                           if old.padding_idx is not None and old.padding_idx < vocab_size else None)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        self.init_weights(new)
        n = min(vocab_size, old.num_embeddings)
        with torch.no_grad():
            new.weight[:n] = old.weight[:n]
        self.embeddings.word = new
        if self.head is not None:
            dec = self.head.decoder
            nd = nn.Linear(dec.in_features, vocab_size, bias=dec.bias is not None)
            nd.to(device=dec.weight.device, dtype=dec.weight.dtype)
            self.init_weights(nd)
            with torch.no_grad():
                nd.weight[:n] = dec.weight[:n]
                if dec.bias is not None:
                    nd.bias[:n] = dec.bias[:n]
            self.head.decoder = nd
        self.config = self.config.replace(vocab_size=vocab_size)
        self.tie_weights()

    @property
    def num_layers(self) -> int:
        """Number of layer applications (``config.num_layers``)."""
        return self.config.num_layers

    def embedding_parameters(self):
        return self.embeddings.parameters()

    def layer_modules(self) -> list[nn.Module]:
        """The distinct layer modules (one with ALBERT's sharing)."""
        return list(self.layers)

    # ------------------------------------------------------------------ forward
    def head_logits(self, hidden: Tensor) -> Tensor:
        """Apply the LM/MLM head (incl. the MLM transform) to any (..., H) hidden tensor."""
        if self.head is None:
            raise UserError(f"model family {self.config.family!r} has no LM/MLM head (config.head=None)")
        return self.head(hidden)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels_mask: Tensor | None = None,
        output_hidden_states: bool = False,
        past_key_values: Any = None,
        use_cache: bool = False,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool = False,
    ) -> TransformerOutput:
        """Run the backbone (and head). Shapes and semantics: docs/CONTRACTS.md "Models".

        ``inputs_embeds`` (B, T, E) replaces the token-embedding lookup (prompt tuning, attribution).
        ``output_attentions``: also return every layer's attention probabilities (``out.attentions``),
        computed by an explicit softmax in place of SDPA (slower; same outputs).
        """
        self.check_inputs(input_ids, inputs_embeds, token_type_ids, past_key_values)
        attentions: list | None = [] if output_attentions else None
        hidden, all_hidden, cache = self.backbone(
            input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
            past_key_values, use_cache, inputs_embeds, **({"attentions": attentions} if output_attentions else {}))
        if attentions is not None and len(attentions) != self.config.num_layers:
            raise UserError(f"output_attentions: the {self.config.family!r} model's attention "
                            f"({', '.join(sorted({type(b.attn).__name__ for b in self.layers}))}) does not return attention probabilities; "
                            "only the standard self-attention does")
        logits = None
        if self.head is not None:
            if labels_mask is not None:
                if labels_mask.shape != hidden.shape[:2]:
                    raise UserError(f"labels_mask shape {tuple(labels_mask.shape)} != input shape "
                                    f"{tuple(hidden.shape[:2])}")
                logits = self.head(hidden[labels_mask.to(torch.bool)])  # (N, V)
            else:
                logits = self.head(hidden)  # (B, T, V)
        pooled = self.pooler(hidden) if hasattr(self, "pooler") else None
        return TransformerOutput(hidden, logits, all_hidden, pooled, cache,
                                 tuple(attentions) if attentions is not None else None)

    def check_inputs(self, input_ids: Tensor | None, inputs_embeds: Tensor | None = None,
                     token_type_ids: Tensor | None = None, cache: Any = None) -> None:
        """Raise ``UserError`` for out-of-vocabulary ids, bad shapes or too-long sequences."""
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise UserError("pass exactly one of input_ids (B, T) and inputs_embeds (B, T, E)")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise UserError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            if input_ids.is_floating_point():
                raise UserError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
            if input_ids.numel():
                lo, hi = torch.aminmax(input_ids)
                if int(hi) >= cfg.vocab_size or int(lo) < 0:
                    bad = int(hi) if int(hi) >= cfg.vocab_size else int(lo)
                    raise UserError(f"token id {bad} is outside the vocabulary: expected 0 <= id < "
                                    f"vocab_size={cfg.vocab_size}")
            T = input_ids.shape[1]
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != cfg.embed_dim:
                raise UserError(f"inputs_embeds must be (batch, seq_len, {cfg.embed_dim}), got "
                                f"{tuple(inputs_embeds.shape)}")
            T = inputs_embeds.shape[1]
        if token_type_ids is not None and token_type_ids.numel():
            if cfg.type_vocab_size == 0:
                raise UserError(f"token_type_ids given but the {cfg.family!r} model has no token-type "
                                "embeddings (type_vocab_size=0)")
            lo, hi = torch.aminmax(token_type_ids)
            if int(hi) >= cfg.type_vocab_size or int(lo) < 0:
                raise UserError(f"token type id {int(hi)} is out of range: expected 0 <= id < "
                                f"type_vocab_size={cfg.type_vocab_size}")
        past = len(cache) if cache is not None else 0
        if cfg.position in ("learned", "sinusoidal"):
            limit = cfg.max_position_embeddings - cfg.position_offset
            if past + T > limit:
                raise UserError(f"sequence length {past + T} exceeds the position table: "
                                f"max_position_embeddings={cfg.max_position_embeddings}"
                                + (f" (minus offset {cfg.position_offset})" if cfg.position_offset else ""))

    def default_position_ids(self, input_ids: Tensor | None, T: int, past: int, device) -> Tensor:
        """Positions past..past+T-1 (+ offset); RoBERTa-style (offset > 0 with a pad id) skips pads."""
        cfg = self.config
        if cfg.position_offset and cfg.pad_token_id is not None and input_ids is not None:
            keep = input_ids.ne(cfg.pad_token_id).to(torch.long)
            return (torch.cumsum(keep, dim=1) + past) * keep + (cfg.position_offset - 1)
        return torch.arange(past + cfg.position_offset, past + cfg.position_offset + T,
                            device=device).unsqueeze(0)  # (1, T)

    def backbone(
        self,
        input_ids: Tensor | None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        output_hidden_states: bool = False,
        past_key_values: Any = None,
        use_cache: bool = False,
        inputs_embeds: Tensor | None = None,
        attention_bias: Tensor | None = None,
        attentions: list | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, Any]:
        """Embeddings + layers + final norm without input checks: (hidden, hidden_states, cache).
        ``attentions``: a list each self-attention layer appends its probabilities to."""
        cfg = self.config
        ref = input_ids if input_ids is not None else inputs_embeds
        B, T = ref.shape[0], ref.shape[1]
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(cfg.num_layers, B, cfg.kv_heads, cfg.dim_per_head, T, ref.device)
        past = len(cache) if cache is not None else 0
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, T, past, ref.device)

        x = self.embeddings(input_ids, position_ids, token_type_ids, inputs_embeds)  # (B, T, H)
        mask, is_causal = self._attention_mask(attention_mask, B, T, past, cache, ref.device)
        rotary = self.rotary(position_ids, x.dtype if not torch.is_autocast_enabled("cpu") else
                             torch.get_autocast_dtype("cpu")) if hasattr(self, "rotary") else None
        ctx = AttentionContext(mask=mask, is_causal=is_causal, rotary=rotary, cache=cache, bias=attention_bias,
                               attentions=attentions, inputs=x)

        all_hidden = [x] if output_hidden_states else None
        shared = cfg.share_layers
        for i in range(cfg.num_layers):
            x = self.layers[0 if shared else i](x, ctx, i)
            if all_hidden is not None:
                all_hidden.append(x)
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
            if all_hidden is not None:
                all_hidden[-1] = x  # HF convention: the last entry is the normed output
        if cache is not None:
            cache.advance(T)
        return x, (tuple(all_hidden) if all_hidden is not None else None), cache

    def _attention_mask(self, attention_mask: Tensor | None, B: int, T: int, past: int, cache: Any,
                        device) -> tuple[Tensor | None, bool]:
        """Combine padding / custom masks with causality into one bool (B|1, 1, T, S) mask.

        Returns (None, True) when SDPA's own causal mask suffices and (None, False) when nothing
        is masked, so the common unpadded case takes the fastest kernels.
        """
        causal, S = self.config.causal, past + T
        key_mask = None  # (B, S) bool
        custom = None  # (B|1, 1, T, S) bool
        if attention_mask is not None and attention_mask.dim() == 2:
            if attention_mask.shape[0] != B or attention_mask.shape[1] not in (T, S):
                raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} does not match the "
                                f"input: expected ({B}, {T})" + (f" or ({B}, {S})" if past else ""))
            am = attention_mask.to(torch.bool)
            padded = not bool(am.all())
            if cache is not None:
                if padded or cache.key_mask is not None:
                    start = 0 if am.shape[1] == S else past
                    key_mask = cache.set_key_mask(am, start)
            elif padded:
                key_mask = am
        elif attention_mask is not None:
            am = attention_mask.to(torch.bool)
            if am.dim() == 3:
                am = am[:, None]
            if am.dim() != 4 or am.shape[-2:] != (T, S) or am.shape[1] != 1 or am.shape[0] not in (1, B):
                raise UserError(f"attention_mask shape {tuple(attention_mask.shape)}: expected (B, T), "
                                f"({B}, {T}, {S}) or ({B}, 1, {T}, {S})")
            custom = am
        elif cache is not None and cache.key_mask is not None:
            key_mask = cache.set_key_mask(torch.ones(B, T, dtype=torch.bool, device=device), past)

        if key_mask is None and custom is None:
            if not causal or T == 1:
                return None, False
            if past == 0:
                return None, True
        mask = custom if custom is not None else (
            key_mask[:, None, None, :] if key_mask is not None else None)  # (B, 1, 1, S)
        if causal and T > 1:
            q = torch.arange(past, S, device=device)[:, None]
            k = torch.arange(S, device=device)[None, :]
            tri = (k <= q)[None, None]  # (1, 1, T, S)
            mask = tri if mask is None else mask & tri
        if mask.shape[-2] == T and T > 1:
            # Rows that may attend to nothing (left-padding queries) would give NaN; let them attend
            # everywhere instead. Their outputs are padding and never used.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        return mask, False
