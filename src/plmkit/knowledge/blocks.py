"""Running a plmkit causal ``Transformer`` block by block from a kept prefix.

An intervention at position t and block i of a causal LM changes nothing before position t and nothing
below block i. Causal tracing (``trace``) and knowledge-neuron attribution (``neurons``) both use this: they
run the clean (or corrupted) forward once, keep every block's input and the KV cache, and compute each
intervention's rows from block i on, for positions >= t only, attending to the kept keys / values of the
earlier positions (:class:`PrefixCache`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from plmkit.knowledge.structure import ModelStructure
from plmkit.models.cache import KVCache
from plmkit.models.layers import AttentionContext


def fast_path_ok(struct: ModelStructure) -> bool:
    """True for plmkit's own causal ``Transformer`` backbone (blocks can be run one by one with a KV cache)."""
    from plmkit.models.transformer import Transformer

    m = struct.model
    return isinstance(m, Transformer) and type(m).backbone is Transformer.backbone and bool(m.config.causal)


class PrefixCache:
    """The KV cache of a run that computes positions ``t0..T-1`` for B = n x S rows (row r carries the kept
    run's row r % S): the keys / values of positions < t0 are the kept run's (read from its cache, the same for
    every row group), the run's own positions are appended to them per layer. The attention layers see it
    through ``update`` / ``len`` / ``key_mask`` like a ``KVCache``."""

    key_mask = None  # no padding

    def __init__(self, cache: KVCache, t0: int, samples: int) -> None:
        self.k, self.v = cache.k[:, :, :, :t0], cache.v[:, :, :, :t0]  # (L, S, Nkv, t0, D)
        self.t0, self.samples = t0, samples

    def __len__(self) -> int:
        return self.t0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(B, Nkv, T - t0, D) keys / values of this run -> (B, Nkv, T, D) with the kept prefix."""
        if self.t0 == 0:
            return k, v
        n = k.shape[0] // self.samples
        return (torch.cat([self.k[layer].repeat(n, 1, 1, 1), k], 2),
                torch.cat([self.v[layer].repeat(n, 1, 1, 1), v], 2))


def attention_context(struct: ModelStructure, n: int, past: int, cache: Any, dtype: torch.dtype) -> AttentionContext:
    """Attention context of a run computing positions past..past+n-1 (as the model's backbone makes it)."""
    m = struct.model
    dev = struct.word_embeddings.weight.device
    mask, is_causal = m._attention_mask(None, 1, n, past, cache, dev)
    if torch.is_autocast_enabled(dev.type):
        dtype = torch.get_autocast_dtype(dev.type)
    rotary = m.rotary(m.default_position_ids(None, n, past, dev), dtype) if hasattr(m, "rotary") else None
    return AttentionContext(mask=mask, is_causal=is_causal, rotary=rotary, cache=cache)


def run_kept(struct: ModelStructure, ids: Tensor) -> tuple[list[Tensor], KVCache, Tensor]:
    """One forward of ``ids`` (B, T) block by block: (every block's input (B, T, H), the filled KV cache, the
    last block's output (B, T, H)). Hooks on the blocks' modules fire as in a normal forward."""
    m, T = struct.model, ids.shape[1]
    x = m.embeddings(ids, m.default_position_ids(ids, T, 0, ids.device), None, None)
    cache = KVCache.for_model(m, ids.shape[0], T)
    ctx = attention_context(struct, T, 0, cache, x.dtype)
    inputs: list[Tensor] = []
    for i in range(struct.num_layers):
        inputs.append(x)
        x = struct.layers[i](x, ctx, i)
    cache.advance(T)
    return inputs, cache, x
