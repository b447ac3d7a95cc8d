"""Fine-tune, evaluate and predict: the Python API behind ``plm finetune / evaluate / predict``.

``finetune(FinetuneConfig)`` reads the task data, encodes it, loads the backbone
(``plmkit.load``), adds the task head, applies the adaptation mode, trains with the project's
:class:`plmkit.training.Trainer` (the task is the "objective"), evaluates on dev and writes::

    OUT/eval.json          metrics under their usual names + params, time, skipped/truncated counts
    OUT/task.json          everything needed to rebuild the model (task, labels, mode, base model)
    OUT/model_config.json  the backbone's ModelConfig
    OUT/weights.safetensors  all weights (full / ulmfit) or only the trained ones (PEFT modes)
    OUT/tokenizer.json ... the tokenizer
    OUT/logs/metrics.jsonl training curve (Trainer's JsonlLogger), OUT/logs/dev.jsonl per-epoch dev metrics

``load_checkpoint(dir)`` rebuilds (model, objective, task info); ``evaluate_checkpoints`` scores
one checkpoint or an ensemble (vote = mean of probabilities, or uniform weight averaging).
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import UserError
from plmkit.tasks import encoding as E
from plmkit.tasks import metrics as M
from plmkit.tasks.modes import (EWC, L2SP, ModeConfig, SelfDistillation, apply_mode, average_state_dicts,
                                count_parameters, diagonal_fisher, early_exit_predict)
from plmkit.tasks.objective import HEAD_NAME, TaskObjective
from plmkit.tasks.readers import BadRows, check_labels
from plmkit.tasks.specs import TaskSpec, get_task, parse_slice, read_split, resolve_file


@dataclass
class FinetuneConfig:
    """Options of one fine-tuning run (``plm finetune`` flags map 1:1 onto these fields)."""

    task: str
    model: str
    data: str
    out: str
    mode: str = "full"
    epochs: float = 2.0
    lr: float = 2e-5
    batch_size: int = 32
    max_seq_len: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    seed: int = 1
    tokenizer: str | None = None
    train_file: str | None = None
    dev_file: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    no_header: bool = False
    train_articles: str | None = None
    dev_articles: str | None = None
    doc_stride: int = 128
    pooling: str = "pooler"
    warmup: float = 0.1
    weight_decay: float = 0.01
    skip_bad: bool = False
    adapter_size: int = 64
    pal_size: int = 204
    lora_rank: int = 8
    lora_alpha: float = 16.0
    regularizer: str | None = None  # "l2sp" | "ewc"
    reg_weight: float = 0.01
    ewc_from: str | None = None  # a previous fine-tuned checkpoint (its task data gives the Fisher)
    self_distill: float = 0.0  # weight of the self-distillation term; 0 = off
    distill_every: int = 50
    early_exit: bool = False
    head_lr: float | None = None  # LR of the top parameter group (task head, pooler); None = lr
    prefix: str | None = None  # text2text: task prefix (default: the task name)
    max_target_len: int = 8
    exit_thresholds: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    eval_each_epoch: bool = True
    eval_batch_size: int = 64
    progress: bool | None = None
    strip_digit_suffix: bool | None = None  # NER: drop Weibo's word-segment digit (None: the task's default)
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def _cpu_fields(cpu_s: float) -> dict[str, Any]:
    """Process CPU seconds of training and the torch thread count: on a shared machine the wall time
    (``train_time_s``) depends on the neighbours, CPU time / threads much less."""
    return {"train_cpu_s": round(cpu_s, 1), "threads": torch.get_num_threads()}


def _spec(cfg) -> TaskSpec:
    over = {}
    if cfg.text_column is not None:
        over["text_column"] = cfg.text_column
    if cfg.text_pair_column is not None:
        over["text_pair_column"] = cfg.text_pair_column
    if cfg.label_column is not None:
        over["label_column"] = cfg.label_column
    if getattr(cfg, "no_header", False):
        over["header"] = False
    if getattr(cfg, "strip_digit_suffix", None) is not None:
        over["strip_digit_suffix"] = cfg.strip_digit_suffix
    spec = get_task(cfg.task, **over)
    if spec.kind == "qa":
        tr, dv = parse_slice(cfg.train_articles), parse_slice(cfg.dev_articles)
        data = Path(cfg.data)
        # SQuAD with only the dev file at hand: train on the first 36 articles, evaluate on the rest
        if cfg.task == "squad" and cfg.train_file is None and not (data / "train-v1.1.json").exists():
            tr = tr or slice(0, 36)
            dv = dv or slice(36, None)
        spec.train_articles, spec.dev_articles = tr, dv
    return spec


def _subsample(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def label_list(spec: TaskSpec, train: list) -> list[str]:
    """Sorted label inventory from training data (for token tasks, "O" first)."""
    if spec.kind == "classification":
        labs = sorted({e.label for e in train}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    elif spec.kind == "multilabel":
        labs = sorted({lab for e in train for lab in e.label})
    elif spec.kind == "token":
        labs = sorted({t for e in train for t in e.tags}, key=lambda t: (t != "O", t[2:], t))
    else:
        labs = []
    return labs


def check_token_labels(dev: list, labels: list[str], bad: BadRows) -> list:
    known, out = set(labels), []
    for e in dev:
        unseen = [t for t in e.tags if t not in known]
        if unseen:
            bad.bad(f"{e.source}: tag {unseen[0]!r} not seen in training (known: {sorted(known)})")
            continue
        out.append(e)
    return out


def encode(spec: TaskSpec, tok, examples: list, labels: list[str], max_len: int, train: bool, doc_stride: int = 128) -> list[dict]:
    if spec.kind in ("classification", "regression", "multilabel"):
        return E.encode_texts(tok, examples, max_len, spec.kind, labels)
    if spec.kind == "token":
        return E.encode_tokens(tok, examples, max_len, labels)
    if spec.kind == "qa":
        return E.encode_qa(tok, examples, max_len, doc_stride=doc_stride, train=train)
    if spec.kind == "multiple_choice":
        return E.encode_choices(tok, examples, max_len)
    raise UserError(f"task kind {spec.kind!r} cannot be encoded")


# ----------------------------------------------------------------------------------------------
# inference and scoring
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def run_model(model, obj: TaskObjective, feats: list[dict], batch_size: int = 64) -> list:
    """Head outputs per feature, in order (batches sorted by length for speed).

    Returns per feature: classification/multilabel/multiple choice logits (C,), regression score
    (), token logits (T, C), QA (start (T,), end (T,)).
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]) if obj.kind != "multiple_choice"
                   else max(len(s) for s in feats[i]["input_ids"]))
    out: list = [None] * len(feats)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = obj.make_batch([{k: v for k, v in feats[i].items() if k not in ("label", "labels", "start_position", "end_position")} for i in idx])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        _, logits = obj.forward(model, batch)
        if obj.kind == "qa":
            s, e = (t.float().cpu().numpy() for t in logits)
            for j, i in enumerate(idx):
                n = len(feats[i]["input_ids"])
                out[i] = (s[j, :n], e[j, :n])
        elif obj.kind == "token":
            lg = logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = lg[j, : len(feats[i]["input_ids"])]
        else:
            lg = logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = obj.unscale(float(lg[j, 0])) if obj.kind == "regression" else lg[j]
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def score(spec: TaskSpec, labels: list[str], examples: list, feats: list[dict], outputs: list) -> dict[str, float]:
    """The task's metrics (names as in eval.json) from model outputs."""
    kind = spec.kind
    if kind in ("classification", "multiple_choice"):
        pred = np.array([int(np.argmax(o)) for o in outputs])
        gold = np.array([f["label"] for f in feats])
        res = {"accuracy": M.accuracy(pred, gold)}
        if kind == "classification":
            if len(labels) == 2:
                pos = labels.index("1") if "1" in labels else 1
                res["f1"] = M.f1(pred, gold, "binary", pos)
            res["f1_macro"] = M.f1(pred, gold, "macro")
            res["mcc"] = M.matthews_corrcoef(pred, gold)
        return res
    if kind == "regression":
        pred = np.array([float(o) for o in outputs])
        gold = np.array([f["label"] for f in feats])
        return {"pearson": M.pearson(pred, gold), "spearman": M.spearman(pred, gold)}
    if kind == "multilabel":
        pred = np.array([np.asarray(o) > 0 for o in outputs])
        gold = np.array([f["label"] for f in feats])
        return {"f1_micro": M.multilabel_f1(pred, gold, "micro"), "f1_macro": M.multilabel_f1(pred, gold, "macro")}
    if kind == "token":
        pred = E.decode_tokens(feats, outputs, labels)
        return M.entity_scores([e.tags for e in examples], pred)
    if kind == "qa":
        answers = E.decode_qa(examples, feats, [o[0] for o in outputs], [o[1] for o in outputs])
        gold = {e.id: [a["text"] for a in e.answers] for e in examples}
        return M.squad_scores(answers, gold)
    raise UserError(f"no metrics for task kind {kind!r}")


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------


def _atomic_json(path: Path, obj: Any) -> None:
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
    _atomic_json(out / "model_config.json", model.config.to_dict())
    _atomic_json(out / "task.json", {**task_info, "weights": "all" if full else "trained"})
    if hasattr(tok, "save"):
        tok.save(out)


def build_model(task_info: dict, base: str | None = None, base_weights: bool = True):
    """Backbone + head + adaptation modules as described by ``task_info`` (no fine-tuned weights yet)."""
    import plmkit
    from plmkit.models import ModelConfig, from_config

    if task_info["weights"] == "all" and not base_weights:
        mc = task_info["model_config"]
        if "plmkit_family" in mc:  # a classical LM (FFNN / RNN / LSTM / ELMo), plmkit.models.recurrent
            from plmkit.models.recurrent import build as build_recurrent

            model = build_recurrent(mc)
        else:
            model = from_config(ModelConfig.from_dict(mc))
    else:
        model = plmkit.load(base or task_info["base_model"])
    obj = _objective(task_info, None)
    obj.prepare(model)
    _recurrent_features(model, task_info["mode"])
    apply_mode(model, ModeConfig(**task_info["mode_config"]))
    return model, obj


def _recurrent_features(model, mode: str) -> None:
    """Features mode on a classical LM (ELMo, plmkit.models.recurrent): the scalar mix standardises
    each layer first (char-CNN / LSTM states are not normalised; issue #9), and the frozen LM's
    softmax, which the head never reads, is not computed. Must run after ``obj.prepare(model)``."""
    from plmkit.models.recurrent import RecurrentConfig

    if mode != "features" or not isinstance(getattr(model, "config", None), RecurrentConfig):
        return
    model.config.head = None  # skips the (B, T, V) forward and backward logits (~70% of ELMo's forward)
    mix = getattr(model.heads[HEAD_NAME], "scalar_mix", None)
    if mix is not None:
        mix.standardize(model.config.hidden_size)


def _objective(task_info: dict, tok) -> TaskObjective:
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
    state = load_file(str(path / "weights.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (info["weights"] == "all" and missing):
        raise UserError(f"{path}/weights.safetensors: does not match the model (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    tok = plmkit.load_tokenizer(str(path))
    return model, obj, info, tok


# ----------------------------------------------------------------------------------------------
# fine-tuning
# ----------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[finetune] {msg}", flush=True)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run one fine-tuning job; returns the eval.json dict."""
    import plmkit
    from plmkit.config import TrainConfig
    from plmkit.training import Trainer
    from plmkit.training.callbacks import JsonlLogger

    # Every RNG a fine-tuning run may touch, so a run's result does not depend on what ran before it.
    import random

    import numpy as np

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = _spec(cfg)
    data = Path(cfg.data)
    if not data.exists():
        raise UserError(f"{data}: no such data file or directory")
    bad = BadRows(skip=cfg.skip_bad)
    train_path = resolve_file(data, cfg.train_file or spec.train_file, "training")
    dev_path = resolve_file(data, cfg.dev_file or spec.dev_file, "dev")
    train = read_split(spec, train_path, "train", bad)
    dev = read_split(spec, dev_path, "dev", bad)
    train = _subsample(train, cfg.max_train_examples, cfg.seed)
    dev = _subsample(dev, cfg.max_eval_examples, cfg.seed)
    labels = label_list(spec, train)
    if spec.kind in ("classification", "multilabel"):
        dev = check_labels(dev, labels, bad)
    elif spec.kind == "token":
        dev = check_token_labels(dev, labels, bad)
    if bad.count:
        _log(bad.summary())
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    if spec.kind == "text2text":
        return _finetune_text2text(cfg, spec, tok, train, dev, bad, out)
    t0 = time.perf_counter()
    train_feats = encode(spec, tok, train, labels, cfg.max_seq_len, True, cfg.doc_stride)
    dev_feats = encode(spec, tok, dev, labels, cfg.max_seq_len, False, cfg.doc_stride)
    target_scale = None
    if spec.kind == "regression":  # train on standardised targets; predictions are mapped back
        ys = np.array([f["label"] for f in train_feats], dtype=np.float64)
        target_scale = (float(ys.mean()), float(ys.std() or 1.0))
    truncated = {"train": sum(bool(f.get("truncated")) for f in train_feats),
                 "dev": sum(bool(f.get("truncated")) for f in dev_feats)}
    _log(f"{spec.name}: {len(train)} train / {len(dev)} dev examples -> {len(train_feats)} / {len(dev_feats)} features "
         f"(truncated at {cfg.max_seq_len}: {truncated['train']} train, {truncated['dev']} dev); encoded in {time.perf_counter() - t0:.1f}s")

    model = plmkit.load(cfg.model)
    num_outputs = {"classification": len(labels), "multilabel": len(labels), "token": len(labels),
                   "regression": 1, "qa": 2, "multiple_choice": 1}[spec.kind]
    mode_cfg = ModeConfig(cfg.mode, cfg.adapter_size, cfg.pal_size, cfg.lora_rank, cfg.lora_alpha)
    obj = TaskObjective(spec.kind, num_outputs, tok, pooling=cfg.pooling, scalar_mix=cfg.mode == "features",
                        early_exit=cfg.early_exit, target_scale=target_scale)
    obj.prepare(model)
    _recurrent_features(model, cfg.mode)
    if cfg.early_exit:  # off-ramps train in stage 2 only (DeeBERT): keep them out of stage 1
        for p in model.heads["off_ramps"].parameters():
            p.requires_grad_(False)
    apply_mode(model, mode_cfg)
    if cfg.early_exit:
        for p in model.heads["off_ramps"].parameters():
            p.requires_grad_(False)
    if cfg.regularizer == "l2sp":
        obj.extra_terms.append(L2SP(model, cfg.reg_weight))
    elif cfg.regularizer == "ewc":
        obj.extra_terms.append(EWC(model, cfg.reg_weight, _fisher_from(cfg.ewc_from, model)))
    elif cfg.regularizer is not None:
        raise UserError(f"unknown regularizer {cfg.regularizer!r} (l2sp, ewc)")
    if cfg.self_distill > 0:
        obj.extra_terms.append(SelfDistillation(model, obj, cfg.self_distill, every=cfg.distill_every))
    params = count_parameters(model)
    _log(f"mode {cfg.mode}: {params['trainable_params']:,} trainable of {params['total_params']:,} parameters")

    steps_per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    max_steps = max(1, round(cfg.epochs * steps_per_epoch))
    tc = dict(max_steps=max_steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
              warmup_steps=int(cfg.warmup * max_steps), schedule="linear", seed=cfg.seed, log_every=10,
              eval_every=0, save_every=0, tensorboard=False, plots=False, progress=cfg.progress, device="auto")
    if cfg.mode == "ulmfit":
        groups = model.num_layers + 2
        tc.update(schedule="slanted_triangular", warmup_steps=0, layer_lr_decay=1 / 2.6,
                  unfreeze_every=max(1, max_steps // (2 * groups)))
    train_cfg = TrainConfig(**tc)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    history: list[dict] = []

    def dev_eval(trainer, step):
        if cfg.eval_each_epoch and step % steps_per_epoch == 0 and step < max_steps:
            res = score(spec, labels, dev, dev_feats, run_model(model, obj, dev_feats, cfg.eval_batch_size))
            res["step"] = step
            history.append(res)
            _log(f"step {step}: dev {json.dumps({k: round(v, 4) for k, v in res.items()})}")
            model.train()

    from plmkit.training.callbacks import FunctionCallback

    trainer = Trainer(model, obj, train_feats, train_cfg, callbacks=[JsonlLogger(logs), FunctionCallback("on_step_end", dev_eval)],
                      out_dir=None, tokenizer=tok)
    if cfg.head_lr is not None:
        _set_top_group_lr(trainer, cfg.head_lr)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = trainer.fit()
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    if summary.get("interrupted"):  # SIGTERM / Ctrl-C: the Trainer stopped after a step; evaluate what we have
        _log(f"training interrupted at step {summary['step']} of {max_steps}; evaluating the model as it is")

    result: dict[str, Any] = {"task": spec.name, "mode": cfg.mode, **params,
                              "train_examples": len(train), "dev_examples": len(dev), "train_steps": summary["step"],
                              "planned_steps": max_steps, "interrupted": bool(summary.get("interrupted")),
                              "train_time_s": round(train_time, 1), **_cpu_fields(train_cpu)}
    if cfg.early_exit:
        result.update(_train_off_ramps(cfg, model, obj, train_feats, train_cfg, logs, tok))
    t0 = time.perf_counter()
    outputs = run_model(model, obj, dev_feats, cfg.eval_batch_size)
    result["eval_time_s"] = round(time.perf_counter() - t0, 2)
    metrics = score(spec, labels, dev, dev_feats, outputs)
    history.append({**metrics, "step": max_steps})
    result.update(metrics)
    result["main_metric"] = spec.main_metric
    if cfg.early_exit:
        result["early_exit"] = early_exit_curve(model, obj, dev_feats, [f["label"] for f in dev_feats], cfg.exit_thresholds)
    result["truncated"] = truncated
    result["skipped_bad_rows"] = bad.count
    if bad.count:
        result["skipped"] = bad.messages[:20]
    result["history"] = history
    task_info = {"task": spec.name, "kind": spec.kind, "labels": labels, "num_outputs": num_outputs,
                 "mode": cfg.mode, "mode_config": asdict(mode_cfg), "pooling": cfg.pooling,
                 "base_model": str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model,
                 "max_seq_len": cfg.max_seq_len, "doc_stride": cfg.doc_stride, "pad_id": E.special_ids(tok).pad,
                 "early_exit": cfg.early_exit, "regularizer": cfg.regularizer, "target_scale": target_scale, "spec": {
                     "text_column": spec.text_column, "text_pair_column": spec.text_pair_column,
                     "label_column": spec.label_column, "header": spec.header,
                     "strip_digit_suffix": spec.strip_digit_suffix},
                 "train_data": str(train_path.resolve()), "config": asdict(cfg)}
    save_checkpoint(out, model, tok, task_info)
    _atomic_json(out / "eval.json", result)
    _log(f"dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result


def _finetune_text2text(cfg: FinetuneConfig, spec: TaskSpec, tok, train, dev, bad: BadRows, out: Path) -> dict:
    """Encoder-decoder fine-tuning with targets as text; greedy generation scored against the gold text."""
    import plmkit
    from plmkit.config import TrainConfig
    from plmkit.tasks import text2text as T2T
    from plmkit.training import Trainer
    from plmkit.training.callbacks import JsonlLogger

    if cfg.mode != "full":
        raise UserError(f"--task text2text supports --mode full only (got {cfg.mode})")
    prefix = cfg.prefix or spec.name
    label_kind = "classification"
    tr = T2T.encode_text2text(tok, train, prefix, cfg.max_seq_len, cfg.max_target_len, label_kind)
    dv = T2T.encode_text2text(tok, dev, prefix, cfg.max_seq_len, cfg.max_target_len, label_kind)
    model = plmkit.load(cfg.model)
    obj = T2T.Text2TextObjective(E.special_ids(tok).pad if tok.pad_token_id is not None else 0, label_kind)
    obj.prepare(model)
    params = count_parameters(model)
    steps = max(1, round(cfg.epochs * math.ceil(len(tr) / cfg.batch_size)))
    tc = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                     warmup_steps=int(cfg.warmup * steps), seed=cfg.seed, log_every=10, eval_every=0, save_every=0,
                     tensorboard=False, plots=False, progress=cfg.progress)
    (out / "logs").mkdir(exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = Trainer(model, obj, tr, tc, callbacks=[JsonlLogger(out / "logs")], out_dir=None, tokenizer=tok).fit()
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    preds = T2T.generate_texts(model, obj, tok, dv, cfg.eval_batch_size, cfg.max_target_len)
    metrics = T2T.score_text2text(label_kind, dv, preds)
    result = {"task": spec.name, "mode": cfg.mode, **params, "train_examples": len(train), "dev_examples": len(dev),
              "train_steps": summary["step"], "planned_steps": steps, "interrupted": bool(summary.get("interrupted")),
              "train_time_s": round(train_time, 1), **_cpu_fields(train_cpu), **metrics, "main_metric": "accuracy",
              "prefix": prefix,
              "examples": [{"input": tok.decode(f["input_ids"], skip_special_tokens=True), "gold": f["target_text"],
                            "generated": p} for f, p in list(zip(dv, preds))[:5]],
              "truncated": {"train": sum(f["truncated"] for f in tr), "dev": sum(f["truncated"] for f in dv)},
              "skipped_bad_rows": bad.count}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    tok.save(out / "model")
    _atomic_json(out / "eval.json", result)
    _log(f"dev: {json.dumps(metrics)}; wrote {out / 'eval.json'} and the model to {out / 'model'}")
    return result


def _set_top_group_lr(trainer, lr: float) -> None:
    """Give the Trainer's top layer group (task head, pooler, final norm) its own peak LR.

    Works around the Trainer having no per-module LR: the optimizer groups carry ``layer`` (top = max)
    and the LambdaLR schedule scales each group's ``base_lrs`` entry.
    """
    groups = trainer.optimizer.param_groups
    top = max(g.get("layer", 0) for g in groups)
    for i, g in enumerate(groups):
        if g.get("layer", 0) == top:
            g["initial_lr"] = lr
            trainer.scheduler.base_lrs[i] = lr
            g["lr"] = lr * trainer.scheduler.lr_lambdas[i](trainer.scheduler.last_epoch)


def _train_off_ramps(cfg, model, obj, train_feats, train_cfg, logs, tok) -> dict:
    """DeeBERT stage 2: freeze everything, train only the off-ramps for as many epochs as stage 1, at the
    head learning rate (``--head-lr``, default 1e-3: the ramps are fresh classifiers on frozen features)."""
    from dataclasses import replace

    from plmkit.training import Trainer
    from plmkit.training.callbacks import JsonlLogger

    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.heads["off_ramps"].parameters():
        p.requires_grad_(True)
    obj.ramps_only = True
    steps = max(train_cfg.max_steps, math.ceil(len(train_feats) / cfg.batch_size))  # stage 1's, >= one epoch
    rc = replace(train_cfg, max_steps=steps, lr=cfg.head_lr or 1e-3, schedule="linear", layer_lr_decay=1.0,
                 unfreeze_every=0, warmup_steps=0)
    (logs / "ramps").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    Trainer(model, obj, train_feats, rc, callbacks=[JsonlLogger(logs / "ramps")], out_dir=None, tokenizer=tok).fit()
    obj.ramps_only = False
    return {"ramp_params": sum(p.numel() for p in model.heads["off_ramps"].parameters()),
            "ramp_train_time_s": round(time.perf_counter() - t0, 1)}


@torch.no_grad()
def early_exit_curve(model, obj, feats: list[dict], gold: list, thresholds) -> list[dict]:
    """Accuracy, mean layers used and wall-clock speed-up vs the full model for each entropy threshold."""
    model.eval()
    L = model.num_layers
    curve = []
    base_time = None
    for th in sorted(set(thresholds)):
        correct, layers = 0, 0
        t0 = time.perf_counter()
        for f, g in zip(feats, gold):
            batch = obj.make_batch([{k: v for k, v in f.items() if k != "label"}])
            logits, used = early_exit_predict(model, obj, batch, th)
            correct += int(int(logits.argmax(-1)[0]) == g)
            layers += used
        dt = time.perf_counter() - t0
        if th == 0.0 or base_time is None:
            base_time = base_time or dt
        curve.append({"threshold": th, "accuracy": correct / len(feats), "mean_layers": layers / len(feats),
                      "layer_speedup": L * len(feats) / layers, "time_s": round(dt, 2),
                      "wall_speedup": round(base_time / dt, 3)})
    return curve


def _fisher_from(path: str | None, model) -> dict[str, torch.Tensor]:
    """EWC Fisher of a previous task: rebuild that checkpoint and its training data, average squared grads."""
    if path is None:
        raise UserError("--regularizer ewc needs --ewc-from CHECKPOINT (a previous fine-tuning output)")
    prev_model, prev_obj, info, tok = load_checkpoint(path)
    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    train = read_split(spec, Path(info["train_data"]), "train")
    train = _subsample(train, 512, 0)
    feats = encode(spec, tok, train, info["labels"], info["max_seq_len"], True, info["doc_stride"])
    prev_obj.pad_id = info["pad_id"]
    batches = (prev_obj.make_batch(feats[i : i + 16]) for i in range(0, len(feats), 16))
    fisher = diagonal_fisher(prev_model, prev_obj, batches, max_batches=32)
    names = dict(model.named_parameters())
    out = {n: f for n, f in fisher.items() if n in names and names[n].shape == f.shape}
    # normalise so reg_weight has a comparable scale across tasks
    mean = torch.cat([f.flatten() for f in out.values()]).mean().clamp_min(1e-12)
    return {n: f / mean for n, f in out.items()}


# ----------------------------------------------------------------------------------------------
# evaluation / prediction of checkpoints
# ----------------------------------------------------------------------------------------------


def read_eval_split(info: dict, data: str, split_file: str | None, bad: BadRows, labelled: bool = True):
    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    if spec.kind == "qa" and info["task"] == "squad" and not split_file:
        spec.dev_articles = parse_slice(info["config"].get("dev_articles")) or (
            slice(36, None) if not (Path(data) / "train-v1.1.json").exists() else None)
    path = resolve_file(Path(data), split_file or spec.dev_file, "evaluation")
    return spec, read_split(spec, path, "dev", bad, labelled=labelled)


def evaluate_checkpoints(paths: list[str], data: str, split_file: str | None = None, ensemble: str = "vote",
                         batch_size: int = 64, skip_bad: bool = False, max_examples: int | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint, or of an ensemble (``vote``: mean of probabilities; ``average``: weights)."""
    bad = BadRows(skip=skip_bad)
    loaded = [load_checkpoint(p) for p in paths]
    model, obj, info, tok = loaded[0]
    for p, (_, _, inf, _) in zip(paths[1:], loaded[1:]):
        if inf["task"] != info["task"] or inf["labels"] != info["labels"]:
            raise UserError(f"{p}: an ensemble needs checkpoints of the same task and labels")
    spec, examples = read_eval_split(info, data, split_file, bad)
    examples = _subsample(examples, max_examples, 0)
    if spec.kind in ("classification", "multilabel"):
        examples = check_labels(examples, info["labels"], bad)
    elif spec.kind == "token":
        examples = check_token_labels(examples, info["labels"], bad)
    feats = encode(spec, tok, examples, info["labels"], info["max_seq_len"], False, info["doc_stride"])
    if len(loaded) == 1:
        outputs = run_model(model, obj, feats, batch_size)
    elif ensemble == "average":
        if any(inf["mode"] not in ("full", "ulmfit") for _, _, inf, _ in loaded):
            raise UserError("weight averaging needs fully fine-tuned checkpoints (mode full or ulmfit)")
        model.load_state_dict(average_state_dicts([m.state_dict() for m, _, _, _ in loaded]))
        outputs = run_model(model, obj, feats, batch_size)
    elif ensemble == "vote":
        if spec.kind not in ("classification", "regression", "multiple_choice", "token"):
            raise UserError(f"vote ensembles support classification, regression, multiple choice and token tasks, not {spec.kind}")
        all_out = [run_model(m, o, feats, batch_size) for m, o, _, _ in loaded]
        if spec.kind == "regression":
            outputs = [float(np.mean(v)) for v in zip(*all_out)]
        else:
            outputs = [np.log(np.mean([_softmax(np.asarray(x)) for x in v], 0) + 1e-12) for v in zip(*all_out)]
    else:
        raise UserError(f"unknown ensemble method {ensemble!r} (vote, average)")
    res = score(spec, info["labels"], examples, feats, outputs)
    res.update({"examples": len(examples), "checkpoints": len(paths), "skipped_bad_rows": bad.count,
                "truncated": sum(bool(f.get("truncated")) for f in feats)})
    if len(paths) > 1:
        res["ensemble"] = ensemble
    return res


def predict(path: str, inputs: str, out_path: str, batch_size: int = 64, skip_bad: bool = False) -> dict[str, int]:
    """Predictions for every input row as JSONL (one line per input, in order; truncation flagged)."""
    bad = BadRows(skip=skip_bad)
    model, obj, info, tok = load_checkpoint(path)
    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    inp = Path(inputs)
    if spec.kind in ("classification", "regression", "multilabel") and inp.suffix == ".txt":
        from plmkit.tasks.readers import TextExample

        lines = inp.read_text(encoding="utf-8").splitlines()
        examples = [TextExample(t, None, None, f"{inp}:{i}") for i, t in enumerate(lines, 1) if t.strip()]
        if not examples:
            raise UserError(f"{inp}: empty file (no lines)")
    else:
        examples = read_split(spec, inp, "dev", bad, labelled=False) if spec.kind != "qa" else read_split(spec, inp, "dev", bad)
    feats = encode(spec, tok, examples, info["labels"], info["max_seq_len"], False, info["doc_stride"])
    outputs = run_model(model, obj, feats, batch_size)
    labels = info["labels"]
    n_trunc = 0
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        if spec.kind == "qa":
            answers = E.decode_qa(examples, feats, [o[0] for o in outputs], [o[1] for o in outputs])
            for e in examples:
                fh.write(json.dumps({"id": e.id, "source": e.source, "answer": answers.get(e.id, "")}) + "\n")
        else:
            tags = E.decode_tokens(feats, outputs, labels) if spec.kind == "token" else None
            for i, (e, f, o) in enumerate(zip(examples, feats, outputs)):
                rec: dict[str, Any] = {"source": e.source, "truncated": bool(f.get("truncated"))}
                n_trunc += rec["truncated"]
                if spec.kind == "classification":
                    p = _softmax(np.asarray(o))
                    rec.update(label=labels[int(p.argmax())], probs={lab: round(float(x), 6) for lab, x in zip(labels, p)})
                elif spec.kind == "regression":
                    rec["score"] = float(o)
                elif spec.kind == "multilabel":
                    rec["labels"] = [lab for lab, x in zip(labels, np.asarray(o)) if x > 0]
                elif spec.kind == "multiple_choice":
                    rec.update(choice=int(np.argmax(o)), probs=[round(float(x), 6) for x in _softmax(np.asarray(o))])
                elif spec.kind == "token":
                    rec.update(tokens=e.tokens, tags=tags[i])
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return {"inputs": len(examples), "written": len(examples), "truncated": n_trunc, "skipped_bad_rows": bad.count}
