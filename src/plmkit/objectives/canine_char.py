"""Masked character prediction for CANINE (``plmkit.models.canine``): the character loss of CANINE-C
(Clark et al. 2022, section 3.2) WITHOUT its autoregressive span decoder.

Data path: the corpus is tokenized by plmkit's ``char`` tokenizer (one token per character, so the token
store, windows and the Trainer work unchanged); this objective turns token ids into Unicode code points
(``codepoints``: ``ord`` of the character; [PAD] -> 0, [CLS] / [SEP] / [MASK] -> CANINE's private-use code
points 0xE000 / 0xE001 / 0xE003, [UNK] -> 0xE002, any multi-character token -> 0xE100 + id) for the model.

Masking (``masking``): ``word`` (default, CANINE-C masks whole words) picks whitespace-delimited words in
random order (each CJK character is a word of its own) until ``rate`` (15%) of the characters are covered;
``char`` picks single characters. Every masked character becomes [MASK] in the input, and the model
predicts each masked character independently from its final character state through the head
``model.heads["canine_char"]`` = Linear(H, |char vocabulary|). CANINE-C instead predicts a span's
characters autoregressively with a small decoder: that part is not implemented. Loss: mean cross-entropy
per masked character (``char_loss``, ``char_acc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.errors import UserError
from plmkit.objectives.base import (IGNORE, Objective, ObjectiveConfig, as_example, attention_from_lengths,
                                    check_choice, check_open_unit, pad_2d, token_metrics, top1_correct)

HEAD = "canine_char"


def is_cjk(c: str) -> bool:
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF
            or 0x20000 <= o <= 0x2A6DF or 0xF900 <= o <= 0xFAFF)


@dataclass(kw_only=True)
class CanineCharConfig(ObjectiveConfig):
    rate: float = 0.15
    """Fraction of the characters (specials excluded) that are masked."""
    masking: Literal["word", "char"] = "word"

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "rate", self.rate)
        check_choice(name, "masking", self.masking, ["word", "char"])


class CanineChar(Objective):
    """Masked character prediction on CANINE (see the module docstring)."""

    name = "canine_char"
    example_kind = "window"
    Config = CanineCharConfig
    config: CanineCharConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        from plmkit.models.canine import CLS, MASK, PAD, SEP

        self.mask_id = self._need("mask")
        V = self.vocab.size
        toks = tokenizer.convert_ids_to_tokens(list(range(V)))
        cp = torch.empty(V, dtype=torch.long)
        space = torch.zeros(V, dtype=torch.bool)
        cjk = torch.zeros(V, dtype=torch.bool)
        roles = {self.vocab.pad: PAD, self.vocab.cls: CLS, self.vocab.sep: SEP, self.vocab.mask: MASK,
                 self.vocab.unk: 0xE002}
        for i, t in enumerate(toks):
            if i in roles:
                cp[i] = roles[i]
            elif t is not None and len(t) == 1:
                cp[i] = ord(t)
                space[i], cjk[i] = t.isspace(), is_cjk(t)
            else:
                cp[i] = 0xE100 + i
        if V and not bool(((cp >= 32) & (cp < 0xE000)).any()):
            raise UserError(f"{self.name}: the tokenizer has no single-character tokens; use tokenizer kind 'char'")
        self.codepoint_table, self.space_table, self.cjk_table = cp, space, cjk

    def codepoints(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> the code points CANINE reads."""
        return self.codepoint_table[ids]

    def _units(self, ids: list[int]) -> list[tuple[int, int]]:
        """Maskable units [start, end): words (or single characters) of non-special, non-space tokens."""
        special = self.vocab.special
        units: list[tuple[int, int]] = []
        start = None
        for i, t in enumerate(ids + [None]):  # type: ignore[operator]
            boundary = t is None or t in special or bool(self.space_table[t])
            own = not boundary and (self.config.masking == "char" or bool(self.cjk_table[t]))
            if start is not None and (boundary or own):
                units.append((start, i))
                start = None
            if own:
                units.append((i, i + 1))
            elif not boundary and start is None:
                start = i
        return units

    def mask_example(self, x: Any) -> tuple[list[int], list[int]]:
        """(masked token ids, labels) of one example."""
        ex = as_example(x, self.name)
        ids = self._truncate(ex.ids) if ex.has_specials else ex.ids
        if not ex.has_specials:
            b, e = self.vocab.begin, self.vocab.end
            m = self.config.max_length
            body = ids[: m - 2] if m is not None else ids
            ids = ([b] if b is not None else []) + list(body) + ([e] if e is not None else [])
        units = self._units(ids)
        n_chars = sum(e - s for s, e in units)
        budget = max(1, round(n_chars * self.config.rate)) if n_chars else 0
        out, labels = list(ids), [IGNORE] * len(ids)
        covered = 0
        for k in torch.randperm(len(units)).tolist():
            if covered >= budget:
                break
            s, e = units[k]
            for i in range(s, e):
                labels[i] = ids[i]
                out[i] = self.mask_id
            covered += e - s
        return out, labels

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self.mask_example(x) for x in examples]
        T = max(len(r[0]) for r in rows)
        ids = pad_2d([r[0] for r in rows], self.vocab.pad_id, T)
        return {"input_ids": self.codepoints(ids),
                "attention_mask": attention_from_lengths([len(r[0]) for r in rows], T),
                "labels": pad_2d([r[1] for r in rows], IGNORE, T)}

    def prepare(self, model: Any) -> None:
        if type(model).__name__ != "Canine":
            raise UserError(f"{self.name} trains a CANINE character encoder (preset canine-tiny / canine-base), got "
                            f"{type(model).__name__}")
        head = model.heads[HEAD] if HEAD in model.heads else None
        if head is None or head.out_features != self.vocab.size:
            model.add_head(HEAD, nn.Linear(model.config.hidden_size, self.vocab.size), replace=True)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        sel = batch["labels"] != IGNORE
        h = model(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        logits = model.heads[HEAD](h[sel])  # (N, V_char)
        y = batch["labels"][sel]
        loss = F.cross_entropy(logits.float(), y) if y.numel() else logits.sum() * 0
        return loss, token_metrics("char", loss, top1_correct(logits, y), int(y.numel()))
