"""``plm prune``: prune a fine-tuned checkpoint into a new checkpoint."""

from __future__ import annotations

import argparse
import json

HELP = "Prune a fine-tuned checkpoint: attention heads / FFN neurons by importance, or weights by magnitude."


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.checks import POSITIVE, arg

    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory (mode full)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--method", required=True, choices=["heads", "ffn", "magnitude"],
                   help="heads / ffn: remove the least important attention heads / FFN neurons (Michel et al. "
                        "gradient of gates); magnitude: zero the smallest weights")
    p.add_argument("--amount", type=_fraction, default=None,
                   help="heads / ffn: fraction of all heads / neurons to remove, in [0, 1)")
    p.add_argument("--sparsity", type=_fraction, default=None, help="magnitude: fraction of weights to zero, in [0, 1)")
    p.add_argument("--scope", choices=["global", "layer"], default="global",
                   help="magnitude: one threshold over all blocks, or one per layer")
    p.add_argument("--data", default=None,
                   help="data directory whose training file scores importance (default: the checkpoint's)")
    p.add_argument("--examples", type=arg(int, POSITIVE), default=256, help="training examples scoring importance")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=32, help="batch size of importance scoring")
    p.add_argument("--seed", type=int, default=1, help="random seed of the example subset")


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.checkpoints import prune_checkpoint
    from plmkit.errors import UserError

    amount = args.sparsity if args.method == "magnitude" else args.amount
    if amount is None:
        raise UserError("--sparsity F is required with --method magnitude" if args.method == "magnitude"
                        else f"--amount F is required with --method {args.method}")
    res = prune_checkpoint(args.model, args.out, args.method, amount, args.scope, args.data, args.examples,
                           args.batch_size, args.seed)
    print(json.dumps(res, indent=2))
    return 0
