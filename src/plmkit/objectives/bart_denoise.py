"""BART denoising (Lewis et al. 2020, arXiv:1910.13461, section 2.2): any combination of

- ``permute_sentences``: shuffle the sentences of the document (needs ``sentence_starts`` in the
  record; plain id lists are split after ``.`` tokens);
- ``rotate``: rotate the document to start at a uniformly chosen token;
- ``infill`` (text infilling): replace spans with ONE mask token each; span lengths ~ Poisson(λ =
  ``poisson_lambda`` = 3), drawn until they cover ``infill`` (30%) of the tokens; a 0-length span
  inserts a mask without removing anything. Spans are placed in distinct gaps between kept
  tokens, so two spans never touch and every mask stands for exactly one span;
- ``token_mask``: replace single tokens by the mask token (BERT-style, rate ``token_mask``);
- ``token_delete``: delete single tokens (rate ``token_delete``).

Order of application (fairseq's ``DenoisingDataset``): permutation, then infilling, then token
masking / deletion (on tokens not already masked), then rotation. The decoder target is always the
original document (+ EOS), so the original is recovered from the target exactly; ``noise_info``
records the spans so tests can also check the source against the original.
Defaults are BART's final configuration: text infilling 30% + sentence permutation.
Batch layout and loss: ``seq2seq.py`` (decoder start token = EOS, as BART).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    Objective,
    ObjectiveConfig,
    as_example,
    check_positive,
    check_unit,
    require_encoder_decoder,
    require_vocab,
)
from plmkit.objectives.seq2seq import seq2seq_batch, seq2seq_loss


@dataclass(kw_only=True)
class BartConfig(ObjectiveConfig):
    infill: float = 0.3
    """Fraction of tokens covered by infilling spans (0 disables text infilling)."""
    poisson_lambda: float = 3.0
    token_mask: float = 0.0
    token_delete: float = 0.0
    permute_sentences: bool = True
    rotate: bool = False

    def validate(self, name: str) -> None:
        super().validate(name)
        for k in ("infill", "token_mask", "token_delete"):
            v = getattr(self, k)
            check_unit(name, k, v)
            if v >= 1:
                raise UserError(f"{name}: option {k} must be < 1, got {v!r}")
        check_positive(name, "poisson_lambda", self.poisson_lambda)
        if not (self.infill or self.token_mask or self.token_delete or self.permute_sentences or self.rotate):
            raise UserError(f"{name}: every noise is switched off; enable at least one of infill, token_mask, "
                            "token_delete, permute_sentences, rotate")


@dataclass
class NoiseInfo:
    """What was done to one document (for tests and inspection)."""

    permuted: list[int] = field(default_factory=list)
    """the ids after sentence permutation (before infilling)"""
    spans: list[tuple[int, int]] = field(default_factory=list)
    """infilled spans as [start, end) in ``permuted`` (start == end: an inserted mask)"""
    rotation: int = 0


def poisson_spans(total: int, lam: float, budget: int) -> list[int]:
    """Poisson(lam) span lengths drawn until they sum to ``budget`` (the last one is cut)."""
    lengths: list[int] = []
    covered = 0
    while covered < budget:
        draw = torch.poisson(torch.full((16,), float(lam))).long().tolist()
        for n in draw:
            n = min(n, budget - covered)
            lengths.append(n)
            covered += n
            if covered >= budget:
                break
    return lengths


class BartDenoise(Objective):
    """BART's noising functions (see the module docstring)."""

    name = "bart_denoise"
    example_kind = "document"
    Config = BartConfig
    config: BartConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")
        self.eos = self.vocab.eos if self.vocab.eos is not None else self.vocab.sep
        if self.eos is None:
            raise UserError(f"{self.name}: the tokenizer needs an eos or sep token")
        self.bos = self.vocab.begin
        dot = tokenizer.convert_tokens_to_ids(".") if hasattr(tokenizer, "convert_tokens_to_ids") else None
        self.full_stop = None if dot is None or dot == self.vocab.unk else int(dot)

    def _body(self, x: Any) -> tuple[list[int], list[int]]:
        """Document ids without specials, and its sentence starts."""
        ex = as_example(x, self.name)
        ids = ex.ids
        special = self.vocab.special
        if ex.has_specials:
            ids = [t for t in ids if t not in special]
            starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == self.full_stop]
        else:
            starts = sorted(set([0] + [s for s in (ex.sentence_starts or []) if 0 < s < len(ids)]))
        m = self.config.max_length
        if m is not None:
            ids = ids[: m - 2]
            starts = [s for s in starts if s < len(ids)]
        return ids, starts

    def corrupt(self, example: Any) -> tuple[list[int], list[int], NoiseInfo]:
        """(source ids, target ids, what was done) for one document."""
        c = self.config
        ids, starts = self._body(example)
        info = NoiseInfo()
        doc = list(ids)
        if c.permute_sentences and len(starts) > 1:
            bounds = starts + [len(ids)]
            sents = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            order = torch.randperm(len(sents)).tolist()
            doc = [t for k in order for t in sents[k]]
        info.permuted = list(doc)
        L = len(doc)
        masked = [False] * L  # positions replaced by a mask (start of an infilled span) or deleted
        out: list[int | None] = list(doc)
        if c.infill > 0 and L > 0:
            budget = min(L, max(1, round(L * c.infill)))
            lengths = poisson_spans(L, c.poisson_lambda, budget)
            kept = L - sum(lengths)
            # place the spans in distinct gaps between kept tokens (kept + 1 gaps)
            n = min(len(lengths), kept + 1)
            lengths = lengths[:n]
            gaps = sorted(torch.randperm(kept + 1)[:n].tolist())
            order = torch.randperm(n).tolist()
            lengths = [lengths[k] for k in order]
            # walk: kept tokens interleaved with spans at the chosen gaps
            new: list[int] = []
            pos = 0
            g_iter = iter(zip(gaps, lengths))
            nxt = next(g_iter, None)
            for kept_idx in range(kept + 1):
                while nxt is not None and nxt[0] == kept_idx:
                    ln = nxt[1]
                    info.spans.append((pos, pos + ln))
                    new.append(self.mask_id)
                    pos += ln
                    nxt = next(g_iter, None)
                if kept_idx < kept:
                    new.append(doc[pos])
                    pos += 1
            assert pos == L
            out = new
            masked = [t == self.mask_id for t in out]
        src: list[int] = []
        r_mask = torch.rand(len(out)).tolist() if c.token_mask else None
        r_del = torch.rand(len(out)).tolist() if c.token_delete else None
        for i, t in enumerate(out):
            if not masked[i]:
                if r_del is not None and r_del[i] < c.token_delete:
                    continue
                if r_mask is not None and r_mask[i] < c.token_mask:
                    t = self.mask_id
            src.append(t)
        if c.rotate and len(src) > 1:
            k = int(torch.randint(len(src), ()))
            info.rotation = k
            src = src[k:] + src[:k]
        pre = [self.bos] if self.bos is not None and self.bos != self.eos else []
        source = pre + src + [self.eos]
        target = pre + list(ids) + [self.eos]
        return source, target, info

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        pairs = [self.corrupt(x)[:2] for x in examples]
        return seq2seq_batch([p[0] for p in pairs], [p[1] for p in pairs], self.vocab.pad_id, self.eos)

    def prepare(self, model: Any) -> None:
        require_encoder_decoder(self.name, model)
        require_vocab(self.name, model, self.vocab.size)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return seq2seq_loss(model, batch, "bart")
