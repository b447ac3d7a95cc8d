"""Compress a fine-tuned checkpoint into another one (``plm quantize``, ``plm prune``).

The output is a normal fine-tuned checkpoint (``plmkit.tasks.checkpoint``) whose ``task.json`` carries
``"compression"`` (the record :mod:`plmkit.compression.structure` reshapes a built model to) and
``"compressed_from"`` (the source checkpoint and the options), so ``plm evaluate --checkpoint OUT`` and
``plm predict`` read it like any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plmkit.compression.pruning import block_linears, check_fraction, importance, lowest, magnitude_prune, \
    prune_heads, prune_neurons
from plmkit.compression.quantization import quantize_model
from plmkit.errors import UserError


def _load_full(path: str):
    from plmkit.tasks.checkpoint import load_checkpoint

    model, obj, info, tok = load_checkpoint(path)
    if not (info["mode"] in ("full", "ulmfit") or info.get("regularizer")):
        raise UserError(f"{path}: a {info['mode']!r} checkpoint stores only its trained weights; compress a "
                        "fully fine-tuned checkpoint (mode full)")
    if info.get("early_exit"):
        raise UserError(f"{path}: early-exit checkpoints are not supported by compression")
    return model, obj, info, tok


def _write(out: str, model, tok, info: dict, record: dict, source: str, options: dict) -> dict[str, Any]:
    from plmkit.tasks.checkpoint import save_checkpoint

    info = dict(info)
    info.pop("model_config", None)  # save_checkpoint writes model_config.json from the model itself
    info["compression"] = {**info.get("compression", {}), **record}
    info["compressed_from"] = list(info.get("compressed_from", [])) + [{"checkpoint": str(Path(source).resolve()),
                                                                       **options}]
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    save_checkpoint(out_path, model, tok, info)
    return {"out": str(out_path), "weights_bytes": os.path.getsize(out_path / "weights.safetensors"),
            "source_weights_bytes": os.path.getsize(Path(source) / "weights.safetensors"),
            "compression": info["compression"]}


def quantize_checkpoint(path: str, out: str, method: str, group_size: int = 32, embeddings: bool = False,
                        activations: str = "float32") -> dict[str, Any]:
    """Quantize ``path``'s block linears (and optionally the word table) into the checkpoint ``out``."""
    model, _, info, tok = _load_full(path)
    if (info.get("compression") or {}).get("quantization"):
        raise UserError(f"{path}: is already quantized ({info['compression']['quantization']['method']}); "
                        "quantize the fp32 checkpoint instead")
    model.eval()
    record = quantize_model(model, method, group_size, embeddings, activations)
    return _write(out, model, tok, info, {"quantization": record}, path,
                  {"quantize": method, "group_size": group_size, "embeddings": embeddings,
                   **({"activations": activations} if activations != "float32" else {})})


def _importance_batches(info: dict, obj, tok, data: str | None, examples: int, batch_size: int, seed: int):
    from plmkit.tasks.data import encode, subsample
    from plmkit.tasks.specs import get_task, read_split, resolve_file

    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    path = resolve_file(Path(data), spec.train_file, "training") if data else Path(info["train_data"])
    if not path.exists():
        raise UserError(f"{path}: the teacher's training file is gone; give --data DIR")
    train = subsample(read_split(spec, path, "train"), examples, seed)
    feats = encode(spec, tok, train, info["labels"], info["max_seq_len"], True, info["doc_stride"])
    return [obj.make_batch(feats[i: i + batch_size]) for i in range(0, len(feats), batch_size)]


def prune_checkpoint(path: str, out: str, method: str, amount: float, scope: str = "global",
                     data: str | None = None, examples: int = 256, batch_size: int = 32, seed: int = 1
                     ) -> dict[str, Any]:
    """Prune ``path`` into ``out``: ``heads`` / ``ffn`` remove the ``amount`` fraction of least important
    heads / FFN neurons (importance on ``examples`` training examples); ``magnitude`` zeroes that fraction
    of the block weights (``scope`` global or per layer)."""
    import torch

    name = "--sparsity" if method == "magnitude" else "--amount"
    check_fraction(name, amount)
    model, obj, info, tok = _load_full(path)
    if (info.get("compression") or {}).get("quantization"):
        raise UserError(f"{path}: is quantized; prune the fp32 checkpoint, then quantize")
    options: dict[str, Any] = {"prune": method, "amount": amount}
    if method == "magnitude":
        result = magnitude_prune(model, amount, scope)
        options["scope"] = scope
        record = {"sparsity": result}
    elif method in ("heads", "ffn"):
        torch.manual_seed(seed)
        batches = _importance_batches(info, obj, tok, data, examples, batch_size, seed)

        def loss_fn(m, batch):
            _, logits = obj.forward(m, batch)
            return obj.task_loss(logits, batch)

        h, n = importance(model, loss_fn, batches, heads=method == "heads", neurons=method == "ffn")
        options.update(examples=examples)
        if method == "heads":
            record = {"heads": prune_heads(model, lowest(h, amount))}
        else:
            record = {"intermediate": prune_neurons(model, lowest(n, amount))}
    else:
        raise UserError(f"--method {method!r}: expected heads, ffn or magnitude")
    res = _write(out, model, tok, info, record, path, options)
    res["parameters"] = sum(p.numel() for p in model.parameters())
    return res


def _continue_training(info: dict, tok, data: str, out: str, epochs: float, lr: float, batch_size: int,
                       max_train_examples: int | None, seed: int):
    """Seeded set-up to fine-tune a loaded checkpoint further on its own task (QAT, gradual pruning): its
    fine-tuning config with the new data / budget, the task spec, the data (labels as the checkpoint's) and
    the encoded features."""
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.finetuning import _seed_everything, encode_task_data, read_task_data

    _seed_everything(seed)
    fcfg = FinetuneConfig(**{**info["config"], "data": data, "out": out, "mode": "full", "epochs": epochs, "lr": lr,
                             "batch_size": batch_size, "max_train_examples": max_train_examples, "seed": seed,
                             "early_exit": False, "regularizer": None, "self_distill": 0.0, "eval_each_epoch": False})
    spec = task_spec(fcfg)
    tdata = read_task_data(fcfg, spec)
    tdata.labels = list(info["labels"])
    return fcfg, spec, tdata, encode_task_data(fcfg, spec, tok, tdata)


def qat_checkpoint(path: str, out: str, data: str, epochs: float = 1.0, lr: float = 2e-5, batch_size: int = 32,
                   max_train_examples: int | None = None, seed: int = 1, fake_quant: bool = True) -> dict[str, Any]:
    """``qat-int8``: fine-tune ``path`` on its task's training data through fake int8 rounding (straight-through
    estimator, Q8BERT), then store it as ``dynamic-int8`` in ``out``. Dev accuracy goes to ``OUT/eval.json``.

    ``fake_quant=False`` is the fp32 control with the same data, steps and seed (an fp32 checkpoint)."""
    import time

    from plmkit.compression.quantization import convert_qat, prepare_qat
    from plmkit.tasks.checkpoint import write_json_atomic
    from plmkit.tasks.finetuning import train, training_config
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.scoring import score

    model, obj, info, tok = _load_full(path)
    if (info.get("compression") or {}).get("quantization"):
        raise UserError(f"{path}: is already quantized ({info['compression']['quantization']['method']}); "
                        "quantize the fp32 checkpoint instead")
    if not data:
        raise UserError("--method qat-int8 fine-tunes: give --data DIR (the task's train/dev files)")
    fcfg, spec, tdata, feats = _continue_training(info, tok, data, out, epochs, lr, batch_size, max_train_examples,
                                                  seed)
    names = prepare_qat(model) if fake_quant else []
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "logs").mkdir(exist_ok=True)
    train_cfg = training_config(fcfg, model, len(feats.train))
    summary, _, train_time, _ = train(fcfg, spec, model, obj, tok, tdata, feats, train_cfg, Path(out) / "logs")
    model.eval()
    record = {"quantization": convert_qat(model, names)} if fake_quant else {}
    t0 = time.perf_counter()
    metrics = score(spec, tdata.labels, tdata.dev, feats.dev, run_model(model, obj, feats.dev, 64))
    res = _write(out, model, tok, info, record, path,
                 {"quantize" if fake_quant else "finetune": "qat-int8" if fake_quant else "fp32 (qat control)",
                  "epochs": epochs, "lr": lr, "max_train_examples": max_train_examples})
    res.update(metrics, train_steps=summary["step"], train_time_s=round(train_time, 1),
               eval_time_s=round(time.perf_counter() - t0, 1))
    write_json_atomic(Path(out) / "eval.json", {k: v for k, v in res.items() if k != "compression"})
    return res


def gradual_prune_checkpoint(path: str, out: str, sparsity: float, data: str, epochs: float = 1.0,
                             lr: float = 2e-5, batch_size: int = 32, max_train_examples: int | None = None,
                             seed: int = 1, scope: str = "global", initial: float = 0.0, start: float = 0.0,
                             end: float = 0.7, every: int | None = None) -> dict[str, Any]:
    """Gradual magnitude pruning (Zhu & Gupta 2017) of ``path`` while fine-tuning it further on its task:
    sparsity follows the cubic schedule from ``initial`` at ``start`` (fraction of the steps) to ``sparsity``
    at ``end``, pruning every ``every`` steps (default: 10 pruning steps); the rest of the steps fine-tune
    the pruned model. Dev scores go to ``OUT/eval.json``."""
    import time

    from plmkit.compression.pruning import GradualPruner
    from plmkit.tasks.checkpoint import write_json_atomic
    from plmkit.tasks.finetuning import train, training_config
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.scoring import score

    check_fraction("--sparsity", sparsity)
    if not 0.0 <= start < end <= 1.0:
        raise UserError(f"--prune-start {start} / --prune-end {end}: expected 0 <= start < end <= 1 "
                        "(fractions of the training steps)")
    model, obj, info, tok = _load_full(path)
    if (info.get("compression") or {}).get("quantization"):
        raise UserError(f"{path}: is quantized; prune the fp32 checkpoint, then quantize")
    if not data:
        raise UserError("--schedule cubic prunes during fine-tuning: give --data DIR (the task's train/dev files)")
    fcfg, spec, tdata, feats = _continue_training(info, tok, data, out, epochs, lr, batch_size, max_train_examples,
                                                  seed)
    train_cfg = training_config(fcfg, model, len(feats.train))
    steps = train_cfg.max_steps
    t0, t1 = int(start * steps), max(int(start * steps) + 1, int(end * steps))
    every = every or max(1, (t1 - t0) // 10)
    n = max(1, (t1 - t0) // every)
    pruner = GradualPruner(model, sparsity, initial, t0, n, every, scope)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "logs").mkdir(exist_ok=True)
    with pruner.attached():
        summary, _, train_time, _ = train(fcfg, spec, model, obj, tok, tdata, feats, train_cfg, Path(out) / "logs")
    pruner.apply()
    model.eval()
    t_eval = time.perf_counter()
    metrics = score(spec, tdata.labels, tdata.dev, feats.dev, run_model(model, obj, feats.dev, 64))
    linears = [m for _, _, m in block_linears(model)]
    achieved = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    record = {"sparsity": {"target": sparsity, "scope": scope, "achieved": achieved, "schedule": "cubic"}}
    res = _write(out, model, tok, info, record, path,
                 {"prune": "magnitude", "schedule": "cubic", "amount": sparsity, "initial": initial, "start_step": t0,
                  "pruning_steps": n, "every": every, "epochs": epochs, "lr": lr,
                  "max_train_examples": max_train_examples})
    res.update(metrics, train_steps=summary["step"], train_time_s=round(train_time, 1),
               eval_time_s=round(time.perf_counter() - t_eval, 1), schedule=pruner.history)
    write_json_atomic(Path(out) / "eval.json", {k: v for k, v in res.items() if k != "compression"})
    return res
