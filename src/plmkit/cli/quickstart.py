"""``plm quickstart``: tokenizer + MLM and CLM pretraining + samples, offline on a CPU (see plmkit.pipelines.quickstart)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg, at_least
from plmkit.textio import ENCODING_ERRORS_HELP

HELP = "Train a tokenizer, pretrain tiny BERT (MLM) and GPT (CLM) models, show perplexity before/after."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.pipelines.quickstart import QuickstartConfig

    d = QuickstartConfig()
    p.add_argument("--out", default="runs/quickstart", help="output directory (must be empty or absent)")
    p.add_argument("--corpus", default=None,
                   help="text file, folder of text files, JSONL or .gz; default: the English reference "
                        "documentation that ships with Python (pydoc_data)")
    p.add_argument("--text-field", default=d.text_field, help="JSONL field holding the text")
    p.add_argument("--doc-sep", choices=["line", "blank"], default=d.doc_sep,
                   help="plain text: one document per line, or documents separated by blank lines")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default=d.encoding_errors,
                   help=ENCODING_ERRORS_HELP)
    p.add_argument("--max-chars", type=arg(int, POSITIVE), default=d.max_chars, help="read at most this many characters of the corpus")
    p.add_argument("--vocab-size", type=arg(int, POSITIVE), default=d.vocab_size, help="WordPiece vocabulary size")
    p.add_argument("--seq-len", type=arg(int, at_least(8)), default=d.seq_len, help="tokens per training window")
    p.add_argument("--mlm-steps", type=arg(int, POSITIVE), default=d.mlm_steps, help="optimizer steps for the BERT-style model")
    p.add_argument("--clm-steps", type=arg(int, POSITIVE), default=d.clm_steps, help="optimizer steps for the GPT-style model")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=d.batch_size, help="windows per step")
    p.add_argument("--lr", type=arg(float, POSITIVE), default=d.lr, help="peak learning rate (cosine schedule)")
    p.add_argument("--seed", type=arg(int, NON_NEGATIVE), default=d.seed, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (outside a terminal, plain progress lines come every "
                        "PLMKIT_PROGRESS_EVERY seconds, 20 by default; 0 = none)")


def run(args: argparse.Namespace) -> int:
    from plmkit.errors import UserError
    from plmkit.pipelines.quickstart import QuickstartConfig, print_locations, run_quickstart

    for name in ("max_chars", "vocab_size", "seq_len", "mlm_steps", "clm_steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.seq_len < 8:
        raise UserError(f"--seq-len: expected at least 8, got {args.seq_len}")
    cfg = QuickstartConfig(corpus=args.corpus, text_field=args.text_field, doc_sep=args.doc_sep,
                           max_chars=args.max_chars, vocab_size=args.vocab_size, seq_len=args.seq_len,
                           mlm_steps=args.mlm_steps, clm_steps=args.clm_steps, batch_size=args.batch_size,
                           lr=args.lr, seed=args.seed, encoding_errors=args.encoding_errors)
    # Bars on a terminal; elsewhere (logs, nohup, CI) plain progress lines every PLMKIT_PROGRESS_EVERY seconds.
    summary = run_quickstart(args.out, cfg, overwrite=args.overwrite, progress=False if args.no_progress else None)
    for name in ("mlm", "clm"):
        s = summary[name]
        print(f"{name}: held-out perplexity {s['ppl_before']:.2f} -> {s['ppl_after']:.2f}")
    print_locations(Path(args.out), summary)
    return 0
