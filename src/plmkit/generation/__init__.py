"""Decoding: ``generate`` (greedy / sampling / beam search with a static KV cache) for causal LMs,
``plmkit.generation.seq2seq.generate`` for encoder-decoders, ``generate_any`` choosing between them,
logit processors and streamers. The caches (``KVCache``, ``Seq2SeqCache``) live in
``plmkit.models.cache``; ``KVCache`` is re-exported here."""

from plmkit.generation.decode import generate
from plmkit.generation.streamer import TextStreamer
from plmkit.models.cache import KVCache

__all__ = ["KVCache", "generate", "generate_any", "TextStreamer"]


def generate_any(model, input_ids, attention_mask=None, **kwargs):
    """``model.generate``: encoder-decoders through ``plmkit.generation.seq2seq.generate``, decoders
    through ``generate`` (the hook ``plmkit/__init__.py`` registers for ``PretrainedModel.generate``)."""
    if getattr(model.config, "is_encoder_decoder", False):
        from plmkit.generation.seq2seq import generate as generate_seq2seq

        return generate_seq2seq(model, input_ids, attention_mask=attention_mask, **kwargs)
    return generate(model, input_ids, attention_mask=attention_mask, **kwargs)
