"""Atomic JSON / JSONL / PNG writers shared by the knowledge commands (matplotlib with the Agg backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


def plot_curves(path: str | os.PathLike, curves: dict[str, list[float | None]], title: str, ylabel: str,
                xlabel: str = "layer (0 = embeddings)") -> Path:
    """One line per named curve over the x positions 0..n-1."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in curves.items():
        xs = [i for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [ys[i] for i in xs], marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return save_figure(fig, path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
