"""``plm quantize``: quantize a fine-tuned checkpoint's linear layers into a new checkpoint."""

from __future__ import annotations

import argparse
import json

HELP = "Quantize a fine-tuned checkpoint's linear layers (dynamic int8, weight-only int8 / int4)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.checks import POSITIVE, arg

    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory (plm finetune / distill / prune output)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--method", required=True, choices=["dynamic-int8", "weight-int8", "weight-int4", "qat-int8"],
                   help="dynamic-int8: int8 weights and per-batch int8 activations; weight-int8 / weight-int4: "
                        "quantized weights, fp32 activations; qat-int8: fine-tune through fake int8 rounding "
                        "(straight-through, Q8BERT), then store as dynamic-int8")
    p.add_argument("--group-size", type=arg(int, POSITIVE), default=32, help="weight-int4: input channels per scale")
    p.add_argument("--embeddings", action="store_true", help="also store the word-embedding table as int8 per row")
    p.add_argument("--activations", choices=["float32", "bfloat16"], default="float32",
                   help="weight-int8 / weight-int4: what the kernels compute in; bfloat16 is much faster on CPU "
                        "(torch 2.13's weight-only kernels are vectorised for bf16 inputs only), at bf16 rounding")
    p.add_argument("--data", default=None, help="qat-int8: the task's data directory (train/dev files)")
    p.add_argument("--epochs", type=arg(float, POSITIVE), default=1.0, help="qat-int8: training epochs")
    p.add_argument("--lr", type=arg(float, POSITIVE), default=2e-5, help="qat-int8: peak learning rate")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=32, help="qat-int8: examples per batch")
    p.add_argument("--max-train-examples", type=arg(int, POSITIVE), default=None,
                   help="qat-int8: random subset of N training examples")
    p.add_argument("--seed", type=int, default=1, help="qat-int8: random seed")


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.checkpoints import qat_checkpoint, quantize_checkpoint

    if args.method == "qat-int8":
        res = qat_checkpoint(args.model, args.out, args.data, args.epochs, args.lr, args.batch_size,
                             args.max_train_examples, args.seed)
    else:
        res = quantize_checkpoint(args.model, args.out, args.method, args.group_size, args.embeddings,
                                  args.activations)
    print(json.dumps({k: v for k, v in res.items() if k != "compression"}, indent=2))
    return 0
