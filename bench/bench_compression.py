"""Compressed checkpoints side by side: dev accuracy, weight-file size and inference throughput.

    python bench/bench_compression.py --data DIR --batch 32 --seq 64 --reps 5 --out results/compression.json \
        teacher=CKPT student=CKPT ...

Each NAME=CKPT is a fine-tuned checkpoint (``plm finetune`` / ``distill`` / ``quantize`` / ``prune`` output).
Accuracy: ``plmkit.tasks.evaluation.evaluate_checkpoints`` on the task's dev file (``--max-eval-examples``
for a random subset). Throughput: the backbone + task head on random token ids of ``--batch`` x ``--seq``
(no padding), in inference mode, ``--threads`` intra-op threads; the checkpoints are timed interleaved
(one batch each, round-robin, ``--reps`` rounds after one warm-up round) and the medians reported, both as
wall time and as process CPU time: on a shared, loaded machine the CPU time per batch (single thread)
is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="NAME=CHECKPOINT_DIR")
    p.add_argument("--data", required=True, help="task data directory (its dev file is scored)")
    p.add_argument("--max-eval-examples", type=int, default=None, help="random dev subset")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-accuracy", action="store_true", help="timing and sizes only")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args(argv)

    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.evaluation import evaluate_checkpoints

    torch.set_num_threads(args.threads)
    names = [c.split("=", 1) for c in args.checkpoints]
    loaded = {}
    res: dict = {"batch": args.batch, "seq": args.seq, "reps": args.reps, "threads": args.threads,
                 "load_average": os.getloadavg(), "torch": torch.__version__, "checkpoints": {}}
    for name, path in names:
        model, obj, info, tok = load_checkpoint(path)
        model.eval()
        loaded[name] = (model, obj)
        entry = {"path": path, "weights_mb": round(os.path.getsize(Path(path) / "weights.safetensors") / 2**20, 2),
                 "parameters_and_buffers": sum(t.numel() for t in model.state_dict().values()),
                 "layers": model.num_layers, "compression": info.get("compression")}
        if not args.no_accuracy:
            t0 = time.perf_counter()
            ev = evaluate_checkpoints([path], args.data, max_examples=args.max_eval_examples)
            entry.update(accuracy=ev.get("accuracy"), dev_examples=ev.get("examples", ev.get("dev_examples")),
                         eval_wall_s=round(time.perf_counter() - t0, 1))
        res["checkpoints"][name] = entry
        print(name, json.dumps(entry), file=sys.stderr, flush=True)

    vocab = min(m.config.vocab_size for m, _ in loaded.values())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab // 2), vocab, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    wall = {n: [] for n in loaded}
    cpu = {n: [] for n in loaded}
    with torch.inference_mode():
        for rep in range(args.reps + 1):
            for name, (model, obj) in loaded.items():
                c, w = time.process_time(), time.perf_counter()
                obj.forward(model, batch)
                if rep:  # round 0 is the warm-up
                    wall[name].append(time.perf_counter() - w)
                    cpu[name].append(time.process_time() - c)
    base = names[0][0]
    for name in loaded:
        e = res["checkpoints"][name]
        e["wall_s_per_batch"] = [round(v, 4) for v in wall[name]]
        e["cpu_s_per_batch"] = [round(v, 4) for v in cpu[name]]
        e["median_wall_s"] = round(statistics.median(wall[name]), 4)
        e["median_cpu_s"] = round(statistics.median(cpu[name]), 4)
        e["examples_per_cpu_s"] = round(args.batch / statistics.median(cpu[name]), 1)
        e["speedup_vs_" + base + "_cpu"] = round(statistics.median(cpu[base]) / statistics.median(cpu[name]), 2)
        e["speedup_vs_" + base + "_wall"] = round(statistics.median(wall[base]) / statistics.median(wall[name]), 2)
    res["load_average_after"] = os.getloadavg()
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
