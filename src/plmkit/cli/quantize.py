"""``plm quantize``: quantize a fine-tuned checkpoint's linear layers into a new checkpoint."""

from __future__ import annotations

import argparse
import json

HELP = "Quantize a fine-tuned checkpoint's linear layers (dynamic int8, weight-only int8 / int4)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.checks import POSITIVE, arg

    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory (plm finetune / distill / prune output)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--method", required=True, choices=["dynamic-int8", "weight-int8", "weight-int4"],
                   help="dynamic-int8: int8 weights and per-batch int8 activations; weight-int8 / weight-int4: "
                        "quantized weights, fp32 activations")
    p.add_argument("--group-size", type=arg(int, POSITIVE), default=32, help="weight-int4: input channels per scale")
    p.add_argument("--embeddings", action="store_true", help="also store the word-embedding table as int8 per row")


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.checkpoints import quantize_checkpoint

    res = quantize_checkpoint(args.model, args.out, args.method, args.group_size, args.embeddings)
    print(json.dumps({k: v for k, v in res.items() if k != "compression"}, indent=2))
    return 0
