"""Permutation language modelling (XLNet, Yang et al. 2019, arXiv:1906.08237) with partial prediction.

For each sequence a random factorisation order is drawn over its non-special tokens and only the
last ``1/K`` of it (``K`` = 6) is predicted (partial prediction). Following XLNet's ``_local_perm``:

- non-target tokens (and specials) get rank -1: every position may see them, they never see a target;
- targets are ordered by the random permutation; target i may see target j iff rank(j) < rank(i).

``perm_mask[b, i, j] = 1`` means position i may NOT attend to j (XLNet / HF convention; the
content stream additionally sees itself, which the two-stream backbone adds). ``target_mapping``
(B, P, T) is one-hot over the P predicted positions, in factorisation order, and ``labels``
(B, P) the tokens there (-100 for padding rows). Inputs are not masked: the query stream never
sees the content of the position it predicts. Batch keys: input_ids, attention_mask, perm_mask,
target_mapping, labels.

The loss needs XLNet's two-stream attention (a query stream without the token's own content):
``plmkit.models.xlnet.XLNet`` (preset ``xlnet-base`` / ``xlnet-tiny``) provides it, and so does
``transformers.XLNetLMHeadModel``; ``prepare`` refuses any other backbone. ``loss`` calls
``model(input_ids, attention_mask=..., perm_mask=..., target_mapping=...)`` and takes (B, P, V)
logits (``prepare`` accepts a model whose config has ``family`` or ``model_type`` "xlnet").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    attention_from_lengths,
    backbone_name,
    check_positive,
    pad_2d,
    token_metrics,
    top1_correct,
)


@dataclass(kw_only=True)
class PLMConfig(ObjectiveConfig):
    K: int = 6
    """Partial prediction: predict the last 1/K of each factorisation order."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_positive(name, "K", self.K, integer=True)
        if self.K < 2:
            raise UserError(f"{name}: option K must be >= 2 (K=1 would predict every token), got {self.K}")


class PLM(Objective):
    """XLNet permutation LM batches (see the module docstring)."""

    name = "plm"
    example_kind = "window"
    Config = PLMConfig
    config: PLMConfig

    def permute(self, example: Any) -> tuple[list[int], torch.Tensor, list[int]]:
        """(ids, perm_mask (T, T) bool, target positions in factorisation order) of one example."""
        ex = as_example(example, self.name)
        ids = self._truncate(ex.ids)
        if not ex.has_specials:
            e, c = self.vocab.sep, self.vocab.cls  # XLNet appends <sep> <cls>
            ids = ids + [t for t in (e, c) if t is not None]
        T = len(ids)
        special = self.vocab.special
        cand = [i for i, t in enumerate(ids) if t not in special]
        n_pred = max(1, math.ceil(len(cand) / self.config.K)) if cand else 0
        order = torch.randperm(len(cand)).tolist()
        targets = [cand[k] for k in order[len(cand) - n_pred:]]  # the last 1/K of the order
        rank = torch.full((T,), -1, dtype=torch.long)
        for r, p in enumerate(targets):
            rank[p] = r
        is_target = rank >= 0
        # i may not see j when j is a target whose rank is >= rank(i) (targets do not see themselves)
        perm = is_target[None, :] & (rank[None, :] >= rank[:, None])
        return ids, perm, targets

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self.permute(x) for x in examples]
        T = max(len(r[0]) for r in rows)
        P = max(len(r[2]) for r in rows)
        B = len(rows)
        perm = torch.ones(B, T, T, dtype=torch.float32)
        mapping = torch.zeros(B, P, T)
        labels = torch.full((B, P), IGNORE, dtype=torch.long)
        for b, (ids, pm, tg) in enumerate(rows):
            n = len(ids)
            perm[b, :n, :n] = pm.float()
            for k, p in enumerate(tg):
                mapping[b, k, p] = 1.0
                labels[b, k] = ids[p]
        return {
            "input_ids": pad_2d([r[0] for r in rows], self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(r[0]) for r in rows], T),
            "perm_mask": perm,
            "target_mapping": mapping,
            "labels": labels,
        }

    def prepare(self, model: Any) -> None:
        cfg = model.config
        if getattr(cfg, "family", None) != "xlnet" and getattr(cfg, "model_type", None) != "xlnet":
            raise UserError(f"{self.name} needs an XLNet backbone with two-stream attention (perm_mask, "
                            f"target_mapping); {backbone_name(model)!r} is a {getattr(cfg, 'family', '?')!r} model")

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], perm_mask=batch["perm_mask"],
                       target_mapping=batch["target_mapping"]).logits  # (B, P, V)
        labels = batch["labels"]
        sel = labels != IGNORE
        loss = F.cross_entropy(logits[sel].float(), labels[sel])
        return loss, token_metrics("plm", loss, top1_correct(logits[sel], labels[sel]),
                                   int(sel.sum()))
