"""GLM: autoregressive blank infilling (Du et al. 2022, arXiv:2103.10360).

Spans of the text are blanked out of *Part A* (each replaced by one mask token) and generated
autoregressively in *Part B*, one span after another in a random (shuffled) order:

- ``mode="short"``: span lengths ~ Poisson(λ = ``poisson_lambda`` = 3) (0 is redrawn), sampled
  until at least ``rate`` (15%) of the tokens are covered; spans never touch each other.
- ``mode="long"``: one span covering a uniform 50%-100% of the text, at its end (generation), with
  the ``[gMASK]`` token when the tokenizer has one.
- ``mode="mixed"``: long with probability ``long_prob``, else short (per example).

Part B holds, for every span, ``[START] x_1 ... x_n`` as input and ``x_1 ... x_n [END]`` as
target. 2D positions (``position_ids`` (B, 2, T)): the first row is the position in Part A (for a
Part B token: the position of its span's mask), the second the position inside the span (0 in
Part A, 1..n+1 in Part B). ``attention_mask`` (B, T, T): Part A sees Part A (bidirectional); Part
B sees Part A and the Part B tokens up to itself. ``reconstruct`` recovers the original text
exactly from (input_ids, position_ids, labels, part_a_len) (tested).

Special tokens: mask = ``[MASK]``; ``[gMASK]``, ``<|startofpiece|>``, ``<|endofpiece|>`` when the
tokenizer has them, else [MASK], bos/cls and eos/sep. The loss needs a backbone with 2D positions
(``plmkit.models.prefix_lm.GLM``, family "glm", e.g. ``load("glm-tiny")``); ``prepare`` refuses others.
Batch keys: input_ids, position_ids, attention_mask, labels, part_a_len.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    backbone_name,
    check_choice,
    check_open_unit,
    check_positive,
    check_unit,
    pad_2d,
    token_metrics,
    top1_correct,
)


@dataclass(kw_only=True)
class GLMConfig(ObjectiveConfig):
    mode: Literal["short", "long", "mixed"] = "short"
    rate: float = 0.15
    """Short mode: minimum fraction of tokens covered by spans."""
    poisson_lambda: float = 3.0
    long_min: float = 0.5
    long_max: float = 1.0
    """Long mode: the span covers a uniform fraction in [long_min, long_max] of the text."""
    long_prob: float = 0.5
    """Mixed mode: probability of the long mode."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_choice(name, "mode", self.mode, ("short", "long", "mixed"))
        check_open_unit(name, "rate", self.rate)
        check_positive(name, "poisson_lambda", self.poisson_lambda)
        check_unit(name, "long_min", self.long_min)
        check_unit(name, "long_max", self.long_max)
        if not 0 < self.long_min <= self.long_max <= 1:
            raise UserError(f"{name}: need 0 < long_min <= long_max <= 1, got {self.long_min}, {self.long_max}")
        check_unit(name, "long_prob", self.long_prob)


class GLM(Objective):
    """GLM blank-infilling batches (see the module docstring)."""

    name = "glm"
    example_kind = "window"
    Config = GLMConfig
    config: GLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")

        def tok_id(s: str) -> int | None:
            i = tokenizer.convert_tokens_to_ids(s) if hasattr(tokenizer, "convert_tokens_to_ids") else None
            return None if i is None or i == self.vocab.unk else int(i)

        self.gmask_id = tok_id("[gMASK]") or self.mask_id
        self.start_id = tok_id("<|startofpiece|>") or self.vocab.bos or self.vocab.cls
        self.end_id = tok_id("<|endofpiece|>") or self.vocab.eos or self.vocab.sep
        if self.start_id is None or self.end_id is None:
            raise UserError(f"{self.name}: the tokenizer needs start/end-of-piece tokens (or bos/cls and eos/sep)")

    def _spans(self, L: int) -> list[tuple[int, int]]:
        """Non-touching [start, end) spans over a text of L tokens."""
        c = self.config
        long = c.mode == "long" or (c.mode == "mixed" and float(torch.rand(())) < c.long_prob)
        if long:
            lo, hi = max(1, int(round(c.long_min * L))), max(1, int(round(c.long_max * L)))
            n = int(torch.randint(lo, hi + 1, ()))
            return [(L - n, L)]
        need = max(1, int(round(c.rate * L)))
        lengths: list[int] = []
        while sum(lengths) < need:
            draw = torch.poisson(torch.full((8,), float(c.poisson_lambda))).long().tolist()
            for x in draw:
                if x > 0 and sum(lengths) < need:
                    lengths.append(x)
        # keep at least one token per gap between spans: trim until the spans fit
        while lengths and sum(lengths) + len(lengths) - 1 > L:
            lengths[-1] -= 1
            if lengths[-1] == 0:
                lengths.pop()
        kept = L - sum(lengths)
        n = len(lengths)
        # one span per distinct gap between kept tokens (kept + 1 gaps), so spans never touch;
        # a span in gap g starts after g kept tokens and the spans placed before it
        gaps = sorted(torch.randperm(kept + 1)[:n].tolist())
        spans, before = [], 0
        for gap, ln in zip(gaps, lengths):
            spans.append((gap + before, gap + before + ln))
            before += ln
        return spans

    def corrupt(self, example: Any) -> dict[str, Any]:
        """Part A / Part B layout of one example (lists; see the module docstring)."""
        ex = as_example(example, self.name)
        body = [t for t in ex.ids if t not in self.vocab.special] if ex.has_specials else list(ex.ids)
        m = self.config.max_length
        if m is not None:
            body = body[: max(1, m // 2)]
        if not body:
            raise UserError(f"{self.name}: an example has no (non-special) tokens")
        spans = self._spans(len(body))
        long = len(spans) == 1 and spans[0][1] == len(body) and self.config.mode != "short"
        mask_tok = self.gmask_id if long else self.mask_id
        begin = [self.vocab.begin] if self.vocab.begin is not None else []
        part_a = list(begin)
        mask_pos = []
        prev = 0
        for s, e in spans:
            part_a += body[prev:s]
            mask_pos.append(len(part_a))
            part_a.append(mask_tok)
            prev = e
        part_a += body[prev:]
        ids, pos1, pos2, labels = list(part_a), list(range(len(part_a))), [0] * len(part_a), [IGNORE] * len(part_a)
        for k in torch.randperm(len(spans)).tolist():
            s, e = spans[k]
            span = body[s:e]
            ids += [self.start_id] + span
            labels += span + [self.end_id]
            pos1 += [mask_pos[k]] * (len(span) + 1)
            pos2 += list(range(1, len(span) + 2))
        return {"input_ids": ids, "pos1": pos1, "pos2": pos2, "labels": labels, "part_a_len": len(part_a),
                "spans": spans, "body": body}

    def reconstruct(self, input_ids: Sequence[int], position_ids: Sequence[Sequence[int]],
                    labels: Sequence[int], part_a_len: int) -> list[int]:
        """The original text (without specials) from one example's batch rows."""
        a = list(input_ids[:part_a_len])
        pos1, pos2 = position_ids[0], position_ids[1]
        fill: dict[int, list[int]] = {}
        k = part_a_len
        n = len(input_ids)
        while k < n and labels[k] != IGNORE:
            p = int(pos1[k])
            span = []
            k2 = k
            while k2 < n and labels[k2] != IGNORE and (k2 == k or pos2[k2] != 1):
                span.append(int(labels[k2]))
                k2 += 1
            fill[p] = span[:-1]  # drop [END]
            k = k2
        out: list[int] = []
        for i, t in enumerate(a):
            if i in fill:
                out += fill[i]
            elif t not in self.vocab.special:
                out.append(t)
        return out

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self.corrupt(x) for x in examples]
        T = max(len(r["input_ids"]) for r in rows)
        B = len(rows)
        a_len = torch.tensor([r["part_a_len"] for r in rows])
        lengths = torch.tensor([len(r["input_ids"]) for r in rows])
        from plmkit.models.prefix_lm import glm_mask  # the backbone's own blank-infilling mask

        attn = glm_mask(a_len, lengths, T)  # (B, T, T)
        pos = torch.zeros(B, 2, T, dtype=torch.long)
        pos[:, 0] = pad_2d([r["pos1"] for r in rows], 0, T)
        pos[:, 1] = pad_2d([r["pos2"] for r in rows], 0, T)
        return {
            "input_ids": pad_2d([r["input_ids"] for r in rows], self.vocab.pad_id, T),
            "position_ids": pos,
            "attention_mask": attn,
            "labels": pad_2d([r["labels"] for r in rows], IGNORE, T),
            "part_a_len": a_len,
        }

    def prepare(self, model: Any) -> None:
        if getattr(model.config, "family", None) != "glm":
            raise UserError(f"{self.name} needs a GLM backbone with 2D (span) position embeddings; "
                            f"{backbone_name(model)!r} is a {model.config.family!r} model with 1D positions")

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labels = batch["labels"]
        sel = labels != IGNORE
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], labels_mask=sel).logits  # (N, V)
        y = labels[sel]
        loss = F.cross_entropy(logits.float(), y)
        return loss, token_metrics("glm", loss, top1_correct(logits, y), int(y.numel()))
