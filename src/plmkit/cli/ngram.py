"""``plm ngram train|eval``: count-based n-gram language models (plmkit.classic.ngram).

    plm ngram train --text train.txt --order 4 --method mkn --out lm/ [--eval test.txt]
    plm ngram eval lm/ --text test.txt          # a directory from train (any method)
    plm ngram eval lm/model.arpa --text test.txt  # or an ARPA file (back-off models)

``train`` writes DIR/counts.json.gz (vocabulary + counts: any method can be rebuilt from it),
DIR/model.json (method and options) and, for back-off models, DIR/model.arpa. Text is one
sentence per line, split on whitespace (``--chars``: every character of the line is a token,
spaces written as ``<space>`` in ARPA files). ``--store`` reads documents from a token store.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from plmkit.checks import OPEN_UNIT, POSITIVE, arg
from plmkit.errors import UserError
from plmkit.textio import ENCODING_ERRORS_HELP

HELP = "Train and evaluate n-gram language models (add-k, Katz, Kneser-Ney); ARPA export."
SPACE = "<space>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ngram_command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    t = sub.add_parser("train", help="count n-grams and build a smoothed LM", formatter_class=fmt)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", help="training text file(s), one sentence per line")
    src.add_argument("--store", help="a token store directory (plm prepare): its documents are the sentences")
    t.add_argument("--order", type=arg(int, POSITIVE), default=3, help="n of the n-gram model (1-5 typical)")
    t.add_argument("--method", default="mkn", help="mle | laplace | addk | katz | kn | mkn")
    t.add_argument("--k", type=arg(float, POSITIVE), default=0.1, help="k of add-k smoothing")
    t.add_argument("--discount", type=arg(float, OPEN_UNIT), default=None, help="fixed KN discount (default: estimated per order)")
    t.add_argument("--min-count", type=arg(int, POSITIVE), default=1, help="map types seen fewer times to <unk>")
    t.add_argument("--add-unk", action="store_true", help="add <unk> to the vocabulary even if every type is kept")
    t.add_argument("--chars", action="store_true", help="character-level: every character is a token")
    t.add_argument("--lowercase", action="store_true", help="lower-case the text")
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument("--eval", nargs="*", default=[], help="text file(s) to report perplexity on after training")
    t.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)
    e = sub.add_parser("eval", help="perplexity of a trained LM on text", formatter_class=fmt)
    e.add_argument("model", help="a directory written by 'plm ngram train' or an ARPA file")
    e.add_argument("--text", nargs="+", required=True, help="evaluation text file(s)")
    e.add_argument("--method", default=None, help="rebuild a directory's counts with another smoothing method")
    e.add_argument("--chars", action="store_true", help="character-level (must match training)")
    e.add_argument("--lowercase", action="store_true", help="lower-case the text (must match training)")
    e.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)


def _sentences(files, chars: bool, lowercase: bool, errors: str = "strict"):
    from plmkit.classic.ngram import read_sentences

    out = []
    for f in files:
        sents = read_sentences(f, chars=chars, lowercase=lowercase, errors=errors)
        if chars:
            sents = [[SPACE if c == " " else c for c in s] for s in sents]
        out += sents
    return out


def run(args: argparse.Namespace) -> int:
    from plmkit import progress
    from plmkit.classic import ngram as ng

    if args.ngram_command == "train":
        progress.set_hint("n-gram training does not resume: run the command again")
        progress.stage("while reading the text")
        if args.order < 1:
            raise UserError(f"--order must be >= 1, got {args.order}")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UserError(f"--out {args.out}: exists and is not a directory; expected the output directory")
        t0 = time.perf_counter()
        if args.store:
            from plmkit.data import TokenStore

            sents = TokenStore(args.store).documents()
        else:
            sents = _sentences(args.text, args.chars, args.lowercase, args.encoding_errors)
        progress.stage(f"while counting {args.order}-grams")
        counts = ng.NgramCounts.build(sents, args.order, min_count=args.min_count, add_unk=args.add_unk)
        options = {"k": args.k, "discount": args.discount}
        lm = ng.build_model(counts, args.method, **options)
        out = Path(args.out)
        progress.stage(f"while writing {out}")
        progress.set_hint(f"{out} may be incomplete: run the command again")
        out.mkdir(parents=True, exist_ok=True)
        counts.save(out / "counts.json.gz")
        meta = {"method": args.method, "order": args.order,
                "options": options, "chars": args.chars, "lowercase": args.lowercase, **counts.summary()}
        (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
        if lm.is_backoff:
            ng.write_arpa(lm, out / "model.arpa")
        s = counts.summary()
        print(f"{args.order}-gram {args.method}: {s['sentences']} sentences, {s['tokens']} tokens, vocabulary "
              f"{s['vocab_size']}, n-grams {s['ngrams']}, counts ~{s['memory_mb']} MB, "
              f"{time.perf_counter() - t0:.1f}s -> {out}" + (" (+ model.arpa)" if lm.is_backoff else ""))
        progress.stage("while scoring --eval files")
        progress.set_hint(f"{out} is complete; run 'plm ngram eval {out} --text FILE' for the perplexities")
        for f in args.eval:
            total, n, oov = lm.score_sentences(_sentences([f], args.chars, args.lowercase, args.encoding_errors))
            ppl = math.inf if total == -math.inf else math.exp(-total / n)
            print(f"{f}: perplexity {ppl:.2f} over {n} tokens ({oov} OOV -> <unk>)")
        return 0

    path = Path(args.model)
    sents = None
    if path.is_dir():
        meta_path = path / "model.json"
        if not meta_path.is_file():
            raise UserError(f"{path}: not a directory written by 'plm ngram train' (no model.json)")
        meta = json.loads(meta_path.read_text())
        counts = ng.NgramCounts.load(path / "counts.json.gz")
        lm = ng.build_model(counts, args.method or meta["method"], **meta.get("options", {}))
        chars, lower = meta.get("chars", False), meta.get("lowercase", False)
        for f in args.text:
            total, n, oov = lm.score_sentences(_sentences([f], chars, lower, args.encoding_errors))
            ppl = math.inf if total == -math.inf else math.exp(-total / n)
            print(f"{f}: {lm.order}-gram {lm.method} perplexity {ppl:.2f} over {n} tokens ({oov} OOV -> <unk>)")
    elif path.is_file():
        arpa = ng.ArpaLM(path, args.encoding_errors)
        for f in args.text:
            sents = _sentences([f], args.chars, args.lowercase, args.encoding_errors)
            print(f"{f}: {arpa.order}-gram ARPA perplexity {arpa.perplexity(sents):.2f}")
    else:
        raise UserError(f"{path}: no such model directory or ARPA file")
    return 0
