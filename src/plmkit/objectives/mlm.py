"""Masked language modelling (BERT) with token, whole-word, span (SpanBERT) and entity (ERNIE) masking.

Each sequence gets ``rate`` (15%) of its non-special tokens selected; a selected unit is replaced
by [MASK] with probability ``mask_prob`` (80%), by random tokens with ``random_prob`` (10%) and
kept otherwise; the loss is the cross-entropy at the selected positions only, and the model is
asked for logits at those positions only (``labels_mask``), not the full (B, T, V) tensor.

Masking units (``masking``):
- ``"token"``: every non-special token independently (Devlin et al., 2019).
- ``"whole_word"``: all tokens of a word together, keeping 80/10/10 (unlike HF's collator, which
  only masks). Words come from the record's ``word_ids`` (the tokenizer groups Chinese
  characters into jieba words there) or, for plain id lists, from WordPiece ``##`` /
  byte-level ``Ġ`` / SentencePiece ``▁`` marks (Cui et al., 2021, arXiv:1906.08101).
- ``"span"``: SpanBERT (Joshi et al., 2020): span lengths ~ Geometric(``span_p``=0.2) clipped at
  ``span_max``=10 words, complete words only.
- ``"entity"``: ERNIE (Sun et al., 2019, arXiv:1904.09223) phrase / entity masking: the record's
  ``"spans"`` (``[[start, end), ...]`` token offsets into its ``input_ids``) are masked as
  wholes, the other words as whole words.

Static vs dynamic (RoBERTa, Liu et al., 2019): ``mode="dynamic"`` draws a new mask every time
``make_batch`` sees an example (torch's global RNG). ``mode="static"`` reproduces BERT's
pre-masked data: ``obj.static_view(data)`` is a Sequence of ``dup_factor`` x ``len(data)``
pre-masked records whose masks are a pure function of ``(seed, index)`` (a per-item seeded
``torch.Generator``), so every epoch sees the same ``dup_factor`` masks of each example; feed
that view to the trainer. ``make_batch`` collates pre-masked records as they are.

Records (no special tokens) get ``[CLS] ... [SEP]`` (or ``<s> ... </s>``) added; plain lists are
used as given. Special tokens are never selected.

``language``: XLM's monolingual MLM stream (Lample & Conneau 2019): every token of the batch gets this
language id as its ``token_type_ids`` (the model's token-type embeddings are the language embeddings, as in
``plmkit.objectives.tlm``); give each language its own MLM entry (``key: mlm_zh``, ``language: 1``) reading
its own files (the objective entry's ``data`` in a recipe).
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
    check_choice,
    check_open_unit,
    check_positive,
    check_unit,
    pad_2d,
    require_encoder,
    require_head,
    require_vocab,
    stochastic_round,
    token_metrics,
    top1_correct,
    word_ids_of,
    word_spans,
)
from plmkit.objectives.masking import (
    Masked,
    apply_units,
    select_units,
    span_units,
    token_units,
    truncated_geometric,
)

MASKINGS = ("token", "whole_word", "span", "entity")


@dataclass(kw_only=True)
class MLMConfig(ObjectiveConfig):
    rate: float = 0.15
    """Fraction of non-special tokens selected for prediction."""
    mask_prob: float = 0.8
    """Of the selected units, the fraction replaced by [MASK]."""
    random_prob: float = 0.1
    """Of the selected units, the fraction replaced by random (non-special) tokens; the rest is kept."""
    masking: Literal["token", "whole_word", "span", "entity"] = "token"
    """Selection unit (see module docstring)."""
    span_p: float = 0.2
    """SpanBERT geometric parameter (span mode)."""
    span_max: int = 10
    """SpanBERT maximum span length in words (span mode)."""
    mode: Literal["dynamic", "static"] = "dynamic"
    """Draw masks on the fly, or use pre-masked copies from ``static_view`` (BERT)."""
    dup_factor: int = 10
    """Static mode: number of differently masked copies of each example."""
    seed: int = 0
    """Static mode: seed of the per-example masks."""
    labels_only: bool = True
    """Ask the model for logits at labelled positions only (False: full (B, T, V) logits)."""
    language: int | None = None
    """XLM language id given to every token as ``token_type_ids`` (None: no token types in the batch)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "rate", self.rate)
        if self.language is not None and (isinstance(self.language, bool) or not isinstance(self.language, int)
                                          or self.language < 0):
            raise UserError(f"{name}: language must be a non-negative integer (a language id), "
                            f"got {self.language!r}")
        check_unit(name, "mask_prob", self.mask_prob)
        check_unit(name, "random_prob", self.random_prob)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise UserError(f"{name}: mask_prob + random_prob must be <= 1, got "
                            f"{self.mask_prob} + {self.random_prob}")
        check_choice(name, "masking", self.masking, MASKINGS)
        check_open_unit(name, "span_p", self.span_p)
        check_positive(name, "span_max", self.span_max, integer=True)
        check_choice(name, "mode", self.mode, ("dynamic", "static"))
        check_positive(name, "dup_factor", self.dup_factor, integer=True)


class MLM(Objective):
    """Masked LM; see the module docstring. Batch keys: input_ids, attention_mask, labels."""

    name = "mlm"
    example_kind = "window"
    Config = MLMConfig
    config: MLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")
        self._span_probs = truncated_geometric(self.config.span_p, self.config.span_max)

    # ------------------------------------------------------------------ examples
    def with_specials(self, ex: Example) -> Example:
        """Add [CLS]/[SEP] (or <s>/</s>) around a record; truncate to ``max_length``."""
        m = self.config.max_length
        if ex.has_specials:
            if m is not None and len(ex.ids) > m:
                ex = Example(ids=ex.ids[:m], word_ids=None if ex.word_ids is None else ex.word_ids[:m],
                             record=ex.record, has_specials=True)
            return ex
        b, e = self.vocab.begin, self.vocab.end
        pre = [b] if b is not None else []
        post = [e] if e is not None else []
        keep = len(ex.ids) if m is None else max(0, m - len(pre) - len(post))
        ids = pre + ex.ids[:keep] + post
        wid = None
        if ex.word_ids is not None:
            wid = [None] * len(pre) + list(ex.word_ids[:keep]) + [None] * len(post)
        rec = ex.record
        if rec is not None and rec.get("spans") is not None:
            shift = len(pre)
            spans = [(int(s) + shift, min(int(t), keep) + shift) for s, t in rec["spans"] if int(s) < keep]
            rec = dict(rec, spans=spans)
        return Example(ids=ids, word_ids=wid, record=rec, has_specials=True)

    def units_of(self, ex: Example) -> list[tuple[int, int]]:
        """Masking units of a prepared example (token, word or entity+word ranges)."""
        c = self.config
        if c.masking == "token":
            return token_units(ex.ids, self.vocab)
        words = word_spans(word_ids_of(ex, self.vocab))
        if c.masking in ("whole_word", "span"):
            return words
        # entity: given spans + the words they do not touch
        spans = (ex.record or {}).get("spans")
        if spans is None:
            raise UserError(f"{self.name}: masking='entity' needs records with a 'spans' key "
                            "([[start, end), ...] token offsets of entities / phrases)")
        special = self.vocab.special
        ents = []
        covered = [False] * len(ex.ids)
        for s, e in spans:
            s, e = int(s), int(e)
            if not 0 <= s < e <= len(ex.ids):
                continue
            if any(covered[s:e]) or any(ex.ids[p] in special for p in range(s, e)):
                continue
            ents.append((s, e))
            for p in range(s, e):
                covered[p] = True
        rest = [(s, e) for s, e in words if not any(covered[s:e])]
        return sorted(ents + rest)

    def mask_example(self, example: Any, generator: torch.Generator | None = None) -> Masked:
        """Mask one example (record or id list); returns ids, labels and what was selected."""
        ex = self.with_specials(as_example(example, self.name) if not isinstance(example, Example) else example)
        c = self.config
        n_cand = sum(1 for t in ex.ids if t not in self.vocab.special)
        budget = stochastic_round(c.rate * n_cand, generator)
        sampled: list[int] = []
        realised: list[int] = []
        if c.masking == "span":
            words = self.units_of(ex)
            units, sampled, realised = span_units(words, budget, self._span_probs, generator)
        elif c.masking == "token":
            cand = [i for i, t in enumerate(ex.ids) if t not in self.vocab.special]
            if budget and cand:
                pick = torch.randperm(len(cand), generator=generator)[: min(budget, len(cand))]
                units = sorted((cand[i], cand[i] + 1) for i in pick.tolist())
            else:
                units = []
        else:
            all_units = self.units_of(ex)
            units = sorted(all_units[i] for i in select_units(all_units, budget, generator))
        out = apply_units(ex.ids, units, self.vocab, self.mask_id, c.mask_prob, c.random_prob, generator)
        out.sampled_lengths, out.realised_words = sampled, realised
        return out

    def static_view(self, data: Sequence[Any], dup_factor: int | None = None, seed: int | None = None
                    ) -> "StaticMasked":
        """``dup_factor`` pre-masked copies of ``data`` (BERT's static masking); see module docstring."""
        return StaticMasked(self, data, dup_factor or self.config.dup_factor,
                            self.config.seed if seed is None else seed)

    # ------------------------------------------------------------------ contract
    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        inputs, labels = [], []
        for x in examples:
            if isinstance(x, dict) and "mlm_labels" in x:  # pre-masked (static_view)
                inputs.append(list(x["input_ids"]))
                labels.append(list(x["mlm_labels"]))
                continue
            if self.config.mode == "static":
                raise UserError(f"{self.name}: mode='static' needs pre-masked examples; feed the trainer "
                                "obj.static_view(data) instead of data")
            m = self.mask_example(x)
            inputs.append(m.input_ids)
            labels.append(m.labels)
        T = max(len(s) for s in inputs)
        batch = {
            "input_ids": pad_2d(inputs, self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(s) for s in inputs], T),
            "labels": pad_2d(labels, IGNORE, T),
        }
        if self.config.language is not None:
            batch["token_type_ids"] = torch.full((len(inputs), T), self.config.language, dtype=torch.long)
        return batch

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model)
        require_head(self.name, model, ("mlm", "lm"))
        require_vocab(self.name, model, self.vocab.size)
        lang = self.config.language
        if lang is not None and getattr(model.config, "type_vocab_size", 0) <= lang:
            raise UserError(f"{self.name}: language {lang} needs {lang + 1} language embeddings (token types); "
                            f"the {model.config.family!r} model has type_vocab_size="
                            f"{getattr(model.config, 'type_vocab_size', 0)} (model.overrides.type_vocab_size)")

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        sel = labels != IGNORE  # (B, T)
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "position_ids") if k in batch}
        if self.config.labels_only:
            out = model(batch["input_ids"], labels_mask=sel, **kw)
            logits = out.logits  # (N, V)
            if logits is not None and logits.dim() == 3:
                logits = logits[sel]
        else:
            out = model(batch["input_ids"], **kw)
            logits = None if out.logits is None else out.logits[sel]  # (N, V) from (B, T, V)
        if logits is None:
            raise UserError(f"{self.name}: the model returned no logits (it has no MLM head)")
        y = labels[sel]
        loss = F.cross_entropy(logits.float(), y) if y.numel() else logits.sum() * 0.0
        correct = top1_correct(logits, y)
        return loss, token_metrics("mlm", loss, correct, int(y.numel()))


class StaticMasked(Sequence):
    """``dup_factor`` x ``len(data)`` pre-masked records; item ``i`` is copy ``i // len(data)`` of
    example ``i % len(data)``, masked with a generator seeded by ``(seed, i)``."""

    def __init__(self, obj: MLM, data: Sequence[Any], dup_factor: int, seed: int):
        self.obj, self.data, self.dup_factor, self.seed = obj, data, int(dup_factor), int(seed)

    def __len__(self) -> int:
        return len(self.data) * self.dup_factor

    def __getitem__(self, i: int) -> dict[str, list[int]]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        m = self.obj.mask_example(self.data[i % len(self.data)], generator=g)
        return {"input_ids": m.input_ids, "mlm_labels": m.labels}
