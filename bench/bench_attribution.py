"""Benchmark: BM25 index build / save / load / query time at scale (``plmkit.attribution.BM25Index``).

    .venv/bin/python bench/bench_attribution.py [--examples 1000000] [--queries 100] [--json out.json]

Examples: the non-empty lines of ``../shared/data/english-books/*.txt`` (short: ~10 words each), cycled
until there are ``--examples`` of them (the corpus has ~450k such lines, so 1M repeats each line about
twice). Queries: ``--queries`` lines drawn with seed 0 from the same pool. Reported: seconds to tokenise
and index, examples/s, index size on disk, seconds to save and to load (memory-mapped), mean query
seconds over all examples (``scores``) and peak RSS. Run single-threaded (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from plmkit.attribution import BM25Index

    lines = []
    for f in sorted((Path(args.data) / "english-books").glob("*.txt")):
        lines += [x.strip() for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = [lines[i % len(lines)] for i in range(args.examples)]
    print(f"{len(texts)} examples from {len(lines)} distinct lines, mean {np.mean([len(t.split()) for t in texts[:100000]]):.1f} words",
          file=sys.stderr)
    t0 = time.perf_counter()
    idx = BM25Index.build(texts)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        idx.save(Path(tmp) / "bm25")
        save = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "bm25").iterdir())
        t0 = time.perf_counter()
        back = BM25Index.load(Path(tmp) / "bm25", mmap=True)
        load = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        qs = [lines[i] for i in rng.choice(len(lines), size=args.queries, replace=False)]
        t0 = time.perf_counter()
        for q in qs:
            back.scores(q)
        query = (time.perf_counter() - t0) / len(qs)
    out = {"examples": len(texts), "build_seconds": round(build, 2),
           "build_examples_per_s": round(len(texts) / build, 1), "save_seconds": round(save, 2),
           "index_mb": round(size / 2 ** 20, 1), "load_seconds_mmap": round(load, 3),
           "query_seconds_mean": round(query, 4), "queries": len(qs),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
