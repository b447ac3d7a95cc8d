"""Masking primitives shared by mlm, rtd, tlm, unilm and infoword.

A *unit* is a token range ``[start, end)`` that is selected (and replaced) as a whole: one token
(BERT), one word (whole-word masking; Chinese word groups come from the record's ``word_ids``),
a given entity / phrase span (ERNIE), or a run of whole words (SpanBERT).

* ``select_units``: pick units in random order until the number of selected tokens reaches the
  budget ``rate * candidates`` (stochastically rounded so the expectation is exact). A unit is
  taken when taking it brings the count closer to the budget; this keeps the realised rate
  unbiased even when units hold several tokens (BERT's ``create_pretraining_data`` skips units
  that overshoot, which biases whole-word masking low).
* ``span_units``: SpanBERT (Joshi et al., 2020, arXiv:1907.10529) span masking: span lengths in
  words ~ Geometric(p=0.2) clipped (renormalised) at 10, a random starting word, complete
  words only, until the budget is met.
* ``apply_units``: the 80/10/10 replacement (Devlin et al., 2019), decided per unit (SpanBERT
  does it per span; we do the same for whole words, so a word is never half [MASK]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from plmkit.objectives.base import IGNORE, Vocab


def truncated_geometric(p: float, max_len: int) -> torch.Tensor:
    """(max_len,) probabilities of lengths 1..max_len under Geometric(p) renormalised."""
    k = torch.arange(1, max_len + 1, dtype=torch.float64)
    w = p * (1 - p) ** (k - 1)
    return w / w.sum()


def select_units(
    units: Sequence[tuple[int, int]], budget: int, generator: torch.Generator | None = None
) -> list[int]:
    """Indices of the units chosen (random order, closest-to-budget rule; see module docstring)."""
    if budget <= 0 or not units:
        return []
    order = torch.randperm(len(units), generator=generator).tolist()
    chosen: list[int] = []
    count = 0
    for u in order:
        n = units[u][1] - units[u][0]
        # take the unit if |count + n - budget| < |count - budget|
        if 2 * count + n < 2 * budget:
            chosen.append(u)
            count += n
            if count >= budget:
                break
    return chosen


def span_units(
    words: Sequence[tuple[int, int]],
    budget: int,
    length_probs: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """SpanBERT span selection over whole words.

    Args:
        words: token ranges of the words (in order).
        budget: number of tokens to select.
        length_probs: probabilities of span lengths 1..L (in words).
    Returns:
        (spans as token ranges, sampled length of each span, realised word count of each span).
    """
    W = len(words)
    taken = [False] * W
    spans: list[tuple[int, int]] = []
    sampled: list[int] = []
    realised: list[int] = []
    count = 0
    attempts = 0
    # Draw lengths and anchors in blocks (fewer RNG calls); the draws are a deterministic
    # function of the global RNG state, so resuming stays exact.
    while count < budget and attempts < 10 * W + 10:
        lens = (torch.multinomial(length_probs, 32, replacement=True, generator=generator) + 1).tolist()
        anchors = torch.randint(W, (32,), generator=generator).tolist()
        for L, a in zip(lens, anchors):
            attempts += 1
            if count >= budget or attempts >= 10 * W + 10:
                break
            if taken[a]:
                continue
            k = 0
            while k < L and a + k < W and not taken[a + k]:
                n = words[a + k][1] - words[a + k][0]
                if not 2 * count + n < 2 * budget:
                    break
                taken[a + k] = True
                count += n
                k += 1
            if k:
                spans.append((words[a][0], words[a + k - 1][1]))
                sampled.append(L)
                realised.append(k)
    return spans, sampled, realised


@dataclass
class Masked:
    """Result of masking one sequence."""

    input_ids: list[int]
    labels: list[int]
    units: list[tuple[int, int]] = field(default_factory=list)
    """selected token ranges"""
    decisions: list[int] = field(default_factory=list)
    """per unit: 0 = [MASK], 1 = random token, 2 = kept"""
    sampled_lengths: list[int] = field(default_factory=list)
    """span mode: the lengths (in words) drawn from the span distribution"""
    realised_words: list[int] = field(default_factory=list)


def apply_units(
    ids: Sequence[int],
    units: Sequence[tuple[int, int]],
    vocab: Vocab,
    mask_id: int,
    mask_prob: float,
    random_prob: float,
    generator: torch.Generator | None = None,
) -> Masked:
    """Replace the selected units: ``mask_prob`` -> [MASK], ``random_prob`` -> random tokens,
    the rest kept; labels hold the original ids at selected positions, -100 elsewhere."""
    inp = list(ids)
    labels = [IGNORE] * len(ids)
    if not units:
        return Masked(inp, labels)
    r = torch.rand(len(units), generator=generator).tolist()
    n_rand = sum(e - s for (s, e), x in zip(units, r) if mask_prob <= x < mask_prob + random_prob)
    rand_tokens = vocab.random_tokens(n_rand, generator).tolist() if n_rand else []
    decisions = []
    j = 0
    for (s, e), x in zip(units, r):
        d = 0 if x < mask_prob else (1 if x < mask_prob + random_prob else 2)
        decisions.append(d)
        for p in range(s, e):
            labels[p] = ids[p]
            if d == 0:
                inp[p] = mask_id
            elif d == 1:
                inp[p] = rand_tokens[j]
                j += 1
    return Masked(inp, labels, list(units), decisions)


def token_units(ids: Sequence[int], vocab: Vocab) -> list[tuple[int, int]]:
    """One unit per non-special token."""
    special = vocab.special
    return [(i, i + 1) for i, t in enumerate(ids) if t not in special]
