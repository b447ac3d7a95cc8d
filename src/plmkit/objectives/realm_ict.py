"""The Inverse Cloze Task (ICT; Lee et al. 2019, ORQA, arXiv:1906.00300): the retriever warm-up REALM starts from.

A sentence of a document is the pseudo-query; the rest of the document around it is its context; the encoder
must pick that context among the other contexts of the batch (in-batch negatives). With probability
``remove_prob`` (0.9, as in ORQA) the sentence is removed from its context, so the task cannot be solved by
matching the sentence verbatim and the encoder has to learn what a passage is *about*; in the remaining 10%
it stays, which keeps some lexical matching useful (ORQA's argument).

Objective ``ict`` (``objective: {name: ict, pooling: mean, query_len: 64, context_len: 64}``), on
``document`` records of the token store (one document per line of WikiText = one paragraph; the trainer
cuts them to the recipe's ``seq_len``):

* per document: its sentences (the record's ``sentence_starts``); a document with fewer than two sentences
  is dropped from the batch (there is no context to retrieve); one sentence ``i`` is drawn uniformly (torch's
  RNG), the query is ``[CLS] sentence_i [SEP]`` (cut to ``query_len``); the context is the document with
  sentence ``i`` deleted (probability ``remove_prob``) or kept, cut to a window of ``context_len - 2``
  tokens centred on where sentence ``i`` was, as ``[CLS] context [SEP]``;
* ``q_b``, ``c_b``: the pooled (``cls`` or ``mean``) last hidden states of the model being trained;
  ``loss = mean_b -log softmax_j(q_b . c_j)[b]`` over the batch's contexts (cross-entropy, target the own
  context).

One encoder serves queries and contexts (ORQA trains two BERTs; here the warm-up trains one, and REALM's
``retriever: DIR`` then copies it into *both* of its encoders, which REALM trains apart from there on). No
projection: the retrieval vector is the pooled hidden state, so REALM must take the retriever with
``dim: null`` (identity projections) and the same ``pooling``. ``bench/realm_ict_recall.py`` measures
recall@k of the gold paragraph before / after the warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    Objective,
    ObjectiveConfig,
    as_example,
    check_choice,
    check_positive,
    hidden_only,
    pad_2d,
    require_encoder,
    require_vocab,
)


def sentence_spans(n_tokens: int, starts: Sequence[int] | None) -> list[tuple[int, int]]:
    """``[(start, end)]`` of each sentence of a record of ``n_tokens`` tokens from its ``sentence_starts``."""
    cuts = sorted({int(s) for s in (starts or []) if 0 < int(s) < n_tokens} | {0})
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [n_tokens]) if b > a] if n_tokens else []


def ict_pair(ids: Sequence[int], spans: Sequence[tuple[int, int]], i: int, remove: bool,
             context_len: int) -> tuple[list[int], list[int]]:
    """(query body, context body) without special tokens: sentence ``i``, and the document with sentence ``i``
    deleted when ``remove`` (else kept), cut to a window of ``context_len`` tokens centred on sentence ``i``'s
    place (shifted to stay inside the document)."""
    s, e = spans[i]
    ids = list(ids)
    query = ids[s:e]
    rest = ids[:s] + ids[e:] if remove else ids
    centre = s if remove else (s + e) // 2
    if len(rest) <= context_len:
        return query, rest
    lo = max(0, min(centre - context_len // 2, len(rest) - context_len))
    return query, rest[lo: lo + context_len]


def pool_hidden(model: Any, ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T) -> (B, H): the [CLS] vector or the mask-weighted mean of the last hidden states."""
    h = hidden_only(model, ids, attention_mask=mask).last_hidden_state
    if pooling == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def ict_loss(q: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch softmax cross-entropy: (B, H) queries, (B, H) contexts -> (mean loss, top-1 accuracy)."""
    scores = q @ c.T  # (B, B)
    target = torch.arange(len(q), device=q.device)
    return F.cross_entropy(scores.float(), target), (scores.argmax(-1) == target).float().mean()


@dataclass(kw_only=True)
class ICTConfig(ObjectiveConfig):
    remove_prob: float = 0.9
    """Probability that the query sentence is deleted from its context (ORQA: 0.9)."""
    query_len: int = 64
    """Tokens of a query, [CLS] and [SEP] included."""
    context_len: int = 128
    """Tokens of a context, [CLS] and [SEP] included."""
    pooling: Literal["cls", "mean"] = "mean"

    def validate(self, name: str) -> None:
        super().validate(name)
        if isinstance(self.remove_prob, bool) or not isinstance(self.remove_prob, (int, float)) \
                or not 0.0 <= self.remove_prob <= 1.0:
            raise UserError(f"{name}: option remove_prob must be a number in [0, 1], got {self.remove_prob!r}")
        for key in ("query_len", "context_len"):
            check_positive(name, key, getattr(self, key), integer=True)
            if getattr(self, key) < 3:
                raise UserError(f"{name}: option {key} must be >= 3 ([CLS] + a token + [SEP]), got {getattr(self, key)}")
        check_choice(name, "pooling", self.pooling, ("cls", "mean"))


class ICT(Objective):
    """Inverse Cloze Task (module docstring). Batch keys: query_ids / query_mask (B, Tq), context_ids /
    context_mask (B, Tc). Metrics: ict_loss, ict_acc (in-batch top-1), ict_batch (documents kept)."""

    name = "ict"
    example_kind = "document"
    token_nll = False
    Config = ICTConfig
    config: ICTConfig

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model)
        require_vocab(self.name, model, self.vocab.size)

    def _wrap(self, body: list[int], length: int) -> list[int]:
        b, e = self.vocab.begin, self.vocab.end
        room = length - (b is not None) - (e is not None)
        return ([b] if b is not None else []) + body[:room] + ([e] if e is not None else [])

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        c = self.config
        qs, cs = [], []
        for x in examples:
            ex = as_example(x, self.name)
            ids = list(ex.ids)
            if ex.has_specials:  # a plain id list: strip the tokenizer's [CLS] / [SEP]
                ids = [t for t in ids if t not in (self.vocab.begin, self.vocab.end)]
            spans = sentence_spans(len(ids), ex.sentence_starts)
            if len(spans) < 2:
                continue
            i = int(torch.randint(len(spans), (1,)))
            remove = bool(torch.rand(()) < c.remove_prob)
            room = c.context_len - (self.vocab.begin is not None) - (self.vocab.end is not None)
            q, ctx = ict_pair(ids, spans, i, remove, room)
            qs.append(self._wrap(q, c.query_len))
            cs.append(self._wrap(ctx, c.context_len))
        out: dict[str, torch.Tensor] = {}
        for key, seqs in (("query", qs), ("context", cs)):
            T = max([len(s) for s in seqs], default=1)
            out[f"{key}_ids"] = pad_2d(seqs, self.vocab.pad_id, T) if seqs else torch.zeros(0, 1, dtype=torch.long)
            out[f"{key}_mask"] = (torch.arange(T)[None, :] < torch.tensor([len(s) for s in seqs] or [0])[:, None]
                                  ).long()[: len(seqs)]
        return out

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        B = batch["query_ids"].shape[0]
        if B < 2:  # nothing to contrast with: a zero loss that still touches the graph
            zero = sum(p.sum() for p in model.parameters()) * 0.0
            return zero, {"ict_batch": float(B)}
        q = pool_hidden(model, batch["query_ids"], batch["query_mask"], self.config.pooling)
        ctx = pool_hidden(model, batch["context_ids"], batch["context_mask"], self.config.pooling)
        loss, acc = ict_loss(q, ctx)
        return loss, {"ict_loss": float(loss.detach()), "ict_acc": float(acc), "ict_batch": float(B)}
