"""``plm tokenizer``: train a tokenizer, or show how one splits a text.

    plm tokenizer train --kind wordpiece --vocab-size 8000 --out tok/ corpus.txt more/*.txt
    plm tokenizer train --kind bpe --style gpt2 --vocab-size 16000 --out gpt2tok/ data.jsonl.gz --text-field body
    plm tokenizer train --kind char --out chartok/ chinese/          # vocab = all characters seen
    plm tokenizer encode tok/ "Hello world"                          # tokens, ids and word ids

Training streams the inputs (text / JSONL / .gz files or folders) through the HF ``tokenizers``
trainers (see ``plmkit.tokenization.train``); the output directory holds tokenizer.json,
tokenizer_config.json and special_tokens_map.json, readable by ``transformers.AutoTokenizer``.
"""

from __future__ import annotations

import argparse
import json
import sys

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg
from plmkit.textio import ENCODING_ERRORS_HELP

HELP = "Train a WordPiece / byte-level BPE / Unigram / char tokenizer (tokenizer train)."


def _formatter(prog):
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32, width=100)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with ``plm prepare``: how input files are split into documents."""
    p.add_argument("--doc-sep", choices=["line", "blank"], default="line",
                   help="text files: one document per line, or documents separated by blank lines")
    p.add_argument("--text-field", default="text", help="JSONL files: the field holding the text")
    p.add_argument("--format", choices=["auto", "text", "jsonl"], default="auto",
                   help="input format (auto: JSONL for .jsonl/.jsonl.gz names, text otherwise)")
    p.add_argument("--encoding-errors", "--errors", dest="errors", choices=["strict", "replace"], default="strict",
                   help=ENCODING_ERRORS_HELP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    sub.required = True
    t = sub.add_parser("train", help="train a tokenizer on text / JSONL / .gz files or folders",
                       description="Train a tokenizer with the HF tokenizers trainers.", formatter_class=_formatter)
    t.add_argument("files", nargs="+", help="input files or folders")
    t.add_argument("--kind", choices=["wordpiece", "bpe", "unigram", "char"], default="wordpiece",
                   help="tokenizer family")
    t.add_argument("--vocab-size", type=arg(int, POSITIVE), default=None,
                   help="total vocabulary size incl. special tokens (default: 8000; char: all characters seen)")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--style", choices=["roberta", "gpt2"], default="roberta",
                   help="bpe only: RoBERTa (<s> </s> <pad> <unk> <mask>) or GPT-2 (<|endoftext|>) special tokens")
    t.add_argument("--cased", action="store_true", help="wordpiece only: keep case (default lower-cases, as BERT uncased)")
    t.add_argument("--min-frequency", type=arg(int, NON_NEGATIVE), default=2, help="wordpiece/bpe: minimum pair frequency to merge")
    t.add_argument("--sentinels", type=arg(int, NON_NEGATIVE), default=100, help="unigram only: number of T5 <extra_id_k> sentinels")
    t.add_argument("--special-tokens", nargs="*", default=None, help="extra special tokens to add")
    t.add_argument("--model-max-length", type=arg(int, POSITIVE), default=None, help="default max_length stored with the tokenizer")
    add_input_arguments(t)
    t.add_argument("--progress", action="store_true", help="show the trainer's progress bar")
    e = sub.add_parser("encode", help="show tokens, ids and word ids of a text",
                       description="Encode a text and print tokens, ids and word ids as JSON.", formatter_class=_formatter)
    e.add_argument("tokenizer", help="tokenizer directory / tokenizer.json / vocab.txt / vocab.json")
    e.add_argument("text", nargs="?", default=None, help="text to encode ('-' or omitted: read stdin)")
    e.add_argument("--no-special-tokens", action="store_true", help="do not add the special tokens")


def run(args: argparse.Namespace) -> int:
    from plmkit.errors import UserError

    if args.action == "encode":
        from plmkit import load_tokenizer  # also a .gguf file (plmkit.interop.gguf)

        tok = load_tokenizer(args.tokenizer)
        from plmkit.textio import read_stdin

        text = read_stdin() if args.text in (None, "-") else args.text
        add = not args.no_special_tokens
        ids = tok.encode(text, add_special_tokens=add)
        print(json.dumps({"tokens": tok.convert_ids_to_tokens(ids), "ids": ids,
                          "word_ids": tok.word_ids(text, add_special_tokens=add)}, ensure_ascii=False))
        return 0
    from plmkit.tokenization import train_tokenizer

    from pathlib import Path

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory; expected the output directory")
    size = args.vocab_size if args.vocab_size is not None else (None if args.kind == "char" else 8000)
    if size is not None and size <= 0:
        raise UserError(f"--vocab-size must be positive, got {size}")
    tok = train_tokenizer(
        args.files, kind=args.kind, vocab_size=size, special_tokens=args.special_tokens,
        doc_sep=args.doc_sep, text_field=args.text_field, errors=args.errors, format=args.format,
        style=args.style, lowercase=not args.cased, min_frequency=args.min_frequency, sentinels=args.sentinels,
        model_max_length=args.model_max_length, show_progress=args.progress,
        log=lambda msg: print(f"plm tokenizer: {msg}", file=sys.stderr),
    )
    tok.save(args.out)
    print(f"plm tokenizer: {tok.kind} tokenizer with {len(tok)} ids written to {args.out}", file=sys.stderr)
    return 0
