"""StructBERT (Wang et al. 2020, arXiv:1908.04577): the word and sentence structural objectives.

``structbert_wso`` -- word structural objective, trained jointly with MLM (one forward pass):
each sequence is masked as MLM does (``masking``, ``rate`` ... as in ``mlm.py``); then, among the
tokens that are neither masked nor special, non-overlapping trigrams (3 consecutive such tokens)
are drawn until ``wso_rate`` (5%) of the non-special tokens are covered (stochastically rounded,
at least ``wso_min`` = 1 trigram when one exists), and the 3 tokens of each are permuted. The model
must restore the original token at every shuffled position through the same output softmax as MLM
(``labels`` hold the original ids there). ``loss = MLM loss + wso_weight * WSO loss``, both mean
cross-entropies over their positions.

Never a no-op shuffle: the permutation is drawn uniformly among those that change the token
sequence (a permutation of positions that swaps two equal tokens leaves the text unchanged and is
not drawn). A trigram of three identical tokens ("the the the") has no such permutation and is
never chosen; a sequence whose candidate trigrams are all like that gets no shuffle.

Batch keys: input_ids, attention_mask, labels (MLM and WSO targets together), ``wso_mask`` (B, T)
bool (True at shuffled positions). ``Masked``-style details of one example: ``shuffle_example``.

``structbert_sso`` -- sentence structural objective: ``[CLS] S1 [SEP] S2 [SEP]`` with S2 the next
sentence (label 0), the previous sentence (label 1: the pair (B, A) of two consecutive segments
A, B) or a random segment of another document (label 2), 1/3 each (``probs``); a 3-way classifier on
the pooled output (``model.heads["sso"]``). Examples and the random segment come as for NSP
(``nsp.py``: token-store ``sentence_pairs`` records carry ``random_b`` from a *different*
document; other examples take B of another example of the batch). ``mlm_weight > 0`` adds MLM
on the same pass, as NSP/SOP do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    as_example,
    attention_from_lengths,
    check_open_unit,
    pad_2d,
    stochastic_round,
    token_metrics,
    top1_correct,
)
from plmkit.objectives.mlm import MLM, MLMConfig
from plmkit.objectives.nsp import Pair, PairConfig, SentencePairObjective

PERMUTATIONS = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]


@dataclass(kw_only=True)
class WSOConfig(MLMConfig):
    wso_rate: float = 0.05
    """Fraction of the non-special tokens covered by shuffled trigrams."""
    wso_min: int = 1
    """At least this many trigrams per sequence (when the sequence has them)."""
    wso_weight: float = 1.0
    """Weight of the word-structural loss."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "wso_rate", self.wso_rate)
        if not isinstance(self.wso_min, int) or isinstance(self.wso_min, bool) or self.wso_min < 0:
            raise UserError(f"{name}: option wso_min must be an integer >= 0, got {self.wso_min!r}")
        if not isinstance(self.wso_weight, (int, float)) or isinstance(self.wso_weight, bool) or self.wso_weight < 0:
            raise UserError(f"{name}: option wso_weight must be a number >= 0, got {self.wso_weight!r}")


@dataclass
class Shuffled:
    """One example after masking and trigram shuffling."""

    input_ids: list[int]
    labels: list[int]
    """MLM targets at masked positions, original ids at shuffled positions, -100 elsewhere."""
    original: list[int]
    """The ids before masking and shuffling (with special tokens)."""
    trigrams: list[int] = field(default_factory=list)
    """start position of each shuffled trigram"""
    perms: list[tuple[int, int, int]] = field(default_factory=list)
    """per trigram: new position j holds the original token at start + perm[j]"""
    wso_mask: list[bool] = field(default_factory=list)


def shuffle_trigrams(ids: list[int], allowed: list[bool], n_target: int, min_count: int,
                     generator: torch.Generator | None = None) -> tuple[list[int], list[int], list[tuple[int, int, int]]]:
    """Permute up to ``max(n_target, min_count)`` non-overlapping trigrams of ``allowed`` positions.

    Returns (new ids, trigram starts, permutations); each permutation changes the token sequence."""
    n = len(ids)
    starts = [i for i in range(n - 2) if allowed[i] and allowed[i + 1] and allowed[i + 2]
              and not (ids[i] == ids[i + 1] == ids[i + 2])]
    want = max(n_target, min_count)
    out = list(ids)
    if not starts or want <= 0:
        return out, [], []
    order = torch.randperm(len(starts), generator=generator).tolist()
    draws = torch.rand(len(starts), generator=generator).tolist()
    used = [False] * n
    chosen, perms = [], []
    for k, u in enumerate(order):
        if len(chosen) >= want:
            break
        s = starts[u]
        if used[s] or used[s + 1] or used[s + 2]:
            continue
        tri = ids[s:s + 3]
        ok = [p for p in PERMUTATIONS if [tri[j] for j in p] != tri]
        p = ok[min(int(draws[k] * len(ok)), len(ok) - 1)]
        for j in range(3):
            out[s + j] = tri[p[j]]
            used[s + j] = True
        chosen.append(s)
        perms.append(p)
    return out, chosen, perms


class StructBERT_WSO(MLM):
    """MLM + word structural objective; see the module docstring."""

    name = "structbert_wso"
    token_nll = False
    Config = WSOConfig  # type: ignore[assignment]
    config: WSOConfig  # type: ignore[assignment]

    def shuffle_example(self, example: Any, generator: torch.Generator | None = None) -> Shuffled:
        ex = self.with_specials(as_example(example, self.name))
        m = self.mask_example(ex, generator)
        special = self.vocab.special
        allowed = [lab == IGNORE and t not in special for t, lab in zip(ex.ids, m.labels)]
        n_cand = sum(1 for t in ex.ids if t not in special)
        n_tri = stochastic_round(self.config.wso_rate * n_cand / 3.0, generator)
        ids, starts, perms = shuffle_trigrams(m.input_ids, allowed, n_tri, self.config.wso_min, generator)
        labels = list(m.labels)
        wso = [False] * len(ids)
        for s in starts:
            for p in range(s, s + 3):
                labels[p] = ex.ids[p]
                wso[p] = True
        return Shuffled(ids, labels, list(ex.ids), starts, perms, wso)

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.config.mode == "static":
            raise UserError(f"{self.name}: mode='static' is not supported; use mode='dynamic'")
        rows = [self.shuffle_example(x) for x in examples]
        T = max(len(r.input_ids) for r in rows)
        return {
            "input_ids": pad_2d([r.input_ids for r in rows], self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(r.input_ids) for r in rows], T),
            "labels": pad_2d([r.labels for r in rows], IGNORE, T),
            "wso_mask": pad_2d([[int(b) for b in r.wso_mask] for r in rows], 0, T).bool(),
        }

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        sel = labels != IGNORE  # (B, T): masked or shuffled
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "position_ids") if k in batch}
        out = model(batch["input_ids"], labels_mask=sel, **kw)
        logits = out.logits  # (N, V), rows in sel order
        y = labels[sel]
        is_wso = batch["wso_mask"][sel]  # (N,)
        metrics: dict[str, float] = {}
        total = logits.sum() * 0.0
        for key, rows, w in (("mlm", ~is_wso, 1.0), ("wso", is_wso, self.config.wso_weight)):
            lg, yy = logits[rows], y[rows]
            part = F.cross_entropy(lg.float(), yy) if yy.numel() else lg.sum() * 0.0
            total = total + w * part
            metrics.update(token_metrics(key, part, top1_correct(lg, yy), int(yy.numel())))
        return total, metrics


@dataclass(kw_only=True)
class SSOConfig(PairConfig):
    random_prob: float = 1.0 / 3.0
    """Probability of label 2 (random segment of another document)."""
    previous_prob: float = 1.0 / 3.0
    """Probability of label 1 (S2 precedes S1); label 0 (next) takes the rest."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "previous_prob", self.previous_prob)
        if self.random_prob + self.previous_prob >= 1.0:
            raise UserError(f"{name}: random_prob + previous_prob must be < 1, got "
                            f"{self.random_prob} + {self.previous_prob}")


class StructBERT_SSO(SentencePairObjective):
    """Sentence structural objective (3-way); batch keys: input_ids, attention_mask, token_type_ids,
    sso_labels (0 next, 1 previous, 2 random)."""

    name = "structbert_sso"
    token_nll = False
    Config = SSOConfig  # type: ignore[assignment]
    config: SSOConfig  # type: ignore[assignment]
    head_name = "sso"
    label_key = "sso_labels"
    num_classes = 3

    def choose(self, pairs: list[Pair]) -> tuple[list[Pair], list[int]]:
        n = len(pairs)
        r = torch.rand(n).tolist()
        c = self.config
        out, labels = [], []
        for i, (p, x) in enumerate(zip(pairs, r)):
            if x < c.random_prob:
                out.append(self.random_pair(pairs, i))
                labels.append(2)
            elif x < c.random_prob + c.previous_prob:
                out.append(Pair(p.b, p.a, p.wb, p.wa))
                labels.append(1)
            else:
                out.append(p)
                labels.append(0)
        return out, labels
