"""Task heads that sit on a backbone's output, and the ELMo scalar mix.

All heads read the backbone output object of the model contract (``.last_hidden_state``
(B, T, H), ``.pooled`` (B, H) or None, ``.hidden_states`` tuple of L+1 (B, T, H)) and live
in ``model.heads`` (added with ``model.add_head``), so they are saved with the checkpoint.

- :class:`ScalarMix` — ELMo's task-specific softmax-normalised layer weights times a scale
  gamma (Peters et al. 2018, eq. 1); defined in :mod:`plmkit.models.heads`, re-exported here.
- :class:`SequenceHead` — classification / regression / multi-label / multiple-choice scoring
  from the pooler, the [CLS] vector or a masked mean (BERT, Devlin et al. 2019, sec. 4).
- :class:`TokenHead` — per-token classifier (NER), labels on the first word piece.
- :class:`SpanHead` — start / end logits for extractive QA (BERT sec. 4.2).
- :class:`OffRamps` — one classifier per layer for DeeBERT early exit (Xin et al. 2020).

Shapes: B batch, T tokens, H hidden, C classes / outputs, L layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.models.kernels import Dropout
from plmkit.models.heads import ScalarMix, masked_mean


def pool_states(h: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(B, T, H) states -> (B, H): "mean" / "max" over the real tokens, "last" real token, else the first."""
    if pooling == "mean":
        return masked_mean(h, attention_mask)
    if pooling == "max":
        if attention_mask is None:
            return h.max(dim=1).values
        return h.masked_fill(~attention_mask.bool().unsqueeze(-1), torch.finfo(h.dtype).min).max(dim=1).values
    if pooling == "last":
        if attention_mask is None:
            return h[:, -1]
        last = (attention_mask.long().sum(dim=1) - 1).clamp_min(0)  # (B,)
        return h[torch.arange(h.size(0), device=h.device), last]
    return h[:, 0]


class SequenceHead(nn.Module):
    """Pool the sequence to one vector, then ``dropout -> [dense -> tanh] -> linear`` to C outputs.

    Args:
        hidden_size: H.
        num_outputs: C (1 for regression and multiple-choice scoring).
        pooling: "pooler" (the backbone's BERT pooler, falling back to "cls" when absent),
            "cls" (first token's vector), "mean" (masked mean over tokens), "max" (masked max over
            tokens, per feature) or "last" (the last real token: right padding assumed).
            ``plmkit.tasks.pooling`` resolves the CLI's "auto" to one of these.
        num_states: when set, an ELMo :class:`ScalarMix` over that many hidden states replaces
            the last hidden state (feature-based mode); the head then gets a hidden layer.
        dropout: dropout before the classifier.
    """

    def __init__(self, hidden_size: int, num_outputs: int, pooling: str = "pooler", num_states: int | None = None, dropout: float = 0.1):
        super().__init__()
        if pooling not in ("pooler", "cls", "mean", "max", "last"):
            raise ValueError(f"pooling must be pooler, cls, mean, max or last, got {pooling!r}")
        self.pooling = pooling
        self.scalar_mix = ScalarMix(num_states) if num_states else None
        self.dropout = Dropout(dropout)
        # A frozen backbone needs some capacity on top (ELMo feeds a task model; here a small MLP).
        self.hidden = nn.Linear(hidden_size, hidden_size) if num_states else None
        self.out = nn.Linear(hidden_size, num_outputs)

    def pool(self, out, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.scalar_mix is not None:
            h = self.scalar_mix(out.hidden_states, attention_mask)  # (B, T, H)
            return pool_states(h, attention_mask, self.pooling)
        if self.pooling == "pooler" and getattr(out, "pooled", None) is not None:
            return out.pooled  # (B, H)
        return pool_states(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, out, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(self.pool(out, attention_mask))
        if self.hidden is not None:
            x = self.dropout(torch.tanh(self.hidden(x)))
        return self.out(x)  # (B, C)


class TokenHead(nn.Module):
    """Per-token classifier: ``dropout -> linear`` on every position (or on a scalar mix)."""

    def __init__(self, hidden_size: int, num_labels: int, num_states: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.scalar_mix = ScalarMix(num_states) if num_states else None
        self.dropout = Dropout(dropout)
        self.hidden = nn.Linear(hidden_size, hidden_size) if num_states else None
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, out, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.scalar_mix(out.hidden_states, attention_mask) if self.scalar_mix is not None else out.last_hidden_state
        h = self.dropout(h)
        if self.hidden is not None:
            h = self.dropout(torch.tanh(self.hidden(h)))
        return self.out(h)  # (B, T, C)


class SpanHead(nn.Module):
    """Start / end logits per token for extractive QA."""

    def __init__(self, hidden_size: int, num_states: int | None = None):
        super().__init__()
        self.scalar_mix = ScalarMix(num_states) if num_states else None
        self.hidden = nn.Linear(hidden_size, hidden_size) if num_states else None
        self.out = nn.Linear(hidden_size, 2)

    def forward(self, out, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.scalar_mix(out.hidden_states, attention_mask) if self.scalar_mix is not None else out.last_hidden_state
        if self.hidden is not None:
            h = torch.tanh(self.hidden(h))
        logits = self.out(h)  # (B, T, 2)
        start, end = logits.unbind(-1)  # (B, T) each
        if attention_mask is not None:
            neg = torch.finfo(start.dtype).min
            start = start.masked_fill(attention_mask == 0, neg)
            end = end.masked_fill(attention_mask == 0, neg)
        return start, end


class OffRamps(nn.Module):
    """DeeBERT off-ramps: a pooler-style classifier on the [CLS] vector of each layer 1..L.

    The last layer's prediction comes from the task head itself, so ramps exist for layers
    1..L-1 (index i reads ``hidden_states[i + 1]``).
    """

    def __init__(self, hidden_size: int, num_outputs: int, num_layers: int, dropout: float = 0.1):
        super().__init__()
        self.ramps = nn.ModuleList(
            nn.Sequential(Dropout(dropout), nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, num_outputs))
            for _ in range(num_layers - 1)
        )

    def forward_layer(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of ramp ``i`` from that layer's output hidden states (B, T, H)."""
        return self.ramps[i](hidden[:, 0])

    def forward(self, hidden_states) -> list[torch.Tensor]:
        return [self.forward_layer(i, hidden_states[i + 1]) for i in range(len(self.ramps))]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) along the last dim, (B,)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
