"""The shape a compressed model has, as ``task.json["compression"]`` records it, and the module surgery
that gives a freshly built model that shape before its saved weights load (no re-quantizing, no importance
scores: the checkpoint's tensors are loaded as they are). ::

    {"heads": [n_0, ..., n_{L-1}],          # attention heads kept per layer (head pruning)
     "intermediate": [i_0, ..., i_{L-1}],   # feed-forward width per layer (FFN-neuron pruning)
     "quantization": {"method": "dynamic-int8" | "weight-int8" | "weight-int4",
                      "modules": [names of the quantized modules], "group_size": 32},
     "sparsity": {...}}                     # magnitude pruning: a record only (weights stay dense)

This module imports nothing from ``plmkit.tasks`` (``plmkit.tasks.checkpoint`` calls :func:`restore`).
"""

from __future__ import annotations

from torch import nn

from plmkit.errors import UserError


def resize_attention(attn: nn.Module, heads: int) -> None:
    """Give a ``SelfAttention`` ``heads`` heads (new, uninitialised projections of the pruned shapes)."""
    if attn.num_kv_heads != attn.num_heads:
        raise UserError("head pruning supports multi-head attention only (this model uses grouped-query heads)")
    D, H = attn.head_dim, attn.qkv.in_features
    attn.qkv = nn.Linear(H, 3 * heads * D, bias=attn.qkv.bias is not None)
    attn.o = nn.Linear(heads * D, attn.o.out_features, bias=attn.o.bias is not None)
    attn.num_heads = attn.num_kv_heads = heads
    attn.split = (heads * D, heads * D, heads * D)


def resize_mlp(mlp: nn.Module, width: int) -> None:
    """Give an ``MLP`` an inner width of ``width`` (new projections of the pruned shapes)."""
    H = mlp.up.in_features
    for name in ("gate", "up"):
        if hasattr(mlp, name):
            old = getattr(mlp, name)
            setattr(mlp, name, nn.Linear(H, width, bias=old.bias is not None))
    mlp.down = nn.Linear(width, mlp.down.out_features, bias=mlp.down.bias is not None)


def restore(model: nn.Module, record: dict) -> None:
    """Reshape ``model`` (built from its uncompressed config) to the compressed checkpoint's ``record``."""
    layers = list(model.layers)
    for key, fn in (("heads", resize_attention), ("intermediate", resize_mlp)):
        sizes = record.get(key)
        if sizes is None:
            continue
        if len(sizes) != len(layers):
            raise UserError(f"task.json compression.{key}: {len(sizes)} entries for {len(layers)} layers")
        for layer, n in zip(layers, sizes):
            fn(layer.attn if key == "heads" else layer.mlp, int(n))
    quant = record.get("quantization")
    if quant:
        from plmkit.compression.quantization import swap_in_empty

        swap_in_empty(model, quant)
