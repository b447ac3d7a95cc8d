"""One model-agnostic training loop for pretraining and fine-tuning.

Usage (the fine-tuning code calls it the same way with a task "objective")::

    from plmkit.training import Trainer, TrainConfig
    trainer = Trainer(model, objective, data, TrainConfig(max_steps=1000, lr=3e-4),
                      out_dir="runs/x", eval_data=valid, tokenizer=tok)
    summary = trainer.fit(resume=False)   # {"step", "loss", "eval_loss", "eval_ppl", ...}
    metrics = trainer.evaluate()          # held-out loss / ppl / objective metrics

- ``model``: any ``nn.Module``; objectives call it (forward contract in docs/CONTRACTS.md). Optional
  ``model.layer_groups()`` enables layer-wise LR and gradual unfreezing; optional ``save_pretrained``.
- ``objectives``: one object with ``make_batch(examples) -> dict`` and ``loss(model, batch) -> (loss, metrics)``,
  a list of them, a list of ``(objective, weight)`` pairs, or a ``{name: objective}`` dict. Weighted losses are
  summed; with several objectives their metrics are logged as ``name/metric``.
- ``data`` / ``eval_data``: a map-style sequence of example records, or a dict keyed by ``example_kind`` (or
  objective name) when objectives need different views of the corpus.

What one optimizer step does: for each of ``grad_accum`` micro-batches and each objective, take the next
``batch_size`` records of this rank (indices come from a per-epoch permutation seeded by ``seed``; the global
batch is cut into contiguous per-rank slices, so ranks never overlap and a 2-process run sees exactly the
records of a 1-process run with twice the batch size), ``make_batch``, forward under autocast, backward of
``loss / grad_accum`` (DDP syncs on the last micro-batch only). Then clip, skip the update if the loss or the
gradient norm is NaN/inf (abort after ``max_bad_steps`` in a row), optimizer and LR-schedule step.

Checkpoints (``RUN/checkpoints/step-N``, see :mod:`plmkit.training.checkpoint`) hold everything needed to
continue bit-identically: weights, optimizer/scheduler/scaler, all RNG states of every rank, the data
position and the early-stopping state. Ctrl-C / SIGTERM finish the current step, save, and return with
``summary["interrupted"] = True``. Evaluation runs under a forked, re-seeded RNG so it never perturbs training.

References: minGPT ``trainer.py`` (callbacks); nanoGPT ``train.py`` (accumulation, autocast, scaler);
torchtitan (wrapping applied from outside the model); ULMFiT (Howard & Ruder 2018) for the schedule tools.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import plmkit.training.checkpoint as ckpt
import plmkit.training.distributed as D
from plmkit.config import TrainConfig
from plmkit.errors import UserError
from plmkit.models.kernels import cpu_bf16
from plmkit.training.callbacks import HOOKS, FunctionCallback, JsonlLogger, PlotCallback, ProgressBar, TensorBoardLogger
from plmkit.training.optim import GradualUnfreezer, build_optimizer, build_scheduler, layer_groups


class TrainingDiverged(UserError):
    """The loss, the gradient norm or the weights turned NaN/inf (exit code 3; the last checkpoint is kept)."""

    exit_code = 3


# Train settings a resume cannot change, and why (any other change applies from the first resumed step).
FIXED_ON_RESUME = {
    "seed": "it fixes the order of the data: a new seed would repeat or skip examples of the current epoch",
    "optimizer": "the saved optimizer state belongs to the old optimizer",
}


def resume_changes(saved: Mapping[str, Any] | None, config: TrainConfig, step: int) -> list[tuple[str, Any, Any]]:
    """The train settings that differ from the checkpoint's (``saved``: its ``train_config``), as
    ``(key, old, new)``. A change that cannot be honoured -> UserError naming it and why."""
    if not saved:
        return []
    new = dataclasses.asdict(config)
    changes = []
    for key, value in new.items():
        if key not in saved or key == "progress":  # display only (set by --progress / the terminal)
            continue
        old = saved[key]
        if isinstance(value, tuple):
            value = list(value)
        if old == value:
            continue
        if key in FIXED_ON_RESUME:
            raise UserError(f"train.{key}: cannot change on resume ({old!r} in the checkpoint, {value!r} now): "
                            f"{FIXED_ON_RESUME[key]}; start a new run (--overwrite or another --out)")
        changes.append((key, old, value))
    if config.max_steps < step:
        raise UserError(f"train.max_steps: {config.max_steps} is below the checkpoint's step {step}; "
                        f"resume with train.max_steps >= {step}")
    return changes


class _Cursor:
    """Position in an endless stream of per-epoch permutations of ``range(n)``; this rank's slice of each batch."""

    def __init__(self, n: int, seed: int, per_rank: int, info: D.DistInfo):
        if n == 0:
            raise UserError("the training data is empty (no examples; is seq_len longer than the corpus?)")
        self.n, self.seed, self.per_rank, self.info = n, seed, per_rank, info
        self.epoch, self.pos = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _permutation(self) -> list[int]:
        if self._perm_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = self.epoch
        return self._perm

    def next(self) -> list[int]:
        """Indices of this rank's next ``per_rank`` examples (the global batch is advanced for all ranks)."""
        out = []
        for _ in range(self.per_rank * self.info.world_size):
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
            out.append(self._permutation()[self.pos])
            self.pos += 1
        r = self.info.rank
        return out[r * self.per_rank:(r + 1) * self.per_rank]

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n}

    def load(self, s: dict) -> None:
        if s["n"] != self.n:
            raise UserError(f"cannot resume: the data changed ({s['n']} examples in the checkpoint, {self.n} now)")
        self.epoch, self.pos = s["epoch"], s["pos"]


class _Forward:
    """What objectives receive when the model is wrapped: calls go through the wrapper (DDP hooks,
    torch.compile), attribute access (``head_logits``, ``config``, ``heads``...) reaches the bare model."""

    def __init__(self, wrapped: nn.Module, module: nn.Module):
        self._wrapped, self._module = wrapped, module

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


def _normalise_objectives(objectives) -> list[tuple[str, Any, float]]:
    if hasattr(objectives, "parts") and not isinstance(objectives, (list, tuple, Mapping)):
        # plmkit.objectives.MultiObjective: train its parts side by side (each with its own data view).
        items = [(str(n), o, float(w)) for n, w, o in objectives.parts]
    elif isinstance(objectives, Mapping):
        items = [(str(k), v, float(getattr(v, "weight", 1.0))) for k, v in objectives.items()]
    else:
        if not isinstance(objectives, (list, tuple)):
            objectives = [objectives]
        items = []
        for o in objectives:
            obj, w = (o[0], float(o[1])) if isinstance(o, tuple) else (o, float(getattr(o, "weight", 1.0) or 1.0))
            items.append((str(getattr(obj, "name", type(obj).__name__.lower())), obj, w))
    names = [n for n, _, _ in items]
    for i, n in enumerate(names):  # make names unique: mlm, mlm_1
        if names.count(n) > 1:
            names[i] = f"{n}_{names[:i].count(n)}" if names[:i].count(n) else n
    for name, obj, _ in items:
        if not (callable(getattr(obj, "make_batch", None)) and callable(getattr(obj, "loss", None))):
            raise TypeError(f"objective {name!r} needs make_batch(examples) and loss(model, batch)")
    return [(names[i], obj, w) for i, (_, obj, w) in enumerate(items)]


def _source(data, name: str, obj) -> Sequence:
    """The example sequence feeding ``obj`` (by example_kind, then objective name, when ``data`` is a dict)."""
    if isinstance(data, Mapping):
        for key in (getattr(obj, "example_kind", None), name):
            if key in data:
                return data[key]
        raise UserError(f"no data for objective {name!r} (example_kind {getattr(obj, 'example_kind', None)!r}); "
                        f"data has {sorted(data)}")
    return data


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _count_targets(batch: dict) -> int:
    labels = batch.get("labels")
    if torch.is_tensor(labels) and labels.dtype in (torch.long, torch.int):
        return int((labels != -100).sum())
    ids = batch.get("input_ids")
    return int(ids.shape[0]) if torch.is_tensor(ids) else 1


def _count_tokens(batch: dict) -> int:
    ids = batch.get("input_ids")
    if not torch.is_tensor(ids):
        return 0
    mask = batch.get("attention_mask")
    return int(mask.sum()) if torch.is_tensor(mask) and mask.shape == ids.shape else ids.numel()


def resolve_device(name: str, info: D.DistInfo) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: {name!r} requested but CUDA is not available")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32).

    ``auto``: bf16 on a GPU that supports it, and on a CPU that multiplies bf16 natively (AMX or
    AVX-512 BF16, ``kernels.cpu_bf16``); fp32 elsewhere."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16() else None
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision: fp16 needs a GPU; use bf16 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """The name ``train.precision`` gives an autocast dtype (None: fp32)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def precision_note(precision: str, device: torch.device) -> str:
    """One line for the logs: what ``train.precision`` resolves to here, and why."""
    dtype = autocast_dtype(precision, device)
    what = "fp32" if dtype is None else f"{precision_name(dtype)} autocast"
    if precision != "auto":
        return f"precision {what} (train.precision={precision})"
    if device.type == "cpu":
        why = (f"this CPU multiplies bf16 natively ({cpu_bf16()})" if dtype
               else "this CPU has no native bf16 (AMX / AVX-512 BF16)")
    else:
        why = "GPU bf16 support" if dtype else "GPU without bf16"
    return f"precision {what} (train.precision=auto: {why})"


@torch.no_grad()
def evaluate_objective(model, objective, data: Sequence, batch_size: int = 16, max_batches: int = 0,
                       device: torch.device | None = None, dtype: torch.dtype | None = None,
                       seed: int = 0, info: D.DistInfo | None = None, shard: bool = True) -> dict[str, float]:
    """Target-weighted mean loss and metrics of ``objective`` over ``data`` (in order, sharded over ranks).

    ``shard=False``: every rank evaluates every batch (FSDP needs every rank in every forward pass).

    Runs under a forked RNG re-seeded with ``seed`` (objectives that corrupt inputs, e.g. MLM masking, see
    the same corruption at every evaluation, and training's RNG is untouched). Returns ``{"loss", "ppl",
    "targets", **metrics}``; ``ppl = exp(loss)``, the perplexity, only when ``objective.token_nll``.
    """
    info = info or D.current()
    if not shard:
        info = D.DistInfo()  # this rank alone, over all batches; no reduction
    device = device or next(iter(model.parameters())).device
    n_batches = math.ceil(len(data) / batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    keys: list[str] = []
    sums: dict[str, float] = {}
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed + info.rank)
        for b in range(info.rank, n_batches, info.world_size):
            examples = [data[i] for i in range(b * batch_size, min((b + 1) * batch_size, len(data)))]
            batch = _to_device(objective.make_batch(examples), device)
            ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with ctx:
                loss, metrics = objective.loss(model, batch)
            n = _count_targets(batch)
            sums["loss"] = sums.get("loss", 0.0) + float(loss) * n
            sums["targets"] = sums.get("targets", 0.0) + n
            for k, v in metrics.items():
                if torch.is_tensor(v) and v.numel() == 1:
                    v = float(v)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    if k not in keys:
                        keys.append(k)
                    sums[k] = sums.get(k, 0.0) + float(v) * n
    if was_training and hasattr(model, "train"):
        model.train()
    if info.enabled:  # every rank must reduce the same keys
        keys = sorted({k for ks in D.all_gather_object(keys) for k in ks})
    names = ["loss", "targets"] + keys
    t = torch.tensor([sums.get(k, 0.0) for k in names], dtype=torch.float64, device=device)
    if info.enabled:
        t = D.all_reduce_sum(t)
    vals = dict(zip(names, t.tolist()))
    total = vals.pop("targets")
    if total == 0:
        raise UserError("the held-out data is empty (no examples)")
    out = {k: v / total for k, v in vals.items()}
    if getattr(objective, "token_nll", True):
        out["ppl"] = math.exp(min(out["loss"], 700.0))
    out["targets"] = int(total)
    return out


def evaluate_perplexity(model, objective, data: Sequence, batch_size: int = 16, max_batches: int = 0) -> float:
    """Perplexity ``exp(mean NLL per predicted token)`` of ``model`` under ``objective`` on ``data``.

    The objective's loss must be a mean token NLL (clm, mlm, ...); the mean is weighted by each batch's
    number of predicted targets (labels != -100), so it is the corpus-level per-token perplexity.
    """
    if not getattr(objective, "token_nll", True):
        raise UserError(f"objective {getattr(objective, 'name', type(objective).__name__)!r} has no perplexity: "
                        "its loss is not a mean token NLL")
    return evaluate_objective(model, objective, data, batch_size=batch_size, max_batches=max_batches)["ppl"]


class Trainer:
    """Train ``model`` on ``objectives`` over ``data`` with ``config``; see the module docstring."""

    def __init__(self, model: nn.Module, objectives, data, config: TrainConfig | None = None,
                 callbacks: list | None = None, out_dir: str | Path | None = None, eval_data=None,
                 tokenizer=None):
        self.config = config = config or TrainConfig()
        self.info = D.current()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = resolve_device(config.device, self.info)
        self.model = model.to(self.device)
        self.objectives = _normalise_objectives(objectives)
        self.data, self.eval_data, self.tokenizer = data, eval_data, tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.dtype = autocast_dtype(config.precision, self.device)
        self.precision_note = precision_note(config.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

        self.name = "training"  # what progress lines and stop messages call this run
        self.step = 0
        self.should_stop = False
        self.stop_reason = ""
        self.best_eval: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.bad_steps = 0
        self.skipped_steps = 0
        self.last_eval: dict | None = None
        self.resumed_from: Path | None = None
        self.resume_changes: list[tuple[str, Any, Any]] = []
        self._stop_signal = False
        self._stop_signum: int | None = None
        self._last_saved_step: int | None = None

        self.cursors = [_Cursor(len(_source(data, n, o)), config.seed + 7 * i, config.batch_size, self.info)
                        for i, (n, o, _) in enumerate(self.objectives)]

        # Optimizer over the bare model (layer groups need its structure), then wrap from outside.
        self._shadow = None
        if self.info.enabled and config.distributed == "fsdp" and self.info.is_main:
            import copy

            self._shadow = copy.deepcopy(self.model).to("cpu")  # full copy for HF-format saving on rank 0
        self._groups = layer_groups(self.model)
        self.unfreezer = (GradualUnfreezer(self._groups, config.unfreeze_every, not self.info.enabled)
                          if config.unfreeze_every else None)
        kind = "fsdp" if config.distributed == "fsdp" else "ddp"
        wrapped = D.wrap_model(self.model, kind, self.device, self.info)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.wrapped = wrapped
        if config.compile:
            wrapped = torch.compile(wrapped)
        self.forward_model = self.model if wrapped is self.model else _Forward(wrapped, self.model)

        self.callbacks: list = []
        if self.out_dir is not None and self.info.is_main:
            self.callbacks += [JsonlLogger(self.out_dir)]
            if config.tensorboard:
                self.callbacks.append(TensorBoardLogger(self.out_dir))
            if config.plots:
                self.callbacks.append(PlotCallback(self.out_dir))
        if self.info.is_main:
            self.callbacks.append(ProgressBar(config.progress))
        self.callbacks += list(callbacks or [])

    # ------------------------------------------------------------------------------------ callbacks
    def add_callback(self, hook: str, fn) -> None:
        """Attach ``fn(trainer, ...)`` to one hook (``on_log``, ``on_eval``, ...)."""
        self.callbacks.append(FunctionCallback(hook, fn))

    def _emit(self, hook: str, *args) -> None:
        assert hook in HOOKS
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    # ------------------------------------------------------------------------------------ one step
    def _micro_batch(self) -> tuple[torch.Tensor, dict[str, float], int]:
        total = None
        metrics: dict[str, float] = {}
        tokens = 0
        multi = len(self.objectives) > 1
        for i, (name, obj, weight) in enumerate(self.objectives):
            src = _source(self.data, name, obj)
            batch = _to_device(obj.make_batch([src[j] for j in self.cursors[i].next()]), self.device)
            tokens += _count_tokens(batch)
            ctx = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
            with ctx:
                loss, mets = obj.loss(self.forward_model, batch)
            # Models with auxiliary training losses (Switch-MoE router load balancing and z-loss) expose
            # them with their coefficients, for the forward that just ran.
            aux_losses = getattr(self.model, "auxiliary_losses", None)
            for aux_name, (value, coef) in (aux_losses() if aux_losses else {}).items():
                loss = loss + coef * value
                mets = {**mets, aux_name: float(value.detach())}
            total = weight * loss if total is None else total + weight * loss
            for k, v in mets.items():
                metrics[f"{name}/{k}" if multi else k] = float(v.detach() if torch.is_tensor(v) else v)
            if multi:
                metrics[f"{name}/loss"] = float(loss.detach())
        return total, metrics, tokens

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (``grad_accum`` micro-batches); returns its loss, metrics and token count."""
        cfg = self.config
        if self.unfreezer is not None:
            self.unfreezer.apply(self.step)
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        metrics: dict[str, float] = {}
        tokens = 0
        for micro in range(cfg.grad_accum):
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext()
            if not last and hasattr(self.wrapped, "no_sync"):
                sync = self.wrapped.no_sync()
            with sync:
                loss, mets, ntok = self._micro_batch()
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            loss_sum += loss.detach().double()
            tokens += ntok
            for k, v in mets.items():
                metrics[k] = metrics.get(k, 0.0) + v / cfg.grad_accum
        # One all-reduce for loss (mean over ranks) and the stop flag (any rank got Ctrl-C / SIGTERM).
        red = torch.stack([loss_sum / cfg.grad_accum,
                           torch.tensor(float(self._stop_signal), dtype=torch.float64, device=self.device)])
        if self.info.enabled:
            red = D.all_reduce_sum(red)
            red[0] /= self.info.world_size
        loss_value = float(red[0])
        if red[1] > 0:
            self._stop_signal = True
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.unfreezer is not None:
            self.unfreezer.drop_frozen_grads(self.step)
        grad_norm = None
        if cfg.clip_grad_norm > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)) if params else 0.0
        finite = math.isfinite(loss_value) and (grad_norm is None or math.isfinite(grad_norm)
                                                  or self.scaler is not None)
        if finite:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.bad_steps = 0
        else:
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            if not cfg.skip_nonfinite:
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(f"the {what} is NaN/inf at step {self.step + 1}; "
                                       f"{self._kept()}; lower train.lr, or set train.skip_nonfinite=true "
                                       f"to skip such steps")
            self.bad_steps += 1
            self.skipped_steps += 1
            if self.scaler is not None:
                self.scaler.update()
            # counted in metrics.jsonl (skipped_steps) and the summary; no warning per step
            if self.bad_steps >= cfg.max_bad_steps:
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"the {what} was NaN/inf for {self.bad_steps} consecutive steps (at step {self.step + 1}); "
                    f"{self._kept()}; lower train.lr, set train.clip_grad_norm, or use train.precision=fp32")
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[-1]["lr"]
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" after a skipped step
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.step += 1
        out = {"loss": loss_value, "lr": lr, "tokens": tokens * self.info.world_size, "skipped": not finite}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        out["metrics"] = metrics
        return out

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, eval_data=None) -> dict[str, Any]:
        """Held-out loss (weighted sum over objectives, like training), perplexity and objective metrics."""
        eval_data = self.eval_data if eval_data is None else eval_data
        cfg = self.config
        bs = cfg.eval_batch_size or cfg.batch_size
        out: dict[str, Any] = {"step": self.step}
        total = 0.0
        multi = len(self.objectives) > 1
        for i, (name, obj, weight) in enumerate(self.objectives):
            # The bare module: a DDP forward could run collectives, and ranks may see unequal batch counts.
            res = evaluate_objective(self.model, obj, _source(eval_data, name, obj), bs, cfg.eval_batches,
                                     self.device, self.dtype, seed=cfg.seed + 1000 * i, info=self.info,
                                     shard=not (self.info.enabled and cfg.distributed == "fsdp"))
            total += weight * res["loss"]
            for k, v in res.items():
                out[f"{name}/{k}" if multi else k] = v
        if hasattr(self.model, "reshard"):  # FSDP2: a no-grad forward leaves the root's parameters gathered
            self.model.reshard()
        out["loss"] = total
        if multi:
            out.pop("ppl", None)
        return out

    def _maybe_eval(self) -> None:
        metrics = self.evaluate()
        self.last_eval = metrics
        improved = self.best_eval is None or metrics["loss"] < self.best_eval
        if improved:
            self.best_eval, self.best_step, self.bad_evals = metrics["loss"], self.step, 0
        else:
            self.bad_evals += 1
        metrics["best_loss"] = self.best_eval
        metrics["elapsed_s"] = round(time.perf_counter() - getattr(self, "_t0", time.perf_counter()), 3)
        self._emit("on_eval", metrics)
        if improved and self.out_dir is not None and self.config.save_every:
            self.save_checkpoint()  # the best checkpoint (kept by pruning)
        p = self.config.early_stopping_patience
        if p and self.bad_evals >= p:
            self.should_stop = True
            self.stop_reason = f"early stopping: held-out loss did not improve for {p} evaluations"

    # ------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_root(self) -> Path:
        assert self.out_dir is not None, "out_dir is needed for checkpoints"
        return self.out_dir / "checkpoints"

    def _model_state_for_save(self) -> nn.Module:
        """The module whose weights are written: the bare model, or on FSDP a gathered full CPU copy."""
        if self._shadow is None and not (self.info.enabled and self.config.distributed == "fsdp"):
            return self.model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self._shadow is not None:
            self._shadow.load_state_dict(full)
        return self._shadow

    def _optimizer_state(self) -> dict:
        if self.info.enabled and self.config.distributed == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _kept(self) -> str:
        """What survives a divergence, for its one-line message."""
        if self.out_dir is None:
            return "no model was written"
        last = ckpt.latest_checkpoint(self.checkpoint_root)
        if last is None:
            return "no checkpoint was written yet and final/ is not written"
        return f"the last good checkpoint {last} is kept and final/ is not written"

    def _check_weights(self) -> None:
        """TrainingDiverged if any parameter is NaN/inf: such weights are never written."""
        bad = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p.detach()).all())), None)
        if self.info.enabled:
            flag = torch.tensor([float(bad is not None)], dtype=torch.float64, device=self.device)
            if float(D.all_reduce_sum(flag)[0]) > 0 and bad is None:
                bad = "(on another rank)"
        if bad is not None:
            raise TrainingDiverged(f"the weights are NaN/inf after step {self.step} ({bad}); {self._kept()}; "
                                   f"lower train.lr or set train.clip_grad_norm")

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` (all ranks must call; rank 0 writes). Returns its path on rank 0."""
        if self.out_dir is None:
            return None
        self._check_weights()
        final = self.checkpoint_root / f"step-{self.step}"
        module = self._model_state_for_save()
        opt_state = self._optimizer_state()
        rngs = D.all_gather_object(ckpt.rng_state())
        path = None
        if self.info.is_main:
            meta = {
                "step": self.step, "cursors": [c.state() for c in self.cursors],
                "best_eval": self.best_eval, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "bad_steps": self.bad_steps, "world_size": self.info.world_size,
                "rng": [{"python": r["python"], "numpy": r["numpy"]} for r in rngs],
                "skipped_steps": self.skipped_steps, "last_eval": ckpt.finite_json(self.last_eval),
                "train_config": ckpt.finite_json(dataclasses.asdict(self.config)),
            }
            tensors = {"optimizer": opt_state, "scheduler": self.scheduler.state_dict(),
                       "scaler": self.scaler.state_dict() if self.scaler else {},
                       "rng_torch": [r["torch"] for r in rngs], "rng_cuda": [r["cuda"] for r in rngs]}

            def write(tmp: Path) -> None:
                ckpt.save_model_files(module, tmp, self.tokenizer)
                ckpt.save_native_weights(module, tmp / "model_state.safetensors")
                ckpt.write_state(tmp, tensors, meta)

            path = ckpt.write_atomic_dir(final, write)
            protect = {self.best_step} if self.best_step is not None else set()
            ckpt.prune(self.checkpoint_root, self.config.keep_last, protect)
            if self.best_step is not None:
                ckpt.write_json_atomic(self.checkpoint_root / "best.json",
                                       {"step": self.best_step, "loss": self.best_eval,
                                        "path": f"step-{self.best_step}"})
            self._emit("on_save", path)
        self._last_saved_step = self.step
        D.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore the whole training state from a ``step-N`` directory (on every rank).

        Train settings changed since the checkpoint (``self.config`` vs its ``train_config``) apply from the
        first resumed step, as if they had always been set (the LR schedule is re-evaluated at the resumed
        step with the new values); they are listed in ``self.resume_changes``. See :data:`FIXED_ON_RESUME`.
        """
        path = Path(path)
        tensors, meta = ckpt.read_state(path)
        if meta["world_size"] != self.info.world_size:
            raise UserError(f"{path}: saved by {meta['world_size']} processes, resuming with "
                            f"{self.info.world_size}; exact resume needs the same world size")
        if len(meta["cursors"]) != len(self.cursors):
            raise UserError(f"{path}: saved with {len(meta['cursors'])} objective(s), resuming with "
                            f"{len(self.cursors)}")
        self.resume_changes = resume_changes(meta.get("train_config"), self.config, meta["step"])
        # Hyper-parameters of the optimizer groups come from the current config, not from the checkpoint.
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        if self.info.enabled and self.config.distributed == "fsdp":
            from safetensors.torch import load_file
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, load_file(str(path / "model_state.safetensors")), options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, tensors["optimizer"], options=opts)
        else:
            ckpt.load_native_weights(self.model, path / "model_state.safetensors")
            try:
                self.optimizer.load_state_dict(tensors["optimizer"])
            except (ValueError, KeyError) as e:
                raise ckpt.DamagedCheckpoint(path, f"trainer_state.pt: the optimizer state does not fit the "
                                                   f"model ({e})") from None
        for g, f in zip(self.optimizer.param_groups, fresh):
            g.update(f)
        self.scheduler.load_state_dict(tensors["scheduler"])
        # The LR of the next step under the current settings (the saved one was computed with the old ones).
        lrs = [base * self.scheduler._mult(self.scheduler.last_epoch) for base in self.scheduler.base_lrs] \
            if hasattr(self.scheduler, "_mult") else [g["lr"] for g in self.optimizer.param_groups]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self.scheduler._last_lr = list(lrs)
        if self.scaler is not None and tensors["scaler"]:
            self.scaler.load_state_dict(tensors["scaler"])
        for c, s in zip(self.cursors, meta["cursors"]):
            c.load(s)
        self.step = meta["step"]
        self.best_eval, self.best_step = meta["best_eval"], meta["best_step"]
        self.bad_evals, self.bad_steps = meta["bad_evals"], meta["bad_steps"]
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self.last_eval = meta.get("last_eval") or None
        self._last_eval_known = "last_eval" in meta  # False for checkpoints written before plmkit recorded it
        self.resumed_from = path
        r = self.info.rank
        ckpt.set_rng_state({**meta["rng"][r], "torch": tensors["rng_torch"][r], "cuda": tensors["rng_cuda"][r]})

    def save_final(self) -> Path | None:
        """Write ``RUN/final`` (HF-format model + tokenizer + summary); all ranks call, rank 0 writes."""
        if self.out_dir is None:
            return None
        self._check_weights()
        module = self._model_state_for_save()
        path = None
        if self.info.is_main:
            path = ckpt.write_atomic_dir(self.out_dir / "final",
                                         lambda tmp: ckpt.save_model_files(module, tmp, self.tokenizer))
        D.barrier()
        return path

    # ------------------------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _signals(self):
        """First Ctrl-C / SIGTERM: finish the step, checkpoint, stop. A second Ctrl-C interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_signal and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = True
            self._stop_signum = signum

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train to ``max_steps`` (or early stop / interrupt). ``resume=True``: continue from the newest
        checkpoint in ``out_dir`` if there is one; a path: from that checkpoint. Returns a summary dict."""
        cfg = self.config
        if self.out_dir is not None and self.info.is_main:
            ckpt.clean_partial(self.out_dir)  # .final.tmp-* of a kill while final/ was written
            ckpt.clean_partial(self.checkpoint_root)
        D.barrier()
        start = None
        if resume:
            if not isinstance(resume, bool):
                start = Path(resume)
            elif self.out_dir is not None:
                start, _ = ckpt.resume_point(self.checkpoint_root)  # a damaged newest one -> UserError
        if start is not None:
            self.load_checkpoint(start)
            if self.out_dir is not None and self.info.is_main and start.parent.resolve() == \
                    self.checkpoint_root.resolve():
                ckpt.discard_after(self.checkpoint_root, self.step)  # they would be replayed anyway
            D.barrier()
        else:
            import random

            import numpy as np

            # Same seed on every rank would give every rank the same dropout masks: offset by rank.
            random.seed(cfg.seed + self.info.rank)
            np.random.seed(cfg.seed + self.info.rank)
            torch.manual_seed(cfg.seed + self.info.rank)
        self._emit("on_train_begin")
        self._t0 = time.perf_counter()
        interval: dict[str, Any] = {"loss": 0.0, "n": 0, "tokens": 0, "metrics": {}, "t": time.perf_counter()}
        interrupted = False
        with self._signals():
            while self.step < cfg.max_steps and not self.should_stop:
                out = self.train_step()
                step = self.step
                if not out["skipped"]:
                    interval["loss"] += out["loss"]
                    interval["n"] += 1
                    for k, v in out["metrics"].items():
                        interval["metrics"][k] = interval["metrics"].get(k, 0.0) + v
                interval["tokens"] += out["tokens"]
                self._emit("on_step_end", step)
                if step % cfg.log_every == 0 or step == cfg.max_steps or self._stop_signal:
                    now = time.perf_counter()
                    n = max(interval["n"], 1)
                    logs = {"step": step, "loss": interval["loss"] / n if interval["n"] else None,
                            "lr": out["lr"], "tokens_per_s": interval["tokens"] / max(now - interval["t"], 1e-9),
                            "elapsed_s": round(now - self._t0, 3)}
                    if "grad_norm" in out:
                        logs["grad_norm"] = out["grad_norm"] if math.isfinite(out["grad_norm"]) else None
                    if cfg.skip_nonfinite:
                        logs["skipped_steps"] = self.skipped_steps
                    logs.update({k: v / n for k, v in interval["metrics"].items()})
                    self._emit("on_log", logs)
                    interval = {"loss": 0.0, "n": 0, "tokens": 0, "metrics": {}, "t": time.perf_counter()}
                t_pause = time.perf_counter()
                if self.eval_data is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    self._maybe_eval()
                if self.out_dir is not None and cfg.save_every and step % cfg.save_every == 0 \
                        and self._last_saved_step != step:
                    self.save_checkpoint()
                interval["t"] += time.perf_counter() - t_pause  # tokens_per_s counts training time only
                if self._stop_signal:
                    interrupted = True
                    self.stop_reason = "interrupted (checkpoint saved)"
                    if self.out_dir is not None and self._last_saved_step != step:
                        self.save_checkpoint()
                    break
        if not interrupted and self.eval_data is not None and (self.last_eval is None
                                                               or self.last_eval["step"] != self.step):
            self._maybe_eval()
        summary: dict[str, Any] = {"step": self.step, "interrupted": interrupted,
                                   "stop_reason": self.stop_reason or ("done" if not interrupted else ""),
                                   "precision": precision_name(self.dtype)}
        if interrupted:
            summary["signal"] = signal.Signals(self._stop_signum).name if self._stop_signum else "SIGINT"
            if self._last_saved_step == self.step and self.out_dir is not None:
                summary["checkpoint"] = str(self.checkpoint_root / f"step-{self.step}")
        if cfg.skip_nonfinite:
            summary["skipped_steps"] = self.skipped_steps
        if self.last_eval is not None:
            summary.update({f"eval_{k}": v for k, v in self.last_eval.items() if k != "step"})
        if self.best_step is not None:
            summary["best_step"] = self.best_step
        if not interrupted:
            final = self.save_final()
            if final is not None:
                summary["final"] = str(final)
                ckpt.write_json_atomic(final / "train_summary.json", summary)
        self._emit("on_train_end", summary)
        return summary
