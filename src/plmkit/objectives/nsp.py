"""Next-sentence prediction (BERT, Devlin et al. 2019) and the shared sentence-pair machinery.

Input ``[CLS] A [SEP] B [SEP]`` with token types 0 / 1; a 2-way classifier on the pooled output
(``out.pooled``, or the first token's hidden state for models without a pooler) predicts
``nsp_labels``: 0 = B really follows A ("IsNext"), 1 = B is a random segment ("NotNext"),
chosen with probability ``random_prob`` (50%).

Examples (``example_kind = "sentence_pair"``):
- token-store ``sentence_pairs`` records: ``segment_a``, ``segment_b``, ``random_b`` (a span from a
  different document) and their ``word_ids_*``;
- records with ``input_ids`` + ``sentence_starts``: split at a random sentence start; the random
  B is taken from another example of the batch;
- plain id lists ``[CLS] A [SEP] B [SEP]`` (split at the first [SEP]); random B from another
  example of the batch.

``mlm_weight > 0`` also masks the pair as BERT does (``mlm_*`` options, see ``mlm.py``) and adds
``mlm_weight * MLM loss`` computed in the same forward pass (``labels`` in the batch). The head is
attached by ``prepare(model)`` as ``model.heads["nsp"]`` (``SentencePairHead``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Example,
    Objective,
    ObjectiveConfig,
    as_example,
    attention_from_lengths,
    check_open_unit,
    hidden_only,
    pad_2d,
    require_encoder,
    require_head,
    require_vocab,
    token_metrics,
    top1_correct,
)


@dataclass(kw_only=True)
class PairConfig(ObjectiveConfig):
    random_prob: float = 0.5
    """Probability of the negative class (NSP: random B; SOP: swapped A and B)."""
    mlm_weight: float = 0.0
    """> 0: also mask the pair and add this times the MLM loss (BERT / ALBERT joint training)."""
    mlm_rate: float = 0.15
    mlm_masking: Literal["token", "whole_word", "span"] = "token"
    classifier_dropout: float = 0.1
    """Dropout before the 2-way classifier."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "random_prob", self.random_prob)
        if not isinstance(self.mlm_weight, (int, float)) or self.mlm_weight < 0:
            raise UserError(f"{name}: option mlm_weight must be >= 0, got {self.mlm_weight!r}")
        check_open_unit(name, "mlm_rate", self.mlm_rate)
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise UserError(f"{name}: option classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")


@dataclass
class Pair:
    a: list[int]
    b: list[int]
    wa: list[int | None] | None
    wb: list[int | None] | None
    random_b: list[int] | None = None
    wr: list[int | None] | None = None


class SentencePairObjective(Objective):
    """Shared code for NSP and SOP: pair extraction, [CLS] A [SEP] B [SEP] batches, the head."""

    example_kind = "sentence_pair"
    Config = PairConfig
    config: PairConfig
    head_name = "nsp"
    label_key = "nsp_labels"
    num_classes = 2

    def random_pair(self, pairs: list[Pair], i: int) -> Pair:
        """``pairs[i]``'s first segment with a random second one: its own ``random_b`` (another document),
        else the second segment of another example of the batch (drawn uniformly)."""
        p = pairs[i]
        if p.random_b is not None:
            return Pair(p.a, p.random_b, p.wa, p.wr)
        n = len(pairs)
        if n < 2:
            raise UserError(f"{self.name}: examples without 'random_b' take the random segment "
                            "from another example of the batch; use a batch size >= 2")
        j = int(torch.randint(n - 1, ()))
        j += j >= i
        return Pair(p.a, pairs[j].b, p.wa, pairs[j].wb)

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.cls_id = self.vocab.begin
        self.sep_id = self.vocab.end
        if self.cls_id is None or self.sep_id is None:
            raise UserError(f"{self.name}: the tokenizer needs [CLS]/[SEP] (or <s>/</s>) tokens")
        self._mlm = None
        if self.config.mlm_weight > 0:
            from plmkit.objectives.mlm import MLM

            self._mlm = MLM(tokenizer, rate=self.config.mlm_rate, masking=self.config.mlm_masking)
            self._mlm.name = self.name  # errors name this objective

    # ------------------------------------------------------------------ pairs
    def _pair(self, x: Any) -> Pair:
        if isinstance(x, dict) and "segment_a" in x:
            return Pair([int(i) for i in x["segment_a"]], [int(i) for i in x["segment_b"]],
                        x.get("word_ids_a"), x.get("word_ids_b"),
                        None if x.get("random_b") is None else [int(i) for i in x["random_b"]],
                        x.get("word_ids_random_b"))
        ex = as_example(x, self.name)
        ids = ex.ids
        if ex.has_specials:  # [CLS] A [SEP] B [SEP]
            body = ids[1:] if ids and ids[0] == self.cls_id else ids
            if self.sep_id in body:
                k = body.index(self.sep_id)
                a, b = body[:k], [t for t in body[k + 1:] if t != self.sep_id]
            else:
                a, b = body[: len(body) // 2], body[len(body) // 2:]
            return Pair(a, b, None, None)
        starts = [s for s in (ex.sentence_starts or []) if 0 < s < len(ids)]
        if starts:
            k = starts[int(torch.randint(len(starts), ()))]
        else:
            k = max(1, len(ids) // 2)
        w = ex.word_ids
        return Pair(ids[:k], ids[k:], None if w is None else w[:k], None if w is None else w[k:])

    def choose(self, pairs: list[Pair]) -> tuple[list[Pair], list[int]]:
        """Decide the label of each pair and return the (possibly altered) pairs. Overridden by SOP."""
        raise NotImplementedError

    def _truncate_pair(self, a: list, b: list, wa, wb):
        m = self.config.max_length
        if m is None:
            return a, b, wa, wb
        budget = m - 3
        while len(a) + len(b) > budget:  # longest first, from the end (BERT's truncate_seq_pair)
            if len(a) > len(b):
                a, wa = a[:-1], None if wa is None else wa[:-1]
            else:
                b, wb = b[:-1], None if wb is None else wb[:-1]
        return a, b, wa, wb

    # ------------------------------------------------------------------ contract
    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        pairs, labels = self.choose([self._pair(x) for x in examples])
        rows, types, mlm_labels = [], [], []
        for p in pairs:
            a, b, wa, wb = self._truncate_pair(p.a, p.b, p.wa, p.wb)
            ids = [self.cls_id] + a + [self.sep_id] + b + [self.sep_id]
            types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            if self._mlm is not None:
                wid = None
                if wa is not None and wb is not None:
                    off = (max((w for w in wa if w is not None), default=-1) + 1)
                    wid = [None] + list(wa) + [None] + [None if w is None else w + off for w in wb] + [None]
                m = self._mlm.mask_example(Example(ids=ids, word_ids=wid, has_specials=True))
                ids = m.input_ids
                mlm_labels.append(m.labels)
            rows.append(ids)
        T = max(len(r) for r in rows)
        batch = {
            "input_ids": pad_2d(rows, self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(r) for r in rows], T),
            "token_type_ids": pad_2d(types, 0, T),
            self.label_key: torch.tensor(labels, dtype=torch.long),
        }
        if self._mlm is not None:
            batch["labels"] = pad_2d(mlm_labels, IGNORE, T)
        return batch

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model, " (the [CLS] summary must see both segments)")
        require_vocab(self.name, model, self.vocab.size)
        if self.config.mlm_weight > 0:
            require_head(self.name + " with mlm_weight > 0", model, ("mlm",))
        if getattr(model.config, "type_vocab_size", 0) < 2:
            raise UserError(f"{self.name} needs segment (token type) embeddings; {model.config.family!r} model "
                            f"has type_vocab_size={model.config.type_vocab_size} (load(..., type_vocab_size=2))")
        if self.head_name not in model.heads:
            from plmkit.models.heads import SentencePairHead

            model.add_head(self.head_name, SentencePairHead(model.config.hidden_size, self.num_classes,
                                                            self.config.classifier_dropout))

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}
        ids = batch["input_ids"]
        if "labels" in batch and self.config.mlm_weight > 0:
            sel = batch["labels"] != IGNORE
            out = model(ids, labels_mask=sel, **kw)
        else:
            sel = None
            out = hidden_only(model, ids, **kw)
        pooled = out.pooled if out.pooled is not None else out.last_hidden_state[:, 0]  # (B, H)
        logits = model.heads[self.head_name](pooled)  # (B, 2)
        y = batch[self.label_key]
        cls_loss = F.cross_entropy(logits.float(), y)
        p = self.head_name
        metrics = {f"{p}_loss": float(cls_loss.detach()),
                   f"{p}_acc": float((logits.detach().argmax(-1) == y).float().mean())}
        loss = cls_loss
        if sel is not None:
            yl = batch["labels"][sel]
            mlm_loss = F.cross_entropy(out.logits.float(), yl) if yl.numel() else out.logits.sum() * 0
            loss = loss + self.config.mlm_weight * mlm_loss
            metrics.update(token_metrics("mlm", mlm_loss, top1_correct(out.logits, yl),
                                         int(yl.numel())))
        return loss, metrics


class NSP(SentencePairObjective):
    """Next-sentence prediction; batch keys: input_ids, attention_mask, token_type_ids, nsp_labels."""

    name = "nsp"
    token_nll = False
    head_name = "nsp"
    label_key = "nsp_labels"

    def choose(self, pairs: list[Pair]) -> tuple[list[Pair], list[int]]:
        n = len(pairs)
        flip = (torch.rand(n) < self.config.random_prob).tolist()
        out, labels = [], []
        for i, (p, f) in enumerate(zip(pairs, flip)):
            if not f:
                out.append(p)
                labels.append(0)
                continue
            out.append(self.random_pair(pairs, i))
            labels.append(1)
        return out, labels
