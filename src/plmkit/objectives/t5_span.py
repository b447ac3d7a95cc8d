"""T5 span corruption (Raffel et al. 2020, arXiv:1910.10683, section 3.1.4 / ``random_spans_noise_mask``).

``noise_density`` (15%) of the non-special tokens are dropped in spans of mean length
``mean_span`` (3). As in T5's ``random_spans_noise_mask`` the number of noise tokens and spans
are fixed per sequence and the noise / non-noise tokens are cut into that many random non-empty
segments that alternate, starting with non-noise; one deviation: both counts are rounded
stochastically (T5 rounds to nearest), so the realised density and mean span length are unbiased
even for short sequences. Special tokens are never noise.

Input: each noise span replaced by one sentinel (``<extra_id_k>`` in order), then EOS.
Target: ``<extra_id_0> span_0 <extra_id_1> span_1 ... EOS``. ``reconstruct(input, target)``
recovers the original sequence exactly (tested).

Sentinels are the tokenizer's ``<extra_id_k>`` tokens when it has them (``train_tokenizer(...,
kind="unigram")`` adds 100); otherwise ids ``len(tokenizer) + k`` past the tokenizer's vocabulary,
as HF's T5 appends its ``extra_ids``: the model then needs ``vocab_size >= obj.required_vocab_size``.
Batch layout and loss: ``seq2seq.py``. ``prepare`` needs an encoder-decoder backbone
(``plmkit.models.seq2seq.EncoderDecoder``) with room for the sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    Objective,
    ObjectiveConfig,
    as_example,
    check_open_unit,
    check_positive,
    require_encoder_decoder,
    require_vocab,
    stochastic_round,
)
from plmkit.objectives.seq2seq import seq2seq_batch, seq2seq_loss


@dataclass(kw_only=True)
class T5SpanConfig(ObjectiveConfig):
    noise_density: float = 0.15
    mean_span: float = 3.0
    """Mean noise span length (tokens)."""
    num_sentinels: int = 100
    """Sentinels available when the tokenizer has none (ids past its vocabulary)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "noise_density", self.noise_density)
        check_positive(name, "mean_span", self.mean_span)
        if self.mean_span < 1:
            raise UserError(f"{name}: option mean_span must be >= 1, got {self.mean_span!r}")
        check_positive(name, "num_sentinels", self.num_sentinels, integer=True)


def random_segmentation(num_items: int, num_segments: int) -> list[int]:
    """Lengths of a uniformly random split of ``num_items`` into ``num_segments`` non-empty parts."""
    if num_segments <= 1:
        return [num_items]
    # choose num_segments - 1 distinct cut points among the num_items - 1 gaps
    cuts = sorted((torch.randperm(num_items - 1)[: num_segments - 1] + 1).tolist())
    bounds = [0] + cuts + [num_items]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def random_spans_noise_mask(length: int, density: float, mean_span: float) -> list[bool]:
    """T5's noise mask of ``length`` tokens: alternating non-noise / noise segments (starting non-noise)."""
    if length < 2:
        return [False] * length
    n_noise = min(max(stochastic_round(length * density), 1), length - 1)
    n_spans = max(1, stochastic_round(n_noise / mean_span))
    n_spans = min(n_spans, n_noise, length - n_noise)
    noise = random_segmentation(n_noise, n_spans)
    keep = random_segmentation(length - n_noise, n_spans)
    mask: list[bool] = []
    for k, n in zip(keep, noise):
        mask += [False] * k + [True] * n
    return mask


class T5Span(Objective):
    """T5 span corruption (see the module docstring)."""

    name = "t5_span"
    example_kind = "window"
    Config = T5SpanConfig
    config: T5SpanConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        own = list(getattr(tokenizer, "sentinel_token_ids", None) or [])
        if own:
            self.sentinels = own
            self.required_vocab_size = self.vocab.size
        else:
            self.sentinels = [self.vocab.size + k for k in range(self.config.num_sentinels)]
            self.required_vocab_size = self.vocab.size + self.config.num_sentinels
        self._sentinel_index = {s: k for k, s in enumerate(self.sentinels)}
        self.eos = self.vocab.eos if self.vocab.eos is not None else self.vocab.sep

    def corrupt(self, example: Any) -> tuple[list[int], list[int], list[bool]]:
        """(input ids, target ids, noise mask over the original ids) of one example."""
        ex = as_example(example, self.name)
        ids = self._truncate(ex.ids)
        special = self.vocab.special
        pos = [i for i, t in enumerate(ids) if t not in special and t not in self._sentinel_index]
        sub = random_spans_noise_mask(len(pos), self.config.noise_density, self.config.mean_span)
        noise = [False] * len(ids)
        for p, m in zip(pos, sub):
            noise[p] = m
        inp: list[int] = []
        tgt: list[int] = []
        k = -1
        for i, t in enumerate(ids):
            if noise[i]:
                if i == 0 or not noise[i - 1]:
                    k += 1
                    if k >= len(self.sentinels):
                        raise UserError(f"{self.name}: {k + 1} noise spans but only {len(self.sentinels)} "
                                        "sentinels; raise num_sentinels or shorten the examples")
                    inp.append(self.sentinels[k])
                    tgt.append(self.sentinels[k])
                tgt.append(t)
            else:
                inp.append(t)
        if self.eos is not None:
            if not inp or inp[-1] != self.eos:
                inp.append(self.eos)
            tgt.append(self.eos)
        return inp, tgt, noise

    def reconstruct(self, inp: Sequence[int], tgt: Sequence[int]) -> list[int]:
        """The original ids from an (input, target) pair (inverse of ``corrupt``)."""
        spans: dict[int, list[int]] = {}
        cur = None
        body = list(tgt[:-1]) if self.eos is not None and tgt and tgt[-1] == self.eos else list(tgt)
        for t in body:
            if t in self._sentinel_index:
                cur = self._sentinel_index[t]
                spans[cur] = []
            elif cur is not None:
                spans[cur].append(t)
        out: list[int] = []
        for t in inp:
            if t in self._sentinel_index:
                out += spans[self._sentinel_index[t]]
            else:
                out.append(t)
        return out

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        pairs = [self.corrupt(x)[:2] for x in examples]
        start = self.vocab.pad_id  # T5 starts decoding from the pad token
        return seq2seq_batch([p[0] for p in pairs], [p[1] for p in pairs], self.vocab.pad_id, start)

    def prepare(self, model: Any) -> None:
        require_encoder_decoder(self.name, model)
        require_vocab(self.name, model, self.required_vocab_size)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return seq2seq_loss(model, batch, "t5")
