"""MASS: masked sequence-to-sequence pretraining (Song et al. 2019, arXiv:1905.02450).

One contiguous fragment of ``fragment_ratio`` (50%) of the sentence's tokens, at a uniformly random
start, is masked in the encoder input (each fragment token: [MASK] with ``mask_prob`` 80%, a random
token 10%, unchanged 10%, as in the paper); the decoder predicts the fragment with teacher forcing
on the fragment shifted right (``[MASK], x_s, ..., x_{s+k-2}``) at the fragment's original
positions (``decoder_position_ids``). Tokens outside the fragment are not fed to the decoder.

Inverse (tested): original = ``input[:start] + labels + input[start + len:]`` where ``start`` =
``decoder_position_ids[0]`` (positions count the encoder's tokens, specials included).
Batch layout and loss: ``seq2seq.py`` plus ``decoder_position_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    Objective,
    ObjectiveConfig,
    as_example,
    check_open_unit,
    check_unit,
    pad_2d,
    require_encoder_decoder,
    require_vocab,
)
from plmkit.objectives.seq2seq import seq2seq_batch, seq2seq_loss


@dataclass(kw_only=True)
class MASSConfig(ObjectiveConfig):
    fragment_ratio: float = 0.5
    mask_prob: float = 0.8
    random_prob: float = 0.1

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "fragment_ratio", self.fragment_ratio)
        check_unit(name, "mask_prob", self.mask_prob)
        check_unit(name, "random_prob", self.random_prob)
        if self.mask_prob + self.random_prob > 1 + 1e-9:
            raise UserError(f"{name}: mask_prob + random_prob must be <= 1")


class MASS(Objective):
    """MASS fragment masking (see the module docstring)."""

    name = "mass"
    example_kind = "window"
    Config = MASSConfig
    config: MASSConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")

    def corrupt(self, example: Any) -> tuple[list[int], list[int], list[int], int]:
        """(encoder input, fragment = labels, decoder input, fragment start) of one example."""
        ex = as_example(example, self.name)
        ids = self._truncate(ex.ids)
        if not ex.has_specials:
            b, e = self.vocab.begin, self.vocab.end
            ids = ([b] if b is not None else []) + ids + ([e] if e is not None else [])
        special = self.vocab.special
        body = [i for i, t in enumerate(ids) if t not in special]
        if not body:
            raise UserError(f"{self.name}: an example has no (non-special) tokens")
        lo, hi = body[0], body[-1] + 1  # the fragment stays inside the sentence's text
        n = hi - lo
        k = max(1, int(round(n * self.config.fragment_ratio)))
        start = lo + int(torch.randint(n - k + 1, ()))
        frag = ids[start:start + k]
        r = torch.rand(k).tolist()
        rnd = self.vocab.random_tokens(k).tolist()
        c = self.config
        inp = list(ids)
        for j, x in enumerate(r):
            if x < c.mask_prob:
                inp[start + j] = self.mask_id
            elif x < c.mask_prob + c.random_prob:
                inp[start + j] = rnd[j]
        dec_in = [self.mask_id] + frag[:-1]
        return inp, frag, dec_in, start

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self.corrupt(x) for x in examples]
        batch = seq2seq_batch([r[0] for r in rows], [r[1] for r in rows], self.vocab.pad_id, self.mask_id)
        U = batch["labels"].shape[1]
        batch["decoder_input_ids"] = pad_2d([r[2] for r in rows], self.vocab.pad_id, U)
        batch["decoder_position_ids"] = pad_2d(
            [list(range(r[3], r[3] + len(r[1]))) for r in rows], 0, U)
        return batch

    def prepare(self, model: Any) -> None:
        require_encoder_decoder(self.name, model)
        require_vocab(self.name, model, self.vocab.size)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return seq2seq_loss(model, batch, "mass")
