"""``finetune(FinetuneConfig)``: the Python API behind ``plm finetune``.

One run, step by step (each step is a function below):

1. :func:`_seed_everything`, then :func:`read_task_data`: the task spec, train / dev examples (subsets,
   label inventory, bad rows counted or refused);
2. :func:`encode_task_data`: features, standardised regression targets, truncation counts;
3. :func:`build_task_model`: the backbone (``plmkit.load``), the task head, the adaptation mode, the
   regularisers (L2-SP, EWC, self-distillation);
4. :func:`training_config`: the :class:`plmkit.config.TrainConfig` of the run (linear warm-up and decay, or
   ULMFiT's slanted triangular schedule with discriminative LRs and gradual unfreezing; ``head_lr``);
5. :func:`train`: the project's :class:`plmkit.training.Trainer` with the task as its objective and, per
   epoch, a dev evaluation; then DeeBERT's off-ramps when asked (:func:`_train_off_ramps`);
6. the dev metrics, the early-exit curve, and the checkpoint (:mod:`plmkit.tasks.checkpoint`)::

    OUT/eval.json          metrics under their usual names + params, time, skipped/truncated counts
    OUT/task.json, OUT/model_config.json, OUT/weights.safetensors, OUT/tokenizer.json
    OUT/logs/metrics.jsonl training curve (Trainer's JsonlLogger)

Text-to-text tasks (an encoder-decoder generating the label) take :func:`_finetune_text2text` after step 1.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import plmkit.tasks.encoding as E
from plmkit.config import TrainConfig
from plmkit.errors import UserError
from plmkit.tasks.checkpoint import load_checkpoint, recurrent_features, save_checkpoint, write_json_atomic
from plmkit.tasks.config import FinetuneConfig
from plmkit.tasks.data import check_token_labels, encode, label_list, subsample, task_spec
from plmkit.tasks.inference import early_exit_curve, run_model, softmax
from plmkit.tasks.modes import EWC, L2SP, ModeConfig, SelfDistillation, apply_mode, count_parameters, diagonal_fisher
from plmkit.tasks.objective import TaskObjective
from plmkit.tasks.pooling import resolve_pooling
from plmkit.tasks.readers import BadRows, check_labels
from plmkit.tasks.scoring import score
from plmkit.tasks.specs import TaskSpec, check_known_labels, get_task, read_split, resolve_file

NUM_OUTPUTS = {"regression": 1, "qa": 2, "multiple_choice": 1}  # other kinds: one output per label
POOLED_KINDS = ("classification", "regression", "multilabel", "multiple_choice")  # heads that pool (--pooling)


def _cpu_fields(cpu_s: float) -> dict[str, Any]:
    """Process CPU seconds of training and the torch thread count: on a shared machine the wall time
    (``train_time_s``) depends on the neighbours, CPU time / threads much less."""
    return {"train_cpu_s": round(cpu_s, 1), "threads": torch.get_num_threads()}


def _log(msg: str) -> None:
    print(f"[finetune] {msg}", flush=True)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run one fine-tuning job; returns the eval.json dict."""
    import plmkit

    if cfg.multi_task or cfg.active_learning:  # loops over fine-tuning runs: plmkit.tasks.run dispatches them
        raise UserError("--multi-task / --active-learning runs go through plmkit.tasks.run.finetune (plm finetune)")
    if cfg.tasks or cfg.teachers:
        raise UserError("--tasks / --teachers are options of multi-task fine-tuning: add --multi-task")
    _seed_everything(cfg.seed)
    if cfg.task == "open-qa":  # retriever + reader (REALM): its own data and loop over the one Trainer
        from plmkit.tasks.open_qa import run_open_qa

        return run_open_qa(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    # Read and check everything before the first write into --out.
    spec = task_spec(cfg)
    if spec.extra.get("absa"):  # Sun et al. 2019: (target, aspect) rows with an auxiliary sentence
        return _finetune_absa(cfg, spec, out)
    data = read_task_data(cfg, spec)
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    if cfg.mode == "pet":  # Schick & Schuetze 2021: pattern models, ensemble, distillation
        return _finetune_pet(cfg, spec, tok, data, out)
    if spec.kind == "text2text":
        out.mkdir(parents=True, exist_ok=True)
        return _finetune_text2text(cfg, spec, tok, data.train, data.dev, data.bad, out)
    if cfg.label_as_text:  # text matching: (text, label text) pairs scored yes / no
        return _finetune_label_text(cfg, spec, tok, data, out)
    if cfg.verbalizer or cfg.plausibility:  # the LM head scores: the objective encodes the inputs
        model, obj, mode_cfg = build_task_model(cfg, spec, tok, data.labels, None)
        feats = encode_task_data(cfg, spec, tok, data, obj)
    else:
        feats = encode_task_data(cfg, spec, tok, data)
        model, obj, mode_cfg = build_task_model(cfg, spec, tok, data.labels, feats.target_scale)
    out.mkdir(parents=True, exist_ok=True)
    params = count_parameters(model)
    _log(f"mode {cfg.mode}: {params['trainable_params']:,} trainable of {params['total_params']:,} parameters")

    train_cfg = training_config(cfg, model, len(feats.train))
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    summary, history, train_time, train_cpu = train(cfg, spec, model, obj, tok, data, feats, train_cfg, logs)
    result: dict[str, Any] = {"task": spec.name, "mode": cfg.mode, **params,
                              **({"pooling": obj.pooling, "pooling_source": obj.pooling_source}
                                 if spec.kind in POOLED_KINDS else {}),
                              "train_examples": len(data.train), "dev_examples": len(data.dev),
                              "train_steps": summary["step"], "planned_steps": train_cfg.max_steps,
                              "interrupted": bool(summary.get("interrupted")),
                              **({"stop_signal": summary["signal"]} if summary.get("interrupted") else {}),
                              "train_time_s": round(train_time, 1), **_cpu_fields(train_cpu),
                              "precision": summary["precision"]}
    if cfg.early_exit:
        result.update(_train_off_ramps(cfg, model, obj, feats.train, train_cfg, logs, tok))

    t0 = time.perf_counter()
    outputs = run_model(model, obj, feats.dev, cfg.eval_batch_size)
    result["eval_time_s"] = round(time.perf_counter() - t0, 2)
    metrics = score(spec, data.labels, data.dev, feats.dev, outputs)
    history.append({**metrics, "step": train_cfg.max_steps})
    result.update(metrics)
    result["main_metric"] = spec.main_metric
    if cfg.early_exit:
        result["early_exit"] = early_exit_curve(model, obj, feats.dev, [f["label"] for f in feats.dev],
                                                cfg.exit_thresholds)
    result["truncated"] = feats.truncated
    result["skipped_bad_rows"] = data.bad.count
    if data.bad.count:
        result["skipped"] = data.bad.messages[:20]
    result["history"] = history
    if cfg.mode == "prefix-tuning":  # Li & Liang: the reparametrising MLP is dropped after training
        model.soft_prompt.drop_reparametrisation()
        mode_cfg.prefix_reparam = False
        result["saved_prompt_params"] = sum(p.numel() for p in model.soft_prompt.parameters())
    info = task_info(cfg, spec, tok, data, mode_cfg, obj.num_outputs, feats.target_scale, obj.pooling)
    if cfg.plausibility:
        info["plausibility"] = obj.info()
    if cfg.verbalizer:
        info["verbalizer"] = obj.info()
        result["verbalizer"] = {"source": cfg.verbalizer, "label_words": obj.template.verbalizer,
                                "answer_position": "mask token" if obj.masked else "after the pattern (causal LM)"}
    save_checkpoint(out, model, tok, info)
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result


def _seed_everything(seed: int) -> None:
    """Every RNG a fine-tuning run may touch, so a run's result does not depend on what ran before it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TaskData:
    """The examples of a run: train / dev (after subsetting and label checks), the labels, bad rows."""

    train: list
    dev: list
    labels: list[str]
    bad: BadRows
    train_path: Path


def read_task_data(cfg: FinetuneConfig, spec: TaskSpec) -> TaskData:
    """Train and dev examples of ``cfg.data``; dev rows with labels unseen in training are bad rows."""
    data = Path(cfg.data)
    if not data.exists():
        raise UserError(f"{data}: no such data file or directory")
    bad = BadRows(skip=cfg.skip_bad, encoding_errors=cfg.encoding_errors)
    train_path = resolve_file(data, cfg.train_file or spec.train_file, "training")
    dev_path = resolve_file(data, cfg.dev_file or spec.dev_file, "dev")
    train = check_known_labels(spec, read_split(spec, train_path, "train", bad), bad)
    dev = check_known_labels(spec, read_split(spec, dev_path, "dev", bad), bad)
    if not train:
        raise UserError(f"{train_path}: no training examples left ({bad.summary()})")
    train = subsample(train, cfg.max_train_examples, cfg.seed)
    dev = subsample(dev, cfg.max_eval_examples, cfg.seed)
    labels = label_list(spec, train)
    if spec.kind in ("classification", "multilabel"):
        dev = check_labels(dev, labels, bad)
    elif spec.kind == "token":
        dev = check_token_labels(dev, labels, bad)
    if bad.count:
        _log(bad.summary())
    return TaskData(train, dev, labels, bad, train_path)


@dataclass
class TaskFeatures:
    """Encoded train / dev features, the regression target scale (mean, std) and truncation counts."""

    train: list[dict]
    dev: list[dict]
    target_scale: tuple[float, float] | None = None
    truncated: dict[str, int] = field(default_factory=dict)


def encode_task_data(cfg: FinetuneConfig, spec: TaskSpec, tok, data: TaskData, obj=None) -> TaskFeatures:
    """Features of both splits; regression trains on standardised targets (predictions are mapped back).
    ``obj``: an objective with its own ``encode_examples`` (the verbalizer's pattern)."""
    t0 = time.perf_counter()
    if obj is not None and hasattr(obj, "encode_examples"):
        train_feats = obj.encode_examples(tok, data.train, data.labels, cfg.max_seq_len)
        dev_feats = obj.encode_examples(tok, data.dev, data.labels, cfg.max_seq_len)
    else:
        train_feats = encode(spec, tok, data.train, data.labels, cfg.max_seq_len, True, cfg.doc_stride)
        dev_feats = encode(spec, tok, data.dev, data.labels, cfg.max_seq_len, False, cfg.doc_stride)
    target_scale = None
    if spec.kind == "regression":
        ys = np.array([f["label"] for f in train_feats], dtype=np.float64)
        target_scale = (float(ys.mean()), float(ys.std() or 1.0))
    if cfg.language_id is not None:  # XLM: every token carries the language embedding of its language
        E.set_language(train_feats, cfg.language_id)
        E.set_language(dev_feats, cfg.language_id)
    truncated = {"train": sum(bool(f.get("truncated")) for f in train_feats),
                 "dev": sum(bool(f.get("truncated")) for f in dev_feats)}
    _log(f"{spec.name}: {len(data.train)} train / {len(data.dev)} dev examples -> {len(train_feats)} / "
         f"{len(dev_feats)} features (truncated at {cfg.max_seq_len}: {truncated['train']} train, "
         f"{truncated['dev']} dev); encoded in {time.perf_counter() - t0:.1f}s")
    return TaskFeatures(train_feats, dev_feats, target_scale, truncated)


def build_task_model(cfg: FinetuneConfig, spec: TaskSpec, tok, labels: list[str],
                     target_scale: tuple[float, float] | None):
    """The backbone with the task head, the adaptation mode applied and the regularisers attached.

    Returns ``(model, objective, mode_config)``. Early-exit off-ramps stay frozen here: they train in
    DeeBERT's stage 2 only.
    """
    import plmkit

    model = plmkit.load(cfg.model)
    num_outputs = NUM_OUTPUTS.get(spec.kind, len(labels))
    mode_cfg = ModeConfig(cfg.mode, cfg.adapter_size, cfg.pal_size, cfg.lora_rank, cfg.lora_alpha,
                          prompt_tokens=cfg.prompt_tokens, prompt_encoder=cfg.prompt_encoder,
                          prompt_hidden=cfg.prompt_hidden, prompt_init=cfg.prompt_init)
    if cfg.verbalizer:
        return _build_verbalizer_model(cfg, spec, tok, labels, model, mode_cfg)
    if cfg.plausibility:
        return _build_plausibility_model(cfg, spec, tok, model, mode_cfg)
    if cfg.prompt_init == "labels":
        raise UserError("--prompt-init labels initialises from the label words: give --verbalizer FILE.yaml")
    pooling, why = resolve_pooling(cfg.pooling, cfg.model, model)
    if spec.kind in POOLED_KINDS:
        _log(f"pooling {pooling} ({why})")
    obj = TaskObjective(spec.kind, num_outputs, tok, pooling=pooling, scalar_mix=cfg.mode == "features",
                        early_exit=cfg.early_exit, target_scale=target_scale)
    obj.pooling_source = why
    obj.prepare(model)
    recurrent_features(model, cfg.mode)
    if cfg.early_exit:  # keep the off-ramps out of stage 1 (apply_mode may unfreeze heads: freeze again)
        _freeze(model.heads["off_ramps"])
    apply_mode(model, mode_cfg)
    if cfg.early_exit:
        _freeze(model.heads["off_ramps"])
    if cfg.regularizer == "l2sp":
        obj.extra_terms.append(L2SP(model, cfg.reg_weight))
    elif cfg.regularizer == "ewc":
        obj.extra_terms.append(EWC(model, cfg.reg_weight, _fisher_from(cfg.ewc_from, model)))
    elif cfg.regularizer is not None:
        raise UserError(f"unknown regularizer {cfg.regularizer!r} (l2sp, ewc)")
    if cfg.self_distill > 0:
        obj.extra_terms.append(SelfDistillation(model, obj, cfg.self_distill, every=cfg.distill_every))
    return model, obj, mode_cfg


def _build_verbalizer_model(cfg: FinetuneConfig, spec: TaskSpec, tok, labels: list[str], model, mode_cfg):
    """``--verbalizer``: no task head; the LM / MLM head's label-word log-probabilities are the class scores."""
    from plmkit.prompting.verbalizer import VerbalizerObjective, load_verbalizer

    if spec.kind != "classification":
        raise UserError(f"--verbalizer scores label words: it needs a classification task, not {spec.kind}")
    for bad, on in (("--mode features", cfg.mode == "features"), ("--early-exit", cfg.early_exit),
                    ("--self-distill", cfg.self_distill > 0), ("--regularizer ewc", cfg.regularizer == "ewc")):
        if on:
            raise UserError(f"--verbalizer does not combine with {bad} (they need a classification head)")
    head = getattr(model.config, "head", None)
    if head not in ("lm", "mlm") or getattr(model, "head", None) is None:
        raise UserError(f"{cfg.model}: --verbalizer needs a model with its LM or MLM head (config.head lm / mlm), "
                        f"this one has {head!r}")
    template = load_verbalizer(cfg.verbalizer, labels, spec.text_pair_column is not None)
    obj = VerbalizerObjective(template, tok, labels, masked=head == "mlm")
    obj.prepare(model)
    apply_mode(model, mode_cfg, label_token_ids=obj.label_token_ids)
    if cfg.regularizer == "l2sp":
        obj.extra_terms.append(L2SP(model, cfg.reg_weight))
    _log(f"verbalizer {template.name}: label words {template.verbalizer} scored at the "
         f"{'mask' if obj.masked else 'next-token'} position")
    return model, obj, mode_cfg


def _build_plausibility_model(cfg: FinetuneConfig, spec: TaskSpec, tok, model, mode_cfg):
    """``--plausibility``: no task head; the MLM head scores S(context | choice) (plmkit.tasks.plausibility)."""
    from plmkit.tasks.plausibility import PlausibilityObjective

    if spec.kind != "multiple_choice":
        raise UserError(f"--plausibility scores the choices of a multiple-choice task (--task multiple-choice), "
                        f"not a {spec.kind} task")
    for bad, on in (("--mode other than full", cfg.mode != "full"), ("--early-exit", cfg.early_exit),
                    ("--self-distill", cfg.self_distill > 0), ("--regularizer", cfg.regularizer)):
        if on:
            raise UserError(f"--plausibility does not combine with {bad}")
    obj = PlausibilityObjective(tok, cfg.plausibility_margin)
    obj.prepare(model)
    apply_mode(model, mode_cfg)
    _log(f"plausibility: S(context | choice) from the MLM head, margin {cfg.plausibility_margin}")
    return model, obj, mode_cfg


def _freeze(module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def training_config(cfg: FinetuneConfig, model, num_train_features: int) -> TrainConfig:
    """Linear warm-up and decay over ``epochs``; ULMFiT: slanted triangular LR, layer-wise LR decay 1/2.6 and
    gradual unfreezing over the model's layer groups. ``head_lr`` gives the top group its own peak LR."""
    max_steps = max(1, round(cfg.epochs * _steps_per_epoch(cfg, num_train_features)))
    tc = dict(max_steps=max_steps, batch_size=cfg.batch_size, lr=cfg.lr, head_lr=cfg.head_lr,
              weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup * max_steps), schedule="linear",
              seed=cfg.seed, log_every=10, eval_every=0, save_every=0, tensorboard=False, plots=False,
              progress=cfg.progress, device="auto", precision=cfg.precision)
    if cfg.mode == "ulmfit":
        groups = model.num_layers + 2
        tc.update(schedule="slanted_triangular", warmup_steps=0, layer_lr_decay=1 / 2.6,
                  unfreeze_every=max(1, max_steps // (2 * groups)))
    return TrainConfig(**tc)


def _steps_per_epoch(cfg: FinetuneConfig, num_train_features: int) -> int:
    return math.ceil(num_train_features / cfg.batch_size)


def train(cfg: FinetuneConfig, spec: TaskSpec, model, obj, tok, data: TaskData, feats: TaskFeatures,
          train_cfg: TrainConfig, logs: Path) -> tuple[dict, list[dict], float, float]:
    """The Trainer over the task features, scoring dev after every epoch but the last (``eval_each_epoch``).

    Returns the Trainer's summary, the per-epoch dev history, wall and CPU seconds of training.
    """
    from plmkit.training.callbacks import FunctionCallback, JsonlLogger
    from plmkit.training.trainer import Trainer

    steps_per_epoch = _steps_per_epoch(cfg, len(feats.train))
    max_steps = train_cfg.max_steps
    history: list[dict] = []

    def dev_eval(trainer, step):
        if cfg.eval_each_epoch and step % steps_per_epoch == 0 and step < max_steps:
            res = score(spec, data.labels, data.dev, feats.dev, run_model(model, obj, feats.dev, cfg.eval_batch_size))
            res["step"] = step
            history.append(res)
            _log(f"step {step}: dev {json.dumps({k: round(v, 4) for k, v in res.items()})}")
            model.train()

    trainer = Trainer(model, obj, feats.train, train_cfg, out_dir=None, tokenizer=tok,
                      callbacks=[JsonlLogger(logs), FunctionCallback("on_step_end", dev_eval)])
    trainer.name = "fine-tuning"
    _log(trainer.precision_note)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = trainer.fit()
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    if summary.get("interrupted"):  # SIGTERM / Ctrl-C: the Trainer stopped after a step; evaluate what we have
        _log(f"training interrupted at step {summary['step']} of {max_steps}; evaluating the model as it is")
    return summary, history, train_time, train_cpu


def task_info(cfg: FinetuneConfig, spec: TaskSpec, tok, data: TaskData, mode_cfg: ModeConfig, num_outputs: int,
              target_scale, pooling: str | None = None) -> dict[str, Any]:
    """What ``task.json`` records: enough to rebuild the model and read the task's data again
    (``pooling``: the head's resolved pooling, never "auto"; ``config`` keeps the options as given)."""
    return {"task": spec.name, "kind": spec.kind, "labels": data.labels, "num_outputs": num_outputs,
            "mode": cfg.mode, "mode_config": asdict(mode_cfg), "pooling": pooling or cfg.pooling,
            "base_model": str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model,
            "max_seq_len": cfg.max_seq_len, "doc_stride": cfg.doc_stride, "pad_id": E.special_ids(tok).pad,
            "early_exit": cfg.early_exit, "regularizer": cfg.regularizer, "target_scale": target_scale, "spec": {
                "text_column": spec.text_column, "text_pair_column": spec.text_pair_column,
                "label_column": spec.label_column, "header": spec.header,
                "strip_digit_suffix": spec.strip_digit_suffix},
            "train_data": str(data.train_path.resolve()), "config": asdict(cfg)}


def _finetune_text2text(cfg: FinetuneConfig, spec: TaskSpec, tok, train, dev, bad: BadRows, out: Path) -> dict:
    """Encoder-decoder fine-tuning with targets as text; greedy generation scored against the gold text."""
    import plmkit
    from plmkit.config import TrainConfig
    import plmkit.tasks.text2text as T2T
    from plmkit.training.trainer import Trainer
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
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps(metrics)}; wrote {out / 'eval.json'} and the model to {out / 'model'}")
    return result


def _finetune_label_text(cfg: FinetuneConfig, spec: TaskSpec, tok, data: TaskData, out: Path) -> dict[str, Any]:
    """``--label-as-text``: classification as text matching (``plmkit.tasks.labeltext``): each example becomes
    one (text, label text) pair per label, a yes / no head is trained on them, and the predicted label is the
    one whose pair has the highest yes probability; eval.json holds the task's usual metrics."""
    import plmkit.tasks.labeltext as LT

    if spec.kind != "classification":
        raise UserError(f"--label-as-text scores (text, label) pairs: it needs a classification task, not {spec.kind}")
    for flag, on in (("--verbalizer", bool(cfg.verbalizer)), ("--early-exit", cfg.early_exit)):
        if on:
            raise UserError(f"--label-as-text does not combine with {flag}")
    texts = LT.load_label_texts(cfg.label_as_text, data.labels)
    yes_no = ["0", "1"]
    pairs = TaskData(LT.expand(data.train, data.labels, texts), LT.expand(data.dev, data.labels, texts), yes_no,
                     data.bad, data.train_path)
    cfg_run = replace(cfg, eval_each_epoch=False)  # dev is scored per example at the end, not per pair
    feats = encode_task_data(cfg_run, spec, tok, pairs)
    model, obj, mode_cfg = build_task_model(cfg_run, spec, tok, yes_no, None)
    out.mkdir(parents=True, exist_ok=True)
    params = count_parameters(model)
    train_cfg = training_config(cfg_run, model, len(feats.train))
    (out / "logs").mkdir(exist_ok=True)
    summary, _, train_time, train_cpu = train(cfg_run, spec, model, obj, tok, pairs, feats, train_cfg, out / "logs")
    t0 = time.perf_counter()
    yes = LT.label_scores(softmax(np.stack(run_model(model, obj, feats.dev, cfg.eval_batch_size))), len(data.labels))
    eval_time = time.perf_counter() - t0
    index = {lab: i for i, lab in enumerate(data.labels)}
    metrics = score(spec, data.labels, data.dev, [{"label": index[e.label]} for e in data.dev], list(yes))
    result: dict[str, Any] = {"task": spec.name, "mode": cfg.mode, "label_as_text": texts, **params,
                              "train_examples": len(data.train), "dev_examples": len(data.dev),
                              "train_pairs": len(feats.train), "dev_pairs": len(feats.dev),
                              "train_steps": summary["step"], "planned_steps": train_cfg.max_steps,
                              "train_time_s": round(train_time, 1), **_cpu_fields(train_cpu),
                              "eval_time_s": round(eval_time, 2), **metrics, "main_metric": spec.main_metric,
                              "truncated": feats.truncated, "skipped_bad_rows": data.bad.count}
    info = task_info(cfg, spec, tok, pairs, mode_cfg, obj.num_outputs, None, obj.pooling)
    info.update(label_as_text=texts, task_labels=data.labels)
    save_checkpoint(out, model, tok, info)
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result


def _finetune_absa(cfg: FinetuneConfig, spec: TaskSpec, out: Path) -> dict[str, Any]:
    """ABSA via auxiliary sentences (``plmkit.tasks.absa``): --max-train-examples / --max-eval-examples count
    sentences; ``single`` trains one model per (target, aspect) (checkpoints in OUT/<target>_<aspect>/), the
    other formats one model (OUT/). eval.json holds the paper's metrics on the dev file's instances."""
    import plmkit
    import plmkit.tasks.absa as A

    if cfg.verbalizer or cfg.mode == "pet" or cfg.early_exit:
        raise UserError(f"--task {spec.name} trains a classification head: it does not combine with "
                        "--verbalizer, --mode pet or --early-exit")
    ds = A.dataset(spec.extra["absa"])
    fmt = cfg.absa_format
    data_dir = Path(cfg.data)
    if not data_dir.exists():
        raise UserError(f"{data_dir}: no such data file or directory")
    bad = BadRows(skip=cfg.skip_bad, encoding_errors=cfg.encoding_errors)
    train_path = resolve_file(data_dir, cfg.train_file or spec.train_file, "training")
    dev_path = resolve_file(data_dir, cfg.dev_file or spec.dev_file, "dev")
    train_inst = A.subsample_sentences(A.read_instances(ds.name, train_path, bad), cfg.max_train_examples, cfg.seed)
    dev_inst = A.subsample_sentences(A.read_instances(ds.name, dev_path, bad), cfg.max_eval_examples, cfg.seed)
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    labels = A.model_labels(ds, fmt)
    cfg_run = replace(cfg, eval_each_epoch=False)  # the ABSA metrics need every group's outputs: scored at the end
    out.mkdir(parents=True, exist_ok=True)
    scores = np.zeros((len(dev_inst), len(ds.labels)))
    runs, t_train, c_train, t_eval = [], 0.0, 0.0, 0.0
    groups = A.groups(train_inst, fmt)
    for g in groups:
        _seed_everything(cfg.seed)
        tr = [i for i in train_inst if A.in_group(i, g)]
        dev_idx = [n for n, i in enumerate(dev_inst) if A.in_group(i, g)]
        if not tr or not dev_idx:
            raise UserError(f"{spec.name}: no {'training' if not tr else 'dev'} instances for {g} "
                            "(raise --max-train-examples / --max-eval-examples)")
        dv = [dev_inst[n] for n in dev_idx]
        data = TaskData(A.build_examples(tr, fmt, ds), A.build_examples(dv, fmt, ds), labels, bad, train_path)
        feats = encode_task_data(cfg_run, spec, tok, data)
        model, obj, mode_cfg = build_task_model(cfg_run, spec, tok, labels, None)
        train_cfg = training_config(cfg_run, model, len(feats.train))
        sub = out if g == (None, None) else out / f"{g[0] or 'all'}_{g[1]}".replace("/", "-")
        (sub / "logs").mkdir(parents=True, exist_ok=True)
        summary, _, tt, ct = train(cfg_run, spec, model, obj, tok, data, feats, train_cfg, sub / "logs")
        t0 = time.perf_counter()
        probs = softmax(np.stack(run_model(model, obj, feats.dev, cfg.eval_batch_size)))
        t_eval += time.perf_counter() - t0
        scores[dev_idx] = A.instance_scores(fmt, ds, probs)
        t_train, c_train = t_train + tt, c_train + ct
        runs.append({"group": list(g), "train_rows": len(feats.train), "dev_rows": len(feats.dev),
                     "train_steps": summary["step"], "truncated": feats.truncated})
        info = task_info(cfg, spec, tok, data, mode_cfg, obj.num_outputs, None, obj.pooling)
        info.update(absa_format=fmt, absa_group=list(g))
        save_checkpoint(sub, model, tok, info)
    metrics = A.absa_metrics(ds, dev_inst, scores)
    n_sent = len({i.source for i in train_inst}), len({i.source for i in dev_inst})
    result: dict[str, Any] = {"task": spec.name, "absa_format": fmt, "mode": cfg.mode,
                              **count_parameters(model), "models": len(groups),
                              "train_sentences": n_sent[0], "dev_sentences": n_sent[1],
                              "train_examples": len(train_inst), "dev_examples": len(dev_inst),
                              "dev_file": str(dev_path), "runs": runs, "train_time_s": round(t_train, 1),
                              **_cpu_fields(c_train), "eval_time_s": round(t_eval, 2), **metrics,
                              "main_metric": spec.main_metric, "skipped_bad_rows": bad.count}
    if bad.count:
        result["skipped"] = bad.messages[:20]
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result


def _finetune_pet(cfg: FinetuneConfig, spec: TaskSpec, tok, data: TaskData, out: Path) -> dict[str, Any]:
    """``--mode pet`` (:mod:`plmkit.prompting.pet`): a model per pattern in ``cfg.verbalizer``, the ensemble's
    soft labels on the unlabelled examples, distillation into one classifier; writes ``out``."""
    import copy

    import plmkit
    from plmkit.prompting.pet import PETObjective, SoftTargetObjective, soft_labels
    from plmkit.prompting.templates import load_templates

    if spec.kind != "classification":
        raise UserError(f"--mode pet classifies with label words: it needs a classification task, not {spec.kind}")
    if not cfg.verbalizer:
        raise UserError("--mode pet needs --verbalizer FILE.yaml or a directory of pattern-verbalizer pairs")
    if not cfg.unlabelled:
        raise UserError("--mode pet needs --unlabelled FILE (unlabelled examples in the task's format: the soft "
                        "labels of the pattern ensemble are computed on them and the final model learns from them)")
    pair = spec.text_pair_column is not None
    patterns = load_templates([cfg.verbalizer], labels=tuple(data.labels), pair=pair, allow_mask=True)
    base = plmkit.load(cfg.model)
    if getattr(base.config, "head", None) != "mlm" or getattr(base, "head", None) is None:
        raise UserError(f"{cfg.model}: --mode pet needs a masked LM with its MLM head (config.head 'mlm'), "
                        f"this model has {getattr(base.config, 'head', None)!r}")
    upath = Path(cfg.unlabelled)
    if not upath.is_file():
        raise UserError(f"--unlabelled {upath}: no such file")
    unl = subsample(read_split(spec, upath, "train", labelled=False), cfg.max_unlabelled, cfg.seed)
    if not unl:
        raise UserError(f"--unlabelled {upath}: no examples")
    unl_ids = [f["input_ids"] for f in encode(spec, tok, unl, None, cfg.max_seq_len, False, cfg.doc_stride)]
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    per_pattern, dev_scores, unl_scores = [], [], []
    for i, t in enumerate(patterns):
        _seed_everything(cfg.seed + i)
        model = copy.deepcopy(base)
        obj = PETObjective(t, tok, data.labels, cfg.pet_alpha, unl_ids, cfg.batch_size, cfg.seed + i)
        obj.prepare(model)
        for p in model.parameters():
            p.requires_grad_(True)
        tr = obj.encode_examples(tok, data.train, data.labels, cfg.max_seq_len)
        dv = obj.encode_examples(tok, data.dev, data.labels, cfg.max_seq_len)
        ul = obj.encode_examples(tok, unl, None, cfg.max_seq_len, labelled=False)
        (logs / t.name).mkdir(exist_ok=True)
        summary, _, train_s, cpu_s = train(cfg, spec, model, obj, tok, data, TaskFeatures(tr, dv),
                                           training_config(cfg, model, len(tr)), logs / t.name)
        dev_out = run_model(model, obj, dv, cfg.eval_batch_size)
        m = score(spec, data.labels, data.dev, dv, dev_out)
        dev_scores.append(np.stack(dev_out))
        unl_scores.append(np.stack(run_model(model, obj, ul, cfg.eval_batch_size)))
        per_pattern.append({"pattern": t.name, "source": t.source, "label_words": t.verbalizer, **m,
                            "train_steps": summary["step"], "train_time_s": round(train_s, 1)})
        _log(f"pet: pattern {t.name}: dev {json.dumps({k: round(v, 4) for k, v in m.items()})}")
        del model
    ens_dev, _ = soft_labels(dev_scores, cfg.pet_temperature)
    ensemble = score(spec, data.labels, data.dev, dv, list(ens_dev))
    _, soft = soft_labels(unl_scores, cfg.pet_temperature)
    _log(f"pet: ensemble of {len(patterns)} patterns: dev {json.dumps({k: round(v, 4) for k, v in ensemble.items()})}; "
         f"distilling on {len(unl)} unlabelled examples")

    # distillation into one classifier with an ordinary head
    _seed_everything(cfg.seed)
    model = base
    pooling, why = resolve_pooling(cfg.pooling, cfg.model, model)
    obj = SoftTargetObjective("classification", len(data.labels), tok, pooling=pooling)
    obj.pooling_source = why
    obj.prepare(model)
    for p in model.parameters():
        p.requires_grad_(True)
    feats_u = encode(spec, tok, unl, None, cfg.max_seq_len, False, cfg.doc_stride)
    for f, q in zip(feats_u, soft):
        f["soft"] = q
    dev_feats = encode(spec, tok, data.dev, data.labels, cfg.max_seq_len, False, cfg.doc_stride)
    (logs / "distill").mkdir(exist_ok=True)
    summary, history, train_s, _ = train(cfg, spec, model, obj, tok, data, TaskFeatures(feats_u, dev_feats),
                                         training_config(cfg, model, len(feats_u)), logs / "distill")
    metrics = score(spec, data.labels, data.dev, dev_feats, run_model(model, obj, dev_feats, cfg.eval_batch_size))
    result = {"task": spec.name, "mode": "pet", **count_parameters(model), **metrics, "main_metric": spec.main_metric,
              "train_examples": len(data.train), "dev_examples": len(data.dev), "unlabelled_examples": len(unl),
              "pet": {"alpha": cfg.pet_alpha, "temperature": cfg.pet_temperature,
                      "loss": "(1 - alpha) * CE(verbalizer log-probabilities at the mask) + alpha * MLM loss on "
                              "unlabelled text (15% masked, 80/10/10)",
                      "ensemble": "uniform mean of the pattern models' verbalizer scores; soft labels "
                                  "softmax(mean / T) on the unlabelled examples",
                      "patterns": per_pattern, "ensemble_dev": ensemble,
                      "distilled": "classification head on the MLM, trained on the soft labels (soft-target CE)"},
              "train_steps": summary["step"], "train_time_s": round(time.perf_counter() - t_start, 1),
              **_cpu_fields(time.process_time() - c_start), "history": history,
              "skipped_bad_rows": data.bad.count}
    info = task_info(cfg, spec, tok, data, ModeConfig("full"), len(data.labels), None, obj.pooling)
    info["mode"] = "full"  # the distilled classifier is an ordinary fully fine-tuned checkpoint
    info["pet"] = {"patterns": [t.source for t in patterns], "alpha": cfg.pet_alpha}
    save_checkpoint(out, model, tok, info)
    write_json_atomic(out / "eval.json", result)
    _log(f"pet: distilled model dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result


def _train_off_ramps(cfg, model, obj, train_feats, train_cfg, logs, tok) -> dict:
    """DeeBERT stage 2: freeze everything, train only the off-ramps for as many epochs as stage 1, at the
    head learning rate (``--head-lr``, default 1e-3: the ramps are fresh classifiers on frozen features)."""
    from dataclasses import replace

    from plmkit.training.trainer import Trainer
    from plmkit.training.callbacks import JsonlLogger

    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.heads["off_ramps"].parameters():
        p.requires_grad_(True)
    obj.ramps_only = True
    steps = max(train_cfg.max_steps, math.ceil(len(train_feats) / cfg.batch_size))  # stage 1's, >= one epoch
    rc = replace(train_cfg, max_steps=steps, lr=cfg.head_lr or 1e-3, head_lr=None, schedule="linear",
                 layer_lr_decay=1.0, unfreeze_every=0, warmup_steps=0)
    (logs / "ramps").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    Trainer(model, obj, train_feats, rc, callbacks=[JsonlLogger(logs / "ramps")], out_dir=None, tokenizer=tok).fit()
    obj.ramps_only = False
    return {"ramp_params": sum(p.numel() for p in model.heads["off_ramps"].parameters()),
            "ramp_train_time_s": round(time.perf_counter() - t0, 1)}


def _fisher_from(path: str | None, model) -> dict[str, torch.Tensor]:
    """EWC Fisher of a previous task: rebuild that checkpoint and its training data, average squared grads."""
    if path is None:
        raise UserError("--regularizer ewc needs --ewc-from CHECKPOINT (a previous fine-tuning output)")
    prev_model, prev_obj, info, tok = load_checkpoint(path)
    spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    train = read_split(spec, Path(info["train_data"]), "train")
    train = subsample(train, 512, 0)
    feats = encode(spec, tok, train, info["labels"], info["max_seq_len"], True, info["doc_stride"])
    prev_obj.pad_id = info["pad_id"]
    batches = (prev_obj.make_batch(feats[i : i + 16]) for i in range(0, len(feats), 16))
    fisher = diagonal_fisher(prev_model, prev_obj, batches, max_batches=32)
    names = dict(model.named_parameters())
    out = {n: f for n, f in fisher.items() if n in names and names[n].shape == f.shape}
    # normalise so reg_weight has a comparable scale across tasks
    mean = torch.cat([f.flatten() for f in out.values()]).mean().clamp_min(1e-12)
    return {n: f / mean for n, f in out.items()}
