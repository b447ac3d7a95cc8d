"""Pool ``plm edit --data`` runs into one table per method (CounterFact or zsRE), unedited row included.

    .venv/bin/python bench/editing_table.py --json bench/results/editing_counterfact_smollm2.json \\
        rome=runs/rome-0,runs/rome-20 ft=runs/ft-0 ...

Each ``LABEL=DIR[,DIR...]`` pools the ``cases.jsonl`` of those output folders (cases counted once: a
case id seen twice under one label is refused). Per label: n, the edited scores, the unedited scores
of the same cases, the magnitudes (CounterFact), seconds and CPU seconds per edit (mean of the cases'
``edit_seconds`` / ``edit_cpu_seconds``), and the fluency of the samples. Scores are fractions; the
printed Markdown table shows them x 100. The "unedited" row pools the cases of the first label."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from plmkit.knowledge.edit.evaluate import details, summarize  # noqa: E402


def pool(dirs: list[str]) -> tuple[str, list[dict], list[dict]]:
    rows, runs, kind = [], [], None
    for d in dirs:
        det = json.loads((Path(d) / "details.json").read_text()) if (Path(d) / "details.json").is_file() else {}
        got = [json.loads(x) for x in (Path(d) / "cases.jsonl").read_text().splitlines() if x.strip()]
        k = det.get("kind") or ("zsre" if "efficacy" in got[0]["edited"] else "counterfact")
        if kind not in (None, k):
            raise SystemExit(f"{d}: {k} mixed with {kind}")
        kind = k
        rows += got
        runs.append({"dir": d, "n": len(got), "complete": bool(det), "batch_size": det.get("batch_size"),
                     "fluency_tokens": det.get("fluency_tokens"), "layers": det.get("layers")})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{dirs}: a case appears twice")
    return kind, rows, runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=DIR[,DIR...]")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    table = {}
    for spec in a.runs:
        label, _, dirs = spec.partition("=")
        existing = [d for d in dirs.split(",") if (Path(d) / "cases.jsonl").is_file()]
        if not existing:
            continue
        kind, rows, runs = pool(existing)
        def mean(k: str) -> float | None:
            vals = [r[k] for r in rows if r.get(k) is not None]
            return sum(vals) / len(vals) if len(vals) == len(rows) else None

        table[label] = {"kind": kind, "n": len(rows), "ids": [r["id"] for r in rows], "runs": runs,
                        "edited": {**summarize(kind, [r["edited"] for r in rows]),
                                   **details(kind, [r["edited"] for r in rows])},
                        "unedited": {**summarize(kind, [r["unedited"] for r in rows]),
                                     **details(kind, [r["unedited"] for r in rows])},
                        "seconds_per_edit": mean("edit_seconds"), "cpu_seconds_per_edit": mean("edit_cpu_seconds")}
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=1) + "\n")
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    sec = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    for i, (label, t) in enumerate(table.items()):
        if t["kind"] == "zsre":
            if i == 0:
                print("| method | n | efficacy | paraphrase | specificity | s / edit | CPU s / edit |\n|---|---|---|---|---|---|---|")
                u = t["unedited"]
                print(f"| unedited | {t['n']} | {pct(u['efficacy'])} | {pct(u['paraphrase'])} | {pct(u['specificity'])} | - | - |")
            e = t["edited"]
            print(f"| {label} | {t['n']} | {pct(e['efficacy'])} | {pct(e['paraphrase'])} | {pct(e['specificity'])} "
                  f"| {sec(t['seconds_per_edit'])} | {sec(t['cpu_seconds_per_edit'])} |")
            continue
        if i == 0:
            print("| method | n | ES | PS | NS | S | fluency | EM | s / edit | CPU s / edit | unedited S / NS / fluency on these n |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            u = t["unedited"]
            fl = "-" if u["fluency"] is None else f"{u['fluency']:.2f}"
            print(f"| unedited | {t['n']} | {pct(u['es'])} | {pct(u['ps'])} | {pct(u['ns'])} | {pct(u['s'])} | {fl} "
                  f"| {pct(u['em'])} | - | - | |")
        e, u = t["edited"], t["unedited"]
        fl = "-" if e["fluency"] is None else f"{e['fluency']:.2f}"
        ufl = "-" if u["fluency"] is None else f"{u['fluency']:.2f}"
        print(f"| {label} | {t['n']} | {pct(e['es'])} | {pct(e['ps'])} | {pct(e['ns'])} | {pct(e['s'])} | {fl} "
              f"| {pct(e['em'])} | {sec(t['seconds_per_edit'])} | {sec(t['cpu_seconds_per_edit'])} "
              f"| {pct(u['s'])} / {pct(u['ns'])} / {ufl} |")


if __name__ == "__main__":
    main()
