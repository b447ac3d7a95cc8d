"""bf16 autocast vs fp32 training: loss curves of runs that differ only in ``train.precision`` and seed.

Run the arms with ``plm pretrain`` (same recipe, ``train.precision=fp32|bf16``, ``train.seed=1,2,...``), then:

    python bench/bf16_curves.py --out bench/results/bf16_vs_fp32_clm fp32=RUN_fp32_s1,RUN_fp32_s2 bf16=RUN_bf16_s1,...

Reads each run's ``metrics.jsonl`` (training loss per log window) and ``eval.jsonl`` (held-out loss), writes
``OUT.json`` (per step: every run's value, mean and spread per precision; the largest gap between the two
precisions' means beside the largest within-precision seed spread) and ``OUT.png`` (mean, min-max band).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _series(run: Path, file: str, key: str) -> dict[int, float]:
    out = {}
    path = run / file
    if not path.is_file():
        sys.exit(f"bf16_curves: {path}: no such file (is {run} a plm pretrain run directory?)")
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if key in rec and "step" in rec:
                out[int(rec["step"])] = float(rec[key])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arms", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...] (one per precision)")
    ap.add_argument("--out", required=True, help="output path without suffix (.json and .png are written)")
    args = ap.parse_args()
    arms = {}
    for a in args.arms:
        label, _, dirs = a.partition("=")
        if not dirs:
            ap.error(f"{a!r}: expected LABEL=RUN_DIR[,RUN_DIR...]")
        arms[label] = [Path(d) for d in dirs.split(",")]
    result: dict = {"arms": {k: [str(d) for d in v] for k, v in arms.items()}, "curves": {}}
    for file, key, name in (("metrics.jsonl", "loss", "train_loss"), ("eval.jsonl", "loss", "eval_loss")):
        per_arm = {}
        for label, dirs in arms.items():
            runs = [_series(d, file, key) for d in dirs]
            steps = sorted(set.intersection(*(set(r) for r in runs)))
            per_arm[label] = {s: [r[s] for r in runs] for s in steps}
        common = sorted(set.intersection(*(set(v) for v in per_arm.values())))
        rows = []
        for s in common:
            row = {"step": s}
            for label, vals in per_arm.items():
                v = vals[s]
                row[label] = {"runs": v, "mean": statistics.fmean(v), "spread": max(v) - min(v)}
            rows.append(row)
        labels = list(arms)
        gap = max((abs(r[labels[0]]["mean"] - r[labels[1]]["mean"]), r["step"]) for r in rows) if rows and len(
            labels) == 2 else None
        spread = max((max(r[lb]["spread"] for lb in labels), r["step"]) for r in rows) if rows else None
        result["curves"][name] = {"rows": rows, "max_gap_between_means": gap, "max_seed_spread": spread}
        if gap:
            print(f"{name}: largest |{labels[0]} - {labels[1]}| of the seed means {gap[0]:.4f} (step {gap[1]}); "
                  f"largest seed spread within one precision {spread[0]:.4f} (step {spread[1]})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, cur) in zip(axes, result["curves"].items()):
        for label in arms:
            xs = [r["step"] for r in cur["rows"]]
            mean = [r[label]["mean"] for r in cur["rows"]]
            lo = [min(r[label]["runs"]) for r in cur["rows"]]
            hi = [max(r[label]["runs"]) for r in cur["rows"]]
            ax.plot(xs, mean, marker="o", ms=3, label=f"{label} (mean of {len(arms[label])} seeds)")
            ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title("training loss (log window mean)" if key == "train_loss" else "held-out loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
