"""Tables + figure of the prompting runs (docs/PROMPTING.md, "Measured on real data").

usage: python bench/prompting_tables.py icl TASK=RUN_DIR[,RUN_DIR] ... --json OUT.json [--png OUT.png]
       python bench/prompting_tables.py soft RUN_DIR [RUN_DIR ...] --json OUT.json

``icl``: each RUN_DIR is a ``plm icl --calibrate`` output; the numbers are recomputed from its predictions.jsonl
(so runs of one task on the same examples can be merged, and a run stopped early counts its complete
(template, shots, seed) groups); prints per task the accuracy per shot count (mean ± std and min over
demonstration seeds and templates, raw and calibrated), the runs predicting one class for >= 90% of the examples,
and per template; plots accuracy vs shots (one panel per task, raw solid / calibrated dashed, error bars = std
over seeds).
``soft``: each RUN_DIR is a ``plm finetune`` output (eval.json); prints mode, trained parameters, accuracy and
CPU / wall time. Both write the numbers (without per-example predictions) to --json.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np


def _pm(d: dict, m: str) -> str:
    return f"{d[m]:.3f} ± {d[m + '_std']:.3f} (min {d[m + '_min']:.3f})"


def _summary(values: list[float]) -> dict:
    v = np.array(values, dtype=float)
    return {"accuracy": float(v.mean()), "accuracy_std": float(v.std()), "accuracy_min": float(v.min()),
            "runs": len(values)}


def _read_runs(dirs: list[Path]) -> dict:
    """(template, shots, seed) -> prediction records, from each dir's predictions.jsonl; a run cut short (fewer
    records than the complete ones) is left out, and a later dir's complete run replaces an earlier dir's. All
    dirs must have evaluated the same examples."""
    per_dir = []
    for d in dirs:
        mine: dict = {}
        with open(d / "predictions.jsonl", encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # the last line of a run stopped mid-write
                    continue
                mine.setdefault((r["template"], r["shots"], r["seed"]), []).append(r)
        per_dir.append(mine)
    n = max(len(v) for mine in per_dir for v in mine.values())
    runs: dict = {}
    for mine in per_dir:
        runs.update({k: v for k, v in mine.items() if len(v) == n})
    return runs


def _task_table(task: str, dirs: list[Path]) -> dict:
    """Accuracy per shot count (mean / std / min over templates and seeds), per template, raw and calibrated, and
    how many runs put >= 90% of the examples in one class."""
    runs = _read_runs(dirs)
    metas = [json.loads((d / "metrics.json").read_text()) for d in dirs if (d / "metrics.json").is_file()]
    acc = {key: {kind: sum(r[kind] == r["label"] for r in rs) / len(rs)
                 for kind in ("prediction", "calibrated_prediction")} for key, rs in runs.items()}
    shots = sorted({k for _, k, _ in runs})
    templates = list(dict.fromkeys(t for t, _, _ in runs))
    out: dict = {"task": task, "n_eval": len(next(iter(runs.values()))), "shots": shots, "templates": templates,
                 "by_shots": {}, "calibrated_by_shots": {}, "by_template": {}, "one_class_runs": {}}
    for k in shots:
        keys = [key for key in runs if key[1] == k]
        out["by_shots"][str(k)] = _summary([acc[key]["prediction"] for key in keys])
        out["calibrated_by_shots"][str(k)] = _summary([acc[key]["calibrated_prediction"] for key in keys])
        one = {"runs": len(keys), "raw": 0, "calibrated": 0}
        for key in keys:
            for kind, field in (("raw", "prediction"), ("calibrated", "calibrated_prediction")):
                top = max(Counter(r[field] for r in runs[key]).values()) / len(runs[key])
                one[kind] += int(top >= 0.9)
        out["one_class_runs"][str(k)] = one
    for t in templates:
        out["by_template"][t] = {kind: {str(k): _summary([acc[key][field] for key in runs if key[:2] == (t, k)])
                                        for k in shots if any(key[:2] == (t, k) for key in runs)}
                                 for kind, field in (("raw", "prediction"), ("calibrated", "calibrated_prediction"))}
    out["runs"] = [{"template": t, "shots": k, "seed": sd, "accuracy": a["prediction"],
                    "calibrated_accuracy": a["calibrated_prediction"]} for (t, k, sd), a in acc.items()]
    for m in metas:
        for key in ("scoring", "model", "threads", "n_train"):
            out.setdefault(key, m.get(key))
        out.setdefault("template_files", {}).update(m.get("templates", {}))
        if "prefix_cache" in m:
            out["prefix_cache"] = m["prefix_cache"]
    return out


def icl(specs: list[str], out_json: Path, png: Path | None) -> None:
    results = {}
    for spec in specs:
        task, _, paths = spec.partition("=")
        r = results[task] = _task_table(task, [Path(p) for p in paths.split(",")])
        print(f"\n{task}: first {r['n_eval']} dev examples, templates {', '.join(r['templates'])}\n")
        print("| shots | runs | accuracy | calibrated | one-class runs raw / cal |")
        print("|---|---|---|---|---|")
        for k, v in r["by_shots"].items():
            o = r["one_class_runs"][k]
            print(f"| {k} | {v['runs']} | {_pm(v, 'accuracy')} | {_pm(r['calibrated_by_shots'][k], 'accuracy')} | "
                  f"{o['raw']} / {o['calibrated']} |")
        print("\n| template | " + " | ".join(f"{k} shots raw / cal" for k in r["by_shots"]) + " |")
        print("|---|" + "---|" * len(r["by_shots"]))
        for name, t in r["by_template"].items():
            print(f"| {name} | " + " | ".join(
                f"{t['raw'][k]['accuracy']:.3f} / {t['calibrated'][k]['accuracy']:.3f}" if k in t["raw"] else "-"
                for k in r["by_shots"]) + " |")
        if "prefix_cache" in r:
            pc = r["prefix_cache"]
            print(f"\nprefix cache: {pc['examples']} examples, {pc['shots']} shots, {pc['prefix_tokens']} prefix tokens, "
                  f"{pc['seconds_shared_prefix']} s shared vs {pc['seconds_reencoded_prefix']} s re-encoded = "
                  f"{pc['speedup']}x, max |diff| {pc['max_abs_logprob_diff']:.1e}")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1) + "\n")
    if png is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4), squeeze=False)
    for ax, (task, r) in zip(axes[0], results.items()):
        shots = [int(k) for k in r["by_shots"]]
        for i, (name, t) in enumerate(r["by_template"].items()):
            c = f"C{i}"
            for kind, style in (("raw", "-"), ("calibrated", "--")):
                xs = [i for i, k in enumerate(shots) if str(k) in t[kind]]
                y = [t[kind][str(shots[i])]["accuracy"] for i in xs]
                e = [t[kind][str(shots[i])]["accuracy_std"] for i in xs]
                ax.errorbar(xs, y, yerr=e, color=c, ls=style, marker="o", ms=3, capsize=2,
                            label=f"{name} ({'calibrated' if kind != 'raw' else 'raw'})")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xticks(range(len(shots)), [str(k) for k in shots])
        ax.set_xlabel("demonstrations (shots)")
        ax.set_ylabel("dev accuracy")
        ax.set_title(f"SmolLM2-135M ICL, {task.upper()} (first {r['n_eval']} dev)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"\nwrote {out_json} and {png}")


def soft(dirs: list[Path], out_json: Path) -> None:
    rows = []
    for d in dirs:
        e = json.loads((d / "eval.json").read_text())
        cfg = json.loads((d / "task.json").read_text()).get("config", {}) if (d / "task.json").is_file() else {}
        log = d.parent / f"{d.name}.log"  # its last line: /usr/bin/time -f %U_%S_%e of the whole process
        last = log.read_text().strip().splitlines()[-1] if log.is_file() else ""
        proc = [float(x) for x in last.split("_")] if re.fullmatch(r"[\d.]+_[\d.]+_[\d.]+", last) else None
        rows.append({"run": d.name, "mode": e["mode"], "trainable_params": e["trainable_params"],
                     "total_params": e["total_params"],
                     "trainable_percent": round(100 * e["trainable_params"] / e["total_params"], 4),
                     "saved_prompt_params": e.get("saved_prompt_params"), "accuracy": e["accuracy"], "train_examples": e["train_examples"],
                     "dev_examples": e["dev_examples"], "train_steps": e["train_steps"],
                     "train_cpu_s": e.get("train_cpu_s"), "train_time_s": e.get("train_time_s"),
                     "eval_time_s": e.get("eval_time_s"), "threads": e.get("threads"),
                     "precision": e.get("precision", cfg.get("precision", "fp32")), "lr": cfg.get("lr"),
                     "batch_size": cfg.get("batch_size"), "seed": cfg.get("seed"),
                     "process_user_sys_wall_s": proc})
    print("| mode | seed | lr | trained params (% of model) | SST-2 dev accuracy (n) | steps | train CPU s |"
          " train wall s | precision |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seed']} | {r['lr']} | {r['trainable_params']:,} ({r['trainable_percent']:.3g}%) | "
              f"{r['accuracy']:.3f} ({r['dev_examples']}) | {r['train_steps']} | {r['train_cpu_s']} | "
              f"{r['train_time_s']} | {r['precision']} |")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("icl", "soft"))
    p.add_argument("dirs", nargs="+", help="soft: run dirs; icl: TASK=DIR[,DIR...] (runs of one task merged)")
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--png", type=Path, default=None)
    a = p.parse_args()
    if a.kind == "icl":
        icl(a.dirs, a.json, a.png)
    else:
        soft([Path(d) for d in a.dirs], a.json)


if __name__ == "__main__":
    main()
