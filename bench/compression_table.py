"""Collect the SST-2 compression table (bench/compression_sst2_table.sh's run directory) into one JSON.

    python bench/compression_table.py RUN_DIR --out bench/results/compression_sst2_table.json [--note TEXT]

Reads RUN_DIR/teacher/eval.json, RUN_DIR/s_*/eval.json (plm distill), RUN_DIR/bench_students.json
(bench_compression.py: accuracy, params, throughput), RUN_DIR/x2_* and cache_* (other distillation budgets,
the --cache-teacher timing pair) and RUN_DIR/mag_*/eval.json (plm evaluate --out) or
RUN_DIR/gradual_*/eval.json (plm prune --schedule cubic), and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    R = Path(args.run_dir)
    teacher = _load(R / "teacher" / "eval.json") or {}
    bench = _load(R / "bench_students.json") or {"checkpoints": {}}
    res = {"note": args.note, "teacher": {k: teacher.get(k) for k in ("accuracy", "train_examples", "dev_examples",
                                                                      "train_steps", "train_time_s", "train_cpu_s")
                                          if k in teacher},
           "bench": {k: v for k, v in bench.items() if k != "checkpoints"}, "students": {}, "magnitude": {}}
    t_acc = bench["checkpoints"].get("teacher", {}).get("accuracy") or teacher.get("accuracy")
    rows = []
    for d in sorted(R.glob("s_*")):
        ev = _load(d / "eval.json")
        if ev is None:
            continue
        name = d.name[2:]
        b = bench["checkpoints"].get(name, {})
        keep = ("method", "weights", "student_init", "student_params", "teacher_params", "train_examples",
                "train_steps", "train_time_s", "train_cpu_s", "accuracy", "theseus", "teacher_cache")
        entry = {k: ev[k] for k in keep if k in ev}
        entry["percent_of_teacher"] = round(100 * ev["accuracy"] / t_acc, 1) if t_acc else None
        for k in ("median_cpu_s", "median_wall_s", "examples_per_cpu_s", "speedup_vs_teacher_cpu",
                  "speedup_vs_teacher_wall", "weights_mb"):
            if k in b:
                entry[k] = b[k]
        res["students"][name] = entry
        rows.append((name, ev["accuracy"], entry["percent_of_teacher"], ev.get("student_params"),
                     b.get("speedup_vs_teacher_cpu"), b.get("speedup_vs_teacher_wall"), ev.get("train_steps")))
    for d in sorted(list(R.glob("x2_*")) + list(R.glob("cache_*"))):  # other budgets; the teacher-cache timing
        ev = _load(d / "eval.json")
        if ev is not None:
            res.setdefault("other_runs", {})[d.name] = {k: ev[k] for k in (
                "method", "train_examples", "train_steps", "train_time_s", "train_cpu_s", "accuracy", "teacher_cache")
                if k in ev}
    for d in sorted(list(R.glob("mag_*")) + list(R.glob("gradual_*"))):
        ev = _load(d / "eval.json")
        if ev is not None:
            res["magnitude"][d.name] = {k: ev[k] for k in ("accuracy", "examples", "dev_examples", "train_steps",
                                                           "train_time_s") if k in ev}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"teacher: accuracy {t_acc}")
    print("| student | accuracy | % of teacher | params | speed-up (CPU time) | speed-up (wall) | steps |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join("" if v is None else (f"{v:.4f}" if isinstance(v, float) and v < 1 else str(v))
                                for v in r) + " |")
    for k, v in res["magnitude"].items():
        print(k, v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
