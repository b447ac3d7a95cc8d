"""CPU and wall seconds of lone edits (one request per ``edit`` call, undone after), covariance cached.

    OMP_NUM_THREADS=1 .venv/bin/python bench/editing_speed.py --model SMOL --data CF --records 0,1,2,4,5 \\
        --method rome --hparams recipes/editing/rome-llama-cpu.yaml --stats-corpus WIKITEXT --stats-samples 5000 \\
        --stats-dir DIR [--threads 1] [--json OUT]

``plm edit --data`` reports each case's share of a block's edit (ROME's keys and v* of 16 requests share
forwards there); this measures one request alone, the issue's "a ROME edit in <= 20 s" case. Prints one
line per record (v* / fine-tuning steps, wall s, CPU s of the process, all threads) and the covariance's
time (0 when it was cached)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from plmkit.knowledge.edit import USES_COVARIANCE, covariance, edit, load_hparams, undo  # noqa: E402
from plmkit.knowledge.edit import evaluate as ev  # noqa: E402
from plmkit.knowledge.loading import load_for_knowledge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="CounterFact or zsRE JSON")
    ap.add_argument("--records", default="0,1,2,4,5", help="comma-separated record indices")
    ap.add_argument("--method", default="rome")
    ap.add_argument("--hparams", default=None)
    ap.add_argument("--stats-corpus", default=None)
    ap.add_argument("--stats-samples", type=int, default=100_000)
    ap.add_argument("--stats-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    hp = load_hparams(a.method, a.hparams)
    model, tok, struct = load_for_knowledge(a.model)
    model.requires_grad_(False)
    cov, cov_s, cov_cpu = None, 0.0, 0.0
    if a.method in USES_COVARIANCE and hp.covariance:
        t0, c0 = time.time(), time.process_time()
        cov = covariance.layer_stats_many(struct, tok, hp.layers, a.stats_corpus, a.stats_samples,
                                          Path(a.stats_dir) if a.stats_dir else None, progress=False)
        cov_s, cov_cpu = time.time() - t0, time.process_time() - c0
        print(f"covariance layers {hp.layers}: {cov_s:.1f} s wall, {cov_cpu:.1f} CPU s", flush=True)
    rows = []
    for i in [int(x) for x in a.records.split(",")]:
        _, cases, _ = ev.read_cases(a.data, 1, i)
        if not cases:
            print(f"record {i}: not editable, skipped")
            continue
        d = edit(model, [cases[0].request], a.method, hp, tokenizer=tok, covariance=cov)
        undo(model, d)
        curve = d.info.get("v_curve") or d.info.get("nll_curve")
        if isinstance(curve, list) and curve and isinstance(curve[0], list):
            curve = curve[0]
        steps = len(curve) if isinstance(curve, list) else None
        rows.append({"record": i, "id": cases[0].id, "steps": steps, "seconds": d.info["seconds"],
                     "cpu_seconds": d.info["cpu_seconds"]})
        print(f"record {i}: {steps} steps, {d.info['seconds']:.1f} s wall, {d.info['cpu_seconds']:.1f} CPU s",
              flush=True)
    out = {"model": a.model, "method": a.method, "hparams": a.hparams, "threads": a.threads,
           "covariance_seconds": round(cov_s, 1), "covariance_cpu_seconds": round(cov_cpu, 1), "edits": rows}
    if rows:
        print(f"mean over {len(rows)}: {sum(r['seconds'] for r in rows) / len(rows):.1f} s wall, "
              f"{sum(r['cpu_seconds'] for r in rows) / len(rows):.1f} CPU s")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
