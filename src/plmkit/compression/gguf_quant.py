"""Run a llama GGUF file's 4-bit weights as they are stored, instead of de-quantizing them to fp32.

llama.cpp's ``Q4_0`` and ``Q4_1`` store each row in blocks of 32 weights: an fp16 scale ``d`` (and for
``Q4_1`` an fp16 minimum ``m``) and 32 four-bit codes ``q`` in [0, 15]; the weight is ``(q - 8) * d``
(Q4_0) or ``q * d + m`` (Q4_1). That is exactly :class:`~plmkit.compression.quantization.WeightInt4Linear`
with groups of 32 input channels (``w = (q - zero) * scale``: ``scale = d``, ``zero = 8`` or ``-m / d``),
whose CPU forward is ATen's int4 GEMM (``_weight_int4pack_mm_for_cpu``, ``w = (q - 8) * scale + z``, so
``z = 8 d + m``: the blocks are represented exactly, up to the fp32 rounding of ``-m / d``). A block
with ``d = 0`` holds one value ``m`` and is stored as ``q = 0, scale = |m|, zero = -sign(m)``.

Other GGUF types are not kept: ``Q8_0`` (int8 per block of 32) has no CPU kernel with per-block scales
in PyTorch 2.13 (``torch._weight_int8pack_mm`` takes one scale per output channel; torchao 0.18's
per-group int8 weight de-quantizes before an fp32 matmul) and K-quants none at all; such tensors (in
SmolLM2's Q4_1 file: the tied embedding / LM head, Q8_0) stay de-quantized fp32 as ``load_pretrained``
gives them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from plmkit.compression.quantization import WeightInt4Linear, _set
from plmkit.errors import UserError

GROUP = 32
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}


def q4_codes(kind: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One GGUF tensor's Q4_0 / Q4_1 rows (uint8, (rows, bytes)) -> codes (rows, in) uint8 in [0, 15] and
    per-group scale and zero (rows, in / 32) float32 with ``w = (q - zero) * scale``."""
    if kind not in _BLOCK_BYTES:
        raise UserError(f"GGUF type {kind}: only {', '.join(_BLOCK_BYTES)} blocks can be kept quantized")
    rows = raw.shape[0]
    b = np.ascontiguousarray(raw).reshape(rows, -1, _BLOCK_BYTES[kind])
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = b[..., 4:] if kind == "Q4_1" else b[..., 2:]
    q = np.concatenate([qs & 15, qs >> 4], axis=-1)  # byte j holds element j (low) and j + 16 (high)
    if kind == "Q4_0":
        return q.reshape(rows, -1), d, np.full_like(d, 8.0)
    m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    flat = d == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        zero = np.where(flat, -np.sign(m), -m / np.where(flat, 1.0, d)).astype(np.float32)
    scale = np.where(flat, np.where(m == 0, 1.0, np.abs(m)), d).astype(np.float32)
    q = np.where(flat[..., None], 0, q).astype(np.uint8)
    return q.reshape(rows, -1), scale, zero


def _int4_linear(parts: list[tuple[str, np.ndarray]], in_features: int) -> WeightInt4Linear:
    """A bias-free :class:`WeightInt4Linear` from the row-stacked blocks of one or more GGUF tensors."""
    codes, scales, zeros = zip(*(q4_codes(k, r) for k, r in parts))
    q, scale, zero = np.concatenate(codes), np.concatenate(scales), np.concatenate(zeros)
    if q.shape[1] != in_features:
        raise UserError(f"GGUF blocks give rows of {q.shape[1]} weights; the layer has {in_features} inputs")
    m = WeightInt4Linear(in_features, q.shape[0], bias=False, group_size=GROUP)
    qt = torch.from_numpy(q)
    m.weight_uint4x2.copy_(qt[:, 0::2] | (qt[:, 1::2] << 4))
    m.weight_scale.copy_(torch.from_numpy(scale))
    m.weight_zero.copy_(torch.from_numpy(zero))
    return m


def _llama_sources(i: int) -> dict[str, list[str]]:
    """plmkit module of layer ``i`` -> the HF tensors whose rows it stacks (q | k | v for the fused qkv)."""
    a, f = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
    return {f"layers.{i}.attn.qkv": [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"],
            f"layers.{i}.attn.o": [a + "o_proj.weight"], f"layers.{i}.mlp.gate": [f + "gate_proj.weight"],
            f"layers.{i}.mlp.up": [f + "up_proj.weight"], f"layers.{i}.mlp.down": [f + "down_proj.weight"]}


def keep_gguf_quantized(model: nn.Module, path: str | Path, check: bool = True) -> dict:
    """Replace the linears of ``model`` (loaded from the llama GGUF file ``path`` by ``load_pretrained``)
    whose GGUF tensors are Q4_0 / Q4_1 by int4 modules holding those blocks, in place.

    ``check``: compare each new module's weight with the de-quantized one it replaces (both come from the
    same blocks, so they must agree to fp32 rounding; a mismatch means a wrong name or row order).
    Returns the quantization record (``plmkit.compression.quantization.swap_in_empty`` format) plus
    ``kept`` (GGUF type per module), ``dequantized`` (modules left fp32) and ``max_abs_weight_diff``.
    """
    from plmkit.interop.gguf import read_gguf_blocks

    blocks = read_gguf_blocks(path)
    if getattr(model, "config", None) is None or model.config.family != "llama":
        raise UserError(f"{path}: keeping GGUF blocks needs a llama model loaded from that file")
    kept, dequantized, worst = {}, [], 0.0
    for i in range(len(model.layers)):
        for name, sources in _llama_sources(i).items():
            try:
                old = model.get_submodule(name)
            except AttributeError:
                raise UserError(f"{path}: the model has no module {name!r} (not a llama model from this file?)") from None
            if type(old) is not nn.Linear or not all(s in blocks for s in sources):
                dequantized.append(name)
                continue
            if old.bias is not None:
                raise UserError(f"{path}: {name} has a bias; only bias-free llama linears are kept quantized")
            new = _int4_linear([blocks[s] for s in sources], old.in_features)
            if new.out_features != old.out_features:
                raise UserError(f"{path}: {name}: GGUF rows {new.out_features} != layer outputs {old.out_features}")
            if check:
                diff = (new.dequantized_weight() - old.weight.detach().float()).abs().max().item()
                tol = 1e-5 * max(1.0, old.weight.detach().abs().max().item())
                if diff > tol:
                    raise UserError(f"{path}: {name}: kept blocks differ from the de-quantized weight by {diff:.3g}")
                worst = max(worst, diff)
            _set(model, name, new)
            kept[name] = "+".join(sorted({blocks[s][0] for s in sources}))
    if not kept:
        raise UserError(f"{path}: no Q4_0 / Q4_1 linear weights to keep quantized (everything stays fp32)")
    return {"method": "weight-int4", "modules": list(kept), "group_size": GROUP, "embeddings": False,
            "source": str(path), "kept": kept, "dequantized": dequantized, "max_abs_weight_diff": worst}


def load_gguf_quantized(path: str | Path) -> tuple[nn.Module, dict]:
    """``plmkit.interop.load_pretrained(path)`` with the Q4_0 / Q4_1 linears kept as int4 blocks."""
    from plmkit.interop import load_pretrained

    model = load_pretrained(path)
    record = keep_gguf_quantized(model, path)
    model.eval()
    return model, record
