"""SpanBERT (Joshi et al. 2020, arXiv:1907.10529): span masking + the span boundary objective (SBO).

Masking is MLM's ``masking="span"`` (see ``masking.span_units``): span lengths in *words* drawn
from Geometric(``span_p``=0.2) clipped (renormalised) at ``span_max``=10, a random start word,
complete words only (word boundaries from the record's ``word_ids`` or the WordPiece ``##`` /
byte-level ``Ġ`` / SentencePiece ``▁`` marks), until ``rate``=15% of the non-special tokens are
selected; each span is replaced as a whole: 80% [MASK], 10% random tokens, 10% kept.

Span boundary objective: for a masked token at position ``i`` of the span ``[s, e]`` (inclusive
token positions), with encoder outputs ``x``::

    h0 = [x_{s-1}; x_{e+1}; p_{i-s+1}]          p: learned relative-position embeddings (1-based)
    h1 = LayerNorm(GELU(W1 h0 + b1))
    y  = LayerNorm(GELU(W2 h1 + b2))
    logits = decoder(y)                           the MLM head's output layer (tied to the embeddings)

``loss = MLM loss + sbo_weight * SBO loss`` (both mean cross-entropies over the masked tokens),
one forward pass. Single segment, no NSP (the paper's setting). The head is
``model.heads["sbo"]`` (``SpanBoundaryHead``), attached by ``prepare``; any encoder ``Transformer``
with an MLM/LM head works (``mlm.py`` does the masking). Positions whose boundary falls outside the
sequence (a span touching the edge of a plain id list without [CLS]/[SEP]) use the nearest
position inside; relative positions beyond ``sbo_max_positions`` share the last embedding.

Batch keys: input_ids, attention_mask, labels (as mlm) and ``sbo_left`` / ``sbo_right`` /
``sbo_pos`` (B, T) long: the boundary positions and the 1-based relative position of each
labelled token (0 elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    attention_from_lengths,
    check_positive,
    pad_2d,
    token_metrics,
    top1_correct,
)
from plmkit.objectives.mlm import MLM, MLMConfig


@dataclass(kw_only=True)
class SpanBERTConfig(MLMConfig):
    masking: str = "span"  # type: ignore[assignment]
    """SpanBERT masks spans of whole words; "whole_word" / "token" are accepted for ablations."""
    sbo_weight: float = 1.0
    """Weight of the span boundary loss (0 = span masking + MLM only)."""
    sbo_max_positions: int = 64
    """Size of the relative-position table of the SBO head (positions inside a span, in tokens)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.masking == "entity":
            raise UserError(f"{name}: option masking must be 'span', 'whole_word' or 'token', got 'entity'")
        if not isinstance(self.sbo_weight, (int, float)) or isinstance(self.sbo_weight, bool) or self.sbo_weight < 0:
            raise UserError(f"{name}: option sbo_weight must be a number >= 0, got {self.sbo_weight!r}")
        check_positive(name, "sbo_max_positions", self.sbo_max_positions, integer=True)


class SpanBoundaryHead(nn.Module):
    """The SBO head: 2-layer GELU + LayerNorm FFN over [x_left; x_right; p_rel] (see module docstring).

    ``forward(left, right, rel)``: (N, H), (N, H), (N,) long 1-based positions -> (N, E)."""

    def __init__(self, hidden_size: int, out_size: int, max_positions: int = 64, eps: float = 1e-12) -> None:
        super().__init__()
        self.position = nn.Embedding(max_positions + 1, hidden_size)  # row 0 unused (1-based)
        self.dense1 = nn.Linear(3 * hidden_size, hidden_size)
        self.norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.dense2 = nn.Linear(hidden_size, out_size)
        self.norm2 = nn.LayerNorm(out_size, eps=eps)
        self.max_positions = max_positions

    def forward(self, left: Tensor, right: Tensor, rel: Tensor) -> Tensor:
        p = self.position(rel.clamp(1, self.max_positions))
        h = self.norm1(F.gelu(self.dense1(torch.cat([left, right, p], dim=-1))))
        return self.norm2(F.gelu(self.dense2(h)))


class SpanBERT(MLM):
    """Span masking + SBO; see the module docstring."""

    name = "spanbert"
    token_nll = False  # MLM + SBO: a sum of two token-level losses, not one NLL
    Config = SpanBERTConfig  # type: ignore[assignment]
    config: SpanBERTConfig  # type: ignore[assignment]

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.config.mode == "static":
            raise UserError(f"{self.name}: mode='static' is not supported (the SBO needs the span of "
                            "each masked token); use mode='dynamic'")
        inputs, labels, lefts, rights, rels = [], [], [], [], []
        for x in examples:
            m = self.mask_example(x)
            n = len(m.input_ids)
            left, right, rel = [0] * n, [0] * n, [0] * n
            for s, e in m.units:  # token ranges [s, e)
                lo, hi = max(s - 1, 0), min(e, n - 1)
                for p in range(s, e):
                    left[p], right[p], rel[p] = lo, hi, p - s + 1
            inputs.append(m.input_ids)
            labels.append(m.labels)
            lefts.append(left)
            rights.append(right)
            rels.append(rel)
        T = max(len(s) for s in inputs)
        return {
            "input_ids": pad_2d(inputs, self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(s) for s in inputs], T),
            "labels": pad_2d(labels, IGNORE, T),
            "sbo_left": pad_2d(lefts, 0, T),
            "sbo_right": pad_2d(rights, 0, T),
            "sbo_pos": pad_2d(rels, 0, T),
        }

    def prepare(self, model: Any) -> None:
        super().prepare(model)
        if "sbo" not in model.heads:
            cfg = model.config
            out = model.head.decoder.in_features
            model.add_head("sbo", SpanBoundaryHead(cfg.hidden_size, out, self.config.sbo_max_positions,
                                                   cfg.layer_norm_eps))

    def sbo_logits(self, model: Any, hidden: Tensor, batch: dict[str, Tensor], sel: Tensor) -> Tensor:
        """(N, V) SBO logits at the labelled positions ``sel`` from the encoder output (B, T, H)."""
        b = torch.nonzero(sel, as_tuple=True)[0]  # (N,) row of each labelled position
        left = hidden[b, batch["sbo_left"][sel]]  # (N, H)
        right = hidden[b, batch["sbo_right"][sel]]
        y = model.heads["sbo"](left, right, batch["sbo_pos"][sel])  # (N, E)
        return model.head.decoder(y)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if "sbo" not in model.heads:
            raise UserError(f"{self.name}: call prepare(model) before loss (it attaches the SBO head)")
        labels = batch["labels"]
        sel = labels != IGNORE  # (B, T)
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "position_ids") if k in batch}
        out = model(batch["input_ids"], labels_mask=sel, **kw)
        logits = out.logits  # (N, V)
        y = labels[sel]
        if not y.numel():
            zero = logits.sum() * 0.0 + sum(p.sum() for p in model.heads["sbo"].parameters()) * 0.0
            return zero, {"mlm_loss": 0.0, "sbo_loss": 0.0, "mlm_tokens": 0.0}
        mlm_loss = F.cross_entropy(logits.float(), y)
        s_logits = self.sbo_logits(model, out.last_hidden_state, batch, sel)
        sbo_loss = F.cross_entropy(s_logits.float(), y)
        loss = mlm_loss + self.config.sbo_weight * sbo_loss
        n = int(y.numel())
        metrics = token_metrics("mlm", mlm_loss, top1_correct(logits, y), n)
        metrics.update(token_metrics("sbo", sbo_loss, top1_correct(s_logits, y), n))
        return loss, metrics
