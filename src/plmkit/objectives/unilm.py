"""UniLM: one shared encoder trained with four self-attention masks (Dong et al. 2019, arXiv:1905.03197).

Every example ``[CLS] A [SEP] B [SEP]`` gets 15% of its tokens masked (80/10/10) and one LM type,
drawn per example with probabilities 1/3 bidirectional, 1/3 sequence-to-sequence, 1/6
left-to-right, 1/6 right-to-left (the paper's mix). The type only changes the (B, T, T) "may
attend" mask passed to the shared encoder:

- bidirectional: every token sees every real token;
- left-to-right: token i sees tokens j <= i;  right-to-left: j >= i;
- seq2seq: source tokens ([CLS] A [SEP]) see the source; target tokens (B [SEP]) see the source
  and the target up to themselves.

Padded keys are never visible; a padded query sees only itself (no empty softmax rows).
Examples (``example_kind = "sentence_pair"``): token-store ``sentence_pairs`` records (A, B), or
records / id lists split at a random sentence start (else the middle; a plain list is split at its
first [SEP]). Batch keys: input_ids, token_type_ids, attention_mask (B, T, T bool), labels,
lm_type (B,: 0 bidirectional, 1 left-to-right, 2 right-to-left, 3 seq2seq).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Example,
    Objective,
    ObjectiveConfig,
    check_open_unit,
    attention_from_lengths,
    check_unit,
    pad_2d,
)

LM_TYPES = ("bidirectional", "left_to_right", "right_to_left", "seq2seq")


@dataclass(kw_only=True)
class UniLMConfig(ObjectiveConfig):
    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    p_bidirectional: float = 1 / 3
    p_left_to_right: float = 1 / 6
    p_right_to_left: float = 1 / 6
    p_seq2seq: float = 1 / 3

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "rate", self.rate)
        ps = [self.p_bidirectional, self.p_left_to_right, self.p_right_to_left, self.p_seq2seq]
        for k, p in zip(("p_bidirectional", "p_left_to_right", "p_right_to_left", "p_seq2seq"), ps):
            check_unit(name, k, p)
        if abs(sum(ps) - 1.0) > 1e-6:
            raise UserError(f"{name}: the four LM-type probabilities must sum to 1, got {sum(ps):.4f}")


def unilm_mask(lm_type: torch.Tensor, src_len: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T, T) bool "query i may attend key j" masks for the given LM types.

    Delegates to ``plmkit.models.prefix_lm.unilm_mask`` (the backbone's own definition of the modes).

    Args:
        lm_type: (B,) codes (index into ``LM_TYPES``); src_len: (B,) length of [CLS] A [SEP];
        lengths: (B,) real lengths.
    """
    from plmkit.models.prefix_lm import unilm_mask as backbone_mask

    return backbone_mask(lm_type, src_len, attention_from_lengths(lengths.tolist(), T))


class UniLM(Objective):
    """Unified LM pretraining (see the module docstring)."""

    name = "unilm"
    example_kind = "sentence_pair"
    Config = UniLMConfig
    config: UniLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        from plmkit.objectives.mlm import MLM
        from plmkit.objectives.nsp import NSP

        c = self.config
        self._mlm = MLM(tokenizer, rate=c.rate, mask_prob=c.mask_prob, random_prob=c.random_prob)
        self._mlm.name = self.name  # errors name this objective
        self._pairs = NSP(tokenizer, max_length=c.max_length)  # reuse its pair extraction / truncation
        self._pairs.name = self.name
        self._probs = torch.tensor([c.p_bidirectional, c.p_left_to_right, c.p_right_to_left, c.p_seq2seq])

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        P = self._pairs
        rows, labels, types, src = [], [], [], []
        for x in examples:
            p = P._pair(x)
            a, b, _, _ = P._truncate_pair(p.a, p.b, None, None)
            ids = [P.cls_id] + a + [P.sep_id] + b + [P.sep_id]
            m = self._mlm.mask_example(Example(ids=ids, has_specials=True))
            rows.append(m.input_ids)
            labels.append(m.labels)
            types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            src.append(len(a) + 2)
        lm_type = torch.multinomial(self._probs, len(rows), replacement=True)
        T = max(len(r) for r in rows)
        lengths = torch.tensor([len(r) for r in rows])
        return {
            "input_ids": pad_2d(rows, self.vocab.pad_id, T),
            "token_type_ids": pad_2d(types, 0, T),
            "attention_mask": unilm_mask(lm_type, torch.tensor(src), lengths, T),
            "labels": pad_2d(labels, IGNORE, T),
            "lm_type": lm_type,
        }

    def prepare(self, model: Any) -> None:
        self._mlm.prepare(model)  # a bidirectional encoder (the masks choose the direction) + MLM head

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        keys = ["input_ids", "attention_mask", "labels"]
        if getattr(model.config, "type_vocab_size", 0) >= 2:  # segment embeddings when the model has them
            keys.append("token_type_ids")
        sub = {k: batch[k] for k in keys}
        loss, m = self._mlm.loss(model, sub)
        out = {k.replace("mlm_", "unilm_"): v for k, v in m.items()}
        for k, name in enumerate(LM_TYPES):
            out[f"frac_{name}"] = float((batch["lm_type"] == k).float().mean())
        return loss, out
