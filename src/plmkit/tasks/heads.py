"""Task heads that sit on a backbone's output, and the ELMo scalar mix.

All heads read the backbone output object of the model contract (``.last_hidden_state``
(B, T, H), ``.pooled`` (B, H) or None, ``.hidden_states`` tuple of L+1 (B, T, H)) and live
in ``model.heads`` (added with ``model.add_head``), so they are saved with the checkpoint.

- :class:`ScalarMix` — ELMo's task-specific softmax-normalised layer weights times a scale
  gamma (Peters et al. 2018, "Deep contextualized word representations", eq. 1).
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

from plmkit.models.heads import masked_mean


class ScalarMix(nn.Module):
    """``gamma * sum_j softmax(w)_j * h_j`` over the L+1 hidden states (embeddings + every layer).

    ``standardize()`` adds a per-layer, per-dimension shift and log-scale applied before the mix,
    ``h_j <- (h_j - shift_j) * exp(log_scale_j)``, initialised from the first training batch so that
    every dimension of every layer has zero mean and unit variance over its real tokens, then
    trained with the head (data-dependent initialisation as ActNorm, Kingma & Dhariwal 2018).
    Backbones whose layers are not normalised (ELMo's char-CNN and LSTM states) need it: their
    dimensions share large constant offsets, so mean-pooled features differ between sentences by a
    few percent of their norm and the head barely learns from them (issue #9). The parameters
    start as the identity (shift 0, log-scale 0) and are saved with the head; a head loaded from a
    checkpoint is not re-initialised.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))
        self.gamma = nn.Parameter(torch.ones(()))
        self.shift: nn.ParameterList | None = None
        self.log_scale: nn.ParameterList | None = None
        self.initialized = True

    def standardize(self, hidden_size: int) -> "ScalarMix":
        """Add the per-layer standardisation (see the class docstring); a no-op when already there."""
        if self.shift is None:
            L = self.weights.numel()
            dev = self.weights.device
            # 1-D parameters: the optimizer exempts them from weight decay, as LayerNorm's
            self.shift = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size, device=dev)) for _ in range(L))
            self.log_scale = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size, device=dev)) for _ in range(L))
            self.initialized = False
        return self

    @torch.no_grad()
    def _init_from(self, hidden_states, mask: torch.Tensor | None) -> None:
        for j, h in enumerate(hidden_states):
            x = h.reshape(-1, h.shape[-1]).float()  # (B*T, H)
            if mask is not None:
                x = x[mask.reshape(-1).bool()]
            if len(x) < 2:
                return  # not enough tokens to estimate a variance; try the next batch
            self.shift[j].copy_(x.mean(0))
            self.log_scale[j].copy_(-0.5 * torch.log(x.var(0) + 1e-6))
        self.initialized = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.shift is not None and f"{prefix}shift.0" in state_dict:
            self.initialized = True  # trained statistics came with the checkpoint

    def forward(self, hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden_states: L+1 tensors (B, T, H); mask (B, T) 1 = real token (for the statistics)."""
        if len(hidden_states) != self.weights.numel():
            raise ValueError(f"ScalarMix built for {self.weights.numel()} states, got {len(hidden_states)}")
        states = list(hidden_states)
        if self.shift is not None:
            if not self.initialized and self.training:
                self._init_from(states, mask)
            states = [(h - b) * torch.exp(s) for h, b, s in zip(states, self.shift, self.log_scale)]
        w = torch.softmax(self.weights, dim=0)
        stacked = torch.stack(states, dim=0)  # (L+1, B, T, H)
        return self.gamma * torch.einsum("l,lbth->bth", w, stacked)


class SequenceHead(nn.Module):
    """Pool the sequence to one vector, then ``dropout -> [dense -> tanh] -> linear`` to C outputs.

    Args:
        hidden_size: H.
        num_outputs: C (1 for regression and multiple-choice scoring).
        pooling: "pooler" (the backbone's BERT pooler, falling back to "cls" when absent),
            "cls" (first token's vector) or "mean" (masked mean over tokens).
        num_states: when set, an ELMo :class:`ScalarMix` over that many hidden states replaces
            the last hidden state (feature-based mode); the head then gets a hidden layer.
        dropout: dropout before the classifier.
    """

    def __init__(self, hidden_size: int, num_outputs: int, pooling: str = "pooler", num_states: int | None = None, dropout: float = 0.1):
        super().__init__()
        if pooling not in ("pooler", "cls", "mean"):
            raise ValueError(f"pooling must be pooler, cls or mean, got {pooling!r}")
        self.pooling = pooling
        self.scalar_mix = ScalarMix(num_states) if num_states else None
        self.dropout = nn.Dropout(dropout)
        # A frozen backbone needs some capacity on top (ELMo feeds a task model; here a small MLP).
        self.hidden = nn.Linear(hidden_size, hidden_size) if num_states else None
        self.out = nn.Linear(hidden_size, num_outputs)

    def pool(self, out, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.scalar_mix is not None:
            h = self.scalar_mix(out.hidden_states, attention_mask)  # (B, T, H)
            return masked_mean(h, attention_mask) if self.pooling == "mean" else h[:, 0]
        if self.pooling == "pooler" and getattr(out, "pooled", None) is not None:
            return out.pooled  # (B, H)
        if self.pooling == "mean":
            return masked_mean(out.last_hidden_state, attention_mask)
        return out.last_hidden_state[:, 0]

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
        self.dropout = nn.Dropout(dropout)
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
            nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, num_outputs))
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
