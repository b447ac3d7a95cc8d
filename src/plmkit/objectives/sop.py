"""Sentence-order prediction (ALBERT, Lan et al. 2020, arXiv:1909.11942).

Two consecutive segments A, B of one document; with probability ``random_prob`` (50%) they are
swapped. A 2-way classifier on the pooled output predicts ``sop_labels``: 0 = original order,
1 = swapped (the convention of HF's ``sentence_order_label``). Unlike NSP, both classes share
the topic, so the model must learn discourse coherence rather than topic shift.

Examples, batch layout, the ``mlm_weight`` option (ALBERT trains MLM + SOP jointly) and the head
(``model.heads["sop"]``) are shared with NSP (see ``nsp.py``).
"""

from __future__ import annotations

import torch

from plmkit.objectives.nsp import Pair, SentencePairObjective


class SOP(SentencePairObjective):
    """Sentence-order prediction; batch keys: input_ids, attention_mask, token_type_ids, sop_labels."""

    name = "sop"
    token_nll = False
    head_name = "sop"
    label_key = "sop_labels"

    def choose(self, pairs: list[Pair]) -> tuple[list[Pair], list[int]]:
        swap = (torch.rand(len(pairs)) < self.config.random_prob).tolist()
        out = [Pair(p.b, p.a, p.wb, p.wa) if s else p for p, s in zip(pairs, swap)]
        return out, [int(s) for s in swap]
