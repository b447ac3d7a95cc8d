"""plmkit's own checkpoint formats for models without a Hugging Face class (MASS, GLM, Switch /
DeBERTa / XLNet variants HF cannot express; the classical LMs).

    save_native(model, "out_dir")   # config.json {"model_type": "plmkit", "plmkit_class", "plmkit_config"}
                                    # + model.safetensors (plmkit parameter names, shared tensors once)
    load_native("out_dir")          # the same class, weights loaded strictly, eval mode

    save_recurrent(model, "out_dir")  # FFNN / RNN / LSTM / ELMo: config.json with "plmkit_family"
    load_recurrent("out_dir")         # + model.safetensors (the format of plmkit.classic.recurrent)

``plmkit.models.load(dir)`` reaches these through ``plmkit.interop.load_pretrained`` (``LOADERS``,
``is_recurrent_dir``). Only plain data is read (JSON + safetensors).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
import plmkit.interop.files as _files

MODEL_TYPES = ("plmkit",)


def model_classes() -> dict[str, tuple[Any, Any]]:
    """{class name: (model class, config class)} of the models plmkit saves in its own format."""
    from plmkit.models.canine import Canine, CanineConfig
    from plmkit.models.config import ModelConfig
    from plmkit.models.deberta import DeBERTa, DebertaConfig
    from plmkit.models.moe import MoETransformer
    from plmkit.models.prefix_lm import GLM
    from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig
    from plmkit.models.transformer import Transformer
    from plmkit.models.xlnet import XLNet, XLNetConfig

    return {"EncoderDecoder": (EncoderDecoder, Seq2SeqConfig), "GLM": (GLM, ModelConfig),
            "DeBERTa": (DeBERTa, DebertaConfig), "XLNet": (XLNet, XLNetConfig), "Transformer": (Transformer, ModelConfig),
            "MoETransformer": (MoETransformer, ModelConfig), "Canine": (Canine, CanineConfig)}


def save_native(model, out_dir: str | Path) -> Path:
    """Write ``model`` (a class listed in ``model_classes``) in plmkit's format."""
    from safetensors.torch import save_model

    name = type(model).__name__
    if name not in model_classes():
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
    classes = model_classes()
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
    dropped = sorted(k for k in unexpected if k.startswith("heads."))
    if dropped:  # objective heads the class does not build (e.g. ProphetNet's n-gram embeddings): not loaded
        import warnings

        warnings.warn(f"{weights}: {len(dropped)} objective-head tensors are not part of a bare {name} and are not "
                      f"loaded: {', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''}", stacklevel=2)
        unexpected = [k for k in unexpected if not k.startswith("heads.")]
    if missing or unexpected:
        raise UserError(f"{weights}: weights do not match the {name} config (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    return model.eval()


# ---------------------------------------------------------------------------- classical LMs
def save_recurrent(model, out_dir: str | os.PathLike) -> Path:
    """Write config.json (with ``"plmkit_family"``) + model.safetensors, atomically (DIR.tmp-XXXX, rename)."""
    from safetensors.torch import save_model

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp-"))
    try:
        cfg = model.config.to_dict()
        if len(model.heads):
            cfg["plmkit_extra_heads"] = sorted(model.heads)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_model(model, str(tmp / "model.safetensors"))
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".old-"))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_recurrent_dir(path: str | os.PathLike) -> bool:
    """True when ``path/config.json`` was written by a recurrent model (has ``"plmkit_family"``)."""
    from plmkit.classic.recurrent import FAMILIES

    p = Path(path) / "config.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("plmkit_family") in FAMILIES
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_recurrent(path: str | os.PathLike, dtype: Any = None, **overrides: Any):
    """Load a directory written by ``save_recurrent`` (config.json + model.safetensors)."""
    from safetensors.torch import load_model

    from plmkit.classic.recurrent import FAMILIES, MODEL_CLASSES, RecurrentConfig

    d = Path(path)
    cfg_path, w_path = d / "config.json", d / "model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise UserError(f"{d}: expected config.json and model.safetensors of a recurrent plmkit model")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path}: invalid JSON ({e})") from None
    if raw.get("plmkit_family") not in FAMILIES:
        raise UserError(f"{cfg_path}: not a recurrent plmkit model (no 'plmkit_family' in {FAMILIES})")
    heads = raw.pop("plmkit_extra_heads", [])
    if heads:
        raise UserError(f"{cfg_path}: saved with extra heads {heads}; rebuild them with add_head() and "
                        "load the weights with safetensors.torch.load_model(model, path, strict=False)")
    cfg = RecurrentConfig.from_dict(raw, source=str(cfg_path))
    if overrides:
        cfg = cfg.replace(**overrides)
    model = MODEL_CLASSES[cfg.family](cfg)
    missing, unexpected = load_model(model, str(w_path), strict=False)
    if unexpected or [k for k in missing if k != "output.weight" or not cfg.tie_word_embeddings]:
        raise UserError(f"{w_path}: weights do not match the config (missing {list(missing)[:3]}, "
                        f"unexpected {list(unexpected)[:3]})")
    if dtype is not None and dtype != "auto":
        import torch

        if isinstance(dtype, torch.dtype):
            model.to(dtype)
    return model
