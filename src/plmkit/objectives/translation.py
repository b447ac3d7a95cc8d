"""Translation (sequence-to-sequence cross-entropy with teacher forcing) on parallel sentence pairs: the
training objective of CoVe's MT-LSTM (McCann et al. 2017), ``plmkit.classic.recurrent.CoVe``.

Examples (``example_kind = "parallel"``, ``plmkit.data.parallel``): ``{"src": ids, "tgt": ids}`` or a
``(src_ids, tgt_ids)`` pair, ids without special tokens. The source gets the end token appended; the target
is predicted token by token, ending with the end token; the decoder reads ``[start] + target`` shifted right
(start: the tokenizer's [CLS] / <s>). Batch keys: those of ``plmkit.objectives.seq2seq.seq2seq_batch``.
``direction: tgt-src`` translates the second column into the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import Objective, ObjectiveConfig
from plmkit.objectives.seq2seq import seq2seq_batch, seq2seq_loss


@dataclass(kw_only=True)
class TranslationConfig(ObjectiveConfig):
    direction: Literal["src-tgt", "tgt-src"] = "src-tgt"
    """src-tgt: the first column (file) is translated into the second; tgt-src the reverse."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.direction not in ("src-tgt", "tgt-src"):
            raise UserError(f"{name}: direction must be 'src-tgt' or 'tgt-src', got {self.direction!r}")


class Translation(Objective):
    """Teacher-forced translation loss for an encoder-decoder that takes ``decoder_input_ids``."""

    name = "translation"
    example_kind = "parallel"
    Config = TranslationConfig
    config: TranslationConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.start, self.end = self.vocab.begin, self.vocab.end
        if self.start is None or self.end is None:
            raise UserError(f"{self.name}: the tokenizer needs [CLS]/[SEP] (or <s>/</s>) tokens")

    def _pair(self, x: Any) -> tuple[list[int], list[int]]:
        if isinstance(x, dict) and "src" in x and "tgt" in x:
            s, t = x["src"], x["tgt"]
        elif isinstance(x, (list, tuple)) and len(x) == 2:
            s, t = x
        else:
            raise UserError(f"{self.name}: expected a {{'src', 'tgt'}} record or a (src_ids, tgt_ids) pair")
        s, t = [int(i) for i in s], [int(i) for i in t]
        if self.config.direction == "tgt-src":
            s, t = t, s
        m = self.config.max_length
        if m is not None:
            s, t = s[: m - 1], t[: m - 1]
        return s + [self.end], t + [self.end]

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        pairs = [self._pair(x) for x in examples]
        return seq2seq_batch([s for s, _ in pairs], [t for _, t in pairs], self.vocab.pad_id, self.start)

    def prepare(self, model: Any) -> None:
        import inspect

        if "decoder_input_ids" not in inspect.signature(model.forward).parameters:
            raise UserError(f"{self.name} needs an encoder-decoder (model(..., decoder_input_ids=...)), e.g. the "
                            f"cove preset; got {type(model).__name__}")
        if getattr(model.config, "head", None) is None:
            raise UserError(f"{self.name}: the model has no output layer (config.head is None)")

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return seq2seq_loss(model, batch, "mt")
