"""The fine-tuned checkpoint format of ``plm finetune`` (a directory), written atomically::

    OUT/task.json            everything needed to rebuild the model (task, labels, mode, base model, options)
    OUT/model_config.json    the backbone's config
    OUT/weights.safetensors  all weights (full / ulmfit / regularised) or only the trained ones (PEFT modes)
    OUT/tokenizer.json ...   the tokenizer

:func:`load_checkpoint` rebuilds ``(model, objective, task_info, tokenizer)``; PEFT checkpoints load their
frozen base weights from ``task_info["base_model"]``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.tasks.modes import ModeConfig, apply_mode
from plmkit.tasks.objective import HEAD_NAME, TaskObjective


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def save_checkpoint(out: Path, model, tok, task_info: dict) -> None:
    """Write task.json, model_config.json, weights.safetensors and the tokenizer into ``out``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    full = task_info["mode"] in ("full", "ulmfit") or task_info.get("regularizer")
    state = model.state_dict()
    if not full:  # PEFT: only what was trained (the base weights come from base_model)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in trained}
    state = {k: v.detach().contiguous().cpu().clone() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(dir=out, prefix="weights.tmp-")
    os.close(fd)
    save_file(state, tmp)
    os.replace(tmp, out / "weights.safetensors")
    from plmkit.interop.native import model_classes

    mc, name = model.config.to_dict(), type(model).__name__
    if name != "Transformer" and name in model_classes():  # DeBERTa, XLNet, EncoderDecoder, GLM, ...: by class
        mc["plmkit_class"] = name
    write_json_atomic(out / "model_config.json", mc)
    write_json_atomic(out / "task.json", {**task_info, "weights": "all" if full else "trained"})
    if hasattr(tok, "save"):
        tok.save(out)


def build_model(task_info: dict, base: str | None = None, base_weights: bool = True):
    """Backbone + head + adaptation modules as described by ``task_info`` (no fine-tuned weights yet)."""
    import plmkit
    from plmkit.models import ModelConfig, from_config

    if task_info["weights"] == "all" and not base_weights:
        mc = dict(task_info["model_config"])
        name = mc.pop("plmkit_class", None)
        if "plmkit_family" in mc:  # a classical LM (FFNN / RNN / LSTM / ELMo), plmkit.classic.recurrent
            from plmkit.classic.recurrent import build as build_recurrent

            model = build_recurrent(mc)
        elif name is not None:  # a model class with its own config class (DeBERTa, XLNet, T5/BART, GLM, ...)
            from plmkit.interop.native import model_classes

            classes = model_classes()
            if name not in classes:
                raise UserError(f"model_config.json: plmkit_class {name!r} is not one of {', '.join(classes)}")
            cls, cfg_cls = classes[name]
            model = cls(cfg_cls.from_dict(mc))
        else:
            model = from_config(ModelConfig.from_dict(mc))
    else:
        model = plmkit.load(base or task_info["base_model"])
    obj = objective_from_info(task_info, None)
    obj.prepare(model)
    recurrent_features(model, task_info["mode"])
    apply_mode(model, ModeConfig(**task_info["mode_config"]), label_token_ids=getattr(obj, "label_token_ids", None))
    return model, obj


def recurrent_features(model, mode: str) -> None:
    """Features mode on a classical LM (ELMo, plmkit.classic.recurrent): the scalar mix standardises
    each layer first (char-CNN / LSTM states are not normalised; issue #9), and the frozen LM's
    softmax, which the head never reads, is not computed. Must run after ``obj.prepare(model)``."""
    from plmkit.classic.recurrent import RecurrentConfig

    if mode != "features" or not isinstance(getattr(model, "config", None), RecurrentConfig):
        return
    model.config.head = None  # skips the (B, T, V) forward and backward logits (~70% of ELMo's forward)
    mix = getattr(model.heads[HEAD_NAME], "scalar_mix", None)
    if mix is not None:
        mix.standardize(model.config.hidden_size)


def objective_from_info(task_info: dict, tok) -> TaskObjective:
    """The task objective (head shapes, pooling, pad id) described by a checkpoint's ``task_info``."""
    if task_info.get("verbalizer"):  # plm finetune --verbalizer: the LM head scores the label words
        from plmkit.prompting.verbalizer import VerbalizerObjective

        return VerbalizerObjective.from_info(task_info["verbalizer"], task_info["labels"], task_info["pad_id"], tok)
    if task_info.get("plausibility"):  # plm finetune --plausibility: the MLM head scores the choices
        from plmkit.tasks.plausibility import PlausibilityObjective

        return PlausibilityObjective.from_info(task_info["plausibility"], task_info["pad_id"])
    obj = TaskObjective.__new__(TaskObjective)
    TaskObjective.__init__(obj, task_info["kind"], task_info["num_outputs"], _PadOnly(task_info["pad_id"]),
                           pooling=task_info["pooling"], scalar_mix=task_info["mode"] == "features",
                           early_exit=task_info.get("early_exit", False), target_scale=task_info.get("target_scale"))
    return obj


class _PadOnly:
    """Stands in for a tokenizer where the objective only needs special ids."""

    def __init__(self, pad: int):
        self.pad_token_id = pad
        self.cls_token_id = self.sep_token_id = pad


def refuse_pair_scoring(info: dict, path: str | Path, command: str) -> None:
    """UserError for a checkpoint whose head scores (text, auxiliary text) pairs (``--label-as-text``, ABSA):
    its head is a yes / no (or per-aspect) classifier that ``command`` would apply to plain rows."""
    if info.get("label_as_text") or info.get("absa_format"):
        how = "--label-as-text" if info.get("label_as_text") else f"--absa-format {info['absa_format']}"
        raise UserError(f"{path}: a {how} checkpoint scores sentence pairs built by plm finetune; {command} "
                        "would read plain rows (its eval.json holds the dev metrics)")


def load_checkpoint(path: str | Path):
    """Rebuild ``(model, objective, task_info, tokenizer)`` from a ``plm finetune`` output directory."""
    import plmkit
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "task.json").is_file():
        raise UserError(f"{path}: not a fine-tuned checkpoint (no task.json)")
    info = json.loads((path / "task.json").read_text(encoding="utf-8"))
    info["model_config"] = json.loads((path / "model_config.json").read_text(encoding="utf-8"))
    model, obj = build_model(info, base_weights=info["weights"] != "all")
    if info.get("compression"):  # pruned / quantized (plm prune, plm quantize): reshape before loading
        from plmkit.compression.structure import restore

        restore(model, info["compression"])
    state = load_file(str(path / "weights.safetensors"))
    if getattr(model, "head", True) is None:  # checkpoints written before drop_lm_head kept the LM/MLM head
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (info["weights"] == "all" and missing):
        raise UserError(f"{path}/weights.safetensors: does not match the model (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    tok = plmkit.load_tokenizer(str(path))
    return model, obj, info, tok
