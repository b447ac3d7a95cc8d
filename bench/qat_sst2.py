"""qat-int8 vs fp32 with the same budget: both continue a fine-tuned checkpoint on the same examples.

    python bench/qat_sst2.py --start T --data shared/data/glue/SST-2 --examples 1000 --workdir W \
        --out results/compression_qat_sst2.json

Arms (each written to ``W/NAME``; dev accuracy on the full dev file):
- ``fp32``: ``qat_checkpoint(fake_quant=False)``: fp32 fine-tuning of ``--start`` on ``--examples`` training
  examples (seed, lr, epochs, batch as given);
- ``fp32+ptq-dynamic-int8``: that fp32 result quantized after training (``plm quantize --method dynamic-int8``);
- ``qat-int8``: ``plm quantize --method qat-int8`` with the same examples, seed, lr, epochs and batch
  (fake int8 weights per channel and activations per tensor, straight-through; stored as dynamic int8).
Speed and file size: ``bench/bench_compression.py`` on the written checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", required=True, help="fine-tuned fp32 checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from plmkit.compression.checkpoints import qat_checkpoint, quantize_checkpoint
    from plmkit.tasks.evaluation import evaluate_checkpoints

    w = Path(args.workdir)
    res = {"start": args.start, "examples": args.examples, "epochs": args.epochs, "lr": args.lr,
           "batch_size": args.batch_size, "seed": args.seed, "load_average_start": os.getloadavg(), "arms": {}}

    def save():
        Path(args.out).write_text(json.dumps(res, indent=1))

    kw = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_train_examples=args.examples,
              seed=args.seed)
    ev = evaluate_checkpoints([args.start], args.data)
    res["arms"]["start"] = {"accuracy": ev["accuracy"]}
    for name, fq in (("fp32", False), ("qat-int8", True)):
        c0 = time.process_time()
        r = qat_checkpoint(args.start, str(w / name), args.data, fake_quant=fq, **kw)
        res["arms"][name] = {"accuracy": r["accuracy"], "train_steps": r["train_steps"],
                             "train_wall_s": r["train_time_s"], "cpu_s": round(time.process_time() - c0, 1),
                             "weights_bytes": r["weights_bytes"], "load_average": os.getloadavg()}
        print(name, res["arms"][name], flush=True)
        save()
    r = quantize_checkpoint(str(w / "fp32"), str(w / "fp32_ptq"), "dynamic-int8")
    ev = evaluate_checkpoints([str(w / "fp32_ptq")], args.data)
    res["arms"]["fp32+ptq-dynamic-int8"] = {"accuracy": ev["accuracy"], "weights_bytes": r["weights_bytes"]}
    print("ptq", res["arms"]["fp32+ptq-dynamic-int8"], flush=True)
    res["load_average_end"] = os.getloadavg()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
