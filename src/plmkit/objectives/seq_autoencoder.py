"""Sequence-autoencoder pretraining of a recurrent LM (Dai & Le 2015, "Semi-supervised Sequence Learning").

The encoder reads a sentence ``x_1 .. x_n``; the decoder starts from the encoder's final state and
reconstructs the sentence, teacher-forced: at decoder step k it reads ``x_{k-1}`` (a separator at step 1)
and predicts ``x_k``. As in Dai & Le's SA-LSTM the encoder and the decoder are the same LSTM (shared
weights), so one forward pass of the recurrent LM over ``[x_1 .. x_n, SEP, x_1 .. x_{n-1}]`` is the whole
model: the state after ``x_n`` is the encoder's final state, and the outputs at positions ``n+1 .. 2n``
(reading SEP, x_1 .. x_{n-1}) are scored against ``x_1 .. x_n``. The encoder positions have no loss; the
only path from the sentence to its reconstruction is the recurrent state (a fixed-size bottleneck), which
is why only recurrent LMs (``family`` rnn / lstm) are accepted.

Examples: token-store ``document`` records (``doc_sep: line``: one sentence per line), truncated to
``max_length`` tokens before the copy. The pretrained model is an ordinary recurrent LM checkpoint;
``plm finetune`` then trains it as a classifier (the last state pools the sentence).

Metrics: ``sa_loss``, ``sa_ppl`` (exp of the mean reconstruction token loss), ``sa_acc`` (top-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    check_positive,
    chunked_cross_entropy,
    hidden_only,
    pad_2d,
    require_head,
    require_vocab,
    token_metrics,
)


@dataclass(kw_only=True)
class SeqAutoencoderConfig(ObjectiveConfig):
    chunk_size: int = 1024
    """Rows of logits computed at once in the loss."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_positive(name, "chunk_size", self.chunk_size, integer=True)


def autoencoder_row(ids: list[int], sep: int) -> tuple[list[int], list[int]]:
    """``(input ids, labels)`` of one sentence: ``[x; SEP; x[:-1]]`` and ``[-100] * n + x``."""
    n = len(ids)
    return ids + [sep] + ids[:-1], [IGNORE] * n + ids


class SeqAutoencoder(Objective):
    """Dai & Le's sequence autoencoder (see the module docstring). Batch keys: input_ids, attention_mask,
    labels (-100 on the encoder half and on padding)."""

    name = "seq_autoencoder"
    example_kind = "document"
    Config = SeqAutoencoderConfig
    config: SeqAutoencoderConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        sep = self.vocab.eos if self.vocab.eos is not None else self.vocab.sep
        if sep is None:
            raise UserError(f"{self.name}: the tokenizer needs an eos or sep token (the decoder's start symbol)")
        self.sep_id = int(sep)

    def _ids(self, x: Any) -> list[int]:
        ex = as_example(x, self.name)
        ids = [t for t in ex.ids if t not in self.vocab.special] if ex.has_specials else list(ex.ids)
        ids = self._truncate(ids)
        return ids or [self.sep_id]  # an empty line: reconstruct the separator alone

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [autoencoder_row(self._ids(x), self.sep_id) for x in examples]
        T = max(len(r[0]) for r in rows)
        ids = pad_2d([r[0] for r in rows], self.vocab.pad_id, T)
        labels = pad_2d([r[1] for r in rows], IGNORE, T)
        lengths = torch.tensor([len(r[0]) for r in rows])
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def prepare(self, model: Any) -> None:
        family = getattr(getattr(model, "config", None), "family", None)
        if family not in ("rnn", "lstm"):
            raise UserError(f"{self.name}: the sequence autoencoder's bottleneck is a recurrent state; it needs an "
                            f"RNN or LSTM LM (model preset rnn-* / lstm-*), not {family or type(model).__name__}")
        require_head(self.name, model, ("lm",))
        require_vocab(self.name, model, self.vocab.size)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        sel = labels != IGNORE  # (B, T): the decoder half
        out = hidden_only(model, batch["input_ids"], attention_mask=batch["attention_mask"])
        total, correct = chunked_cross_entropy(model.head_logits, out.last_hidden_state[sel], labels[sel],
                                               self.config.chunk_size)
        n = int(sel.sum())
        loss = total / max(n, 1)
        return loss, token_metrics("sa", loss, correct, n)
