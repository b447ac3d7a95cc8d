"""Streamers: receive generated tokens as they are produced.

``generate(..., streamer=s)`` calls ``s.put(tokens)`` with the (B,) tensor of new tokens after every
step and ``s.end()`` at the end; a plain callable is called as ``s(tokens)`` instead.
``TextStreamer`` decodes a batch-of-one stream incrementally and writes text to a file (stdout),
holding back incomplete UTF-8 pieces (byte-level BPE) until they decode cleanly.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from torch import Tensor


class TextStreamer:
    """Print decoded text as tokens arrive (batch size 1).

    Args:
        tokenizer: anything with ``decode(ids, skip_special_tokens=...)``.
        out: text stream to write to (default ``sys.stdout``), flushed after each write.
        skip_special_tokens: drop special tokens from the text.
    """

    def __init__(self, tokenizer: Any, out: TextIO | None = None, skip_special_tokens: bool = True) -> None:
        self.tokenizer, self.out, self.skip = tokenizer, out or sys.stdout, skip_special_tokens
        self.ids: list[int] = []
        self.printed = 0
        self.text = ""

    def put(self, tokens: Tensor) -> None:
        if tokens.numel() != 1:
            raise ValueError(f"TextStreamer streams one sequence; got {tokens.numel()} tokens per step")
        self.ids.append(int(tokens.reshape(-1)[0]))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return
        self._emit(text)

    def _emit(self, text: str) -> None:
        new = text[self.printed:] if text.startswith(self.text[: self.printed]) else text[len(self.text):]
        if new:
            self.out.write(new)
            self.out.flush()
        self.text, self.printed = text, len(text)

    def end(self) -> None:
        if self.ids:
            self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=self.skip))
        self.out.write("\n")
        self.out.flush()
