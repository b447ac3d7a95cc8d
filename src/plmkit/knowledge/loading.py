"""Load a model + tokenizer for the knowledge commands and locate its structure (one clear error each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.knowledge.structure import ModelStructure, locate


def load_tokenizer_for(model_arg: str, tokenizer_arg: str | None = None) -> Any:
    """``tokenizer_arg`` if given, else the model directory's tokenizer or the GGUF file's."""
    import plmkit

    if tokenizer_arg:
        return plmkit.load_tokenizer(tokenizer_arg)
    path = Path(model_arg)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        try:
            return plmkit.load_tokenizer(path)
        except UserError as e:
            raise UserError(f"{path}: no usable tokenizer beside the model ({e}); pass --tokenizer") from None
    raise UserError(f"{model_arg!r} has no tokenizer of its own (a preset?); pass --tokenizer PATH")


def load_for_knowledge(model_arg: str, tokenizer_arg: str | None = None,
                       allow_seq2seq: bool = False) -> tuple[Any, Any, ModelStructure]:
    """(model in eval mode, tokenizer, structure); the structure check runs before the slow tokenizer load.
    ``allow_seq2seq``: accept T5 / BART encoder-decoders (LAMA probing)."""
    import plmkit

    model = plmkit.load(model_arg).eval()
    struct = locate(model, allow_seq2seq=allow_seq2seq)
    return model, load_tokenizer_for(model_arg, tokenizer_arg), struct
