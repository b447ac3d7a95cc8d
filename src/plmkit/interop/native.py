"""plmkit's own checkpoint format for models without a Hugging Face class (MASS, GLM, Switch /
DeBERTa / XLNet variants HF cannot express).

    save_native(model, "out_dir")   # config.json {"model_type": "plmkit", "plmkit_class", "plmkit_config"}
                                    # + model.safetensors (plmkit parameter names, shared tensors once)
    load_native("out_dir")          # the same class, weights loaded strictly, eval mode

``plmkit.models.load(dir)`` reaches ``load_native`` through ``plmkit.interop.load_pretrained``
(``MODEL_TYPES``). Only plain data is read (JSON + safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.interop import files as _files

MODEL_TYPES = ("plmkit",)


def _classes() -> dict[str, tuple[Any, Any]]:
    from plmkit.models.config import ModelConfig
    from plmkit.models.deberta import DeBERTa, DebertaConfig
    from plmkit.models.moe import MoETransformer
    from plmkit.models.prefix_lm import GLM
    from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig
    from plmkit.models.transformer import Transformer
    from plmkit.models.xlnet import XLNet, XLNetConfig

    return {"EncoderDecoder": (EncoderDecoder, Seq2SeqConfig), "GLM": (GLM, ModelConfig),
            "DeBERTa": (DeBERTa, DebertaConfig), "XLNet": (XLNet, XLNetConfig), "Transformer": (Transformer, ModelConfig),
            "MoETransformer": (MoETransformer, ModelConfig)}


def save_native(model, out_dir: str | Path) -> Path:
    """Write ``model`` (a class listed in ``_classes``) in plmkit's format."""
    from safetensors.torch import save_model

    name = type(model).__name__
    if name not in _classes():
        raise UserError(f"save_native: unsupported model class {name}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_model(model, str(tmp))
    tmp.replace(out / _files.SAFE_WEIGHTS)
    _files.remove_stale_weights(out)
    _files.write_json(out / "config.json", {"model_type": "plmkit", "plmkit_class": name,
                                            "plmkit_config": model.config.to_dict()})
    return out


def load_native(path: str | Path, dtype: Any = None, **overrides: Any):
    """Load a directory written by ``save_native``."""
    import torch
    from safetensors.torch import load_model

    p = Path(path)
    cfg = _files.read_hf_config(p)
    name = cfg.get("plmkit_class")
    classes = _classes()
    if name not in classes:
        raise UserError(f"{p / 'config.json'}: plmkit_class {name!r} is not one of {', '.join(classes)}")
    cls, cfg_cls = classes[name]
    config = cfg_cls.from_dict(cfg.get("plmkit_config"), source=str(p / "config.json"))
    if overrides:
        config = config.replace(**overrides)
    model = cls(config)
    weights = p / _files.SAFE_WEIGHTS
    if not weights.is_file():
        raise UserError(f"{p}: no {_files.SAFE_WEIGHTS}")
    missing, unexpected = load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise UserError(f"{weights}: weights do not match the {name} config (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    return model.eval()
