"""``plm evaluate``: score a fine-tuned checkpoint (or an ensemble of them) on a data split."""

from __future__ import annotations

import argparse
import json

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg
from plmkit.textio import ENCODING_ERRORS_HELP

HELP = "Evaluate a fine-tuned checkpoint on a data split."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, nargs="+", help="plm finetune output directory (several = ensemble)")
    p.add_argument("--data", required=True, help="data directory or file")
    p.add_argument("--split-file", default=None, help="file inside --data to evaluate (default: the task's dev file)")
    p.add_argument("--ensemble", default="vote", choices=["vote", "average"], help="how several checkpoints combine: mean probabilities or weight averaging")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=64, help="evaluation batch size")
    p.add_argument("--max-examples", type=arg(int, POSITIVE), default=None, help="random subset of N examples")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    p.add_argument("--out", default=None, help="write the metrics JSON here as well")
    p.add_argument("--task", default=None,
                   help="read --data as this task's files (same kind and labels as the checkpoint's task), e.g. "
                        "chnsenticorp for an sst2 model: zero-shot cross-lingual transfer")
    p.add_argument("--language-id", type=arg(int, NON_NEGATIVE), default=None,
                   help="XLM language id (token type) of every input token (default: the checkpoint's --language-id)")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from plmkit.errors import UserError

    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a directory; expected the path of the JSON file to write")
    from plmkit.tasks.checkpoint import write_json_atomic
    from plmkit.tasks.evaluation import evaluate_checkpoints

    res = evaluate_checkpoints(args.checkpoint, args.data, args.split_file, args.ensemble, args.batch_size,
                               args.skip_bad, args.max_examples, args.encoding_errors, args.task,
                               args.language_id)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.out), res)
    return 0
