"""Adaptation modes: which parameters train, extra loss terms, ensembles and early exit.

Modes (``--mode``):
- ``full``: every parameter trains (BERT fine-tuning, Devlin et al. 2019).
- ``features``: the backbone is frozen and kept in eval mode (a fixed feature extractor: no dropout
  noise in the features); an ELMo scalar mix of all layers feeds the head (Peters et al. 2018;
  "feature-based approach" of BERT sec. 5.4).
- ``adapter``: Houlsby adapters + layer norms + head train (Houlsby et al. 2019).
- ``pals``: projected attention layers + layer norms + head train (Stickland & Murray 2019).
- ``lora``: LoRA on W_q, W_v + head train (Hu et al. 2021).
- ``prompt-tuning`` / ``p-tuning`` / ``prefix-tuning``: soft prompts (``plmkit.prompting.soft``: Lester
  et al. 2021; Liu et al. 2021; Li & Liang 2021) + the task head train; the backbone is frozen.
- ``pet``: Pattern-Exploiting Training for MLMs (``plmkit.prompting.pet``: one fully fine-tuned model per
  pattern-verbalizer pair, their ensemble's soft labels distilled into one classifier).
- ``ulmfit``: full fine-tuning with discriminative LR (decay 1/2.6 per layer), slanted triangular
  LR and gradual unfreezing (Howard & Ruder 2018) -- these are Trainer options, set here.

Extra terms / procedures:
- :class:`L2SP` — ``alpha/2 * ||w - w0||^2`` towards the starting point (Li et al. 2018, "Explicit
  Inductive Bias for Transfer Learning with Convolutional Networks").
- :class:`EWC` — ``lambda/2 * sum_i F_i (w_i - w*_i)^2`` with the diagonal empirical Fisher of a
  previous task (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting").
- :class:`SelfDistillation` — the teacher is the running average of the student's past
  weights (a "self-ensemble"); loss += ``beta * T^2 * KL(teacher_T || student_T)``
  (Xu et al. 2020, "Improving BERT Fine-Tuning via Self-Ensemble and Self-Distillation").
- :func:`average_state_dicts` / vote ensembles of checkpoints (weight averaging: Wortsman et al. 2022
  "model soups"; voting: classic ensembling).
- :func:`early_exit_predict` — DeeBERT inference (Xin et al. 2020): stop at the first layer whose
  off-ramp's prediction entropy is below a threshold.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import plmkit.tasks.adapters as adapters

MODES = ("full", "features", "adapter", "pals", "lora", "ulmfit", "prompt-tuning", "p-tuning", "prefix-tuning", "pet")
SOFT_PROMPT_MODES = ("prompt-tuning", "p-tuning", "prefix-tuning")


@dataclass
class ModeConfig:
    """Options of the adaptation modes (the ``--mode`` family of flags)."""

    mode: str = "full"
    adapter_size: int = 64
    pal_size: int = 204
    lora_rank: int = 8
    lora_alpha: float = 16.0
    train_norms: bool = True  # adapters / PALs also train the layer norms (Houlsby et al.)
    prompt_tokens: int = 20  # soft prompts: virtual tokens / prefix length
    prompt_encoder: str = "lstm"  # p-tuning's prompt encoder: lstm | mlp
    prompt_hidden: int = 512  # prefix tuning's reparametrising MLP width (p-tuning's encoder width)
    prefix_reparam: bool = True  # prefix tuning: False once the MLP was dropped (a saved checkpoint)
    prompt_init: str = "vocab"  # prompt tuning: vocab | labels | random


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, getattr(nn, "RMSNorm", nn.LayerNorm)))


def apply_mode(model: nn.Module, cfg: ModeConfig, label_token_ids: list[int] | None = None) -> list[nn.Parameter]:
    """Insert the mode's modules and set ``requires_grad``; returns the trainable parameters.

    ``label_token_ids``: the verbalizer's label words (prompt tuning's ``prompt_init="labels"``).
    Must run after the task head is added (heads always train) and before the optimizer is built.
    """
    if cfg.mode not in MODES:
        from plmkit.errors import UserError, suggest

        raise UserError(f"unknown mode {cfg.mode!r}{suggest(cfg.mode, MODES)}; choose from {', '.join(MODES)}")
    H = model.config.hidden_size
    if cfg.mode in ("full", "ulmfit", "pet"):  # pet: each pattern model is fully fine-tuned
        for p in model.parameters():
            p.requires_grad_(True)
        return [p for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.mode == "features":
        model.register_forward_pre_hook(backbone_eval_hook)
    if cfg.mode == "adapter":
        adapters.add_adapters(model, H, cfg.adapter_size)
    elif cfg.mode == "pals":
        heads = model.config.num_heads
        size = cfg.pal_size - cfg.pal_size % heads
        adapters.add_pals(model, H, size, heads)
    elif cfg.mode == "lora":
        adapters.add_lora(model, H, cfg.lora_rank, cfg.lora_alpha)
    elif cfg.mode in SOFT_PROMPT_MODES:
        from plmkit.prompting.soft import attach, build_soft_prompt

        attach(model, build_soft_prompt(model, cfg.mode, cfg.prompt_tokens, cfg.prompt_encoder, cfg.prompt_hidden,
                                        reparam=cfg.prefix_reparam, init=cfg.prompt_init,
                                        label_token_ids=label_token_ids))
    trainable_mods = [model.heads] if hasattr(model, "heads") else []
    if cfg.mode in SOFT_PROMPT_MODES:
        trainable_mods.append(model.soft_prompt)
    if cfg.mode in ("adapter", "pals"):
        for name, mod in model.named_modules():
            if isinstance(mod, (adapters.Adapter, adapters.ProjectedAttention)) or name == "pals":
                trainable_mods.append(mod)
            elif cfg.train_norms and _is_norm(mod) and not name.startswith("head."):  # not the unused MLM head
                trainable_mods.append(mod)
    if cfg.mode == "lora":
        for mod in model.modules():
            if isinstance(mod, adapters.LoRALinear):
                for p in list(mod.lora_a) + list(mod.lora_b):
                    p.requires_grad_(True)
    for mod in trainable_mods:
        for p in mod.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def backbone_eval_hook(model: nn.Module, args) -> None:
    """Forward pre-hook of the ``features`` mode: whatever ``model.train()`` set, every child module but
    ``model.heads`` runs in eval mode (the frozen backbone computes the same features every epoch)."""
    if not model.training:
        return
    for name, child in model.named_children():
        if name != "heads" and child.training:
            child.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (shared parameters counted once)."""
    seen, total, train = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            train += p.numel()
    return {"trainable_params": train, "total_params": total}


# ----------------------------------------------------------------------------------------------
# regularisers towards previous weights
# ----------------------------------------------------------------------------------------------


class L2SP:
    """``alpha/2 * sum ||w - w0||^2`` over the backbone's (non-head) parameters."""

    def __init__(self, model: nn.Module, alpha: float):
        self.alpha = alpha
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("heads.") and p.requires_grad}
        self.weights = None

    def __call__(self, model, batch, out, logits):
        total = 0.0
        params = dict(model.named_parameters())
        for n, w0 in self.anchor.items():
            d = params[n] - w0
            f = self.weights[n] if self.weights is not None else 1.0
            total = total + (f * d * d).sum()
        reg = 0.5 * self.alpha * total
        return reg, {"reg": float(reg.detach()) if torch.is_tensor(reg) else float(reg)}


class EWC(L2SP):
    """L2-SP weighted by a diagonal Fisher: ``lambda/2 * sum F (w - w*)^2``.

    ``fisher`` maps parameter names to tensors (estimate with :func:`diagonal_fisher` on the
    previous task); parameters without a Fisher entry are not regularised.
    """

    def __init__(self, model: nn.Module, lam: float, fisher: dict[str, torch.Tensor]):
        super().__init__(model, lam)
        self.anchor = {n: w for n, w in self.anchor.items() if n in fisher}
        self.weights = {n: fisher[n] for n in self.anchor}


def diagonal_fisher(model: nn.Module, objective, batches, max_batches: int = 50) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over batches of the squared gradient of the task loss."""
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters() if not n.startswith("heads.")}
    model.eval()
    count = 0
    for batch in batches:
        if count >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        loss, _ = objective.loss(model, batch)
        loss.backward()
        for n, p in model.named_parameters():
            if n in fisher and p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    return {n: f / max(count, 1) for n, f in fisher.items()}


# ----------------------------------------------------------------------------------------------
# self-ensemble / self-distillation
# ----------------------------------------------------------------------------------------------


class SelfDistillation:
    """Teacher = running average of the student's weights, snapshotted every ``every`` steps."""

    def __init__(self, model: nn.Module, objective, weight: float = 1.0, temperature: float = 2.0, every: int = 50):
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.objective = objective
        self.weight, self.T, self.every = weight, temperature, every
        self.steps = 0
        self.snapshots = 1

    @torch.no_grad()
    def _update(self, model: nn.Module) -> None:
        # running mean of K snapshots: avg += (w - avg) / (K + 1)
        self.snapshots += 1
        for pt, ps in zip(self.teacher.parameters(), model.parameters()):
            pt += (ps.detach() - pt) / self.snapshots

    def __call__(self, model, batch, out, logits):
        if model.training:
            self.steps += 1
            if self.steps % self.every == 0:
                self._update(model)
        if self.steps < self.every:  # no teacher before the first snapshot of trained weights
            return logits.sum() * 0.0, {}
        with torch.no_grad():
            _, t_logits = self.objective.forward(self.teacher, batch)
        if self.objective.kind == "regression":
            kd = F.mse_loss(logits, t_logits)
        else:
            T = self.T
            kd = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(t_logits / T, -1), log_target=True,
                          reduction="batchmean") * T * T
        return self.weight * kd, {"distill": float(kd.detach())}


# ----------------------------------------------------------------------------------------------
# ensembles
# ----------------------------------------------------------------------------------------------


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform weight average of checkpoints of the same architecture (a "uniform soup")."""
    if not states:
        raise ValueError("no checkpoints to average")
    keys = set(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != keys:
            raise ValueError(f"checkpoint {i} has different parameters from checkpoint 0")
    out = {}
    for k in states[0]:
        t = states[0][k]
        out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(t.dtype) if t.is_floating_point() else t
    return out


# ----------------------------------------------------------------------------------------------
# DeeBERT early exit
# ----------------------------------------------------------------------------------------------


class _Exit(Exception):
    def __init__(self, logits: torch.Tensor, layer: int):
        self.logits, self.layer = logits, layer


@torch.no_grad()
def early_exit_predict(model, objective, batch: dict[str, torch.Tensor], threshold: float) -> tuple[torch.Tensor, int]:
    """Run one example (batch of 1) layer by layer; return (logits, layers used).

    A forward hook on block i applies off-ramp i to the block's output and stops the forward
    pass (by raising) when the ramp's entropy is below ``threshold``; otherwise the full model
    and the task head decide. Entropy threshold 0 = never exit early.
    """
    from plmkit.tasks.heads import entropy

    if batch["input_ids"].size(0) != 1:
        raise ValueError("early-exit inference runs one example at a time (as DeeBERT)")
    blocks = adapters.find_blocks(model)
    ramps = model.heads["off_ramps"]
    handles = []
    for i in range(len(ramps.ramps)):

        def hook(_m, _inp, output, i=i):
            h = output[0] if isinstance(output, tuple) else output
            lg = ramps.forward_layer(i, h)
            if float(entropy(lg)[0]) < threshold:
                raise _Exit(lg, i + 1)

        handles.append(blocks[i].register_forward_hook(hook))
    try:
        _, logits = objective.forward(model, batch)
        return logits, len(blocks)
    except _Exit as e:
        return e.logits, e.layer
    finally:
        for h in handles:
            h.remove()
