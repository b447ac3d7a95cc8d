"""ERNIE 2.0's small pretraining tasks (Sun et al. 2020, arXiv:1907.12412, section 4.2), usable alone or in
the continual multi-task schedule of ``plmkit.objectives.ernie2``:

- ``cap_pred`` (capitalisation prediction, a word-aware task): for every word, predict whether it is
  capitalised (its first letter is upper-case). The label is read from the cased token of the word's
  first sub-word; the input is the example **lower-cased** (each token id replaced by the id of its
  lower-case form, [UNK] when the vocabulary has none), so the answer is not in the input. Needs a cased
  tokenizer (``lowercase: false``). Loss: token-level 2-way cross-entropy at the words' first tokens.
- ``sent_reorder`` (sentence reordering, a structure-aware task): the example is split into m segments
  (m uniform in 1..``max_segments``; at sentence starts when there are enough sentences, else at random
  token positions), the segments are shuffled and joined ``[CLS] s_1 [SEP] s_2 [SEP] ...``, and a
  classifier on the first token predicts the permutation among sum_{k=1..M} k! classes:
  label = sum_{k<m} k! + lexicographic rank of the permutation (``perm_to_label`` / ``label_to_perm``).
- ``sent_distance`` (sentence distance, a 3-way structure-aware task): ``[CLS] A [SEP] B [SEP]`` with
  0 = B is the sentence right after A in the same document, 1 = B comes later in the same document but not
  right after, 2 = B is a sentence of another document (another example of the batch). The label is
  drawn uniformly among the classes the example allows (1 needs 3 sentences, 0 needs 2). Examples are
  ``documents`` records (``sentence_starts``), so two examples of a batch are two documents.

Heads (``model.heads``): ``cap_pred`` Linear(H, 2) per token; ``sent_reorder`` Linear(H, classes) and
``sent_distance`` Linear(H, 3) on the pooled output (the first token's state without a pooler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.errors import UserError
from plmkit.objectives.base import (IGNORE, Example, Objective, ObjectiveConfig, as_example, attention_from_lengths,
                                    hidden_only, pad_2d, require_encoder, require_vocab, word_ids_of)

_MARKS = ("##", "\u0120", "\u2581")


def _strip_mark(tok: str) -> str:
    for m in _MARKS:
        if tok.startswith(m):
            return tok[len(m):]
    return tok


def _pooled(out) -> torch.Tensor:
    return out.pooled if getattr(out, "pooled", None) is not None else out.last_hidden_state[:, 0]


def _sentences(obj: Objective, x: Any) -> list[list[int]]:
    """The example's sentences (token ids without specials): record ``sentence_starts`` or, for plain id
    lists, cuts after ``.`` tokens."""
    ex = as_example(x, obj.name)
    ids = ex.ids
    if ex.has_specials:
        ids = [t for t in ids if t not in obj.vocab.special]
        dot = obj.tokenizer.convert_tokens_to_ids(".") if hasattr(obj.tokenizer, "convert_tokens_to_ids") else None
        starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == dot]
    else:
        starts = sorted({0, *[s for s in (ex.sentence_starts or []) if 0 < s < len(ids)]})
    if obj.config.max_length is not None:
        ids = ids[: obj.config.max_length - 2]
        starts = [s for s in starts if s < len(ids)]
    bounds = starts + [len(ids)]
    return [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _encoder_heads(obj: Objective, model: Any, name: str, num_classes: int) -> None:
    require_encoder(obj.name, model)
    require_vocab(obj.name, model, obj.vocab.size)
    if name not in model.heads:
        model.add_head(name, nn.Linear(model.config.hidden_size, num_classes))


def _metrics(prefix: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    n = max(int(y.numel()), 1)
    return {f"{prefix}_loss": float(loss.detach()),
            f"{prefix}_acc": float((logits.detach().argmax(-1) == y).sum()) / n, f"{prefix}_n": float(y.numel())}


# ------------------------------------------------------------------------------------ capitalisation
@dataclass(kw_only=True)
class CapConfig(ObjectiveConfig):
    max_length: int | None = 128


class CapitalizationPrediction(Objective):
    """ERNIE 2.0 capitalisation prediction (see the module docstring)."""

    name = "cap_pred"
    example_kind = "document"
    Config = CapConfig
    token_nll = False

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        V = self.vocab.size
        toks = tokenizer.convert_ids_to_tokens(list(range(V)))
        index = {t: i for i, t in enumerate(toks) if t is not None}
        unk = self.vocab.unk if self.vocab.unk is not None else self.vocab.pad_id
        lower = torch.arange(V)
        upper = torch.zeros(V, dtype=torch.bool)
        for i, t in enumerate(toks):
            if t is None or i in self.vocab.special:
                continue
            core = _strip_mark(t)
            upper[i] = bool(core) and core[0].isupper()
            low = t.lower()
            if low != t:
                lower[i] = index.get(low, unk)
        self.lower_table, self.upper_table = lower, upper

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        b, e = self.vocab.begin, self.vocab.end
        for x in examples:
            ex = as_example(x, self.name)
            ids, wid = ex.ids, ex.word_ids
            if not ex.has_specials:
                m = self.config.max_length
                if m is not None:
                    ids, wid = ids[: m - 2], (wid[: m - 2] if wid is not None else None)
                ids = ([b] if b is not None else []) + list(ids) + ([e] if e is not None else [])
                if wid is not None:
                    wid = ([None] if b is not None else []) + list(wid) + ([None] if e is not None else [])
            words = word_ids_of(Example(ids=ids, word_ids=wid), self.vocab)
            y = [IGNORE] * len(ids)
            for i, w in enumerate(words):
                if w is not None and (i == 0 or words[i - 1] != w):
                    y[i] = int(self.upper_table[ids[i]]) if ids[i] < self.vocab.size else IGNORE
            t = torch.tensor(ids, dtype=torch.long)
            inside = t < self.vocab.size
            t[inside] = self.lower_table[t[inside]]
            rows.append(t.tolist())
            labels.append(y)
        T = max(len(r) for r in rows)
        return {"input_ids": pad_2d(rows, self.vocab.pad_id, T),
                "attention_mask": attention_from_lengths([len(r) for r in rows], T),
                "labels": pad_2d(labels, IGNORE, T)}

    def prepare(self, model: Any) -> None:
        probe = "The Quick Brown Fox Of Paris"
        if self.tokenizer.encode(probe) == self.tokenizer.encode(probe.lower()):
            raise UserError(f"{self.name}: the tokenizer lower-cases its input, so no capitalisation is left to "
                            "predict; train it with tokenizer.train.options.lowercase: false")
        _encoder_heads(self, model, "cap_pred", 2)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        sel = batch["labels"] != IGNORE
        h = hidden_only(model, batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.heads["cap_pred"](h[sel])  # (N, 2)
        y = batch["labels"][sel]
        loss = F.cross_entropy(logits.float(), y) if y.numel() else logits.sum() * 0
        return loss, _metrics("cap", loss, logits, y)


# ------------------------------------------------------------------------------------ sentence reordering
def perm_to_label(perm: Sequence[int]) -> int:
    """Class of a permutation of m segments: sum_{k<m} k! + its lexicographic rank (Lehmer code)."""
    m = len(perm)
    if sorted(perm) != list(range(m)) or m < 1:
        raise ValueError(f"not a permutation of 0..{m - 1}: {list(perm)}")
    rank, rest = 0, list(range(m))
    for i, p in enumerate(perm):
        j = rest.index(p)
        rank += j * math.factorial(m - 1 - i)
        rest.pop(j)
    return sum(math.factorial(k) for k in range(1, m)) + rank


def label_to_perm(label: int, max_segments: int) -> list[int]:
    """Inverse of :func:`perm_to_label`."""
    m, off = 1, 0
    while m <= max_segments and label >= off + math.factorial(m):
        off += math.factorial(m)
        m += 1
    if m > max_segments or label < 0:
        raise ValueError(f"label {label} out of range for {max_segments} segments")
    rank, rest, perm = label - off, list(range(m)), []
    for i in range(m):
        f = math.factorial(m - 1 - i)
        perm.append(rest.pop(rank // f))
        rank %= f
    return perm


def num_reorder_classes(max_segments: int) -> int:
    return sum(math.factorial(k) for k in range(1, max_segments + 1))


@dataclass(kw_only=True)
class ReorderConfig(ObjectiveConfig):
    max_length: int | None = 128
    max_segments: int = 3
    """M: examples are cut into 1..M segments (ERNIE 2.0 classes: sum_{k<=M} k!)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if not isinstance(self.max_segments, int) or not 2 <= self.max_segments <= 5:
            raise UserError(f"{name}: option max_segments must be an integer in [2, 5], got {self.max_segments!r}")


class SentenceReordering(Objective):
    """ERNIE 2.0 sentence reordering (see the module docstring)."""

    name = "sent_reorder"
    example_kind = "document"
    Config = ReorderConfig
    token_nll = False

    def segments(self, x: Any) -> list[list[int]]:
        """Cut one example into m segments in order (m drawn uniformly from what its length allows)."""
        sents = _sentences(self, x)
        flat = [t for s in sents for t in s]
        if not flat:
            raise UserError(f"{self.name}: an example has no (non-special) tokens")
        M = self.config.max_segments
        m = 1 + int(torch.randint(min(M, len(flat)), ()))
        if m == 1:
            return [flat]
        starts = [sum(len(s) for s in sents[:k]) for k in range(1, len(sents))]
        if len(starts) >= m - 1:
            cuts = sorted(starts[i] for i in torch.randperm(len(starts))[: m - 1].tolist())
        else:
            cuts = sorted((1 + torch.randperm(len(flat) - 1)[: m - 1]).tolist())
        bounds = [0] + cuts + [len(flat)]
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        b, e = self.vocab.begin, self.vocab.end
        if e is None:
            raise UserError(f"{self.name}: the tokenizer needs a [SEP] / </s> token to separate segments")
        rows, labels = [], []
        for x in examples:
            segs = self.segments(x)
            perm = torch.randperm(len(segs)).tolist()  # perm[i] = original index of the segment at slot i
            ids = [b] if b is not None else []
            for k in perm:
                ids += segs[k] + [e]
            rows.append(ids)
            labels.append(perm_to_label(perm))
        T = max(len(r) for r in rows)
        return {"input_ids": pad_2d(rows, self.vocab.pad_id, T),
                "attention_mask": attention_from_lengths([len(r) for r in rows], T),
                "reorder_labels": torch.tensor(labels, dtype=torch.long)}

    def prepare(self, model: Any) -> None:
        _encoder_heads(self, model, "sent_reorder", num_reorder_classes(self.config.max_segments))

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = hidden_only(model, batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = model.heads["sent_reorder"](_pooled(out))
        y = batch["reorder_labels"]
        loss = F.cross_entropy(logits.float(), y)
        return loss, _metrics("reorder", loss, logits, y)


# ------------------------------------------------------------------------------------ sentence distance
class SentenceDistance(Objective):
    """ERNIE 2.0 3-way sentence distance (see the module docstring)."""

    name = "sent_distance"
    example_kind = "document"
    Config = CapConfig
    token_nll = False

    def pairs(self, examples: Sequence[Any]) -> list[tuple[list[int], list[int], int]]:
        docs = [_sentences(self, x) for x in examples]
        out = []
        for i, sents in enumerate(docs):
            ok = [c for c, need in ((0, len(sents) >= 2), (1, len(sents) >= 3), (2, len(docs) >= 2 and sents))
                  if need]
            if not ok:
                raise UserError(f"{self.name}: an example with no tokens in a batch of one; use a batch size >= 2")
            y = ok[int(torch.randint(len(ok), ()))]
            n = len(sents)
            if y == 0:
                k = int(torch.randint(n - 1, ()))
                a, b = sents[k], sents[k + 1]
            elif y == 1:
                k = int(torch.randint(n - 2, ()))
                j = k + 2 + int(torch.randint(n - k - 2, ()))
                a, b = sents[k], sents[j]
            else:
                o = int(torch.randint(len(docs) - 1, ()))
                o += o >= i
                other = docs[o] or [[self.vocab.unk if self.vocab.unk is not None else self.vocab.pad_id]]
                a = sents[int(torch.randint(n, ()))]
                b = other[int(torch.randint(len(other), ()))]
            out.append((a, b, y))
        return out

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        b, e = self.vocab.begin, self.vocab.end
        if e is None:
            raise UserError(f"{self.name}: the tokenizer needs a [SEP] / </s> token")
        half = max(1, ((self.config.max_length or 128) - 3) // 2)
        rows, types, labels = [], [], []
        for a, bb, y in self.pairs(examples):
            a, bb = a[:half], bb[:half]
            ids = ([b] if b is not None else []) + a + [e] + bb + [e]
            rows.append(ids)
            types.append([0] * (len(ids) - len(bb) - 1) + [1] * (len(bb) + 1))
            labels.append(y)
        T = max(len(r) for r in rows)
        return {"input_ids": pad_2d(rows, self.vocab.pad_id, T),
                "attention_mask": attention_from_lengths([len(r) for r in rows], T),
                "token_type_ids": pad_2d(types, 0, T),
                "distance_labels": torch.tensor(labels, dtype=torch.long)}

    def prepare(self, model: Any) -> None:
        if getattr(model.config, "type_vocab_size", 0) < 2:
            raise UserError(f"{self.name} needs segment (token type) embeddings; the model has "
                            f"type_vocab_size={getattr(model.config, 'type_vocab_size', 0)}")
        _encoder_heads(self, model, "sent_distance", 3)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = hidden_only(model, batch["input_ids"], attention_mask=batch["attention_mask"],
                          token_type_ids=batch["token_type_ids"])
        logits = model.heads["sent_distance"](_pooled(out))
        y = batch["distance_labels"]
        loss = F.cross_entropy(logits.float(), y)
        return loss, _metrics("distance", loss, logits, y)
