"""``plm predict``: run a fine-tuned checkpoint over inputs and write one JSONL line per input."""

from __future__ import annotations

import argparse
import sys

from plmkit.checks import POSITIVE, arg
from plmkit.textio import ENCODING_ERRORS_HELP

HELP = "Run a fine-tuned checkpoint over inputs and write JSONL predictions."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="plm finetune output directory")
    p.add_argument("--input", required=True, help="inputs: .txt (one text per line), .tsv/.csv/.jsonl with the task's columns, CoNLL or SQuAD JSON")
    p.add_argument("--out", required=True, help="output JSONL path")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=64, help="batch size")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)


def run(args: argparse.Namespace) -> int:
    from plmkit.tasks.prediction import predict

    res = predict(args.checkpoint, args.input, args.out, args.batch_size, args.skip_bad, args.encoding_errors)
    msg = f"wrote {res['written']} predictions for {res['inputs']} inputs to {args.out}"
    if res["truncated"]:
        msg += f"; {res['truncated']} inputs were truncated to the model's max_seq_len (flagged 'truncated': true)"
    if res["skipped_bad_rows"]:
        msg += f"; skipped {res['skipped_bad_rows']} bad rows"
    print(msg, file=sys.stderr)
    return 0
