"""Which sequence pooling a task head uses: ``--pooling auto`` resolved from the checkpoint.

A sentence-transformers checkpoint declares how it was trained to be pooled: ``modules.json`` lists a
``sentence_transformers.models.Pooling`` module whose folder (usually ``1_Pooling``) holds a
``config.json`` with ``pooling_mode_cls_token`` / ``pooling_mode_mean_tokens`` /
``pooling_mode_max_tokens`` / ``pooling_mode_lasttoken`` flags. ``auto`` follows that declaration when
exactly one supported mode is set; otherwise it takes the model family's usual choice:

- a causal decoder (GPT, GPT-2, Llama, an LSTM LM) and XLNet: the last real token, the only one that has
  seen the whole input (GPT, Radford et al. 2018, sec. 3.3; XLNet's sequence summary);
- ELMo: the mean of the token states;
- a model with a pretrained BERT-style pooler (BERT, ALBERT): the pooler over [CLS] (Devlin et al. 2019);
- any other encoder (RoBERTa, ELECTRA, DeBERTa): the first token's vector, as their classification heads.
"""

from __future__ import annotations

import json
from pathlib import Path

from plmkit.errors import UserError

POOLINGS = ("auto", "pooler", "cls", "mean", "max", "last")
# sentence-transformers' Pooling flags -> plmkit pooling names
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
             "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}
_ST_OTHER = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None


def _pooling_config(model_dir: Path) -> Path | None:
    """The Pooling module's config.json of a sentence-transformers folder, or None."""
    modules = model_dir / "modules.json"
    if modules.is_file():
        entries = _read_json(modules)
        if not isinstance(entries, list):
            raise UserError(f"{modules}: expected a list of modules")
        for m in entries:
            if isinstance(m, dict) and str(m.get("type", "")).endswith("models.Pooling"):
                cfg = model_dir / str(m.get("path", "")) / "config.json"
                return cfg if cfg.is_file() else None
        return None
    legacy = model_dir / "1_Pooling" / "config.json"
    return legacy if legacy.is_file() else None


def declared_pooling(model_path: str | Path | None) -> tuple[str | None, str]:
    """``(pooling, why)`` declared by a sentence-transformers checkpoint folder; ``(None, why)`` if none.

    A declaration plmkit cannot follow (several modes concatenated, mean_sqrt_len, weightedmean) gives
    None with the reason, so the caller falls back to the family's choice and says why.
    """
    if model_path is None or not Path(model_path).is_dir():
        return None, "no sentence-transformers pooling declared"
    cfg_path = _pooling_config(Path(model_path))
    if cfg_path is None:
        return None, "no sentence-transformers pooling declared"
    cfg = _read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path}: expected a mapping of pooling_mode_* flags")
    modes = [name for key, name in _ST_MODES.items() if cfg.get(key)]
    other = [key for key in _ST_OTHER if cfg.get(key)]
    if len(modes) == 1 and not other:
        return modes[0], f"declared by {cfg_path}"
    return None, f"{cfg_path} declares {', '.join(modes + other) or 'no mode'}, which plmkit does not follow"


def family_pooling(config) -> tuple[str, str]:
    """``(pooling, why)``: the usual pooling of a model family (see the module docstring)."""
    family = getattr(config, "family", "?")
    if family == "elmo":
        return "mean", "ELMo: mean of the biLM states"
    if family == "xlnet" or getattr(config, "causal", False):
        return "last", f"{family}: last token (a left-to-right model's only token that sees the whole input)"
    if getattr(config, "pooler", False):
        return "pooler", f"{family}: the pretrained [CLS] pooler"
    return "cls", f"{family}: the first token's vector (no pretrained pooler)"


def resolve_pooling(requested: str, model_path: str | Path | None, model) -> tuple[str, str]:
    """The pooling a head uses and why: ``requested`` unless it is ``auto`` (checkpoint, then family)."""
    if requested not in POOLINGS:
        raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {requested!r}")
    if requested != "auto":
        return requested, "given"
    declared, why = declared_pooling(model_path)
    if declared is not None:
        return declared, why
    pooling, family_why = family_pooling(getattr(model, "config", None))
    return pooling, f"{family_why}; {why}"
