"""Decoding caches: ``KVCache`` (decoder-only models) and ``Seq2SeqCache`` (encoder-decoders).

They live with the models because the attention layers write into them; ``plmkit.generation``
creates and reorders them and never the reverse.

``KVCache``: a preallocated (static) key/value cache written in place.

One tensor per keys and values, shaped (L, B, Nkv, S_max, D), so that a decoding step writes
``k[layer, :, :, pos:pos+T]`` in place and attention reads the view ``k[layer, :, :, :pos+T]``:
no concatenation and no per-step allocation (the cost HF's growing DynamicCache pays). Storage is
allocated on the first write, in the dtype the layers produce (so bf16 autocast gets a bf16
cache). If a write would overflow ``max_length`` the storage grows geometrically, so a cache made
by ``model(..., use_cache=True)`` without a size also works.

The cache also keeps the key padding mask (B, S_max) bool when any key is padding (left-padded
batched generation), so later steps need not pass the whole attention mask again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class KVCache:
    """Static key/value cache for ``num_layers`` attention applications.

    Args:
        num_layers: attention applications per forward (``config.num_layers``; ALBERT's shared
            layer has one slot per application).
        batch_size, num_kv_heads, head_dim: shape of the keys.
        max_length: preallocated sequence capacity (grows if exceeded).
    """

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_length: int, device: torch.device | str | None = None) -> None:
        self.num_layers, self.batch_size = num_layers, batch_size
        self.num_kv_heads, self.head_dim = num_kv_heads, head_dim
        self.capacity = max(1, int(max_length))
        self.device = torch.device(device) if device is not None else None
        self.k: Tensor | None = None  # (L, B, Nkv, S_max, D)
        self.v: Tensor | None = None
        self.key_mask: Tensor | None = None  # (B, S_max) bool, None while no key is padding
        self.length = 0  # number of positions written and committed

    @classmethod
    def for_model(cls, model, batch_size: int, max_length: int) -> "KVCache":
        cfg = model.config
        dev = next(model.parameters()).device
        return cls(cfg.num_layers, batch_size, cfg.kv_heads, cfg.dim_per_head, max_length, dev)

    # ------------------------------------------------------------------ writes
    def _alloc(self, like: Tensor, capacity: int) -> None:
        shape = (self.num_layers, self.batch_size, self.num_kv_heads, capacity, self.head_dim)
        k = torch.empty(shape, dtype=like.dtype, device=like.device)
        v = torch.empty(shape, dtype=like.dtype, device=like.device)
        if self.k is not None and self.length:
            k[:, :, :, : self.length] = self.k[:, :, :, : self.length]
            v[:, :, :, : self.length] = self.v[:, :, :, : self.length]
        self.k, self.v, self.capacity = k, v, capacity

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, Nkv, T, D) keys/values at the current position; return the (B, Nkv, S, D) views."""
        start = self.length
        end = start + k.shape[2]
        if self.k is None or end > self.capacity or self.k.dtype != k.dtype:
            self._alloc(k, max(end, self.capacity if self.k is None else 2 * self.capacity))
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def set_key_mask(self, mask: Tensor, start: int) -> Tensor:
        """Record the (B, T) key padding mask of positions start..start+T; return the (B, S) mask so far."""
        end = start + mask.shape[1]
        if self.key_mask is None:
            cap = max(self.capacity, end)
            self.key_mask = torch.ones(self.batch_size, cap, dtype=torch.bool, device=mask.device)
        elif self.key_mask.shape[1] < end:
            grown = torch.ones(self.batch_size, max(end, 2 * self.key_mask.shape[1]), dtype=torch.bool,
                               device=mask.device)
            grown[:, : self.key_mask.shape[1]] = self.key_mask
            self.key_mask = grown
        self.key_mask[:, start:end] = mask
        return self.key_mask[:, :end]

    def advance(self, num_tokens: int) -> None:
        """Commit ``num_tokens`` positions written by every layer in this forward."""
        self.length += num_tokens

    # ------------------------------------------------------------------ beam search
    def reorder(self, index: Tensor) -> None:
        """Reorder batch rows in place (beam search): row i becomes old row ``index[i]``."""
        if self.k is None:
            return
        n = self.length
        self.k[:, :, :, :n] = self.k[:, index, :, :n]
        self.v[:, :, :, :n] = self.v[:, index, :, :n]
        if self.key_mask is not None:
            self.key_mask[:, :n] = self.key_mask[index, :n]

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"KVCache(layers={self.num_layers}, batch={self.batch_size}, length={self.length}, "
                f"capacity={self.capacity})")


class Seq2SeqCache:
    """Decoder cache: ``self_cache`` (static ``KVCache`` for self-attention) + ``cross`` (one
    (k, v) pair per decoder layer, computed from the encoder output on the first step)."""

    def __init__(self, config: Any, batch_size: int, max_length: int, device=None) -> None:
        self.self_cache = KVCache(config.decoder_layers, batch_size, config.kv_heads, config.dim_per_head,
                                  max_length, device)
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * config.decoder_layers
        self.position_bias: Tensor | None = None  # (1, Nh, n, n) decoder relative bias, built once (no grad)

    def __len__(self) -> int:
        return len(self.self_cache)

    def reorder(self, index: Tensor, same_source: bool = False) -> None:
        """Beam search: row i becomes old row ``index[i]``. ``same_source`` (rows only move within
        a group sharing one encoder input) leaves the cross keys/values untouched."""
        self.self_cache.reorder(index)
        if not same_source:
            self.cross = [None if kv is None else (kv[0][index], kv[1][index]) for kv in self.cross]
