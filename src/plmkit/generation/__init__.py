"""Decoding for causal LMs: ``generate`` (greedy / sampling / beam search with a static KV cache),
``KVCache``, logit processors and streamers."""

from plmkit.models.cache import KVCache
from plmkit.generation.decode import generate
from plmkit.generation.streamer import TextStreamer

__all__ = ["KVCache", "generate", "TextStreamer"]
