"""Shared batch layout and loss of the encoder-decoder denoising objectives (t5_span, bart_denoise, mass).

Batch keys::

    input_ids (B, S), attention_mask (B, S)            corrupted source for the encoder
    decoder_input_ids (B, U), decoder_attention_mask   targets shifted right behind a start token
    labels (B, U)                                      targets, -100 at padding

The loss calls the backbone as ``model(input_ids, attention_mask=..., decoder_input_ids=...,
decoder_attention_mask=..., [decoder_position_ids=...,] labels_mask=labels != -100)`` and takes
``.logits`` (N, V) at the labelled decoder positions: the interface of
``plmkit.models.seq2seq.EncoderDecoder``. ``prepare`` of these objectives refuses encoder-only and
decoder-only backbones (``require_encoder_decoder``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.objectives.base import IGNORE, attention_from_lengths, pad_2d, token_metrics, top1_correct


def seq2seq_batch(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int, start_id: int,
    extra: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Pad sources/targets and build teacher-forcing decoder inputs ``[start] + target[:-1]``."""
    S = max(len(s) for s in sources)
    U = max(len(t) for t in targets)
    dec_in = [[start_id] + list(t[:-1]) for t in targets]
    batch = {
        "input_ids": pad_2d(sources, pad_id, S),
        "attention_mask": attention_from_lengths([len(s) for s in sources], S),
        "decoder_input_ids": pad_2d(dec_in, pad_id, U),
        "decoder_attention_mask": attention_from_lengths([len(t) for t in targets], U),
        "labels": pad_2d(targets, IGNORE, U),
    }
    if extra:
        batch.update(extra)
    return batch


DECODER_KEYS = ("attention_mask", "decoder_input_ids", "decoder_attention_mask", "decoder_position_ids")


def seq2seq_loss(model: Any, batch: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean token cross-entropy of the decoder's predictions at the labelled positions."""
    labels = batch["labels"]
    sel = labels != IGNORE
    kw = {k: batch[k] for k in DECODER_KEYS if k in batch}
    logits = model(batch["input_ids"], labels_mask=sel, **kw).logits  # (N, V)
    if logits.dim() == 3:
        logits = logits[sel]
    y = labels[sel]
    loss = F.cross_entropy(logits.float(), y)
    return loss, token_metrics(prefix, loss, top1_correct(logits, y), int(y.numel()))
