"""Causal language modelling: next-token prediction over packed windows (GPT, Radford et al. 2018/2019).

Windows from the token store hold several documents back to back; ``doc_boundaries`` gives the
offsets where a new document starts. ``make_batch`` inserts a separator token (``eos``, else
``sep``) before each boundary, as GPT-2 packs its training stream with ``<|endoftext|>``. With
``block_documents=True`` attention is also cut at the boundaries (a block-diagonal causal (B, T, T)
mask) and position ids restart in each document, so a document is modelled exactly as if it
stood alone.

``labels[b, t]`` is the token position ``t`` must predict (``input_ids[b, t + 1]``), -100 at
the last real position and at padding.

The loss never materialises the full (B, T, V) logits: the backbone runs with an empty
``labels_mask`` (hidden states only) and ``model.head_logits`` is applied to ``chunk_size``
labelled rows at a time, each chunk recomputed in backward (``chunked_cross_entropy``); a plain causal-LM
head (no transform) goes through ``models.heads.linear_cross_entropy_sum`` instead, which computes the
gradients chunk by chunk in the forward (one product fewer than recomputing, and the fastest GEMM layout).
Metrics: ``clm_loss``, ``clm_ppl`` (exp of the mean token loss), ``clm_acc`` (top-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.models.heads import fused_lm_head, linear_cross_entropy_sum
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    check_positive,
    chunked_cross_entropy,
    hidden_only,
    pad_2d,
    require_decoder,
    require_head,
    require_vocab,
    token_metrics,
)


@dataclass(kw_only=True)
class CLMConfig(ObjectiveConfig):
    separator: bool = True
    """Insert an end-of-document token before each document boundary of a packed window."""
    block_documents: bool = False
    """Stop attention at document boundaries and restart positions (block-diagonal causal mask)."""
    chunk_size: int = 1024
    """Rows of logits computed at once in the loss."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_positive(name, "chunk_size", self.chunk_size, integer=True)


class CLM(Objective):
    """Next-token prediction. Batch keys: input_ids, attention_mask, labels (+ position_ids and a
    (B, T, T) attention_mask with ``block_documents``)."""

    name = "clm"
    example_kind = "window"
    Config = CLMConfig
    config: CLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.sep_id = self.vocab.eos if self.vocab.eos is not None else self.vocab.sep
        if self.config.separator and self.sep_id is None:
            raise UserError(f"{self.name}: separator=True needs a tokenizer with an eos or sep token "
                            "(or set separator: false)")

    def _row(self, x: Any) -> tuple[list[int], list[int]]:
        """Token ids of one example with separators inserted, and its document index per token."""
        ex = as_example(x, self.name)
        bounds = sorted(b for b in (ex.doc_boundaries or []) if 0 < b < len(ex.ids))
        ids: list[int] = []
        doc: list[int] = []
        d, prev = 0, 0
        for b in bounds + [len(ex.ids)]:
            ids += ex.ids[prev:b]
            doc += [d] * (b - prev)
            if b < len(ex.ids):
                if self.config.separator:
                    ids.append(int(self.sep_id))  # the separator ends the current document
                    doc.append(d)
                d += 1
            prev = b
        m = self.config.max_length
        if m is not None:
            ids, doc = ids[:m], doc[:m]
        return ids, doc

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self._row(x) for x in examples]
        T = max(len(r[0]) for r in rows)
        ids = pad_2d([r[0] for r in rows], self.vocab.pad_id, T)
        lengths = torch.tensor([len(r[0]) for r in rows])
        valid = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
        labels = torch.full_like(ids, IGNORE)
        labels[:, :-1] = ids[:, 1:]
        labels[:, :-1][~valid[:, 1:]] = IGNORE
        batch = {"input_ids": ids, "attention_mask": valid.long(), "labels": labels}
        if self.config.block_documents:
            doc = pad_2d([r[1] for r in rows], -1, T)  # (B, T), -1 at padding
            same = doc[:, :, None] == doc[:, None, :]  # (B, T, T)
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            mask = same & causal & valid[:, None, :]
            mask |= torch.eye(T, dtype=torch.bool)  # padded queries attend to themselves (no NaN)
            # positions restart at each document: index minus the first index of the document
            idx = torch.arange(T).expand_as(doc)
            start = torch.where(torch.cat([torch.ones_like(doc[:, :1], dtype=torch.bool),
                                           doc[:, 1:] != doc[:, :-1]], 1), idx, torch.zeros_like(idx))
            start = torch.cummax(start, dim=1).values
            batch["attention_mask"] = mask
            batch["position_ids"] = (idx - start) * valid
            # the last token of a document must not predict the first token of the next one
            # (only matters without separators)
            cross = torch.zeros_like(valid)
            cross[:, :-1] = doc[:, 1:] != doc[:, :-1]
            labels[cross] = IGNORE
        return batch

    def prepare(self, model: Any) -> None:
        require_decoder(self.name, model)
        require_head(self.name, model, ("lm", "mlm"))
        require_vocab(self.name, model, self.vocab.size)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        sel = labels != IGNORE  # (B, T)
        kw = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
        out = hidden_only(model, batch["input_ids"], **kw)
        h = out.last_hidden_state[sel]  # (N, H)
        y = labels[sel]  # (N,)
        decoder = fused_lm_head(model)
        if decoder is not None:  # a plain LM head: the fused linear + cross-entropy (no logits kept)
            total, correct = linear_cross_entropy_sum(h, decoder, y, min(self.config.chunk_size, 256))
        else:
            total, correct = chunked_cross_entropy(model.head_logits, h, y, self.config.chunk_size)
        n = int(y.numel())
        loss = total / max(n, 1)
        return loss, token_metrics("clm", loss, correct, n)
