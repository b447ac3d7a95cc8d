"""Plausibility scoring of multiple-choice answers with a masked LM (Tamborrino et al. 2020, "Pre-training Is
(Almost) All You Need: An Application to Commonsense Reasoning", arXiv:2004.14074).

``plm finetune --task multiple-choice --plausibility`` (``train.jsonl`` / ``dev.jsonl`` records
``{"context": premise, "choices": [hypothesis, ...], "label": i}``): no task head; the score of hypothesis h for
premise p is the MLM's log-probability of the premise given the hypothesis, each premise token masked in turn::

    S(p | h) = sum_j log P_MLM(p_j | [CLS] h [SEP] p_1 .. p_{j-1} [MASK] p_{j+1} .. [SEP])

(one masked copy of the input per premise token; the premise is the same for every choice, so the sums are
comparable without length normalisation). The answer is the argmax over choices; training uses the margin
loss ``mean over wrong choices w of max(0, margin - S(p | h_gold) + S(p | h_w))`` (mean over examples),
fine-tuning the whole MLM, its head included. Needs a checkpoint with its MLM head (``config.head == "mlm"``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.tasks.encoding import special_ids
from plmkit.tasks.objective import TaskObjective, _pad


def margin_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """(B, C) scores, (B,) gold indices: mean over examples of the mean over wrong choices of
    ``max(0, margin - s_gold + s_wrong)``."""
    gold = scores.gather(1, labels[:, None])  # (B, 1)
    hinge = (margin - gold + scores).clamp_min(0)  # (B, C)
    wrong = torch.ones_like(scores, dtype=torch.bool).scatter(1, labels[:, None], False)
    return (hinge * wrong).sum(1).div(wrong.sum(1).clamp_min(1)).mean()


class PlausibilityObjective(TaskObjective):
    """Multiple choice scored by S(premise | hypothesis) under the MLM head (module docstring)."""

    def __init__(self, tokenizer, margin: float = 0.5, pad_id: int | None = None, mask_id: int | None = None,
                 sep_id: int | None = None):
        super().__init__("multiple_choice", 1, _Ids(pad_id) if tokenizer is None else tokenizer, pooling="none")
        sp = special_ids(tokenizer) if tokenizer is not None else None
        self.mask_id = mask_id if mask_id is not None else getattr(tokenizer, "mask_token_id", None)
        self.sep_id = sep_id if sep_id is not None else (sp.sep if sp else None)
        if self.mask_id is None or self.sep_id is None:
            raise UserError("--plausibility needs a tokenizer with [MASK] and [SEP] tokens (a masked LM's)")
        self.margin = margin

    def info(self) -> dict[str, Any]:
        return {"margin": self.margin, "mask_id": self.mask_id, "sep_id": self.sep_id}

    @classmethod
    def from_info(cls, info: dict, pad_id: int) -> "PlausibilityObjective":
        return cls(None, info["margin"], pad_id, info["mask_id"], info["sep_id"])

    # ------------------------------------------------------------------ model
    def prepare(self, model) -> None:
        """No task head: the model's MLM head scores; it must have one."""
        if getattr(model.config, "head", None) != "mlm" or getattr(model, "head", None) is None:
            raise UserError(f"--plausibility scores with a masked LM's head: this model has "
                            f"{getattr(model.config, 'head', None)!r} (expected 'mlm')")

    # ------------------------------------------------------------------ data
    def encode_examples(self, tok, examples, labels, max_len: int) -> list[dict]:
        """One feature per example: per choice ``[CLS] hypothesis [SEP] premise [SEP]`` (the premise cut from
        its end to fit) and the premise's token positions."""
        feats = []
        for e in examples:
            enc = tok(list(e.choices), [e.context] * len(e.choices), truncation="only_second", max_length=max_len)
            full = tok(list(e.choices), [e.context] * len(e.choices))
            positions = [self.premise_positions(ids) for ids in enc["input_ids"]]
            if not all(positions):
                raise UserError(f"{e.source}: no premise token left within --max-seq-len {max_len}")
            f = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "premise": positions,
                 "truncated": any(len(a) > max_len for a in full["input_ids"]), "source": e.source}
            if e.label is not None:
                f["label"] = e.label
            feats.append(f)
        return feats

    def premise_positions(self, ids: list[int]) -> list[int]:
        """Positions after the first [SEP] up to (not including) a final [SEP]."""
        first = ids.index(self.sep_id)
        end = len(ids) - 1 if ids[-1] == self.sep_id and len(ids) - 1 > first else len(ids)
        return list(range(first + 1, end))

    def make_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """All masked copies of all choices: rows (N, T) with one [MASK] each, its position and the token it
        hides, and the (example, choice) group of each row."""
        C = len(examples[0]["input_ids"])
        rows, types, pos, target, group = [], [], [], [], []
        for b, e in enumerate(examples):
            if len(e["input_ids"]) != C:
                raise UserError("--plausibility: every example of a batch needs the same number of choices")
            for c, (ids, tt, prem) in enumerate(zip(e["input_ids"], e["token_type_ids"], e["premise"])):
                for j in prem:
                    masked = list(ids)
                    masked[j] = self.mask_id
                    rows.append(masked)
                    types.append(tt)
                    pos.append(j)
                    target.append(ids[j])
                    group.append(b * C + c)
        ids = _pad(rows, self.pad_id)
        mask = _pad([[1] * len(r) for r in rows], 0)
        batch = {"input_ids": ids, "token_type_ids": _pad(types, 0), "attention_mask": mask,
                 "mask_pos": torch.tensor(pos), "target": torch.tensor(target), "group": torch.tensor(group),
                 "num_examples": torch.tensor(len(examples)), "num_choices": torch.tensor(C)}
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ scores / loss
    def forward(self, model, batch: dict[str, torch.Tensor]):
        """(backbone output, scores (B, C)): S(premise | choice) summed over the masked copies."""
        ids = batch["input_ids"]
        sel = torch.zeros_like(ids, dtype=torch.bool)
        sel[torch.arange(len(ids)), batch["mask_pos"]] = True  # one masked position per row, row-major order
        tt = batch["token_type_ids"] if getattr(model.config, "type_vocab_size", 1) else None
        out = model(ids, attention_mask=batch["attention_mask"], token_type_ids=tt, labels_mask=sel)
        logp = F.log_softmax(out.logits.float(), -1)  # (N, V)
        tok_lp = logp.gather(1, batch["target"][:, None]).squeeze(1)  # (N,)
        B, C = int(batch["num_examples"]), int(batch["num_choices"])
        scores = torch.zeros(B * C, dtype=tok_lp.dtype, device=tok_lp.device).index_add(0, batch["group"], tok_lp)
        return out, scores.view(B, C)

    def task_loss(self, logits, batch) -> torch.Tensor:
        return margin_loss(logits, batch["labels"], self.margin)


class _Ids:
    """Stands in for a tokenizer where only the pad id is needed (rebuilding from task.json)."""

    def __init__(self, pad: int | None):
        self.pad_token_id = pad
        self.cls_token_id = self.sep_token_id = pad
