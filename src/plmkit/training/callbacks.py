"""Trainer callbacks: JSONL metrics, TensorBoard, tqdm progress bar, loss-curve plots.

Early stopping lives in the trainer itself (its state is part of the checkpoint).

A callback is any object with some of these methods (all optional; minGPT-style plain functions can be
attached with ``trainer.add_callback("on_log", fn)``)::

    on_train_begin(trainer)                  # after a resume: trainer.step is the restored step
    on_step_end(trainer, step)               # after every optimizer step
    on_log(trainer, logs: dict)              # every log_every steps: step, loss, lr, tokens_per_s, metrics...
    on_eval(trainer, metrics: dict)          # after each evaluation: step, loss, ppl, metrics...
    on_save(trainer, path)                   # after a checkpoint is written
    on_train_end(trainer, summary: dict)

The writers here run on rank 0 only (the trainer adds them there).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

HOOKS = ("on_train_begin", "on_step_end", "on_log", "on_eval", "on_save", "on_train_end")


class Callback:
    """Base class with no-op hooks."""

    def on_train_begin(self, trainer) -> None: ...
    def on_step_end(self, trainer, step: int) -> None: ...
    def on_log(self, trainer, logs: dict[str, Any]) -> None: ...
    def on_eval(self, trainer, metrics: dict[str, Any]) -> None: ...
    def on_save(self, trainer, path) -> None: ...
    def on_train_end(self, trainer, summary: dict[str, Any]) -> None: ...


class FunctionCallback(Callback):
    """Wrap one function as one hook."""

    def __init__(self, hook: str, fn):
        if hook not in HOOKS:
            from plmkit.errors import suggest

            raise ValueError(f"unknown callback hook {hook!r}{suggest(hook, HOOKS)}")
        setattr(self, hook, fn)


def _truncate_jsonl(path: Path, max_step: int, keep_last_step: bool = True) -> None:
    """Drop records logged after ``max_step`` (written by a run that was killed after its last checkpoint);
    records at ``max_step`` itself too unless ``keep_last_step`` (at most one of them is kept)."""
    if not path.exists():
        return
    kept = []
    at_max = False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except ValueError:
            break  # a torn last line from a kill
        if step < max_step or (step == max_step and keep_last_step and not at_max):
            kept.append(line)
            at_max = at_max or step == max_step
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


class JsonlLogger(Callback):
    """``metrics.jsonl`` (training logs) and ``eval.jsonl`` (evaluations), one JSON object per line."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.files: dict[str, Any] = {}

    def _file(self, name):
        if name not in self.files:
            self.files[name] = open(self.out_dir / name, "a", encoding="utf-8")
        return self.files[name]

    def on_train_begin(self, trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_jsonl(self.out_dir / "metrics.jsonl", trainer.step)
        # The evaluation at the resumed step is kept only if the checkpoint knows it (else it runs again).
        last = getattr(trainer, "last_eval", None)
        known = getattr(trainer, "_last_eval_known", True)
        _truncate_jsonl(self.out_dir / "eval.jsonl", trainer.step,
                        keep_last_step=not known or (bool(last) and last.get("step") == trainer.step))

    def _write(self, name, record):
        from plmkit.training.checkpoint import dumps

        f = self._file(name)
        f.write(dumps(record) + "\n")  # strict JSON: NaN / inf are written as null
        f.flush()

    def on_log(self, trainer, logs) -> None:
        self._write("metrics.jsonl", logs)

    def on_eval(self, trainer, metrics) -> None:
        self._write("eval.jsonl", metrics)

    def on_train_end(self, trainer, summary) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


class TensorBoardLogger(Callback):
    """TensorBoard event files under ``RUN/tensorboard`` (``train/*`` and ``eval/*`` scalars)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir) / "tensorboard"
        self.writer = None

    def on_train_begin(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events after the resumed step, like the JSONL truncation.
        self.writer = SummaryWriter(str(self.out_dir), purge_step=trainer.step + 1 if trainer.step else None)

    def _scalars(self, prefix, record):
        step = record["step"]
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def on_log(self, trainer, logs) -> None:
        self._scalars("train", logs)

    def on_eval(self, trainer, metrics) -> None:
        self._scalars("eval", metrics)
        self.writer.flush()

    def on_train_end(self, trainer, summary) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar on stderr: step / max_steps with loss, tokens/s and ETA. When no bar is shown and stderr is
    not a terminal, a plain line every ``PLMKIT_PROGRESS_EVERY`` seconds instead (:mod:`plmkit.progress`)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        self.beat = None

    def on_train_begin(self, trainer) -> None:
        from tqdm.auto import tqdm

        from plmkit.progress import Heartbeat

        self.bar = tqdm(total=trainer.config.max_steps, initial=trainer.step, disable=not self.enabled,
                        desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        self.beat = Heartbeat(getattr(trainer, "name", "training"), trainer.config.max_steps, "step",
                              start=trainer.step, bar_shown=self.enabled)

    def on_step_end(self, trainer, step) -> None:
        self.bar.update(1)
        self.beat.update(step)

    def on_log(self, trainer, logs) -> None:
        loss = logs.get("loss")
        self.bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "-",
                             tok_s=f"{logs.get('tokens_per_s', 0):.0f}", refresh=False)
        self.beat.fields["loss"] = f"{loss:.4f}" if loss is not None else "-"
        self.beat.fields["tok/s"] = f"{logs.get('tokens_per_s', 0):.0f}"

    def on_eval(self, trainer, metrics) -> None:
        if self.enabled:
            self.bar.write(f"step {metrics['step']}: eval loss {metrics['loss']:.4f}"
                           + (f", ppl {metrics['ppl']:.2f}" if "ppl" in metrics else ""))

    def on_train_end(self, trainer, summary) -> None:
        if self.bar is not None:
            self.bar.close()


class PlotCallback(Callback):
    """Loss-curve PNGs (``loss.png``, ``lr.png``) redrawn at every checkpoint and at the end."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)

    def on_save(self, trainer, path) -> None:
        from plmkit.training.plots import plot_run

        plot_run(self.out_dir)

    def on_train_end(self, trainer, summary) -> None:
        from plmkit.training.plots import plot_run

        plot_run(self.out_dir)
