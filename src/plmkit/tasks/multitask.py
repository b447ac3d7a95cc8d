"""MT-DNN multi-task fine-tuning (Liu et al. 2019, "Multi-Task Deep Neural Networks for Natural Language
Understanding") and its knowledge-distilled variant MT-DNN-KD (Liu et al. 2019b, arXiv:1904.09482).

``plm finetune --multi-task --tasks sst2,cola,mrpc,rte,stsb --data GLUE_DIR ...`` runs
:func:`finetune_multitask`:

1. every task's data is read and encoded exactly as a single-task run would (``plmkit.tasks.finetuning``);
   ``--data`` holds one folder per task (:func:`task_data_dir`);
2. one backbone (the shared encoder) gets one head per task, ``model.heads["task_<name>"]``
   (:class:`plmkit.tasks.objective.TaskObjective` with its own ``head_name``);
3. :func:`mixed_task_batches` cuts each task's training set into batches of ``--batch-size`` examples of
   that task only and shuffles all tasks' batches together (MT-DNN's Algorithm 1): a task's share of the
   batches is its share of the training data. The project's :class:`plmkit.training.Trainer` consumes these
   batches one per step (its cursor reshuffles the batch order every epoch; the batches themselves are
   drawn once, seeded);
4. with ``--teachers``, each task's teacher checkpoints (single-task ``plm finetune`` outputs, e.g. one per
   seed) are run over that task's training examples and averaged into soft targets (classes: the mean of
   the teachers' softmax probabilities; regression: the mean prediction); the loss on such a task is
   ``(1 - alpha) * gold loss + alpha * distillation loss`` (:func:`distillation_loss`: cross-entropy with
   the soft targets, or squared error to the mean prediction in the standardised units the head predicts);
5. optionally (``--task-epochs``) a copy of the shared model is fine-tuned on each task alone (MT-DNN's
   second stage);
6. each task's model is written as an ordinary single-task checkpoint ``OUT/<task>/`` (its head renamed to
   ``task``: ``plm predict`` / ``plm evaluate`` read it) and ``OUT/eval.json`` holds every task's dev metrics.

The budget of a multi-task run is the sum of its tasks' single-task budgets: ``--epochs E`` takes
``E x (number of batches)`` steps, the total of E epochs of each task alone at the same batch size.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.errors import UserError
from plmkit.tasks.objective import HEAD_NAME, TaskObjective

# Folder names of the GLUE release (as in ../shared/data/glue) per task name.
GLUE_DIRS = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "stsb": "STS-B", "qnli": "QNLI",
             "qqp": "QQP", "mnli": "MNLI", "wnli": "WNLI"}


def head_name(task: str) -> str:
    """The task's key in ``model.heads`` during multi-task training."""
    return f"task_{task}"


def task_data_dir(root: Path, task: str) -> Path:
    """The data folder of ``task`` under a multi-task ``--data`` root: GLUE's folder name, else the task name."""
    for name in (GLUE_DIRS.get(task), task):
        if name and (root / name).is_dir():
            return root / name
    want = " or ".join(repr(n) for n in (GLUE_DIRS.get(task), task) if n)
    raise UserError(f"--data {root}: no folder for task {task} (expected a sub-folder named {want})")


def mixed_task_batches(sizes: dict[str, int], batch_size: int, seed: int) -> list[tuple[str, list[int]]]:
    """MT-DNN's mini-batches: each task's examples shuffled and cut into batches of ``batch_size`` (the last one
    of a task may be smaller), then all tasks' batches shuffled together. Returns ``(task, example indices)``
    per batch; each task contributes ``ceil(n_task / batch_size)`` batches, so a batch comes from a task with
    probability proportional to the task's size."""
    rng = random.Random(seed)
    batches: list[tuple[str, list[int]]] = []
    for task, n in sizes.items():
        idx = list(range(n))
        rng.shuffle(idx)
        batches += [(task, idx[i:i + batch_size]) for i in range(0, n, batch_size)]
    rng.shuffle(batches)
    return batches


def distillation_loss(kind: str, logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The student's loss on the teachers' soft targets. Classification: ``-sum_c q_c log softmax(z)_c``,
    mean over the batch (q: the teachers' mean probabilities, (B, C)); regression: the mean squared error
    between the prediction (B, 1) and the teachers' mean prediction (B,), both in standardised units."""
    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), soft.float())
    if kind != "classification":
        raise UserError(f"distillation from teachers supports classification and regression tasks, not {kind}")
    return -(soft.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


class MultiTaskObjective:
    """The Trainer's objective over single-task batches: each record is ``{"task": name, "features": [...]}``
    (one batch); ``make_batch`` builds it with that task's :class:`TaskObjective` and ``loss`` uses that
    task's head. Features with ``"soft"`` (teachers' targets) add the distillation term."""

    example_kind = "task_batch"
    name = "multitask"

    def __init__(self, objectives: dict[str, TaskObjective], distill_alpha: float = 0.5):
        self.objectives = objectives
        self.distill_alpha = distill_alpha

    def prepare(self, model) -> None:
        for obj in self.objectives.values():
            obj.prepare(model)

    def make_batch(self, records: list[dict]) -> dict[str, Any]:
        if len(records) != 1:
            raise ValueError("MultiTaskObjective takes one pre-formed batch per step (Trainer batch_size 1)")
        task, feats = records[0]["task"], records[0]["features"]
        obj = self.objectives[task]
        batch = obj.make_batch([{k: v for k, v in f.items() if k != "soft"} for f in feats])
        if "soft" in feats[0]:
            batch["soft"] = torch.tensor(np.array([f["soft"] for f in feats]), dtype=torch.float)
        batch["task"] = task
        return batch

    def loss(self, model, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        task = batch["task"]
        obj = self.objectives[task]
        if "soft" not in batch:
            loss, metrics = obj.loss(model, batch)
            return loss, {**metrics, f"{task}_loss": float(loss.detach())}
        _, logits = obj.forward(model, batch)
        gold = obj.task_loss(logits, batch)
        soft = distillation_loss(obj.kind, logits, batch["soft"].to(logits.device))
        a = self.distill_alpha
        loss = (1 - a) * gold + a * soft
        return loss, {"task_loss": float(gold.detach()), "distill_loss": float(soft.detach()),
                      f"{task}_loss": float(loss.detach())}


def teacher_targets(teachers: list[str], task: str, spec, labels: list[str], feats: list[dict],
                    target_scale, batch_size: int) -> np.ndarray:
    """The averaged soft targets of ``task``'s teacher checkpoints on ``feats`` (the student's encoding):
    (N, C) mean softmax probabilities, or (N,) mean predictions standardised with the student's
    ``target_scale``."""
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.inference import run_model

    outs = []
    for path in teachers:
        model, obj, info, _ = load_checkpoint(path)
        if list(info["labels"]) != list(labels):
            raise UserError(f"--teachers {path}: its labels {info['labels']} differ from the {task} training "
                            f"labels {labels}")
        obj.pad_id = info["pad_id"]
        raw = run_model(model, obj, feats, batch_size)
        if spec.kind == "regression":
            mean, std = target_scale
            outs.append((np.array(raw, dtype=np.float64) - mean) / std)
        else:
            z = np.stack(raw).astype(np.float64)
            z = np.exp(z - z.max(-1, keepdims=True))
            outs.append(z / z.sum(-1, keepdims=True))
        del model
    return np.mean(np.stack(outs), axis=0)


def _teachers_by_task(paths: tuple[str, ...], tasks: list[str]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for p in paths:
        info_path = Path(p) / "task.json"
        if not info_path.is_file():
            raise UserError(f"--teachers {p}: not a plm finetune checkpoint (no task.json)")
        task = json.loads(info_path.read_text(encoding="utf-8"))["task"]
        if task not in tasks:
            raise UserError(f"--teachers {p}: a {task} model, but --tasks is {','.join(tasks)}")
        by.setdefault(task, []).append(p)
    return by


def _check_options(cfg) -> list[str]:
    if not cfg.tasks:
        raise UserError("--multi-task needs --tasks NAME,NAME,... (e.g. sst2,cola,mrpc,rte,stsb)")
    tasks = list(cfg.tasks)
    if len(set(tasks)) != len(tasks):
        raise UserError(f"--tasks {','.join(tasks)}: a task is named twice")
    for bad, on in (("--mode other than full", cfg.mode != "full"), ("--verbalizer", cfg.verbalizer),
                    ("--early-exit", cfg.early_exit), ("--regularizer", cfg.regularizer),
                    ("--self-distill", cfg.self_distill > 0), ("--train-file", cfg.train_file),
                    ("--dev-file", cfg.dev_file), ("--active-learning", cfg.active_learning)):
        if on:
            raise UserError(f"--multi-task does not combine with {bad} (MT-DNN fine-tunes all weights of one "
                            f"shared encoder on the tasks' own files)")
    return tasks


def finetune_multitask(cfg) -> dict[str, Any]:
    """MT-DNN (see the module docstring); returns the eval.json dict."""
    import plmkit
    from plmkit.tasks.checkpoint import save_checkpoint, write_json_atomic
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.finetuning import (NUM_OUTPUTS, _cpu_fields, _log, _seed_everything,
                                         encode_task_data, read_task_data, task_info, training_config)
    from plmkit.tasks.modes import ModeConfig, count_parameters
    from plmkit.tasks.pooling import resolve_pooling

    tasks = _check_options(cfg)
    _seed_everything(cfg.seed)
    root, out = Path(cfg.data), Path(cfg.out)
    if not root.is_dir():
        raise UserError(f"--data {root}: expected a folder with one sub-folder per task of --tasks")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    teachers = _teachers_by_task(cfg.teachers, tasks) if cfg.teachers else {}
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    cfgs, specs, data, feats = {}, {}, {}, {}
    for t in tasks:
        cfgs[t] = replace(cfg, task=t, data=str(task_data_dir(root, t)), tasks=None, multi_task=False)
        specs[t] = task_spec(cfgs[t])
        if specs[t].kind not in ("classification", "regression"):
            raise UserError(f"--tasks: {t} is a {specs[t].kind} task; MT-DNN here takes classification and "
                            f"regression tasks (one pooled head each)")
        data[t] = read_task_data(cfgs[t], specs[t])
        feats[t] = encode_task_data(cfgs[t], specs[t], tok, data[t])

    model = plmkit.load(cfg.model)
    pooling, why = resolve_pooling(cfg.pooling, cfg.model, model)
    _log(f"pooling {pooling} ({why}); one head per task: {', '.join(head_name(t) for t in tasks)}")
    objs = {t: TaskObjective(specs[t].kind, NUM_OUTPUTS.get(specs[t].kind, len(data[t].labels)), tok,
                             pooling=pooling, target_scale=feats[t].target_scale, head_name=head_name(t))
            for t in tasks}
    mt = MultiTaskObjective(objs, cfg.distill_alpha)
    mt.prepare(model)
    for p in model.parameters():
        p.requires_grad_(True)

    distill: dict[str, Any] = {}
    for t, paths in teachers.items():
        soft = teacher_targets(paths, t, specs[t], data[t].labels, feats[t].train, feats[t].target_scale,
                               cfg.eval_batch_size)
        for f, q in zip(feats[t].train, soft):
            f["soft"] = q
        distill[t] = {"teachers": paths}
        _log(f"{t}: soft targets from {len(paths)} teacher(s)")

    sizes = {t: len(feats[t].train) for t in tasks}
    batches = mixed_task_batches(sizes, cfg.batch_size, cfg.seed)
    records = [{"task": t, "features": [feats[t].train[i] for i in idx]} for t, idx in batches]
    steps = max(1, round(cfg.epochs * len(records)))
    base_tc = training_config(cfg, model, 1)
    tc = replace(base_tc, batch_size=1, max_steps=steps, warmup_steps=int(cfg.warmup * steps))
    share = {t: sum(1 for b, _ in batches if b == t) for t in tasks}
    _log(f"multi-task: {len(records)} batches per epoch ({', '.join(f'{t} {n}' for t, n in share.items())}); "
         f"{steps} steps")

    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    params = count_parameters(model)
    history: list[dict] = []

    def evaluate_all(m, step) -> dict[str, dict]:
        res = {t: _dev_scores(m, objs[t], specs[t], data[t], feats[t], cfg.eval_batch_size) for t in tasks}
        history.append({"step": step, **{t: r for t, r in res.items()}})
        m.train()
        return res

    from plmkit.training.callbacks import FunctionCallback, JsonlLogger
    from plmkit.training.trainer import Trainer

    def epoch_eval(trainer, step):
        if cfg.eval_each_epoch and step % len(records) == 0 and step < steps:
            res = evaluate_all(model, step)
            _log(f"step {step}: dev {json.dumps({t: round(r[specs[t].main_metric], 4) for t, r in res.items()})}")

    trainer = Trainer(model, mt, records, tc, out_dir=None, tokenizer=tok,
                      callbacks=[JsonlLogger(out / "logs"), FunctionCallback("on_step_end", epoch_eval)])
    trainer.name = "multi-task fine-tuning"
    t0, c0 = time.perf_counter(), time.process_time()
    summary = trainer.fit()
    train_time, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    final = evaluate_all(model, summary["step"])

    per_task: dict[str, dict] = {}
    for t in tasks:
        entry: dict[str, Any] = {"train_examples": len(data[t].train), "dev_examples": len(data[t].dev),
                                 "batches_per_epoch": share[t], "main_metric": specs[t].main_metric,
                                 "multi_task": final[t]}
        task_model, task_obj = _single_task_copy(model, objs[t])
        if cfg.task_epochs > 0:  # MT-DNN stage 2: this task alone, from the shared model
            entry["task_finetuned"], entry["task_finetune_steps"] = _task_finetune(
                cfgs[t], specs[t], task_model, task_obj, tok, data[t], feats[t], out / "logs" / t)
        entry.update(entry.get("task_finetuned", final[t]))
        per_task[t] = entry
        info = task_info(cfgs[t], specs[t], tok, data[t], ModeConfig("full"), task_obj.num_outputs,
                         feats[t].target_scale, pooling)
        info["multi_task"] = {"tasks": tasks, "data": str(root.resolve()), "task_epochs": cfg.task_epochs,
                              **({"teachers": teachers[t]} if t in teachers else {})}
        save_checkpoint(out / t, task_model, tok, info)
        del task_model

    mains = [per_task[t][specs[t].main_metric] for t in tasks]
    result: dict[str, Any] = {
        "task": ",".join(tasks), "mode": "multi-task", "tasks": per_task, **params,
        "main_metric": "mean_main", "mean_main": float(np.mean(mains)),
        "train_steps": summary["step"], "planned_steps": steps, "batch_size": cfg.batch_size,
        "interrupted": bool(summary.get("interrupted")),
        "train_time_s": round(train_time, 1), **_cpu_fields(train_cpu), "pooling": pooling,
        "sampling": "each batch from one task; all tasks' batches shuffled together per epoch (MT-DNN)",
        **({"distillation": {"alpha": cfg.distill_alpha, "tasks": distill,
                             "soft_targets": "mean of the teachers' softmax probabilities (regression: mean "
                                             "prediction, standardised)"}} if distill else {}),
        "history": history}
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps({t: round(per_task[t][specs[t].main_metric], 4) for t in tasks})}; "
         f"wrote {out / 'eval.json'} and one checkpoint per task in {out}")
    return result


def _dev_scores(model, obj: TaskObjective, spec, data, feats, batch_size: int) -> dict[str, float]:
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.scoring import score

    return score(spec, data.labels, data.dev, feats.dev, run_model(model, obj, feats.dev, batch_size))


def _single_task_copy(model, obj: TaskObjective) -> tuple[nn.Module, TaskObjective]:
    """A copy of the shared model with only ``obj``'s head, renamed ``task`` (a single-task model)."""
    heads = model.heads
    model.heads = nn.ModuleDict()  # not deep-copied: only this task's head goes into the copy
    try:
        task_model = copy.deepcopy(model)
    finally:
        model.heads = heads
    task_model.heads[HEAD_NAME] = copy.deepcopy(heads[obj.head_name])
    task_obj = copy.copy(obj)
    task_obj.head_name = HEAD_NAME
    task_obj.extra_terms = []
    return task_model, task_obj


def _task_finetune(cfg, spec, model, obj, tok, data, feats, logs: Path) -> tuple[dict, int]:
    """MT-DNN's second stage on one task: ``cfg.task_epochs`` epochs of ordinary fine-tuning."""
    from plmkit.tasks.finetuning import train, training_config

    tcfg = replace(cfg, epochs=cfg.task_epochs, eval_each_epoch=False)
    logs.mkdir(parents=True, exist_ok=True)
    train_feats = [{k: v for k, v in f.items() if k != "soft"} for f in feats.train]
    from plmkit.tasks.finetuning import TaskFeatures

    tf = TaskFeatures(train_feats, feats.dev, feats.target_scale, feats.truncated)
    summary, *_ = train(tcfg, spec, model, obj, tok, data, tf, training_config(tcfg, model, len(train_feats)), logs)
    return _dev_scores(model, obj, spec, data, feats, cfg.eval_batch_size), summary["step"]
