"""Autoregressive decoding with a static KV cache: greedy, sampling, beam search.

``generate(model, input_ids, ...)`` prefills the prompt once into a ``KVCache`` sized for
prompt + ``max_new_tokens`` and then feeds one token per step; the LM head runs only on the last
position. Batches are left-padded: ``attention_mask`` marks real tokens, position ids are counted
from it (so a padded row decodes exactly as it would alone), and padded keys stay masked through
the cache. Finished rows (after ``eos_token_id``) are filled with ``pad_token_id``.

``use_cache=False`` recomputes the whole prefix every step (the reference the cache is tested
against). Returns the prompt followed by the new tokens, (B, T + n_new), like ``transformers``.
The greedy / sampling / beam loops are ``plmkit.generation.search``'s, shared with encoder-decoders.

References: Graves 2012 / Sutskever et al. 2014 (beam search); Holtzman et al. 2020 (top-p);
Keskar et al. 2019 (repetition penalty).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.generation.search import beam_loop, sample_loop
from plmkit.models.cache import KVCache
from plmkit.models.kernels import decoding_weights


def _validate(model, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int,
              num_beams: int, temperature: float, top_p: float, top_k: int, penalty: float) -> Tensor:
    cfg = model.config
    if not cfg.causal:
        raise UserError(f"generate needs a causal LM; the {cfg.family!r} model is bidirectional (causal=False)")
    if model.head is None:
        raise UserError(f"generate needs an LM head; the {cfg.family!r} model has config.head=None")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise UserError(f"input_ids must be a non-empty (batch, seq_len) tensor, got {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                        f"{tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if num_beams < 1:
        raise UserError(f"num_beams must be >= 1, got {num_beams}")
    if temperature <= 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0, got {top_k}")
    if penalty <= 0:
        raise UserError(f"repetition_penalty must be > 0, got {penalty}")
    model.check_inputs(input_ids)
    if cfg.position in ("learned", "sinusoidal"):
        limit = cfg.max_position_embeddings - cfg.position_offset
        if input_ids.shape[1] + max_new_tokens > limit:
            raise UserError(f"prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds "
                            f"max_position_embeddings={cfg.max_position_embeddings}")
    return input_ids


def _positions(mask: Tensor, offset: int) -> Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset  # (B, T): left padding does not shift positions


class _Stepper:
    """Next-token logits for the growing sequences, with or without the KV cache."""

    def __init__(self, model, ids: Tensor, mask: Tensor, capacity: int, use_cache: bool,
                 track_ids: bool = False) -> None:
        self.model, self.use_cache = model, use_cache
        self.track_ids = track_ids or not use_cache  # the cached greedy/sampling loop needs no copy of the ids
        self.offset = model.config.position_offset
        self.padded = not bool(mask.all())
        if use_cache:
            self.cache = KVCache.for_model(model, ids.shape[0], capacity)
        self.mask = mask
        self.ids = ids

    def prefill(self) -> Tensor:
        pos = _positions(self.mask, self.offset)
        self.next_pos = pos[:, -1:] + 1  # (B, 1)
        if not self.use_cache:
            return self._full()
        hidden, _, _ = self.model.backbone(self.ids, self.mask if self.padded else None, None, pos, False,
                                           self.cache, True)
        return self.model.head_logits(hidden[:, -1])  # (B, V)

    def step(self, tokens: Tensor) -> Tensor:
        """Append ``tokens`` (B,) and return the next logits (B, V)."""
        if self.track_ids:
            self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        if not self.use_cache:
            return self._full()
        pos = self.next_pos
        self.next_pos = pos + 1
        hidden, _, _ = self.model.backbone(tokens[:, None], None, None, pos, False, self.cache, True)
        return self.model.head_logits(hidden[:, -1])

    def reorder(self, index: Tensor) -> None:
        self.ids, self.mask, self.next_pos = self.ids[index], self.mask[index], self.next_pos[index]
        if self.use_cache:
            self.cache.reorder(index)

    def _full(self) -> Tensor:
        pos = _positions(self.mask, self.offset)
        hidden, _, _ = self.model.backbone(self.ids, self.mask if self.padded else None, None, pos)
        return self.model.head_logits(hidden[:, -1])


@torch.no_grad()
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
    streamer: Any | Callable[[Tensor], None] = None,
    use_cache: bool = True,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    pack_weights: bool | None = None,
) -> Tensor:
    """Generate up to ``max_new_tokens`` tokens after each (left-padded) prompt.

    Args:
        model: a causal ``Transformer`` with an LM head.
        input_ids: (B, T) prompt ids, left-padded when lengths differ; attention_mask (B, T) 1 = token.
        do_sample / temperature / top_k / top_p: multinomial sampling settings (greedy when not do_sample).
        num_beams: beam search width (> 1; not with do_sample or a streamer).
        repetition_penalty: CTRL penalty on tokens already present (prompt included).
        eos_token_id: stop a row when it emits this id (or any id of a list); the call stops when all rows
            have. Default (None): ``config.eos_token_id``, as transformers does; ``[]`` never stops early.
            pad_token_id fills finished rows (default: config pad, else the eos id, else 0).
        streamer: ``put(tokens)/end()`` object or callable receiving the (B,) new tokens each step.
        use_cache: decode with the static KV cache (False recomputes the prefix: slow, for testing).
        generator: torch RNG for sampling (default: the global RNG).
        pack_weights: decode steps of <= 64 rows with cached transposed weight copies (faster on CPU, one
            extra copy of the decoder's weights kept for later calls; ``plmkit.models.kernels.decoding_weights``).
            None: on when the parameters take <= 2 GiB. ``release_decoding_weights(model)`` frees the copy.
    Returns:
        (B, T + n) long tensor: prompt followed by the generated tokens (n <= max_new_tokens).
    """
    input_ids = _validate(model, input_ids, attention_mask, max_new_tokens, num_beams, temperature, top_p,
                          top_k, repetition_penalty)
    cfg = model.config
    if eos_token_id is None:
        eos_token_id = getattr(cfg, "eos_token_id", None)
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    if pad_token_id is None:
        pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else (eos[0] if eos else 0)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
    if max_new_tokens == 0:
        return input_ids.clone()
    if num_beams > 1 and do_sample:
        raise UserError("num_beams > 1 with do_sample=True (beam sampling) is not supported")
    if num_beams > 1 and streamer is not None:
        raise UserError("a streamer cannot be used with beam search (num_beams > 1)")
    was_training = model.training
    model.eval()
    try:
        T, K = input_ids.shape[1], num_beams
        with decoding_weights(model, pack_weights):
            if K > 1:
                stepper = _Stepper(model, input_ids.repeat_interleave(K, dim=0), mask.repeat_interleave(K, dim=0),
                                   T + max_new_tokens, use_cache, track_ids=True)
                return beam_loop(stepper, input_ids, K, max_new_tokens, repetition_penalty, eos, pad_token_id,
                                 length_penalty)
            stepper = _Stepper(model, input_ids, mask, T + max_new_tokens, use_cache)
            return sample_loop(stepper, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                               repetition_penalty, eos, pad_token_id, streamer, generator)
    finally:
        model.train(was_training)
