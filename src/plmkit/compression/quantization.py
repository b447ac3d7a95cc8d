"""Post-training quantization of a model's linear layers (and optionally its word embeddings).

Which library: torch 2.13's ``torch.ao.quantization`` still exists but warns that it is deprecated (its
eager ``quantize_dynamic`` moves to torchao), and torchao (PyPI 0.18) is not a dependency of plmkit and
targets GPUs first. The CPU kernels themselves are in core PyTorch and not deprecated as operators, so
plmkit calls them directly on tensors it stores itself:

- ``dynamic-int8``: int8 weights (symmetric, per output channel), activations quantized per batch at run
  time: ``torch.ops.quantized.linear_dynamic`` (FBGEMM / x86 int8 GEMM, the kernel behind PyTorch's
  dynamic-quantized BERT tutorial); its packed weight is built from the stored int8 tensor on first use
  (through a qint8 tensor: torch 2.13 warns that quantized-dtype tensors are deprecated, so this path
  goes when they do; ``weight-int8`` uses no quantized dtype).
- ``weight-int8``: int8 weights per output channel, fp32 activations: ``torch._weight_int8pack_mm``.
- ``qat-int8`` (``plmkit.compression.checkpoints.qat_checkpoint``): Q8BERT-style fine-tuning through
  fake int8 rounding of weights and activations with straight-through gradients (:class:`FakeQuantLinear`),
  then converted to ``dynamic-int8``.
- ``weight-int4``: 4-bit weights, asymmetric, per group of ``group_size`` input channels, two per byte;
  fp32 inputs on CPU go through ATen's int4 GEMM (``_weight_int4pack_mm_for_cpu``, the kernel torchao's
  CPU int4 path uses, for groups of 32 / 64 / 128 / 256; the packed layout is made from the stored nibbles
  on first use), other inputs and group sizes through the dequantized weight.

Activations of the weight-only kernels (``activations=``, recorded in the checkpoint): in torch 2.13 the
two weight-only CPU kernels are vectorised for bf16 activations only; with fp32 activations they run a
slow path, measured 9-19x slower than the fp32 matmul at one row and 38-75x at 64-256 rows (576 x 1536,
one thread; docs/COMPRESSION.md). ``activations="bfloat16"`` casts the input (and the scales) to bf16 for the kernel and the
result back: as fast as the fp32 matmul or faster, at bf16 rounding of inputs and scales.
``"float32"`` (default) keeps fp32 numbers.

Quantized modules keep plain int8 / uint8 / fp32 tensors as buffers, so a quantized checkpoint is a normal
``weights.safetensors`` (no pickles) and reloads without re-quantizing (:func:`swap_in_empty` builds empty
modules of the right shapes, then the saved tensors load into them). Only the linear layers inside the
Transformer blocks are quantized (attention and feed-forward); task heads and norms stay fp32. With
``embeddings=True`` the word-embedding table is stored int8 per row as well (most of a small model's file).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError

METHODS = ("dynamic-int8", "weight-int8", "weight-int4")
ACTIVATIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _kernel_dtype(module: nn.Module, x: Tensor) -> torch.dtype:
    """The activation dtype a weight-only kernel runs in for ``x`` (fp32 unless the module says bf16 on CPU)."""
    if x.device.type == "cpu" and getattr(module, "activations", "float32") == "bfloat16":
        return torch.bfloat16
    return torch.float32


def _int8_per_row(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row: ``w ~= q * scale[:, None]``, q in [-127, 127]."""
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.float32)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class _Int8PerRowLinear(nn.Module):
    """What both int8 linears hold: an int8 weight with one scale per output channel, and an fp32 bias."""

    kind = "int8"

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, lin: nn.Linear):
        m = cls(lin.in_features, lin.out_features, lin.bias is not None)
        q, s = _int8_per_row(lin.weight.detach().float())
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(s)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().float())
        return m

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


class DynamicInt8Linear(_Int8PerRowLinear):
    """int8 weight per output channel; activations quantized on the fly (FBGEMM dynamic linear)."""

    kind = "dynamic int8"

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self._packed = None
        self._packed_key = None

    def _pack(self):
        key = (self.weight_int8.data_ptr(), self.weight_int8._version, self.weight_scale._version)
        if self._packed is None or self._packed_key != key:
            with warnings.catch_warnings():  # quantized-dtype tensors are deprecated (module docstring)
                warnings.simplefilter("ignore", UserWarning)
                qw = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.weight_scale.double(),
                    torch.zeros(self.out_features, dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(qw, self.bias)
            self._packed_key = key
        return self._packed

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._pack(), True)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


class WeightInt8Linear(_Int8PerRowLinear):
    """int8 weight per output channel, fp32 (or bf16: ``activations``) activations (``torch._weight_int8pack_mm``)."""

    kind = "weight-only int8"
    activations = "float32"

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        dt = _kernel_dtype(self, x)
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(dt).contiguous(), self.weight_int8,
                                      self.weight_scale.to(dt)).float()
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


class WeightInt4Linear(nn.Module):
    """4-bit weights, per group of ``group_size`` inputs: ``w = (q - zero) * scale``, q in [0, 15], two per byte."""

    activations = "float32"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 32):
        super().__init__()
        if in_features % group_size or group_size % 2:
            raise UserError(f"weight-int4: input width {in_features} is not a multiple of --group-size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("weight_uint4x2", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, groups))
        self.register_buffer("weight_zero", torch.zeros(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, lin: nn.Linear, group_size: int = 32) -> "WeightInt4Linear":
        m = cls(lin.in_features, lin.out_features, lin.bias is not None, group_size)
        w = lin.weight.detach().float().view(lin.out_features, -1, group_size)
        lo, hi = w.amin(-1), w.amax(-1)
        scale = ((hi - lo) / 15.0).clamp_min(1e-12)
        zero = torch.round(-lo / scale)
        q = torch.round(w / scale[..., None] + zero[..., None]).clamp(0, 15).to(torch.uint8).view(lin.out_features, -1)
        m.weight_uint4x2.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        m.weight_scale.copy_(scale)
        m.weight_zero.copy_(zero)
        if lin.bias is not None:
            m.bias.copy_(lin.bias.detach().float())
        return m

    def dequantized_weight(self) -> Tensor:
        p = self.weight_uint4x2
        q = torch.stack((p & 15, p >> 4), dim=-1).view(self.out_features, -1, self.group_size).float()
        return ((q - self.weight_zero[..., None]) * self.weight_scale[..., None]).view(self.out_features, -1)

    def _packed(self) -> tuple[Tensor, Tensor]:
        """The weight in the layout of ATen's int4 CPU GEMM and its (groups, N, 2) scales and zeros, made from
        the stored tensors on first use (that kernel computes ``(q - 8) * scale + zero``, so its zero is
        ``(8 - zero) * scale`` of ours)."""
        key = tuple(t._version for t in (self.weight_uint4x2, self.weight_scale, self.weight_zero))
        if getattr(self, "_cache_key", None) != key:
            p = self.weight_uint4x2
            q = torch.stack((p & 15, p >> 4), dim=-1).view(self.out_features, -1).to(torch.int32)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
            sz = torch.stack([self.weight_scale.t(), ((8 - self.weight_zero) * self.weight_scale).t()], -1)
            self._cache, self._cache_key = (packed, sz.contiguous()), key
        return self._cache

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and self.group_size in (32, 64, 128, 256):
            shape = x.shape
            packed, sz = self._packed()
            dt = _kernel_dtype(self, x)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(dt).contiguous(), packed,
                                                          self.group_size, sz.to(dt)).float()
            if self.bias is not None:
                y = y + self.bias
            return y.view(*shape[:-1], self.out_features)
        return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, weight-only int4, "
                f"group {self.group_size}")


class Int8Embedding(nn.Module):
    """An embedding table stored int8 per row (``row ~= q * scale``); lookups return fp32."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> "Int8Embedding":
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        q, s = _int8_per_row(emb.weight.detach().float())
        m.weight_int8.copy_(q)
        m.weight_scale.copy_(s)
        return m

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight_int8[ids].float() * self.weight_scale[ids, None]


QUANTIZED = {"dynamic-int8": DynamicInt8Linear, "weight-int8": WeightInt8Linear, "weight-int4": WeightInt4Linear}


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def quantizable(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules inside the Transformer blocks."""
    if not hasattr(model, "layers"):
        raise UserError(f"quantization needs a Transformer with .layers; got {type(model).__name__}")
    return [f"layers.{i}.{n}" for i, layer in enumerate(model.layers)
            for n, m in layer.named_modules() if type(m) is nn.Linear]


def set_activations(model: nn.Module, activations: str) -> None:
    """Run ``model``'s weight-only int8 / int4 modules with ``activations`` ("float32" or "bfloat16")."""
    if activations not in ACTIVATIONS:
        raise UserError(f"--activations {activations!r}: expected one of {', '.join(ACTIVATIONS)}")
    for m in model.modules():
        if isinstance(m, (WeightInt8Linear, WeightInt4Linear)):
            m.activations = activations


def quantize_model(model: nn.Module, method: str, group_size: int = 32, embeddings: bool = False,
                   activations: str = "float32") -> dict:
    """Replace the linear layers of ``model``'s blocks by quantized ones, in place; returns the record that
    :func:`swap_in_empty` rebuilds them from. ``activations``: what the weight-only kernels compute in
    (module docstring); dynamic-int8 quantizes its activations itself and takes only "float32"."""
    if method not in METHODS:
        raise UserError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if activations not in ACTIVATIONS or (method == "dynamic-int8" and activations != "float32"):
        raise UserError(f"--activations {activations!r}: expected one of {', '.join(ACTIVATIONS)} "
                        "(weight-int8 / weight-int4 only; dynamic-int8 quantizes its own activations)")
    if any(isinstance(m, (*QUANTIZED.values(), Int8Embedding)) for m in model.modules()):
        raise UserError("the model is already quantized; quantize the fp32 checkpoint instead")
    names = quantizable(model)
    for name in names:
        lin = model.get_submodule(name)
        q = (WeightInt4Linear.from_linear(lin, group_size) if method == "weight-int4"
             else QUANTIZED[method].from_linear(lin))
        _set(model, name, q)
    set_activations(model, activations)
    record = {"method": method, "modules": names, "group_size": group_size, "embeddings": False}
    if activations != "float32":
        record["activations"] = activations
    if embeddings:
        if getattr(model, "head", None) is not None and model.config.tie_word_embeddings:
            raise UserError("--embeddings: the word table is tied to the LM head; quantize the linear layers only")
        model.embeddings.word = Int8Embedding.from_embedding(model.embeddings.word)
        record["embeddings"] = True
    return record


def swap_in_empty(model: nn.Module, record: dict) -> None:
    """Give ``model`` the quantized modules ``record`` lists, empty (the checkpoint's tensors load into them)."""
    method = record.get("method")
    if method not in QUANTIZED:
        raise UserError(f"task.json compression.quantization.method: expected one of {', '.join(METHODS)}, "
                        f"got {method!r}")
    for name in record["modules"]:
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            raise UserError(f"task.json compression.quantization: the model has no module {name!r}") from None
        kw = {"group_size": record.get("group_size", 32)} if method == "weight-int4" else {}
        _set(model, name, QUANTIZED[method](lin.in_features, lin.out_features, lin.bias is not None, **kw))
    act = record.get("activations", "float32")
    if act not in ACTIVATIONS:
        raise UserError(f"task.json compression.quantization.activations: expected one of {', '.join(ACTIVATIONS)}, "
                        f"got {act!r}")
    set_activations(model, act)
    if record.get("embeddings"):
        w = model.embeddings.word
        model.embeddings.word = Int8Embedding(w.num_embeddings, w.embedding_dim, w.padding_idx)


# ---------------------------------------------------------------------------- quantization-aware training
def fake_quant_int8(x: Tensor, dim: int | None = None) -> Tensor:
    """Symmetric int8 rounding with a straight-through gradient (Q8BERT): forward ``round(x / s) * s``,
    backward the identity. ``dim=None``: one scale for the tensor; else one per slice along ``dim``."""
    a = x.detach().abs()
    amax = a.amax() if dim is None else a.amax(dim=tuple(i for i in range(x.dim()) if i != dim), keepdim=True)
    s = (amax / 127.0).clamp_min(1e-12)
    q = torch.round(x / s).clamp(-127, 127) * s
    return x + (q - x).detach()


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` that trains through int8 rounding of its weight (per output channel) and its input
    (per tensor), straight-through; ``DynamicInt8Linear.from_linear`` converts it after training."""

    @classmethod
    def wrap(cls, lin: nn.Linear) -> "FakeQuantLinear":
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.in_features, m.out_features = lin.in_features, lin.out_features
        m.weight, m.bias = lin.weight, lin.bias
        return m

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(fake_quant_int8(x), fake_quant_int8(self.weight, 0), self.bias)


def prepare_qat(model: nn.Module) -> list[str]:
    """Swap the blocks' linears for :class:`FakeQuantLinear` (same parameters), in place."""
    if any(isinstance(m, (*QUANTIZED.values(), Int8Embedding)) for m in model.modules()):
        raise UserError("the model is already quantized; quantize the fp32 checkpoint instead")
    names = quantizable(model)
    for name in names:
        _set(model, name, FakeQuantLinear.wrap(model.get_submodule(name)))
    return names


def convert_qat(model: nn.Module, names: list[str]) -> dict:
    """Replace the trained :class:`FakeQuantLinear` modules by :class:`DynamicInt8Linear`."""
    for name in names:
        _set(model, name, DynamicInt8Linear.from_linear(model.get_submodule(name)))
    return {"method": "dynamic-int8", "modules": names, "group_size": 32, "embeddings": False, "qat": True}
