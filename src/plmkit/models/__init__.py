"""plmkit models: ``ModelConfig``, the preset table, the model classes and ``load``.

``load(name_or_path, **overrides)``:
- a preset name (``plmkit.models.presets.PRESETS``: "bert-base", "gpt2-tiny", "t5-small",
  "lstm-small", ...) -> a randomly initialised model (``presets.build``);
- an HF-format directory, a plmkit checkpoint directory or a ``.gguf`` file -> the ``load_path``
  hook (``plmkit.interop.load_pretrained``, registered by ``plmkit/__init__.py``; see
  ``plmkit.models.hooks``).

This package is the leaf of plmkit: it imports only ``plmkit.models.*`` and ``plmkit.errors``.
Importing it does not import torch (the model classes are imported on first use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plmkit.errors import UserError, suggest
from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.hooks import hook
from plmkit.models.presets import PRESETS, preset_config
from plmkit.models.presets import build as build_preset

__all__ = ["ModelConfig", "ConfigError", "PRESETS", "Transformer", "TransformerOutput", "PretrainedModel",
           "load", "from_config", "preset_config", "build_preset"]


def __getattr__(name: str):  # lazy: importing the config does not import the nn code
    if name in ("Transformer", "TransformerOutput"):
        from plmkit.models import transformer

        return getattr(transformer, name)
    if name == "PretrainedModel":
        from plmkit.models.base import PretrainedModel

        return PretrainedModel
    raise AttributeError(name)


def from_config(config: ModelConfig | dict) -> Any:
    """A randomly initialised ``Transformer`` for ``config`` (a ``ModelConfig`` or a dict of fields)."""
    from plmkit.models.transformer import Transformer

    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return Transformer(config)


def load(name_or_path: str | Path, **overrides: Any) -> Any:
    """Build a preset (random init) or load a checkpoint directory / GGUF file.

    Args:
        name_or_path: preset name, HF-format or plmkit checkpoint directory, or ``.gguf`` file.
        **overrides: config fields to change, e.g. ``vocab_size=len(tok)``.
    Raises:
        UserError: unknown name (with a did-you-mean hint) or a path that is not a model.
    """
    name = str(name_or_path)
    if isinstance(name_or_path, str) and name in PRESETS:
        return build_preset(name, **overrides)
    path = Path(name_or_path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return hook("load_path")(path, **overrides)
    if path.suffix.lower() == ".gguf" or path.exists() or "/" in name or name.startswith("."):
        what = "does not exist" if not path.exists() else "is neither a directory nor a .gguf file"
        raise UserError(f"{name}: model path {what} (expected an HF-format directory or a .gguf file)")
    raise UserError(f"unknown model {name!r}{suggest(name, sorted(PRESETS))}: expected a preset "
                    f"({', '.join(sorted(k for k in PRESETS if not k.endswith('-tiny'))[:8])}, ...), "
                    "an HF-format directory or a .gguf file")
