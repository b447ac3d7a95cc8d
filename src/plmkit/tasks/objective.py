"""The fine-tuning "objective": the task's batch builder and loss, for the shared Trainer.

``TaskObjective`` follows the objective contract (``example_kind``, ``prepare(model)``,
``make_batch(examples)``, ``loss(model, batch) -> (loss, metrics)``) so fine-tuning is the
project's one :class:`plmkit.training.Trainer` with a different objective; examples are the
pre-encoded feature dicts of :mod:`plmkit.tasks.encoding`.

Losses: cross-entropy (classification, token, multiple choice, QA start + end averaged, as
BERT), mean squared error (regression), binary cross-entropy with logits (multi-label).
Optional extra terms (see :mod:`plmkit.tasks.modes`): a weight regulariser (L2-SP, EWC), a
self-distillation teacher, DeeBERT off-ramp losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.tasks.encoding import special_ids
from plmkit.tasks.heads import OffRamps, SequenceHead, SpanHead, TokenHead

HEAD_NAME = "task"


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def drop_lm_head(model) -> None:
    """Remove a Transformer's LM/MLM head (``model.head``, ``config.head``): task heads read hidden states only,
    and with the head kept every forward also computed (B, T, V) logits (a checkpoint from ``plm pretrain``
    or a GPT-2 / BERT-with-MLM-head model) and counted the head among the trainable parameters. The
    fine-tuned checkpoint's ``model_config.json`` then says ``head: null``. Classical recurrent LMs keep
    theirs (their features mode skips it through ``recurrent_features``)."""
    from plmkit.classic.recurrent import RecurrentConfig

    if isinstance(getattr(model, "head", None), nn.Module) and not isinstance(model.config, RecurrentConfig):
        model.head = None
        model.config.head = None


class TaskObjective:
    """Batch builder + loss of one task (kind, number of outputs, head options)."""

    example_kind = "task"

    def __init__(self, kind: str, num_outputs: int, tokenizer, pooling: str = "pooler",
                 scalar_mix: bool = False, dropout: float = 0.1, early_exit: bool = False,
                 target_scale: tuple[float, float] | None = None, head_name: str = HEAD_NAME):
        self.kind = kind
        self.head_name = head_name  # its key in model.heads (multi-task training: one head per task)
        self.num_outputs = num_outputs
        self.pad_id = special_ids(tokenizer).pad
        self.pooling = pooling
        self.pooling_source = "given"  # why this pooling (``plmkit.tasks.pooling.resolve_pooling``)
        self.scalar_mix = scalar_mix
        self.dropout = dropout
        self.early_exit = early_exit
        # regression: (mean, std) of the training targets; the head predicts (y - mean) / std
        self.target_scale = tuple(target_scale) if target_scale else None
        # extra loss terms: callables (model, batch, out, logits) -> (loss, metrics)
        self.extra_terms: list[Callable[..., tuple[torch.Tensor, dict]]] = []
        self.ramps_only = False  # DeeBERT stage 2: train only the off-ramps

    # ------------------------------------------------------------------ heads
    def build_head(self, hidden_size: int, num_layers: int) -> nn.Module:
        states = num_layers + 1 if self.scalar_mix else None
        if self.kind == "token":
            return TokenHead(hidden_size, self.num_outputs, states, self.dropout)
        if self.kind == "qa":
            return SpanHead(hidden_size, states)
        outputs = 1 if self.kind == "multiple_choice" else self.num_outputs
        return SequenceHead(hidden_size, outputs, self.pooling, states, self.dropout)

    def prepare(self, model) -> None:
        """Add the task head (and DeeBERT off-ramps) to ``model.heads``, unless already there, and drop the
        model's LM/MLM head (:func:`drop_lm_head`)."""
        drop_lm_head(model)
        H, L = model.config.hidden_size, model.num_layers
        if self.head_name not in getattr(model, "heads", {}):
            model.add_head(self.head_name, self.build_head(H, L))
        if self.early_exit and "off_ramps" not in model.heads:
            if self.kind not in ("classification", "regression"):
                raise ValueError("early exit (DeeBERT) supports sequence classification / regression only")
            n = 1 if self.kind == "regression" else self.num_outputs
            model.add_head("off_ramps", OffRamps(H, n, L, self.dropout))

    # ------------------------------------------------------------------ batches
    def make_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.kind == "multiple_choice":
            C = len(examples[0]["input_ids"])
            flat_ids = [s for e in examples for s in e["input_ids"]]
            flat_tt = [s for e in examples for s in e["token_type_ids"]]
            ids = _pad(flat_ids, self.pad_id)  # (B*C, T)
            batch = {"input_ids": ids, "token_type_ids": _pad(flat_tt, 0),
                     "attention_mask": _pad([[1] * len(s) for s in flat_ids], 0), "num_choices": torch.tensor(C)}
        else:
            ids = _pad([e["input_ids"] for e in examples], self.pad_id)  # (B, T)
            batch = {"input_ids": ids, "token_type_ids": _pad([e["token_type_ids"] for e in examples], 0),
                     "attention_mask": _pad([[1] * len(e["input_ids"]) for e in examples], 0)}
        if self.kind == "token" and "labels" in examples[0]:
            batch["labels"] = _pad([e["labels"] for e in examples], -100)
        elif self.kind == "qa" and "start_position" in examples[0]:
            batch["start_positions"] = torch.tensor([e["start_position"] for e in examples])
            batch["end_positions"] = torch.tensor([e["end_position"] for e in examples])
        elif "label" in examples[0]:
            dtype = torch.long if self.kind in ("classification", "multiple_choice") else torch.float
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=dtype)
        return batch

    # ------------------------------------------------------------------ forward / loss
    def forward(self, model, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        """Backbone + task head; returns (backbone output, head output)."""
        need_states = self.scalar_mix or self.early_exit
        # models without token-type embeddings (GPT-2, Llama: type_vocab_size 0) refuse token_type_ids
        tt = batch["token_type_ids"] if getattr(model.config, "type_vocab_size", 1) else None
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=tt, output_hidden_states=need_states)
        logits = model.heads[self.head_name](out, batch["attention_mask"])
        if self.kind == "multiple_choice":
            logits = logits.view(-1, int(batch["num_choices"]))  # (B, C)
        return out, logits

    def task_loss(self, logits, batch) -> torch.Tensor:
        if self.kind == "qa":
            start, end = logits
            return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
        labels = batch["labels"]
        if self.kind == "regression":
            if self.target_scale is not None:
                labels = (labels - self.target_scale[0]) / self.target_scale[1]
            return F.mse_loss(logits.squeeze(-1), labels)
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, labels)
        if self.kind == "token":
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        return F.cross_entropy(logits, labels)

    def unscale(self, value: float) -> float:
        """A regression output back in target units."""
        return value * self.target_scale[1] + self.target_scale[0] if self.target_scale else value

    def ramp_loss(self, model, out, batch) -> torch.Tensor:
        ramps = model.heads["off_ramps"](out.hidden_states)
        losses = [self.task_loss(r if self.kind != "regression" else r, batch) for r in ramps]
        return torch.stack(losses).sum()

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out, logits = self.forward(model, batch)
        metrics: dict[str, float] = {}
        if self.ramps_only:
            loss = self.ramp_loss(model, out, batch)
            metrics["ramp_loss"] = float(loss.detach())
            return loss, metrics
        loss = self.task_loss(logits, batch)
        metrics["task_loss"] = float(loss.detach())
        if self.kind in ("classification", "multiple_choice") and "labels" in batch:
            metrics["accuracy"] = float((logits.argmax(-1) == batch["labels"]).float().mean())
        for term in self.extra_terms:
            extra, m = term(model, batch, out, logits)
            loss = loss + extra
            metrics.update(m)
        return loss, metrics
