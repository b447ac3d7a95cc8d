"""Loss-curve plots of a run directory (matplotlib, Agg backend; no display needed).

``plot_run(RUN)`` reads ``RUN/metrics.jsonl`` and ``RUN/eval.jsonl`` and writes ``RUN/loss.png`` (training
loss per logged step, held-out loss per evaluation) and ``RUN/lr.png`` (learning rate). Files are written
atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write ``loss.png`` and ``lr.png`` for the run in ``run_dir``; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train = [r for r in _read(run_dir / "metrics.jsonl") if "loss" in r]
    evals = [r for r in _read(run_dir / "eval.jsonl") if "loss" in r]
    written = []
    if train or evals:
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
        if evals:
            ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="held-out", lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        _save(fig, run_dir / "loss.png")
        plt.close(fig)
        written.append(run_dir / "loss.png")
    if train and "lr" in train[0]:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot([r["step"] for r in train], [r["lr"] for r in train])
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3)
        _save(fig, run_dir / "lr.png")
        plt.close(fig)
        written.append(run_dir / "lr.png")
    return written
