"""``plm prepare``: tokenize a corpus once into a sharded memory-mapped token store.

    plm prepare --tokenizer tok/ --out store/ corpus.txt folder/ data.jsonl.gz
    plm prepare --tokenizer tok/ --out store/ --doc-sep blank input.txt --encoding-errors replace
    plm prepare --tokenizer tok/ --out pairs/ --parallel cmn-eng.tsv      # or two aligned files (TLM)

The store layout and readers are described in ``plmkit.data.store``; the manifest is
``OUT/manifest.json``. Re-running with the same inputs and tokenizer does nothing; a store built
from other inputs or another tokenizer is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg
from plmkit.cli.tokenizer import add_input_arguments

HELP = "Tokenize a corpus once into a sharded memory-mapped token store."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="text / JSONL / .gz files or folders")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory / tokenizer.json / vocab.txt / vocab.json")
    p.add_argument("--out", required=True, help="output store directory (manifest at OUT/manifest.json)")
    add_input_arguments(p)
    p.add_argument("--dtype", choices=["uint16", "uint32"], default=None,
                   help="token id dtype (default: uint16 when the vocabulary fits, else uint32)")
    p.add_argument("--shard-tokens", type=arg(int, POSITIVE), default=1 << 27, help="tokens per shard (documents never span shards)")
    p.add_argument("--workers", type=arg(int, NON_NEGATIVE), default=0,
                   help="0: the Rust tokenizer's own threads (fastest here); N: N single-threaded worker processes")
    p.add_argument("--no-sentences", action="store_true", help="do not record sentence starts")
    p.add_argument("--no-words", action="store_true", help="do not record word starts")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--parallel", action="store_true",
                   help="inputs are sentence pairs: .tsv files (source<TAB>target) or two line-aligned files; "
                        "each pair is stored for the TLM objective (plmkit.data.parallel)")
    p.add_argument("--langs", default=None, help="with --parallel: names of the two sides, e.g. en,zh (recorded)")


def run(args: argparse.Namespace) -> int:
    from plmkit import progress
    from plmkit.data import prepare

    progress.set_hint(f"{args.out} was not written (nothing partial is kept): run the command again")

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"plm prepare: {msg}", file=sys.stderr)

    if args.parallel:
        from plmkit.data.parallel import prepare_parallel

        m = prepare_parallel(args.inputs, args.tokenizer, args.out, dtype=args.dtype, overwrite=args.overwrite,
                             languages=args.langs.split(",") if args.langs else None, log=log)
        if not args.quiet:
            print(json.dumps({k: m[k] for k in ("num_tokens", "num_documents", "dtype", "languages")} | m["input"]))
        return 0
    if args.langs:
        from plmkit.errors import UserError

        raise UserError("--langs goes with --parallel")
    m = prepare(
        args.inputs, args.tokenizer, args.out, doc_sep=args.doc_sep, text_field=args.text_field,
        errors=args.errors, format=args.format, dtype=args.dtype, shard_tokens=args.shard_tokens,
        num_workers=args.workers, words=not args.no_words, sentences=not args.no_sentences,
        overwrite=args.overwrite, progress=True if args.progress else (None if not args.quiet else False), log=log,
        heartbeat=not args.quiet,
    )
    inp = m["input"]
    if not args.quiet:
        print(json.dumps({k: m[k] for k in ("num_tokens", "num_documents", "num_sentences", "dtype")}
                         | {"input_documents": inp["documents"], "empty_documents": inp["empty_documents"],
                            "files": inp["files"], "empty_files": inp["empty_files"],
                            "replaced_characters": inp["replaced_characters"]}))
    return 0
