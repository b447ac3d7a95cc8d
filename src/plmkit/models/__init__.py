"""plmkit models: ``ModelConfig``, the preset table, the model classes and ``load``.

``load(name_or_path, **overrides)``:
- a preset name (``plmkit.models.presets.PRESETS``: "bert-base", "gpt2-tiny", "t5-small",
  "lstm-small", ...) -> a randomly initialised model (``presets.build``);
- an HF-format directory, a plmkit checkpoint directory or a ``.gguf`` file -> the ``load_path``
  hook (``plmkit.interop.load_pretrained``, registered by ``plmkit/__init__.py``; see
  ``plmkit.models.hooks``).

This package is the leaf of plmkit: it imports only ``plmkit.models.*`` and ``plmkit.errors``.
Its names are resolved on first use, so ``import plmkit`` (which registers the hooks in
``plmkit.models.hooks``) imports neither torch nor the config and preset modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ModelConfig", "ConfigError", "PRESETS", "Transformer", "TransformerOutput", "PretrainedModel",
           "load", "from_config", "preset_config", "build_preset"]

_LAZY = {  # name -> (module, attribute)
    "ModelConfig": ("config", "ModelConfig"), "ConfigError": ("config", "ConfigError"),
    "PRESETS": ("presets", "PRESETS"), "preset_config": ("presets", "preset_config"),
    "build_preset": ("presets", "build"), "Transformer": ("transformer", "Transformer"),
    "TransformerOutput": ("transformer", "TransformerOutput"), "PretrainedModel": ("base", "PretrainedModel"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(name)
    module, attr = _LAZY[name]
    if module == "config":
        from plmkit.models import config as mod
    elif module == "presets":
        from plmkit.models import presets as mod
    elif module == "transformer":
        from plmkit.models import transformer as mod
    else:
        from plmkit.models import base as mod
    return getattr(mod, attr)


def from_config(config: Any) -> Any:
    """A randomly initialised ``Transformer`` for ``config`` (a ``ModelConfig`` or a dict of fields)."""
    from plmkit.models.config import ModelConfig
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
    from plmkit.errors import UserError, suggest
    from plmkit.models.hooks import hook
    from plmkit.models.presets import PRESETS
    from plmkit.models.presets import build as build_preset

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
