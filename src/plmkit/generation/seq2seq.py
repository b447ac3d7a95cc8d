"""Decoding for encoder-decoder models (``plmkit.models.seq2seq.EncoderDecoder``): greedy,
sampling and beam search.

The encoder runs once; the decoder starts from ``decoder_start_token_id`` and feeds one token per
step through a ``Seq2SeqCache`` (static self-attention ``KVCache`` + cross-attention keys/values
computed on the first step). ``use_cache=False`` re-runs the decoder over the whole prefix each
step (the reference the cache is tested against). Returns the decoder sequences including the
start token, (B, 1 + n), as ``transformers`` does; rows that finished (``eos_token_id``) are
filled with ``pad_token_id``. The decoding loops are ``plmkit.generation.search``'s, shared with
decoder-only generation; ``forced_bos_token_id`` / ``forced_eos_token_id`` (BART) force the first /
last token as HF's processors do.

References: Sutskever et al. 2014 (beam search); Holtzman et al. 2020 (top-p); transformers
``GenerationMixin`` (v5) for the stopping and beam-scoring rules.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.generation.search import beam_loop, sample_loop
from plmkit.models.cache import Seq2SeqCache
from plmkit.models.kernels import decoding_weights


class _DecoderStepper:
    """Next-token logits of the growing decoder sequences, with or without the cache."""

    def __init__(self, model, enc: Tensor, enc_mask: Tensor | None, start: Tensor, capacity: int,
                 use_cache: bool) -> None:
        self.model, self.enc, self.enc_mask, self.use_cache = model, enc, enc_mask, use_cache
        self.ids = start  # (B, 1)
        self.cache = Seq2SeqCache(model.config, start.shape[0], capacity, start.device) if use_cache else None

    def _run(self, ids: Tensor) -> Tensor:
        hidden, _ = self.model.decoder(ids, None, self.cache, self.enc, self.enc_mask)
        return self.model.head_logits(hidden[:, -1])  # (B, V)

    def prefill(self) -> Tensor:
        return self._run(self.ids)

    def step(self, tokens: Tensor) -> Tensor:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        return self._run(tokens[:, None] if self.use_cache else self.ids)

    def reorder(self, index: Tensor) -> None:
        # beams move only within their source row's group: the encoder output / cross K,V are unchanged
        self.ids = self.ids[index]
        if self.cache is not None:
            self.cache.reorder(index, same_source=True)


def _force(scores: Tensor, token: int) -> Tensor:
    out = torch.full_like(scores, float("-inf"))
    out[:, token] = 0.0
    return out


@torch.inference_mode()
def generate(
    model,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_beams: int = 1,
    repetition_penalty: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    streamer: Any | Callable[[Tensor], None] = None,
    use_cache: bool = True,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | None = None,
    pack_weights: bool | None = None,
) -> Tensor:
    """Generate up to ``max_new_tokens`` decoder tokens for each source sequence.

    Args:
        model: an ``EncoderDecoder`` with an LM head.
        input_ids: (B, S) source ids (any padding side); attention_mask (B, S) 1 = token.
        eos_token_id: stop a row at this id (default: ``config.eos_token_id``, as HF).
        decoder_start_token_id: default ``config.decoder_start_token_id``.
        forced_bos_token_id / forced_eos_token_id: default ``config.extra`` (BART checkpoints).
        pack_weights: decode steps of <= 64 rows with cached transposed weight copies (faster on CPU, one
            extra copy of the decoder's weights kept for later calls; ``plmkit.models.kernels.decoding_weights``).
            None: on when the parameters take <= 2 GiB. ``release_decoding_weights(model)`` frees the copy.
        Other arguments as ``plmkit.generation.generate``.
    Returns:
        (B, 1 + n) long tensor: start token followed by the generated tokens (n <= max_new_tokens).
    """
    cfg = model.config
    if not getattr(cfg, "is_encoder_decoder", False):
        raise UserError(f"seq2seq generate needs an encoder-decoder model, got family {cfg.family!r}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise UserError(f"input_ids must be a non-empty (batch, seq_len) tensor, got {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                        f"{tuple(input_ids.shape)}")
    for name, v, ok, want in (("max_new_tokens", max_new_tokens, max_new_tokens >= 0, ">= 0"),
                              ("num_beams", num_beams, num_beams >= 1, ">= 1"),
                              ("temperature", temperature, temperature > 0, "> 0"),
                              ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]"), ("top_k", top_k, top_k >= 0, ">= 0"),
                              ("repetition_penalty", repetition_penalty, repetition_penalty > 0, "> 0")):
        if not ok:
            raise UserError(f"{name} must be {want}, got {v}")
    if num_beams > 1 and (do_sample or streamer is not None):
        raise UserError("beam search (num_beams > 1) cannot be combined with do_sample or a streamer")
    start = cfg.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    if start is None:
        raise UserError("decoder_start_token_id is not set (config or argument)")
    limit = model._limit()
    if limit is not None and 1 + max_new_tokens > limit:
        raise UserError(f"1 + max_new_tokens = {1 + max_new_tokens} exceeds the decoder position table (max {limit})")
    if eos_token_id is None:
        eos_token_id = cfg.eos_token_id
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    if pad_token_id is None:
        pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0)
    fb = cfg.extra.get("forced_bos_token_id") if forced_bos_token_id is None else forced_bos_token_id
    fe = cfg.extra.get("forced_eos_token_id") if forced_eos_token_id is None else forced_eos_token_id

    was_training = model.training
    model.eval()
    try:
        enc, _ = model.encode(input_ids, attention_mask)  # (B, S, H)
        enc_mask = model.encoder_key_mask(attention_mask)
        B = input_ids.shape[0]
        K = num_beams
        if K > 1:
            enc = enc.repeat_interleave(K, dim=0)
            enc_mask = enc_mask.repeat_interleave(K, dim=0) if enc_mask is not None else None
        first = input_ids.new_full((B * K, 1), start)
        if max_new_tokens == 0:
            return first[::K].clone()
        stepper = _DecoderStepper(model, enc, enc_mask, first, 1 + max_new_tokens, use_cache)

        def constrain(scores: Tensor, step: int) -> Tensor:
            if fb is not None and step == 0:
                return _force(scores, fb)
            if fe is not None and step == max_new_tokens - 1:
                return _force(scores, fe)
            return scores

        with decoding_weights(model, pack_weights):  # the encoder ran above with all its rows
            if K > 1:
                return beam_loop(stepper, first[::K], K, max_new_tokens, repetition_penalty, eos, pad_token_id,
                                 length_penalty, constrain)
            return sample_loop(stepper, first, max_new_tokens, do_sample, temperature, top_k, top_p,
                               repetition_penalty, eos, pad_token_id, streamer, generator, constrain)
    finally:
        model.train(was_training)
