"""Kernels: how plmkit's layers compute, apart from what they compute (``layers.py``).

Each piece gives the same numbers as the plain PyTorch call it replaces and falls back to it
wherever it does not apply (CUDA, ``torch.compile``, hooks or wrapped modules, autocast dtypes it
does not cover):

- ``linear(x, layer, activation)``: oneDNN's fused linear (+ bias + activation) on CPU, and the
  ``_OneDNNLinear`` autograd function behind it (ReLU fused into the GEMM, backward included).
- ``decoding_weights()`` / ``transposed_weight`` / ``release_decoding_weights``: cached (in, out)
  weight copies for the few-row GEMMs of a decoding step (``generate`` enters the context).
- ``dropout`` / ``Dropout``: dropout with a cheaper CPU random mask (16-bit uniforms).
- ``TiedGrad`` / ``TiedHead`` / ``TiedLookup``: the tied word table of encoder-decoders
  (encoder lookup, decoder lookup, LM head) with one dense gradient added into in place.

Only ``plmkit.models`` uses these (and ``cpu_bf16`` / ``resolve_precision``, which the commands with a
``--precision auto`` share); nothing here knows a model family.
"""

from __future__ import annotations

import contextlib
import functools
import contextvars
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary


# ---------------------------------------------------------------------------- activations
def _gelu_new(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, BERT / HF "gelu"
    "gelu_new": _gelu_new,  # tanh approximation, GPT-2 / ALBERT
    "relu": F.relu,
    "silu": F.silu,
    "swiglu": F.silu,  # the gate's activation; MLP multiplies by up(x)
}


# ---------------------------------------------------------------------------- bf16 support
@functools.cache
def cpu_bf16() -> str | None:
    """How this machine's CPU multiplies bfloat16 natively: ``"amx"`` (AMX tiles, Sapphire Rapids and
    later), ``"avx512_bf16"`` (AVX-512 BF16 dot products: Cooper Lake, Zen 4 and later) or None (bf16
    products are emulated, slower than fp32). Read once from the CPU flags (Linux ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else None


def resolve_precision(precision: str, command: str, native: str = "bf16", say: bool = True) -> str:
    """A ``--precision`` value with ``"auto"`` resolved: ``native`` (the command's bf16 mode) where this
    CPU multiplies bf16 natively (``cpu_bf16``), else ``"fp32"``; with ``say`` the choice and why are said
    on stderr as ``"<command>: precision X (auto: ...)"``. Any other value is returned unchanged. The one
    place ``plm generate``, ``plm trace`` and ``plm icl`` decide what "auto" means."""
    import sys

    if precision != "auto":
        return precision
    kind = cpu_bf16()
    chosen = native if kind else "fp32"
    why = f"this CPU multiplies bf16 natively ({kind})" if kind else "no native bf16 on this CPU"
    if say:
        print(f"{command}: precision {chosen} (auto: {why})", file=sys.stderr)
    return chosen


# ---------------------------------------------------------------------------- fast CPU linear
# ``F.linear`` with a bias runs ``addmm``, which first copies the broadcast bias into the output and
# then lets BLAS accumulate into it: one extra pass over every activation. oneDNN's
# ``mkldnn._linear_pointwise`` (the kernel torch.compile's CPU backend emits) adds the bias and an
# optional activation (GELU / SiLU / ReLU) inside the GEMM, ~1.5-2x faster for our shapes. Used on
# CPU for fp32 and bf16; the backward is the usual two GEMMs. Elsewhere: plain F.linear.
_POINTWISE: dict[str, tuple[str, str]] = {
    "gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "relu": ("relu", ""), "silu": ("swish", ""),
    "swiglu": ("swish", ""),
}


def _probe_onednn() -> bool:
    try:
        # A private generator: probing at import time must not advance the global RNG (a model built
        # right after ``torch.manual_seed`` gets the same weights whether or not this module was imported).
        g = torch.Generator().manual_seed(0)
        x, w, b = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        return torch.backends.mkldnn.is_available() and bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5))
    except Exception:  # noqa: BLE001 - any failure means: not available in this build
        return False


FAST_LINEAR = _probe_onednn()


def _cpu_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The compute dtype for the oneDNN path, or None when it does not apply."""
    if not FAST_LINEAR or x.device.type != "cpu" or weight.device.type != "cpu":
        return None
    if torch.compiler.is_compiling():  # inductor cannot trace the oneDNN op: plain F.linear there
        return None
    if torch.is_autocast_enabled("cpu"):
        dt = torch.get_autocast_dtype("cpu")
        return dt if dt in (torch.bfloat16, torch.float32) else None
    if x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16):
        return x.dtype
    return None


# ---------------------------------------------------------------------------- decoding weights
# A decoding step multiplies a few rows (batch x beams) by every weight matrix: the time is reading
# the weights. BLAS reads a (out, in) weight used as ``x @ W.T`` slower than the same weight stored
# as a contiguous (in, out) matrix, and oneDNN is no better: T5-small shapes, one thread, 2048x512
# at 4 rows 0.29 -> 0.16 ms, at 16 rows 0.39 -> 0.26; the 32128x512 table at 4 rows 4.4 -> 3.4 ms.
# At 1-3 rows MKL's ``x @ W.T`` is a matrix-vector kernel that matches the copy when the weight is
# cache-hot, but in the decoding loop (weights streamed from memory) the copy still wins: T5-small
# generate, 32 tokens, 2-7% faster at batch 1-3, ~30% at batch 4. So inside ``decoding_weights()``
# (what ``generate`` enters) ``linear`` multiplies PACK_MIN_ROWS..PACK_MAX_ROWS rows by such a
# transposed copy, made once per weight and kept until the weight changes (its storage or version
# counter), so repeated generate calls on a fixed model pay the copy once. The cost is one extra copy
# of the weights that decoding touches; ``release_decoding_weights`` frees it,
# ``generate(..., pack_weights=False)`` never makes it. Outside the context nothing changes.
PACK_MIN_ROWS = 1
WIDE_MIN_OUT, WIDE_MAX_ROWS = 16384, 8  # see _packed_linear
PACK_MAX_ROWS = 64
PACK_AUTO_MAX_BYTES = 2 * 1024 ** 3
"""``pack_weights=None`` (generate's default) packs when the model's parameters take at most this
many bytes, so the copy never doubles the memory of a large model unasked."""
_PACKING: contextvars.ContextVar[bool] = contextvars.ContextVar("plmkit_decoding_weights", default=False)
_PACKED: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> (data_ptr, _version, transposed copy)


@contextlib.contextmanager
def decoding_weights(model: nn.Module | None = None, enabled: bool | None = None) -> Iterator[bool]:
    """Use cached (in, out) weight copies for few-row linears inside the block (see above).

    ``enabled=None`` decides from ``model``'s parameter bytes (<= ``PACK_AUTO_MAX_BYTES``); yields
    whether packing is on."""
    if enabled is None:
        enabled = model is not None and sum(
            p.numel() * p.element_size() for p in model.parameters()) <= PACK_AUTO_MAX_BYTES
    token = _PACKING.set(bool(enabled))
    try:
        yield bool(enabled)
    finally:
        _PACKING.reset(token)


def transposed_weight(weight: Tensor) -> Tensor:
    """``weight.t()`` as a contiguous tensor, cached until ``weight`` is modified or replaced."""
    hit = _PACKED.get(weight)
    if hit is not None and hit[0] == weight.data_ptr() and hit[1] == weight._version:
        return hit[2]
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
        wt = weight.detach().t().contiguous()
    _PACKED[weight] = (weight.data_ptr(), weight._version, wt)
    return wt


def release_decoding_weights(model: nn.Module | None = None) -> int:
    """Drop the cached decoding copies of ``model``'s weights (all, when None); returns bytes freed."""
    keys = list(_PACKED.keys()) if model is None else [p for p in model.parameters() if p in _PACKED]
    freed = 0
    for k in keys:
        freed += _PACKED[k][2].numel() * _PACKED[k][2].element_size()
        del _PACKED[k]
    return freed


def _packed_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """``F.linear`` through the cached transposed weight, or None when packing does not apply."""
    if (not _PACKING.get() or torch.is_grad_enabled()
            or not PACK_MIN_ROWS * x.shape[-1] <= x.numel() <= PACK_MAX_ROWS * x.shape[-1]
            or x.device.type != "cpu" or x.dtype != weight.dtype or weight.dim() != 2
            or torch.compiler.is_compiling()):
        return None
    x2 = x.reshape(-1, x.shape[-1])
    if x.dtype == torch.float32 and WIDE_MIN_OUT <= weight.shape[0] and 2 <= x2.shape[0] <= WIDE_MAX_ROWS:
        # a wide fp32 output layer (the LM head) at a few rows: ``weight @ x.T`` streams the (out, in) weight
        # once and runs ~1.4-2x faster than ``x @ weight.T`` here (bench/bench_models.py gen cases); the
        # result is the transposed view, no copy (in bf16 the plain product is faster)
        y = torch.mm(weight, x2.t()) if bias is None else torch.addmm(bias.to(x.dtype)[:, None], weight, x2.t())
        return y.t().reshape(*x.shape[:-1], weight.shape[0])
    wt = transposed_weight(weight)
    y = torch.mm(x2, wt) if bias is None else torch.addmm(bias.to(x.dtype), x2, wt)
    return y.view(*x.shape[:-1], wt.shape[1])


class _OneDNNLinear(torch.autograd.Function):
    """``linear`` (and ``relu(linear)``: the ReLU runs inside the GEMM and its backward masks the
    gradient with the saved output, so no separate activation pass and no pre-activation kept)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype, relu=False):
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = bias.to(dtype) if bias is not None else None
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype if bias is not None else None)
        y = torch.ops.mkldnn._linear_pointwise(xc, wc, bc, "relu" if relu else "none", [], "")
        ctx.save_for_backward(xc, wc, y if relu else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        xc, wc, y = ctx.saved_tensors
        if y is not None:  # d relu(z) / dz = [z > 0] = [y > 0]
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        g = grad.to(wc.dtype)
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (g @ wc).to(ctx.dtypes[0])  # (..., in)
        if ctx.needs_input_grad[1]:
            gw = (g2.t() @ xc.reshape(-1, xc.shape[-1])).to(ctx.dtypes[1])  # (out, in)
        if ctx.dtypes[2] is not None and ctx.needs_input_grad[2]:
            gb = g2.sum(0, dtype=torch.float32).to(ctx.dtypes[2])
        return gx, gw, gb, None, None


def linear(x: Tensor, layer: nn.Linear, activation: str | None = None) -> Tensor:
    """``act(layer(x))``, through oneDNN's fused linear on CPU when available (same numbers).

    A layer that is not a plain ``nn.Linear`` (a LoRA / quantised / pruned wrapper, a subclass) or
    that carries forward hooks is called as a module, so wrappers and hooks are never bypassed."""
    if type(layer) is not nn.Linear or layer._forward_hooks or layer._forward_pre_hooks:
        y = layer(x)
        return ACTIVATIONS[activation](y) if activation else y
    y = _packed_linear(x, layer.weight, layer.bias)
    if y is not None:
        return ACTIVATIONS[activation](y) if activation else y
    dtype = _cpu_dtype(x, layer.weight)
    if dtype is None or x.numel() <= 4 * x.shape[-1]:  # <= 4 rows (decoding): BLAS is 1.1-3x faster there
        y = F.linear(x, layer.weight, layer.bias)
        return ACTIVATIONS[activation](y) if activation else y
    if torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad):
        fused = activation == "relu"  # the one activation whose backward needs only the output
        y = _OneDNNLinear.apply(x, layer.weight, layer.bias, dtype, fused)
        return ACTIVATIONS[activation](y) if activation and not fused else y
    b = layer.bias.to(dtype) if layer.bias is not None else None
    attr, algo = _POINTWISE[activation] if activation else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), layer.weight.to(dtype), b, attr, [], algo)




# ---------------------------------------------------------------------------- dropout
# Dropout with cheaper random masks on CPU.
#
# ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``, which on CPU costs about one
# generator call per element (~10 ns each on this project's machine): in a small BERT's training
# step that was ~10% of the time. Here one 64-bit draw gives four 16-bit uniforms, and an element
# is kept when its uniform is at least ``round(p * 2**16)``: the drop probability is ``p`` rounded to
# a multiple of 2**-16 (0.1 -> 0.100006), the kept elements are scaled by ``1 / (1 - p)`` as
# usual, and the mask comes from the global torch generator, so ``torch.manual_seed`` makes runs
# reproducible. The backward multiplies by the same saved mask (a bool tensor, as PyTorch's).
#
# Used by every plmkit model in training mode on CPU for tensors of at least ``MIN_NUMEL``
# elements; elsewhere (CUDA, small tensors, p outside (0, 1), inside ``torch.compile``) it is
# ``F.dropout``. Evaluation mode is the identity, as always. ``Dropout`` is an ``nn.Dropout`` (same
# repr, no state), so checkpoints and module surgery are unaffected.

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


# ---------------------------------------------------------------------------- tied word table
# T5 / BART use one (V, H) word table three times: encoder lookup, decoder lookup, LM head. With
# ``nn.Embedding`` each lookup's backward allocates and zeroes a dense (V, H) gradient, and autograd
# sums the three dense gradients out of place: four fresh 16M-float tensors (page faults included)
# and five passes over them per step, ~15% of a T5-small training step on CPU (transformers pays the
# same). Here the head's backward makes the one dense gradient and keeps it (returning None for the
# table), each lookup's backward adds its rows into it in place (``index_add_``), and the last lookup
# returns it: the parameter receives the same sum as before, as one contribution, so other uses of
# the table (if any) still add theirs the usual way.
_TABLE_GRAD_STORAGE = WeakIdKeyDictionary()  # tied table -> a tensor on the storage its last .grad used


def _same_layout(t: Tensor | None, ref: Tensor) -> bool:
    """``t`` exists and has ``ref``'s shape, dtype and device."""
    return t is not None and t.shape == ref.shape and t.dtype == ref.dtype and t.device == ref.device


def _table_grad_buffer(weight: Tensor) -> Tensor | None:
    """A (V, H) tensor on the storage the table's previous ``.grad`` used, when nothing else uses it any
    more (``zero_grad(set_to_none=True)`` dropped it): the head's backward writes the new gradient there
    instead of into fresh memory, which on CPU costs ~20 ms of page faults per step for T5-small's 16M
    floats (allocations over 32 MB are fresh mmaps). None when the storage is still referenced (a live
    ``.grad``, gradient accumulation, a caller's reference): then a fresh tensor is used. The cost: that
    one (V, H) block stays allocated while the table lives, also between steps."""
    alias = _TABLE_GRAD_STORAGE.get(weight)
    if not _same_layout(alias, weight):
        return None
    storage = alias.untyped_storage()
    try:
        users = torch._C._storage_Use_Count(storage._cdata)  # the alias + this Python storage object
    except AttributeError:  # pragma: no cover - private API gone: always fresh memory
        return None
    if users > 2:
        return None
    return alias.new_empty(0).set_(storage, 0, weight.shape, (weight.shape[1], 1))


class TiedGrad:
    """What the tied head and lookups of one forward share: the head's dense table gradient of the
    backward under way (``gw``) until the last lookup has added its rows and returned it."""

    __slots__ = ("gw", "lookups", "pending")

    def __init__(self) -> None:
        self.gw: Tensor | None = None
        self.lookups = 0  # tied lookups in this forward
        self.pending = 0  # lookups still to add their rows in this backward


class TiedHead(torch.autograd.Function):
    """``hidden @ weight.T`` whose backward leaves its (V, H) weight gradient to the lookups (``TiedGrad``)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, state: TiedGrad) -> Tensor:
        ctx.save_for_backward(hidden, weight)
        ctx.state = state
        return F.linear(hidden, weight)

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight = ctx.saved_tensors
        gh = grad @ weight if ctx.needs_input_grad[0] else None
        g2, h2 = grad.reshape(-1, grad.shape[-1]), hidden.reshape(-1, hidden.shape[-1])  # (N, V), (N, H)
        gw = _table_grad_buffer(weight)
        if gw is not None:
            torch.mm(g2.t(), h2, out=gw)  # (V, H), into the previous step's (released) gradient memory
        else:
            gw = torch.mm(g2.t(), h2)  # (V, H), contiguous
            if not _same_layout(_TABLE_GRAD_STORAGE.get(weight), gw):
                # a second tensor object on its storage, not a view: autograd still sees one reference
                # to ``gw`` and hands it to .grad without a copy
                _TABLE_GRAD_STORAGE[weight] = gw.new_empty(0).set_(gw.untyped_storage(), 0, gw.shape, gw.stride())
        if ctx.state.lookups == 0:  # nothing to hand it to (cannot happen through EncoderDecoder.forward)
            return gh, gw, None
        ctx.state.gw, ctx.state.pending = gw, ctx.state.lookups
        return gh, None, None


class TiedLookup(torch.autograd.Function):
    """``F.embedding(ids, weight)`` for the tied table. Backward: adds its rows into the head's gradient
    of this backward pass; the last lookup returns that gradient, the others None. When the head is not
    part of the backward (the loss did not use the logits) it returns the usual dense gradient."""

    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor, padding_idx: int | None, state: TiedGrad) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.num_rows, ctx.padding_idx, ctx.state = weight.shape[0], padding_idx, state
        state.lookups += 1
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        flat, rows = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])  # (N,), (N, H)
        if ctx.padding_idx is not None:  # nn.Embedding never updates the padding row
            rows = rows.masked_fill((flat == ctx.padding_idx)[:, None], 0.0)
        state = ctx.state
        if state.gw is None:
            return rows.new_zeros(ctx.num_rows, rows.shape[1]).index_add_(0, flat, rows), None, None, None
        state.gw.index_add_(0, flat, rows.to(state.gw.dtype))
        state.pending -= 1
        if state.pending > 0:
            return None, None, None, None
        gw, state.gw = state.gw, None  # no reference left here: autograd hands it to .grad without a copy
        return gw, None, None, None
