"""Markdown tables of the runs of bench/mtdnn_glue.sh, bench/seq_autoencoder_sst2.sh and bench/active_learning.sh.

usage: python bench/multitask_tables.py mtdnn|sa|al OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TASKS = ["sst2", "cola", "mrpc", "rte", "stsb"]
MAIN = {"sst2": "accuracy", "cola": "mcc", "mrpc": "f1", "rte": "accuracy", "stsb": "pearson"}


def _load(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"


def mtdnn(out: Path) -> None:
    arms = {"single-task": [], "MT-DNN": [], "MT-DNN-KD": []}
    for seed in (1, 2):
        single = {t: _load(out / f"single-s{seed}" / t / "eval.json") for t in TASKS}
        if all(single.values()):
            arms["single-task"].append(({t: single[t][MAIN[t]] for t in TASKS},
                                        sum(single[t]["train_steps"] for t in TASKS)))
        for name, d in (("MT-DNN", f"mtdnn-s{seed}"), ("MT-DNN-KD", f"mtdnn-kd-s{seed}")):
            r = _load(out / d / "eval.json")
            if r:
                arms[name].append(({t: r["tasks"][t][MAIN[t]] for t in TASKS}, r["train_steps"]))
    print("| arm | seeds | steps | " + " | ".join(f"{t} {MAIN[t]}" for t in TASKS) + " | mean |")
    print("|---|---|---|" + "---|" * (len(TASKS) + 1))
    for name, runs in arms.items():
        if not runs:
            continue
        cells = [_fmt([r[0][t] for r in runs]) for t in TASKS]
        mean = _fmt([float(np.mean([r[0][t] for t in TASKS])) for r in runs])
        print(f"| {name} | {len(runs)} | {runs[0][1]} | " + " | ".join(cells) + f" | {mean} |")


def sa(out: Path) -> None:
    print("| init | seeds | SST-2 dev accuracy | per seed |")
    print("|---|---|---|---|")
    for arm, name in (("sa", "SA-LSTM (sequence autoencoder)"), ("lm", "LM-LSTM (language model)"),
                      ("random", "random init")):
        accs = [r["accuracy"] for s in (1, 2, 3) if (r := _load(out / f"ft-{arm}-s{s}" / "eval.json"))]
        print(f"| {name} | {len(accs)} | {_fmt(accs)} | {', '.join(f'{a:.3f}' for a in accs)} |")
    for kind in ("seq-autoencoder", "lm"):
        lines = (out / f"pre-{kind}" / "eval.jsonl")
        if lines.is_file():
            last = json.loads(lines.read_text().splitlines()[-1])
            print(f"\npretraining {kind}: step {last.get('step')}, held-out loss {last.get('loss', float('nan')):.3f}")


def al(out: Path) -> None:
    for task in ("sst2", "mrpc"):
        runs = {s: [r for seed in (1, 2, 3) if (r := _load(out / f"{task}-{s}-s{seed}" / "eval.json"))]
                for s in ("entropy", "kmeans", "random", "coverage", "noise")}
        if not any(runs.values()):
            continue
        some = next(r for v in runs.values() for r in v)
        metric = some["main_metric"]
        counts = [c["labelled"] for c in some["curve"]]
        print(f"\n{task} dev {metric} by labelled examples")
        print("| strategy | seeds | " + " | ".join(str(c) for c in counts) + " |")
        print("|---|---|" + "---|" * len(counts))
        for s, rs in runs.items():
            if rs:
                cells = [_fmt([r["curve"][i][metric] for r in rs]) for i in range(len(counts))]
                print(f"| {s} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    {"mtdnn": mtdnn, "sa": sa, "al": al}[sys.argv[1]](Path(sys.argv[2]))
