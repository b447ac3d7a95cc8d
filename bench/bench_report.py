"""Benchmark: ``plm report`` on many long runs: CPU seconds to build the page, its size, and (with Playwright and
a Chromium) the browser's time to load it and draw every plot.

    .venv/bin/python bench/bench_report.py [--runs 1 10 50] [--steps 10000] [--json bench/results/report_scale.json]

Each synthetic run logs every step (``--steps`` lines: loss, lr, grad_norm, tokens_per_s; an evaluation every
500 steps), the shape ``plm pretrain`` writes; the plots thin each series to ``MAX_POINTS``. The browser time is
the wall time from navigation to the page's ``load`` event (the script has drawn by then), on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_runs(root: Path, runs: int, steps: int) -> None:
    for i in range(runs):
        d = root / f"run-{i:03d}"
        d.mkdir(parents=True)
        rng = random.Random(i)
        with open(d / "metrics.jsonl", "w") as f:
            for s in range(1, steps + 1):
                f.write(json.dumps({"step": s, "loss": 2 + 6 * math.exp(-s / 800) + 0.1 * rng.random(),
                                    "lr": 1e-3 * min(1, s / 200), "grad_norm": 1 + rng.random(),
                                    "tokens_per_s": 9000 + 500 * rng.random()}) + "\n")
        with open(d / "eval.jsonl", "w") as f:
            for s in range(500, steps + 1, 500):
                f.write(json.dumps({"step": s, "loss": 2.1 + 6 * math.exp(-s / 800), "ppl": math.exp(2.1)}) + "\n")


def browser_seconds(html: Path) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    from tests.reporting.test_report_browser import ARGS, find_chromium

    exe = find_chromium()
    if exe is None:
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        page = b.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t = time.perf_counter()
        page.goto(html.resolve().as_uri())
        page.wait_for_load_state("load")
        secs = time.perf_counter() - t
        drawn = page.evaluate("document.querySelectorAll('svg path.series').length")
        b.close()
    assert not errors and drawn > 0, (errors, drawn)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from plmkit.reporting import build_report
    from plmkit.reporting.html import MAX_POINTS

    rows = []
    for n in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_runs(root / "runs", n, args.steps)
            c0, t0 = time.process_time(), time.perf_counter()
            build_report([root / "runs"], root / "report.html")
            row = {"runs": n, "logged_steps_per_run": args.steps, "max_points_per_series": MAX_POINTS,
                   "build_cpu_s": round(time.process_time() - c0, 2), "build_wall_s": round(time.perf_counter() - t0, 2),
                   "html_mib": round((root / "report.html").stat().st_size / 2**20, 2)}
            secs = browser_seconds(root / "report.html")
            row["browser_load_s"] = None if secs is None else round(secs, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "load_avg_1min": os.getloadavg()[0],
                                               "cpu_count": os.cpu_count(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
