"""Dropout with cheaper random masks on CPU.

``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``, which on CPU costs about one
generator call per element (~10 ns each on this project's machine): in a small BERT's training
step that was ~10% of the time. Here one 64-bit draw gives four 16-bit uniforms, and an element
is kept when its uniform is at least ``round(p * 2**16)``: the drop probability is ``p`` rounded to
a multiple of 2**-16 (0.1 -> 0.100006), the kept elements are scaled by ``1 / (1 - p)`` as
usual, and the mask comes from the global torch generator, so ``torch.manual_seed`` makes runs
reproducible. The backward multiplies by the same saved mask (a bool tensor, as PyTorch's).

Used by every plmkit model in training mode on CPU for tensors of at least ``MIN_NUMEL``
elements; elsewhere (CUDA, small tensors, p outside (0, 1), inside ``torch.compile``) it is
``F.dropout``. Evaluation mode is the identity, as always. ``Dropout`` is an ``nn.Dropout`` (same repr, no state), so checkpoints
and module surgery are unaffected.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_NUMEL = 4096
"""Below this many elements the generator-call saving is smaller than the extra kernel launches."""

_FULL_RANGE = (-(2 ** 63), 2 ** 63 - 1)  # randint over (almost) every int64: four uniform int16 lanes


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> Tensor:
    """A bool tensor of ``shape``: each element True (kept) with probability ``1 - p`` (p on a 2**-16 grid)."""
    n = math.prod(shape)
    words = torch.randint(*_FULL_RANGE, ((n + 3) // 4,), dtype=torch.int64, device=device, generator=generator)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    return lanes >= round(p * 65536) - 32768


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the cheaper CPU mask described in the module docstring."""
    if not training or p <= 0.0:
        return x
    if (p >= 1.0 or x.device.type != "cpu" or x.numel() < MIN_NUMEL or not x.is_floating_point()
            or torch.compiler.is_compiling()):  # inductor fuses its own dropout
        return F.dropout(x, p, training)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose training-mode mask comes from :func:`keep_mask` on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
