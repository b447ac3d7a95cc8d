"""Counts behind the CounterFact table's readings, from the ``cases.jsonl`` of ``plm edit --data`` runs.

    .venv/bin/python bench/editing_readings.py rome=runs/rome-0,runs/rome-20 ft=runs/ft-0 ... [--json OUT]

Per ``LABEL=DIR[,DIR...]`` (pooled as in ``editing_table.py``): cases whose edit failed on the prompt
(P(new) <= P(true) after the edit), rephrasings still preferring the true object, locality prompts that
changed side (to the new object / back to the true one), the change of the locality gap
log P(true) - log P(new) (mean, median, most negative), the change of fluency (mean; samples that fell
below 4 bits), and the optimisation curve (v* for ROME / MEMIT, the NLL for FT / FT+L: steps, final
value, how many ended below 0.05; v* curves hold one {step, nll, kl, norm} per evaluated step, the NLL is
read from them)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def rows_of(dirs: list[str]) -> list[dict]:
    out = []
    for d in dirs:
        p = Path(d) / "cases.jsonl"
        if p.is_file():
            out += [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    return out


def gap(s: dict) -> float:
    return s["logp"]["locality_true"] - s["logp"]["locality_new"]


def readings(rows: list[dict]) -> dict:
    u, e = [r["unedited"] for r in rows], [r["edited"] for r in rows]
    dg = [gap(b) - gap(a) for a, b in zip(u, e)]
    fl = [(a.get("fluency"), b.get("fluency")) for a, b in zip(u, e)]
    fl = [(a, b) for a, b in fl if a is not None and b is not None]
    curves = [r["v_curve"] for r in rows if isinstance(r.get("v_curve"), list) and r["v_curve"]]
    curves = [[x["nll"] if isinstance(x, dict) else x for x in c] for c in curves if not isinstance(c[0], list)]
    return {
        "n": len(rows),
        "es_fail": sum(1 for x in e if x["es"] < 1),
        "ps_fail": sum(1 for x in e if x["ps"] < 1),
        "locality_to_new": sum(1 for a, b in zip(u, e) if a["ns"] > b["ns"]),
        "locality_back_to_true": sum(1 for a, b in zip(u, e) if a["ns"] < b["ns"]),
        "locality_gap_change": {"mean": statistics.fmean(dg), "median": statistics.median(dg), "min": min(dg)}
        if dg else None,
        "fluency_change": statistics.fmean(b - a for a, b in fl) if fl else None,
        "fluency_below_4": sum(1 for _, b in fl if b < 4.0),
        "fluency_below_4_unedited": sum(1 for a, _ in fl if a < 4.0),
        "curve": {"steps_mean": statistics.fmean(len(c) for c in curves),
                  "first_mean": statistics.fmean(c[0] for c in curves),
                  "final_mean": statistics.fmean(c[-1] for c in curves),
                  "final_median": statistics.median(c[-1] for c in curves),
                  "final_below_0.05": sum(1 for c in curves if c[-1] < 0.05)} if curves else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=DIR[,DIR...]")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out = {}
    for spec in a.runs:
        label, _, dirs = spec.partition("=")
        rows = rows_of(dirs.split(","))
        if rows:
            out[label] = readings(rows)
            print(label, json.dumps(out[label]))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
