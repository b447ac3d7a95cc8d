"""Logit processing for decoding: repetition penalty, temperature, top-k, top-p (nucleus).

Applied in the order Hugging Face ``generate`` uses (penalty, temperature, top-k, top-p), so the
same settings give the same distribution. All functions take (B, V) scores and return new ones;
filtered entries are set to -inf.

References: Keskar et al. 2019 (CTRL repetition penalty); Fan et al. 2018 (top-k sampling);
Holtzman et al. 2020 (nucleus / top-p sampling).
"""

from __future__ import annotations

import torch
from torch import Tensor


def repetition_penalty(scores: Tensor, seqs: Tensor, penalty: float) -> Tensor:
    """Divide positive / multiply negative scores of tokens already in ``seqs`` (B, S) by ``penalty``."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(1, seqs)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seqs, picked)


def top_k_filter(scores: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest scores per row (k <= 0 keeps all)."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: Tensor, p: float, min_keep: int = 1) -> Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``p`` (p >= 1 keeps all)."""
    if p >= 1.0:
        return scores
    sorted_scores, idx = torch.sort(scores, descending=False, dim=-1)
    cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)  # the low-probability tail whose total mass is <= 1 - p
    remove[..., -min_keep:] = False
    remove = remove.scatter(1, idx, remove)
    return scores.masked_fill(remove, float("-inf"))


def process(scores: Tensor, seqs: Tensor | None, *, temperature: float = 1.0, top_k: int = 0,
            top_p: float = 1.0, penalty: float = 1.0, sampling: bool = False) -> Tensor:
    """Apply penalty (always) and temperature / top-k / top-p (only when ``sampling``)."""
    if penalty != 1.0 and seqs is not None:
        scores = repetition_penalty(scores, seqs, penalty)
    if sampling:
        if temperature != 1.0:
            scores = scores / temperature
        scores = top_p_filter(top_k_filter(scores, top_k), top_p)
    return scores
