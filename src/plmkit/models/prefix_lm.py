"""Prefix-LM backbones on the shared ``Transformer``: UniLM mask modes and GLM (2D positions).

UniLM (Dong et al. 2019) is one bidirectional encoder whose direction is chosen by the
self-attention mask, per example. ``unilm_mask(lm_type, source_len, attention_mask)`` builds the
(B, T, T) bool "may attend" mask that ``Transformer.forward(attention_mask=...)`` takes:

    bidirectional (0): i sees every real token      left-to-right (1): i sees j <= i
    right-to-left (2): i sees j >= i (real tokens)  seq2seq (3): source sees source; target sees
                                                    source + target up to itself

A UniLM model is an ordinary BERT-shaped ``Transformer`` (``unilm-base`` preset), so its weights
save and load as BERT checkpoints.

GLM (Du et al. 2022) blanks spans out of Part A and generates them in Part B. ``GLM`` is the shared
``Transformer`` (pre-LN, as GLM reorders the norms, with a final norm) plus a second learned table
``block_position``: ``position_ids`` (B, 2, T) holds the position in Part A (row 0, the usual
position table) and the position inside the span (row 1, ``block_position``); both are added to
the token embedding. ``glm_mask(part_a_len, lengths, T)`` builds the blank-infilling mask: Part A
bidirectional over Part A, Part B sees Part A and Part B up to itself.

References: Dong et al. 2019 (UniLM, arXiv:1905.03197); Du et al. 2022 (GLM, arXiv:2103.10360);
THUDM/GLM ``model/modeling_glm.py`` (2D positional encoding, ``block_position_embeddings``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.models.config import ModelConfig
from plmkit.models.transformer import Transformer

LM_TYPES = ("bidirectional", "left_to_right", "right_to_left", "seq2seq")


def unilm_mask(lm_type: Tensor, source_len: Tensor | None, attention_mask: Tensor) -> Tensor:
    """(B, T, T) bool "may attend" mask of UniLM's four modes, one mode per example.

    Args:
        lm_type: (B,) long, 0 bidirectional, 1 left-to-right, 2 right-to-left, 3 seq2seq.
        source_len: (B,) number of source tokens (``[CLS] A [SEP]``) for seq2seq rows (ignored
            for the others; may be None when no row is seq2seq).
        attention_mask: (B, T) 1 = real token, 0 = padding. Padded keys are never visible; a padded
            query sees only itself (no empty softmax rows).
    """
    if attention_mask.dim() != 2:
        raise UserError(f"attention_mask must be (batch, seq_len), got {tuple(attention_mask.shape)}")
    B, T = attention_mask.shape
    if lm_type.shape != (B,):
        raise UserError(f"lm_type must be (batch,) = ({B},), got {tuple(lm_type.shape)}")
    if lm_type.numel() and (int(lm_type.min()) < 0 or int(lm_type.max()) > 3):
        raise UserError(f"lm_type values must be in 0..3 {LM_TYPES}, got {lm_type.tolist()}")
    dev = attention_mask.device
    real = attention_mask.to(torch.bool)
    i = torch.arange(T, device=dev)[None, :, None]  # query
    j = torch.arange(T, device=dev)[None, None, :]  # key
    kind = lm_type.to(dev)[:, None, None]
    full = torch.ones(B, T, T, dtype=torch.bool, device=dev)
    mask = torch.where(kind == 1, j <= i, full)
    mask = torch.where(kind == 2, j >= i, mask)
    if bool((lm_type == 3).any()):
        if source_len is None or source_len.shape != (B,):
            raise UserError("seq2seq rows need source_len (batch,) = the number of source tokens")
        S = source_len.to(dev)[:, None, None]
        s2s = (j < S) | ((i >= S) & (j <= i))
        mask = torch.where(kind == 3, s2s, mask)
    mask = mask & real[:, None, :]
    eye = torch.eye(T, dtype=torch.bool, device=dev)[None]
    return mask | (eye & ~real[:, :, None]) | (eye & ~mask.any(-1, keepdim=True))


def glm_mask(part_a_len: Tensor, lengths: Tensor, T: int) -> Tensor:
    """(B, T, T) GLM blank-infilling mask: Part A (first ``part_a_len`` tokens) attends to Part A
    only; Part B token i attends to Part A and Part B tokens j <= i; nothing attends to padding
    (positions >= ``lengths``); every query sees itself."""
    dev = part_a_len.device
    i = torch.arange(T, device=dev)[None, :, None]
    j = torch.arange(T, device=dev)[None, None, :]
    A = part_a_len[:, None, None]
    m = ((j < A) | ((i >= A) & (j <= i))) & (j < lengths[:, None, None])
    return m | (i == j)


class GLM(Transformer):
    """Shared ``Transformer`` + GLM's span-position table ``block_position`` (see module docstring).

    ``forward(input_ids, attention_mask=(B, T, T) mask, position_ids=(B, 2, T), labels_mask=...)``;
    with 1D ``position_ids`` (or none) the span positions are 0 (a plain Part-A-only input).
    """

    def __init__(self, config: ModelConfig) -> None:
        if config.family != "glm":
            raise UserError(f"GLM needs config.family='glm', got {config.family!r}")
        if config.position != "learned":
            raise UserError("GLM needs learned absolute positions (config.position='learned')")
        super().__init__(config)
        self.block_position = nn.Embedding(config.max_position_embeddings, config.embed_dim)
        self.init_weights(self.block_position)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None, **kwargs: Any):
        if position_ids is None or position_ids.dim() != 3:
            return super().forward(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        if input_ids is None:
            raise UserError("GLM with 2D position_ids needs input_ids")
        B, T = input_ids.shape if input_ids.dim() == 2 else (-1, -1)
        if tuple(position_ids.shape) != (B, 2, T):
            raise UserError(f"GLM position_ids must be (batch, 2, seq_len) = ({B}, 2, {T}), got "
                            f"{tuple(position_ids.shape)}")
        if position_ids.numel() and (int(position_ids.max()) >= self.config.max_position_embeddings
                                     or int(position_ids.min()) < 0):
            raise UserError(f"GLM position id {int(position_ids.max())} outside the position tables "
                            f"[0, {self.config.max_position_embeddings})")
        self.check_inputs(input_ids)
        # Embeddings multiplies inputs_embeds by the embedding scale (1 for GLM) and adds row 0's table
        emb = self.embeddings.word(input_ids) + self.block_position(position_ids[:, 1]) / self.config.embedding_scale
        return super().forward(None, attention_mask, token_type_ids, position_ids[:, 0], inputs_embeds=emb,
                               **kwargs)
