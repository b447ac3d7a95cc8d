"""Tables + figure of the prompting runs (docs/PROMPTING.md, "Measured on real data").

usage: python bench/prompting_tables.py icl RUN_DIR [RUN_DIR ...] --json OUT.json [--png OUT.png]
       python bench/prompting_tables.py soft RUN_DIR [RUN_DIR ...] --json OUT.json

``icl``: each RUN_DIR is a ``plm icl --calibrate`` output (metrics.json); prints per task the accuracy per
shot count (mean ± std and min over demonstration seeds and templates, raw and calibrated) and per template,
and plots accuracy vs shots (one panel per task, raw solid / calibrated dashed, error bars = std over seeds).
``soft``: each RUN_DIR is a ``plm finetune`` output (eval.json); prints mode, trained parameters, accuracy and
CPU / wall time. Both write the numbers (without per-example predictions) to --json.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path


def _pm(d: dict, m: str) -> str:
    return f"{d[m]:.3f} ± {d[m + '_std']:.3f} (min {d[m + '_min']:.3f})"


def _one_class_runs(path: Path) -> dict:
    """Per shot count: how many (template, seed) runs put >= 90% of the examples in one class, raw and calibrated."""
    runs: dict = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            runs.setdefault((r["template"], r["shots"], r["seed"]), []).append(r)
    out: dict = {}
    for (_, k, _), rs in sorted(runs.items(), key=lambda x: x[0][1]):
        o = out.setdefault(str(k), {"runs": 0, "raw": 0, "calibrated": 0})
        o["runs"] += 1
        for kind, key in (("raw", "prediction"), ("calibrated", "calibrated_prediction")):
            top = max(Counter(x[key] for x in rs).values()) / len(rs)
            o[kind] += int(top >= 0.9)
    return out


def icl(dirs: list[Path], out_json: Path, png: Path | None) -> None:
    results = {}
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        task = m["task"]
        results[task] = {k: m[k] for k in ("by_shots", "calibrated_by_shots", "by_template", "scoring", "templates",
                                           "shots", "seeds", "n_eval", "n_train", "examples_truncated", "seconds",
                                           "threads", "model", "runs") if k in m}
        if "prefix_cache" in m:
            results[task]["prefix_cache"] = m["prefix_cache"]
        results[task]["one_class_runs"] = _one_class_runs(d / "predictions.jsonl")
        print(f"\n{task}: {m['n_eval']} dev examples, templates {', '.join(m['by_template'])}, {m['seeds']} seeds, "
              f"{m['seconds']} s\n")
        print("| shots | runs | accuracy | calibrated |")
        print("|---|---|---|---|")
        for k, v in m["by_shots"].items():
            print(f"| {k} | {v['runs']} | {_pm(v, 'accuracy')} | {_pm(m['calibrated_by_shots'][k], 'accuracy')} |")
        print("\n| template | " + " | ".join(f"{k} shots raw / cal" for k in m["by_shots"]) + " |")
        print("|---|" + "---|" * len(m["by_shots"]))
        for name, t in m["by_template"].items():
            print(f"| {name} | " + " | ".join(f"{t['raw'][k]['accuracy']:.3f} / {t['calibrated'][k]['accuracy']:.3f}"
                                             for k in m["by_shots"]) + " |")
        print("\nruns predicting one class for >= 90% of the examples (raw / calibrated): " + ", ".join(
            f"{k} shots {v['raw']} / {v['calibrated']} of {v['runs']}" for k, v in results[task]["one_class_runs"].items()))
        if "prefix_cache" in m:
            pc = m["prefix_cache"]
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
                y = [t[kind][str(k)]["accuracy"] for k in shots]
                e = [t[kind][str(k)]["accuracy_std"] for k in shots]
                ax.errorbar(range(len(shots)), y, yerr=e, color=c, ls=style, marker="o", ms=3, capsize=2,
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
        log = d.parent / f"{d.name}.log"  # its last line: /usr/bin/time -f %U_%S_%e of the whole process
        last = log.read_text().strip().splitlines()[-1] if log.is_file() else ""
        proc = [float(x) for x in last.split("_")] if re.fullmatch(r"[\d.]+_[\d.]+_[\d.]+", last) else None
        rows.append({"run": d.name, "mode": e["mode"], "trainable_params": e["trainable_params"],
                     "total_params": e["total_params"],
                     "trainable_percent": round(100 * e["trainable_params"] / e["total_params"], 4),
                     "accuracy": e["accuracy"], "train_examples": e["train_examples"],
                     "dev_examples": e["dev_examples"], "train_steps": e["train_steps"],
                     "train_cpu_s": e.get("train_cpu_s"), "train_time_s": e.get("train_time_s"),
                     "eval_time_s": e.get("eval_time_s"), "threads": e.get("threads"),
                     "process_user_sys_wall_s": proc})
    print("| mode | trained params (% of model) | SST-2 dev accuracy | train CPU s | train wall s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['trainable_params']:,} ({r['trainable_percent']:.3g}%) | {r['accuracy']:.3f} | "
              f"{r['train_cpu_s']} | {r['train_time_s']} |")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("icl", "soft"))
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--png", type=Path, default=None)
    a = p.parse_args()
    if a.kind == "icl":
        icl(a.dirs, a.json, a.png)
    else:
        soft(a.dirs, a.json)


if __name__ == "__main__":
    main()
