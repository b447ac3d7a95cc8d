"""``plm analyze``: look inside a model, layer by layer.

    plm analyze contextuality --model M [--corpus FILE] [--max-sentences N] --out DIR
    plm analyze probe --model M --data CONLL_DIR [--tasks pos,chunk,ner] [--train-sentences N] --out DIR
    plm analyze attention --model M [--text "..."] [--data CONLL_DIR | --corpus FILE] [--max-sentences N] --out DIR

``contextuality`` writes ``DIR/contextuality.json`` (``{"layers": [{"layer", "self_similarity",
"intra_sentence", "mev", "anisotropy", "mev_baseline", "self_similarity_adjusted",
"intra_sentence_adjusted", "mev_adjusted"}, ...], ...}``, embeddings first) and ``DIR/contextuality.png``
(``plmkit.analysis.contextuality``). ``probe`` writes ``DIR/probe.json`` and ``DIR/probe.png``
(``plmkit.analysis.probes``). ``attention`` writes, for ``--text``, ``DIR/maps/layer{l}.png`` (all heads) and
``DIR/maps/layer{l}_head{h}.png``, ``DIR/maps/tokens.json`` and the self-contained head view ``DIR/head_view.html``;
for a corpus (``--data``: CoNLL-2003 sentences, with the syntax-relation accuracies; ``--corpus``: plain text),
``DIR/attention.json`` (per-head statistics after Clark et al. 2019), ``DIR/attention_stats.png`` and, with
``--data``, ``DIR/syntax_heads.png`` (``plmkit.analysis.attention``).
"""

from __future__ import annotations

import argparse
import sys

from plmkit.checks import POSITIVE, arg

HELP = ("Look inside a model per layer: contextuality (Ethayarajh 2019); POS/chunk/NER probes with control tasks; "
        "attention maps and per-head statistics (Clark et al. 2019).")


def _layers(value: str | None) -> list[int] | None:
    from plmkit.errors import UserError

    if not value or value == "all":
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--layers: expected comma-separated integers or 'all', got {value!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF-format model directory, .gguf file, pkg:NAME, or preset (with --tokenizer)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    p.add_argument("--layers", default="all", help="comma-separated layer indices (0 = embeddings) or 'all'")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=16, help="sentences per forward pass")
    p.add_argument("--max-len", type=arg(int, POSITIVE), default=128, help="tokens per sentence (words beyond are dropped)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="output directory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    c = sub.add_parser("contextuality", help="self-similarity, intra-sentence similarity, MEV, anisotropy per layer",
                       description="How contextual are the word representations (Ethayarajh 2019)?",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(c)
    c.add_argument("--corpus", default=None, help="text file (default: $PLMKIT_DATA/wikitext-2/test.txt)")
    c.add_argument("--max-sentences", type=int, default=500, help="read the first N sentences")
    c.add_argument("--min-occurrences", type=int, default=5, help="a word counts when it occurs this often")
    c.add_argument("--max-occurrences", type=int, default=30, help="occurrences kept per word")
    c.add_argument("--min-words", type=int, default=10, help="fewest repeated words to report on")
    c.add_argument("--random-words", type=int, default=1000, help="random occurrences for the anisotropy baseline")
    pr = sub.add_parser("probe", help="linear POS / chunk / NER probes per layer with control tasks",
                        description="Layer-wise linear probes with Hewitt & Liang control tasks (selectivity).",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(pr)
    pr.add_argument("--data", required=True, help="CoNLL-2003 folder (train.txt, valid.txt)")
    pr.add_argument("--tasks", default="pos,chunk,ner", help="comma-separated: pos, chunk, ner")
    pr.add_argument("--train-sentences", type=arg(int, POSITIVE), default=1000, help="first N sentences of train.txt")
    pr.add_argument("--test-sentences", type=arg(int, POSITIVE), default=300, help="first N sentences of valid.txt")
    pr.add_argument("--no-control", action="store_true", help="skip the control tasks")
    pr.add_argument("--l2", type=float, default=1e-3, help="L2 weight of the probe")
    pr.add_argument("--max-iter", type=arg(int, POSITIVE), default=100, help="L-BFGS iterations per probe")
    pr.add_argument("--probe", default="linear", choices=["linear", "mlp"], help="probe family")
    pr.add_argument("--hidden", type=arg(int, POSITIVE), default=256, help="--probe mlp: hidden units of its one hidden layer")
    pr.add_argument("--lama", default=None,
                    help="plm probe lama --layers output (DIR or its metrics.json): its P@1-by-layer curve on the plot")
    at = sub.add_parser("attention", help="attention maps, a head view, per-head statistics and syntax-like heads",
                        description="Attention maps (PNG, HTML head view) of --text; per-head statistics over CoNLL-2003 "
                                    "(--data, with chunk-relation accuracies) or a text file (--corpus), after Clark et al. 2019.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(at)
    at.add_argument("--text", default=None, help="a sentence to draw (words split on whitespace)")
    at.add_argument("--data", default=None, help="CoNLL-2003 folder: statistics and syntax heads over --split sentences")
    at.add_argument("--split", default="valid", choices=["train", "valid", "test"], help="CoNLL-2003 file of --data")
    at.add_argument("--corpus", default=None, help="text file: statistics over its sentences (no syntax heads)")
    at.add_argument("--max-sentences", type=arg(int, POSITIVE), default=300, help="read the first N sentences of --data / --corpus")


def _model_path(value: str) -> str:
    if value.startswith("pkg:"):
        from plmkit.cli.finetune import _package_dir

        return _package_dir(value[4:], "--model")
    return value


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import plmkit
    from plmkit.errors import UserError
    from plmkit.knowledge.loading import load_tokenizer_for
    from plmkit.knowledge.report import write_json

    if args.analysis == "attention":
        return _attention(args)
    layers = _layers(args.layers)
    model_arg = _model_path(args.model)
    out = Path(args.out)
    if args.analysis == "contextuality":
        from plmkit.analysis import contextuality as C

        corpus = args.corpus or str(Path(os.environ.get("PLMKIT_DATA", "../shared/data")) / "wikitext-2" / "test.txt")
        if not Path(corpus).is_file():
            raise UserError(f"{corpus}: corpus file not found (pass --corpus FILE)")
        for name in ("max_sentences", "min_occurrences", "max_occurrences", "min_words", "random_words"):
            if getattr(args, name) < (2 if name in ("min_occurrences", "max_occurrences") else 1):
                raise UserError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
        sents = C.read_sentences(corpus, args.max_sentences)
        model = plmkit.load(model_arg).eval()
        from plmkit.analysis.features import check_layers, num_states

        check_layers(layers, num_states(model))
        tok = load_tokenizer_for(model_arg, args.tokenizer)
        res = C.contextuality(model, tok, sents, min_occurrences=args.min_occurrences,
                              max_occurrences=args.max_occurrences, min_words=args.min_words,
                              n_random=args.random_words, seed=args.seed, layers=layers,
                              batch_size=args.batch_size, max_len=args.max_len)
        res.update(model=args.model, corpus=corpus)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "contextuality.json", res)
        C.plot(res, str(out / "contextuality.png"), Path(args.model).name or args.model)
        last = res["layers"][-1]
        print(f"{res['n_words']} words ({res['n_occurrences']} occurrences) in {res['n_sentences']} sentences; "
              f"last layer: self-similarity {last['self_similarity']:.3f}, anisotropy {last['anisotropy']:.3f}, "
              f"MEV {last['mev']:.3f} -> {out}/contextuality.json", file=sys.stderr)
        return 0
    from plmkit.analysis import probes as P

    data = Path(args.data)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in P.TASKS:
            raise UserError(f"--tasks: unknown task {t!r}; expected some of {', '.join(P.TASKS)}")
    train = P.read_conll(str(data / "train.txt"), args.train_sentences)
    test = P.read_conll(str(data / "valid.txt"), args.test_sentences)
    model = plmkit.load(model_arg).eval()
    from plmkit.analysis.features import check_layers, num_states

    check_layers(layers, num_states(model))
    lama = P.read_lama_curve(args.lama, check_layers(layers, num_states(model))) if args.lama else None
    tok = load_tokenizer_for(model_arg, args.tokenizer)
    res = P.probe_layers(model, tok, train, test, tasks, layers, control=not args.no_control, l2=args.l2,
                         max_iter=args.max_iter, seed=args.seed, batch_size=args.batch_size, max_len=args.max_len,
                         hidden=args.hidden if args.probe == "mlp" else 0)
    res.update(model=args.model, data=str(data))
    if lama is not None:
        res["lama"] = lama
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", res)
    P.plot(res, str(out / "probe.png"), Path(args.model).name or args.model)
    for t, r in res["tasks"].items():
        best = max(r["per_layer"], key=lambda row: row["accuracy"])
        print(f"{t}: best layer {best['layer']} accuracy {best['accuracy']:.3f}"
              + (f" (selectivity {best['selectivity']:.3f})" if "selectivity" in best else ""), file=sys.stderr)
    return 0


def _attention(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import plmkit
    from plmkit.analysis import attention as A
    from plmkit.errors import UserError
    from plmkit.knowledge.loading import load_tokenizer_for
    from plmkit.knowledge.report import write_json

    if args.layers not in (None, "", "all"):
        raise UserError("--layers: plm analyze attention reports every layer (leave --layers out)")
    if args.text is None and args.data is None and args.corpus is None:
        raise UserError("give --text (maps and head view), --data CONLL_DIR or --corpus FILE (statistics)")
    if args.data is not None and args.corpus is not None:
        raise UserError("give one of --data (CoNLL-2003) and --corpus (plain text), not both")
    if args.text is not None and not args.text.split():
        raise UserError("--text is empty")
    sents, rows = None, None
    if args.data is not None:
        from plmkit.analysis.probes import read_conll

        rows = read_conll(str(Path(args.data) / f"{args.split}.txt"), args.max_sentences)
        sents = [[r[0] for r in s] for s in rows]
    elif args.corpus is not None:
        from plmkit.analysis.contextuality import read_sentences

        if not Path(args.corpus).is_file():
            raise UserError(f"{args.corpus}: corpus file not found")
        sents = read_sentences(args.corpus, args.max_sentences)
    if sents is not None and not sents:
        raise UserError(f"{args.data or args.corpus}: no sentences")
    model_arg = _model_path(args.model)
    model = plmkit.load(model_arg).eval()
    A.check_supported(model)
    tok = load_tokenizer_for(model_arg, args.tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = Path(args.model).name or args.model
    if args.text is not None:
        words = args.text.split()
        _, enc, att = next(A.iter_attentions(model, tok, [words], 1, args.max_len))
        maps = out / "maps"
        written = A.plot_maps(att, enc["tokens"], maps, title)
        (maps / "tokens.json").write_text(json.dumps({"text": args.text, "tokens": enc["tokens"]}) + "\n", encoding="utf-8")
        A.head_view_html(att, enc["tokens"], out / "head_view.html", f"{title}: {args.text}")
        print(f"{len(enc['tokens'])} tokens, {att.shape[0]} layers x {att.shape[1]} heads: {len(written)} PNGs in {maps}, "
              f"head view {out}/head_view.html", file=sys.stderr)
    if sents is not None:
        res = A.head_statistics(model, tok, sents, args.batch_size, args.max_len, syntax=rows)
        res.update(model=args.model, source=str(Path(args.data) / f"{args.split}.txt") if rows else args.corpus)
        write_json(out / "attention.json", res)
        A.plot_statistics(res, str(out / "attention_stats.png"), title)
        msg = f"{res['n_sentences']} sentences, {res['n_tokens']} tokens -> {out}/attention.json"
        if rows is not None:
            A.plot_syntax(res, str(out / "syntax_heads.png"), title)
            for r, v in res["syntax"].items():
                t = v["top_heads"][0]
                msg += (f"; {r}: best head {t['layer']}-{t['head']} {t['accuracy']:.3f} (offset baseline "
                        f"{v['baseline']['accuracy']:.3f}, n={v['n']})")
        print(msg, file=sys.stderr)
    return 0
