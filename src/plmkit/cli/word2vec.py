"""``plm word2vec train|similar|analogy`` (plmkit.classic.word2vec).

    plm word2vec train --text corpus.txt --out vectors.bin [--arch cbow --loss hs --dim 100 --epochs 5]
    plm word2vec similar vectors.bin king queen --topn 10
    plm word2vec analogy vectors.bin man king woman           # man:king :: woman:?
    plm word2vec analogy vectors.bin --questions questions-words.txt   # or --builtin

Text: one sentence per line, split on whitespace. ``.bin`` outputs use the binary word2vec
format, anything else the text format (both readable by gensim's ``load_word2vec_format``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg
from plmkit.errors import UserError
from plmkit.textio import ENCODING_ERRORS_HELP, iter_lines

HELP = "Train word2vec (CBOW / skip-gram) and query similar words and analogies."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="w2v_command", metavar="SUBCOMMAND", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    t = sub.add_parser("train", help="train word vectors on text", formatter_class=fmt)
    t.add_argument("--text", nargs="+", required=True, help="training text file(s), one sentence per line")
    t.add_argument("--out", required=True, help="output vectors (.bin: binary word2vec format, else text)")
    t.add_argument("--arch", default="skipgram", choices=["skipgram", "cbow"], help="model architecture")
    t.add_argument("--loss", default="ns", choices=["ns", "hs"], help="negative sampling or hierarchical softmax")
    t.add_argument("--dim", type=arg(int, POSITIVE), default=100, help="vector size")
    t.add_argument("--window", type=arg(int, POSITIVE), default=5, help="maximum window")
    t.add_argument("--min-count", type=arg(int, POSITIVE), default=5, help="ignore words seen fewer times")
    t.add_argument("--negative", type=arg(int, NON_NEGATIVE), default=5, help="negative samples per example")
    t.add_argument("--sample", type=arg(float, NON_NEGATIVE), default=1e-3, help="sub-sampling threshold (0: off)")
    t.add_argument("--alpha", type=arg(float, POSITIVE), default=None, help="initial learning rate (default 0.025 sg / 0.05 cbow)")
    t.add_argument("--epochs", type=arg(int, POSITIVE), default=5, help="passes over the corpus")
    t.add_argument("--batch-size", type=arg(int, POSITIVE), default=1024, help="examples per SGD step")
    t.add_argument("--workers", type=arg(int, POSITIVE), default=1, help="torch threads")
    t.add_argument("--lowercase", action="store_true", help="lower-case the text")
    t.add_argument("--seed", type=arg(int, NON_NEGATIVE), default=1, help="random seed")
    t.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)
    s = sub.add_parser("similar", help="nearest neighbours of words", formatter_class=fmt)
    s.add_argument("vectors", help="word2vec text or binary file")
    s.add_argument("words", nargs="+", help="query words")
    s.add_argument("--topn", type=arg(int, POSITIVE), default=10, help="neighbours per word")
    a = sub.add_parser("analogy", help="a:b :: c:? queries or an analogy question set", formatter_class=fmt)
    a.add_argument("vectors", help="word2vec text or binary file")
    a.add_argument("words", nargs="*", help="three words a b c (answers a:b :: c:?)")
    a.add_argument("--questions", help="questions-words.txt format file (': section' headers, 4 words per line)")
    a.add_argument("--builtin", action="store_true", help="evaluate on plmkit's built-in analogy set")
    a.add_argument("--topn", type=arg(int, POSITIVE), default=5, help="answers shown for a single query")
    a.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict", help=ENCODING_ERRORS_HELP)
    a.add_argument("--restrict-vocab", type=arg(int, POSITIVE), default=300000, help="search only the most frequent words")


def run(args: argparse.Namespace) -> int:
    from plmkit.classic import word2vec as w2v

    if args.w2v_command == "train":
        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out}: is a directory; expected the path of the vectors file to write")
        from plmkit import progress

        progress.set_hint(f"{args.out} was not written; word2vec training does not resume: run the command again")
        progress.stage("while reading the text")
        sents = []
        for f in args.text:
            p = Path(f)
            if not p.is_file():
                raise UserError(f"{p}: no such file")
            for line in iter_lines(p, args.encoding_errors):
                toks = (line.lower() if args.lowercase else line).split()
                if toks:
                    sents.append(toks)
        cfg = w2v.Word2VecConfig(architecture=args.arch, loss=args.loss, vector_size=args.dim, window=args.window,
                                 min_count=args.min_count, negative=args.negative, sample=args.sample,
                                 alpha=args.alpha, epochs=args.epochs, batch_size=args.batch_size,
                                 workers=args.workers, seed=args.seed)
        wv = w2v.train_word2vec(sents, cfg, progress=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        wv.save_word2vec_format(out, binary=out.suffix == ".bin")
        st = wv.train_stats
        print(f"{len(wv)} words x {args.dim} -> {out} ({st['corpus_words']} corpus words, "
              f"{st['seconds']:.1f}s, final epoch loss {st['epoch_loss'][-1]:.4f})")
        return 0
    wv = w2v.WordVectors.load_word2vec_format(args.vectors)
    if args.w2v_command == "similar":
        for w in args.words:
            res = wv.most_similar(w, topn=args.topn)
            print(f"{w}: " + ", ".join(f"{x} ({s:.3f})" for x, s in res))
        return 0
    if args.words:
        if len(args.words) != 3:
            raise UserError(f"analogy takes three words a b c (a:b :: c:?), got {len(args.words)}")
        a, b, c = args.words
        res = wv.most_similar([b, c], [a], topn=args.topn, restrict_vocab=args.restrict_vocab)
        print(f"{a}:{b} :: {c}:? " + ", ".join(f"{x} ({s:.3f})" for x, s in res))
        return 0
    if not (args.questions or args.builtin):
        raise UserError("analogy needs three words, --questions FILE or --builtin")
    qs = w2v.read_questions(args.questions, args.encoding_errors) if args.questions else w2v.analogy_questions()
    r = wv.evaluate_analogies(qs, args.restrict_vocab)
    print(f"analogy accuracy {r['accuracy']:.4f} ({r['correct']}/{r['evaluated']}); "
          f"{r['skipped']} questions skipped for unknown words (e.g. {r['skipped_examples'][:2]})")
    print(json.dumps(r["sections"]))
    return 0
