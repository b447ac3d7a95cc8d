"""plmkit models: ``ModelConfig``, ``PRESETS``, the ``Transformer`` backbone and ``load``.

``load(name_or_path, **overrides)``:
- a preset name (``PRESETS``, e.g. "bert-base", "gpt2-tiny") -> randomly initialised ``Transformer``;
- an HF-format directory or a ``.gguf`` file -> ``plmkit.interop.load_pretrained`` (weights + config);
- a preset of the part-2 families (``plmkit.models.presets_ext``: T5, BART, Switch, UniLM, GLM, ...);
- a classical LM preset registered by ``plmkit.models.recurrent`` (e.g. "lstm-small") or a directory
  saved by it. Both modules are optional and imported lazily.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from plmkit.errors import UserError, suggest
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.presets import PRESETS, preset_config

__all__ = ["ModelConfig", "ConfigError", "PRESETS", "Transformer", "TransformerOutput", "load",
           "from_config", "preset_config"]


def __getattr__(name: str):  # lazy: importing the config does not import the nn code
    if name in ("Transformer", "TransformerOutput"):
        from plmkit.models import transformer

        return getattr(transformer, name)
    raise AttributeError(name)


def from_config(config: ModelConfig | dict) -> Any:
    """A randomly initialised ``Transformer`` for ``config`` (a ``ModelConfig`` or a dict of fields)."""
    from plmkit.models.transformer import Transformer

    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return Transformer(config)


def _optional(module: str):
    """Import ``module`` if it exists (other parts register models there), else None."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def load(name_or_path: str | Path, **overrides: Any) -> Any:
    """Build a preset (random init) or load a checkpoint directory / GGUF file.

    Args:
        name_or_path: preset name, HF-format directory, or ``.gguf`` file.
        **overrides: ``ModelConfig`` fields to change, e.g. ``vocab_size=len(tok)``.
    Raises:
        UserError: unknown name (with a did-you-mean hint) or a path that is not a model.
    """
    name = str(name_or_path)
    if isinstance(name_or_path, str) and name in PRESETS:
        return from_config(preset_config(name, **overrides))
    ext = _optional("plmkit.models.presets_ext")
    ext_presets = getattr(ext, "PRESETS", {}) if ext is not None else {}
    if isinstance(name_or_path, str) and name in ext_presets:
        return ext.build(name, **overrides)
    rec = _optional("plmkit.models.recurrent")
    rec_presets = getattr(rec, "PRESETS", {}) if rec is not None else {}
    if isinstance(name_or_path, str) and name in rec_presets:
        return rec.build(name, **overrides)
    path = Path(name_or_path)
    if path.is_dir() and rec is not None and hasattr(rec, "is_recurrent_dir") and rec.is_recurrent_dir(path):
        return rec.load_pretrained(path, **overrides)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        from plmkit.interop import load_pretrained

        return load_pretrained(path, **overrides) if overrides else load_pretrained(path)
    if path.suffix.lower() == ".gguf" or path.exists() or "/" in name or name.startswith("."):
        what = "does not exist" if not path.exists() else "is neither a directory nor a .gguf file"
        raise UserError(f"{name}: model path {what} (expected an HF-format directory or a .gguf file)")
    choices = sorted(PRESETS) + sorted(ext_presets) + sorted(rec_presets)
    raise UserError(f"unknown model {name!r}{suggest(name, choices)}: expected a preset "
                    f"({', '.join(sorted(k for k in PRESETS if not k.endswith('-tiny'))[:8])}, ...), "
                    "an HF-format directory or a .gguf file")
