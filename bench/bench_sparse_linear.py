"""Does unstructured (magnitude) sparsity speed up a linear layer on CPU? Dense ``F.linear`` vs PyTorch's
CSR sparse matmul on the same magnitude-pruned weight, at several sparsities, timed interleaved.

    python bench/bench_sparse_linear.py [--rows 4096] [--in 384] [--out 1536] [--reps 5] [--out-json FILE]

Shapes default to MiniLM's FFN up-projection at batch 32 x 128 tokens. Reports the median milliseconds per
product (wall and process CPU time, one thread) and the max difference between the two results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--in-features", type=int, default=384)
    p.add_argument("--out-features", type=int, default=1536)
    p.add_argument("--sparsities", default="0.5,0.7,0.9")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.in_features, generator=g)
    w0 = torch.randn(args.out_features, args.in_features, generator=g) * 0.05
    res = {"rows": args.rows, "in": args.in_features, "out": args.out_features, "threads": args.threads,
           "reps": args.reps, "torch": torch.__version__, "results": []}
    for s in (float(v) for v in args.sparsities.split(",")):
        k = int(s * w0.numel())
        thr = w0.abs().flatten().kthvalue(k).values
        w = w0.masked_fill(w0.abs() <= thr, 0.0)
        csr = w.to_sparse_csr()
        xt = x.t().contiguous()
        fns = {"dense": lambda: F.linear(x, w), "csr": lambda: (csr @ xt).t()}
        diff = float((fns["dense"]() - fns["csr"]()).abs().max())
        wall = {n: [] for n in fns}
        cpu = {n: [] for n in fns}
        for rep in range(args.reps + 1):
            for n, fn in fns.items():
                c, t = time.process_time(), time.perf_counter()
                fn()
                if rep:
                    wall[n].append(time.perf_counter() - t)
                    cpu[n].append(time.process_time() - c)
        row = {"sparsity": s, "achieved": float((w == 0).float().mean()), "max_abs_diff": diff}
        for n in fns:
            row[f"{n}_wall_ms"] = round(1000 * statistics.median(wall[n]), 2)
            row[f"{n}_cpu_ms"] = round(1000 * statistics.median(cpu[n]), 2)
        row["csr_speedup_cpu"] = round(row["dense_cpu_ms"] / row["csr_cpu_ms"], 2)
        res["results"].append(row)
        print(json.dumps(row), flush=True)
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
