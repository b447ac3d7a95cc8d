"""Distillation losses and the attention internals they need.

All losses are 0 when the student's tensors equal the teacher's (KL divergences, not cross-entropies
with the teacher's entropy left in, so "identical student -> zero loss" holds exactly).

- :func:`kd_loss`: soft-target loss with temperature ``T``: ``T^2 * KL(softmax(t/T) || softmax(s/T))``,
  batch mean (Hinton et al. 2015; DistilBERT's L_ce). Its gradient equals the soft cross-entropy's.
- :func:`cosine_loss`: DistilBERT's L_cos, mean over non-pad tokens of ``1 - cos(h_s, h_t)``.
- :func:`mse_loss`: TinyBERT's embedding / hidden-state loss ``MSE(h_s W, h_t)`` over non-pad tokens
  (``W`` a learned projection when the widths differ, else the identity).
- :func:`attention_mse`: TinyBERT's attention loss, MSE between attention distributions (B, N, T, S)
  over valid query rows (TinyBERT uses pre-softmax scores; the probabilities avoid the -inf of masked keys).
- :func:`pkd_loss`: BERT-PKD's patient loss, mean squared distance of the L2-normalised [CLS] states of
  mapped intermediate layers (Sun et al. 2019).
- :func:`minilm_loss`: MiniLM (Wang et al. 2020): KL of the last layer's self-attention distributions
  (same number of heads) + KL of the value relation ``softmax(V V^T / sqrt(d))`` per head.

:func:`attention_internals` recomputes one ``SelfAttention`` layer's probabilities and values from the
layer's input (captured by :class:`AttentionTap`), since the model itself runs SDPA and never forms them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.models.layers import apply_rotary


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """``T^2 * KL(p_t || p_s)`` with ``p = softmax(logits / T)``, mean over the batch."""
    T = float(temperature)
    s = F.log_softmax(student_logits / T, dim=-1)
    t = F.log_softmax(teacher_logits / T, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * T * T


def _token_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, T) ``values`` over the positions where ``mask`` (B, T) is 1."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def cosine_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over non-pad tokens of ``1 - cos(h_s, h_t)`` (same width)."""
    return _token_mean(1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1), mask)


def mse_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None,
             projection: nn.Module | None = None) -> Tensor:
    """Mean over non-pad tokens and channels of ``(h_s W - h_t)^2``."""
    s = projection(student_hidden) if projection is not None else student_hidden
    return _token_mean(((s - teacher_hidden) ** 2).mean(-1), mask)


def attention_mse(student_probs: Tensor, teacher_probs: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE between (B, N, T, S) attention distributions, averaged over heads, keys and valid query rows."""
    per_query = ((student_probs - teacher_probs) ** 2).mean(dim=(1, 3))  # (B, T)
    return _token_mean(per_query, mask)


def pkd_loss(student_cls: list[Tensor], teacher_cls: list[Tensor]) -> Tensor:
    """Mean over layer pairs and batch of ``||s/|s| - t/|t|||^2`` ([CLS] states (B, H), same width)."""
    terms = [((F.normalize(s, dim=-1) - F.normalize(t, dim=-1)) ** 2).sum(-1).mean()
             for s, t in zip(student_cls, teacher_cls)]
    return torch.stack(terms).mean()


def _row_kl(p_teacher: Tensor, p_student: Tensor, mask: Tensor | None) -> Tensor:
    """KL(p_t || p_s) per (B, N, T) row of distributions over the last dim, mean over heads and valid rows."""
    kl = (p_teacher * (torch.log(p_teacher.clamp_min(1e-12)) - torch.log(p_student.clamp_min(1e-12)))).sum(-1)
    return _token_mean(kl.mean(1), mask)


def value_relation(values: Tensor, mask: Tensor | None, heads: int) -> Tensor:
    """``softmax(V V^T / sqrt(d))`` per relation head: values (B, N, T, D) regrouped into ``heads`` heads."""
    B, N, T, D = values.shape
    v = values.transpose(1, 2).reshape(B, T, N * D).view(B, T, heads, -1).transpose(1, 2)  # (B, R, T, d)
    scores = v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask.to(torch.bool)[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


def minilm_loss(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor], mask: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """(attention-distribution KL, value-relation KL) between the last layers' (probs, values)."""
    s_p, s_v = student
    t_p, t_v = teacher
    heads = t_v.shape[1]
    att = _row_kl(t_p, s_p, mask)
    vr = _row_kl(value_relation(t_v, mask, heads), value_relation(s_v, mask, heads), mask)
    return att, vr


# ---------------------------------------------------------------------------- attention internals
def attention_internals(attn: nn.Module, x: Tensor, ctx) -> tuple[Tensor, Tensor]:
    """Attention probabilities (B, Nh, T, S) and values (B, Nh, S, D) of a ``SelfAttention`` on input ``x``
    with the forward's ``AttentionContext`` (mask, rotary tables, additive bias). Keys/values of grouped
    heads are repeated to the query heads."""
    B, T, _ = x.shape
    q, k, v = attn.qkv(x).split(attn.split, dim=-1)
    q = q.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = k.view(B, T, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    v = v.view(B, T, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    if ctx.rotary is not None:
        cos, sin = ctx.rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if attn.num_kv_heads != attn.num_heads:
        rep = attn.num_heads // attn.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    if ctx.bias is not None:
        scores = scores + ctx.bias.to(scores.dtype)
    if ctx.is_causal:
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if ctx.mask is not None:
        scores = scores.masked_fill(~ctx.mask, float("-inf"))
    return scores.softmax(-1), v


class AttentionTap:
    """Records the input and context of chosen layers' attention modules during a forward pass.

    ``tap = AttentionTap(model, layers)``; run the model; ``tap.internals(i)`` -> (probs, values) of layer i.
    ``tap.remove()`` detaches the hooks."""

    def __init__(self, model: nn.Module, layers: list[int]):
        self.model, self.seen = model, {}
        self.handles = []
        for i in sorted(set(layers)):
            attn = model.layers[i].attn
            self.handles.append(attn.register_forward_pre_hook(self._hook(i)))

    def _hook(self, i: int):
        def hook(module, args):
            self.seen[i] = (module, args[0], args[1])
        return hook

    def internals(self, i: int) -> tuple[Tensor, Tensor]:
        module, x, ctx = self.seen[i]
        return attention_internals(module, x, ctx)

    def clear(self) -> None:
        self.seen = {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
