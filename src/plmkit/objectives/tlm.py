"""Translation language modelling (XLM, Lample & Conneau 2019, arXiv:1901.07291).

A parallel sentence pair is concatenated as ``[CLS] src [SEP] [CLS] tgt [SEP]`` (each sentence
wrapped as XLM wraps it in ``</s> ... </s>``); tokens of both sides are masked as in MLM (15%,
80/10/10), so a masked word can be recovered from its translation. Language embeddings are the
token-type embeddings: ``token_type_ids`` holds the language id of each side; position ids restart
at 0 at the start of the target sentence.

Examples (``example_kind = "parallel"``): ``{"src": ids, "tgt": ids, "src_lang": 0, "tgt_lang": 1}``
(ids without special tokens; the language ids default to 0 and 1), or a ``(src_ids, tgt_ids)``
pair. ``prepare`` checks that the model has ``type_vocab_size >= num_languages``.
Batch keys: input_ids, attention_mask, token_type_ids, position_ids, labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Example,
    Objective,
    ObjectiveConfig,
    attention_from_lengths,
    check_open_unit,
    check_positive,
    pad_2d,
)


@dataclass(kw_only=True)
class TLMConfig(ObjectiveConfig):
    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    masking: Literal["token", "whole_word"] = "token"
    num_languages: int = 2
    """Number of language ids (token types) the model must provide."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "rate", self.rate)
        check_positive(name, "num_languages", self.num_languages, integer=True)


class TLM(Objective):
    """XLM translation LM (see the module docstring)."""

    name = "tlm"
    example_kind = "parallel"
    Config = TLMConfig
    config: TLMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        from plmkit.objectives.mlm import MLM

        c = self.config
        self._mlm = MLM(tokenizer, rate=c.rate, mask_prob=c.mask_prob, random_prob=c.random_prob,
                        masking=c.masking)
        self._mlm.name = self.name  # errors name this objective
        self.begin, self.end = self.vocab.begin, self.vocab.end
        if self.begin is None or self.end is None:
            raise UserError(f"{self.name}: the tokenizer needs [CLS]/[SEP] (or <s>/</s>) tokens")

    def _parse(self, x: Any) -> tuple[list[int], list[int], int, int]:
        if isinstance(x, dict):
            if "src" not in x or "tgt" not in x:
                raise UserError(f"{self.name}: a parallel example needs 'src' and 'tgt' (got keys {sorted(x)})")
            s, t = x["src"], x["tgt"]
            ls, lt = int(x.get("src_lang", 0)), int(x.get("tgt_lang", 1))
        elif isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(y, (list, tuple)) for y in x):
            (s, t), ls, lt = x, 0, 1
        else:
            raise UserError(f"{self.name}: expected a {{'src', 'tgt'}} record or a (src_ids, tgt_ids) pair")
        for lang in (ls, lt):
            if not 0 <= lang < self.config.num_languages:
                raise UserError(f"{self.name}: language id {lang} outside [0, num_languages={self.config.num_languages})")
        s, t = [int(i) for i in s], [int(i) for i in t]
        m = self.config.max_length
        if m is not None:  # keep both sides, trimming the longer one
            while len(s) + len(t) + 4 > m:
                if len(s) >= len(t):
                    s = s[:-1]
                else:
                    t = t[:-1]
        return s, t, ls, lt

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows, labels, langs, pos = [], [], [], []
        for x in examples:
            s, t, ls, lt = self._parse(x)
            a = [self.begin] + s + [self.end]
            b = [self.begin] + t + [self.end]
            m = self._mlm.mask_example(Example(ids=a + b, has_specials=True))
            rows.append(m.input_ids)
            labels.append(m.labels)
            langs.append([ls] * len(a) + [lt] * len(b))
            pos.append(list(range(len(a))) + list(range(len(b))))  # positions restart for the target
        T = max(len(r) for r in rows)
        return {
            "input_ids": pad_2d(rows, self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(r) for r in rows], T),
            "token_type_ids": pad_2d(langs, 0, T),
            "position_ids": pad_2d(pos, 0, T),
            "labels": pad_2d(labels, IGNORE, T),
        }

    def prepare(self, model: Any) -> None:
        self._mlm.prepare(model)  # encoder + MLM head + vocabulary
        tv = getattr(model.config, "type_vocab_size", 0)
        if tv < self.config.num_languages:
            raise UserError(f"{self.name} needs {self.config.num_languages} language embeddings (token types); "
                            f"{model.config.family!r} model has type_vocab_size={tv} "
                            f"(load(..., type_vocab_size={self.config.num_languages}))")

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, m = self._mlm.loss(model, batch)
        return loss, {k.replace("mlm_", "tlm_"): v for k, v in m.items()}
