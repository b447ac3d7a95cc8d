"""Pretraining-stage (general) distillation on masked LM: DistilBERT's triple loss against a pretrained teacher.

The batch is MLM's (same masking options). The student (the model being trained) and the frozen teacher
(``teacher``: a plmkit-pretrained checkpoint directory, e.g. a ``plm pretrain`` run's ``final/``, sharing the
student's tokenizer) read the same masked inputs; the loss is

    alpha_mlm * CE(student, masked tokens)                       (the MLM loss)
  + alpha_kd  * T^2 * KL(softmax(t / T) || softmax(s / T))       (soft targets at the masked positions)
  + alpha_cos * mean over non-pad tokens of 1 - cos(h_s, h_t)   (last hidden states; equal widths)

with DistilBERT's weights 2 / 5 / 1 and T = 2 by default (Sanh et al. 2019). These are the formulas of
``plmkit.compression.losses`` (``kd_loss``, ``cosine_loss``), applied to the MLM batch; a student identical to
its teacher gets zero distillation loss. ``init_from_teacher``: DistilBERT's initialisation, the teacher's
embeddings, heads and every other layer copied into the student (``num_layers`` of the student's config
chooses how many; widths must match) in ``prepare``, before the optimizer is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import IGNORE, check_positive, token_metrics, top1_correct
from plmkit.objectives.mlm import MLM, MLMConfig


@dataclass(kw_only=True)
class DistillMLMConfig(MLMConfig):
    teacher: str | None = None
    """Pretrained teacher checkpoint directory (required), sharing the student's tokenizer."""
    temperature: float = 2.0
    """Softmax temperature of the soft-target loss."""
    alpha_mlm: float = 2.0
    """Weight of the student's own MLM cross-entropy."""
    alpha_kd: float = 5.0
    """Weight of the soft-target KL at the masked positions."""
    alpha_cos: float = 1.0
    """Weight of the hidden-state cosine loss (last layer, non-pad tokens)."""
    init_from_teacher: bool = False
    """Copy the teacher's embeddings, heads and every other layer into the student (DistilBERT's init)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if not self.teacher or not isinstance(self.teacher, str):
            raise UserError(f"{name}: option teacher is required (a pretrained checkpoint directory)")
        check_positive(name, "temperature", self.temperature)
        for k in ("alpha_mlm", "alpha_kd", "alpha_cos"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise UserError(f"{name}: option {k} must be a number >= 0, got {v!r}")


def every_other_layer(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers copied into the student: evenly spaced from 0 (0, 2, 4 of 6)."""
    return [(j * teacher_layers) // student_layers for j in range(student_layers)]


class DistillMLM(MLM):
    """General distillation on MLM batches; see the module docstring. Batch keys: MLM's."""

    name = "distill_mlm"
    Config = DistillMLMConfig
    config: DistillMLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.teacher: Any = None

    def load_teacher(self) -> Any:
        if self.teacher is None:
            from plmkit.models import load

            teacher = load(self.config.teacher)
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.teacher = teacher.eval()
        return self.teacher

    def prepare(self, model: Any) -> None:
        super().prepare(model)
        teacher = self.load_teacher()
        if teacher.config.vocab_size != model.config.vocab_size:
            raise UserError(f"{self.name}: teacher {self.config.teacher} has a vocabulary of "
                            f"{teacher.config.vocab_size} tokens, the student {model.config.vocab_size}; "
                            "they must share one tokenizer (tokenizer.path: the teacher's)")
        if teacher.head is None:
            raise UserError(f"{self.name}: teacher {self.config.teacher} has no MLM head")
        widths = (teacher.config.hidden_size, model.config.hidden_size)
        if self.config.alpha_cos > 0 and widths[0] != widths[1]:
            raise UserError(f"{self.name}: the cosine loss needs equal widths (teacher {widths[0]}, student "
                            f"{widths[1]}); set alpha_cos: 0")
        if self.config.init_from_teacher:
            self._init_from_teacher(model, teacher)

    @torch.no_grad()
    def _init_from_teacher(self, model: Any, teacher: Any) -> None:
        S, L = model.num_layers, teacher.num_layers
        if S > L or model.config.share_layers or teacher.config.share_layers:
            raise UserError(f"{self.name}: init_from_teacher copies distinct teacher layers into the student "
                            f"({S} student layers, {L} teacher layers)")
        pairs = [(model.embeddings, teacher.embeddings), (model.head, teacher.head)]
        pairs += [(model.layers[j], teacher.layers[i]) for j, i in enumerate(every_other_layer(L, S))]
        if hasattr(model, "final_norm") and hasattr(teacher, "final_norm"):
            pairs.append((model.final_norm, teacher.final_norm))
        for dst, src in pairs:
            sd, td = dst.state_dict(), src.state_dict()
            bad = [k for k in sd if k not in td or td[k].shape != sd[k].shape]
            if bad:
                raise UserError(f"{self.name}: init_from_teacher: student and teacher shapes differ at "
                                f"{type(dst).__name__}.{bad[0]}; use the teacher's widths in model.overrides")
            dst.load_state_dict(td)
        model.tie_weights()

    def terms(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
        """Unweighted (mlm, kd, cos) terms, the student's logits at the masked positions and their labels."""
        teacher = self.load_teacher()
        dev = batch["input_ids"].device
        if next(teacher.parameters()).device != dev:
            teacher.to(dev)
        labels = batch["labels"]
        sel = labels != IGNORE
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids", "position_ids") if k in batch}
        s_out = model(batch["input_ids"], labels_mask=sel, **kw)
        with torch.no_grad():
            t_out = teacher(batch["input_ids"], labels_mask=sel, **kw)
        s, t = s_out.logits.float(), t_out.logits.float()
        y = labels[sel]
        T = float(self.config.temperature)
        zero = s.sum() * 0.0
        terms = {"mlm": F.cross_entropy(s, y) if y.numel() else zero,
                 "kd": (F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                                 reduction="batchmean") * T * T) if y.numel() else zero}
        if self.config.alpha_cos > 0:
            cos = 1.0 - F.cosine_similarity(s_out.last_hidden_state.float(), t_out.last_hidden_state.float(), dim=-1)
            m = kw.get("attention_mask")
            m = torch.ones_like(cos) if m is None else m.to(cos.dtype)
            terms["cos"] = (cos * m).sum() / m.sum().clamp_min(1.0)
        return terms, s, y

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms, logits, y = self.terms(model, batch)
        c = self.config
        w = {"mlm": c.alpha_mlm, "kd": c.alpha_kd, "cos": c.alpha_cos}
        loss = sum(w[k] * v for k, v in terms.items())
        metrics = token_metrics("mlm", terms["mlm"], top1_correct(logits, y), int(y.numel()))
        metrics.update({f"{k}_loss": float(v.detach()) for k, v in terms.items()})
        return loss, metrics
