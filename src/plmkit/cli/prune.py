"""``plm prune``: prune a fine-tuned checkpoint into a new checkpoint."""

from __future__ import annotations

import argparse
import json

HELP = ("Prune a fine-tuned checkpoint: attention heads / FFN neurons by importance, or weights by magnitude "
        "(one-shot or gradual).")


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
    p.add_argument("--seed", type=int, default=1, help="random seed of the example subset (and of --schedule cubic "
                   "training)")
    g = p.add_argument_group("gradual magnitude pruning (--method magnitude --schedule cubic: prune while fine-tuning "
                             "on --data, Zhu & Gupta 2017)")
    g.add_argument("--schedule", choices=["oneshot", "cubic"], default="oneshot",
                   help="magnitude: zero the weights at once, or raise the sparsity on the cubic schedule "
                        "s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 during fine-tuning")
    g.add_argument("--initial-sparsity", type=_fraction, default=0.0, help="cubic: s_i, in [0, 1)")
    g.add_argument("--prune-start", type=float, default=0.0, help="cubic: t0 as a fraction of the training steps")
    g.add_argument("--prune-end", type=float, default=0.7,
                   help="cubic: t0 + n dt as a fraction of the steps (the rest fine-tunes the final sparsity)")
    g.add_argument("--prune-every", type=arg(int, POSITIVE), default=None,
                   help="cubic: dt, steps between mask updates (default: 10 updates)")
    g.add_argument("--epochs", type=arg(float, POSITIVE), default=1.0, help="cubic: fine-tuning epochs")
    g.add_argument("--lr", type=arg(float, POSITIVE), default=2e-5, help="cubic: peak learning rate")
    g.add_argument("--max-train-examples", type=arg(int, POSITIVE), default=None,
                   help="cubic: random subset of N training examples")


def run(args: argparse.Namespace) -> int:
    from plmkit.compression.checkpoints import prune_checkpoint
    from plmkit.errors import UserError

    amount = args.sparsity if args.method == "magnitude" else args.amount
    if amount is None:
        raise UserError("--sparsity F is required with --method magnitude" if args.method == "magnitude"
                        else f"--amount F is required with --method {args.method}")
    if args.schedule == "cubic":
        if args.method != "magnitude":
            raise UserError(f"--schedule cubic: gradual pruning is for --method magnitude, not {args.method}")
        from plmkit.compression.checkpoints import gradual_prune_checkpoint

        res = gradual_prune_checkpoint(args.model, args.out, amount, args.data, args.epochs, args.lr, args.batch_size,
                                       args.max_train_examples, args.seed, args.scope, args.initial_sparsity,
                                       args.prune_start, args.prune_end, args.prune_every)
        res.pop("schedule")
        print(json.dumps(res, indent=2))
        return 0
    res = prune_checkpoint(args.model, args.out, args.method, amount, args.scope, args.data, args.examples,
                           args.batch_size, args.seed)
    print(json.dumps(res, indent=2))
    return 0
