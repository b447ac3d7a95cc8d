"""``plm attribute``: rank the training examples behind facts (BM25, embedding similarity, TracIn).

    plm attribute --method bm25,embedding,tracin --run RUN_DIR --queries queries.jsonl --top-k 100 --out DIR
    plm attribute --method bm25,embedding --model M --corpus FILES_OR_STORE --queries q.jsonl --out DIR

Writes ``DIR/<method>.jsonl`` (one line per query and rank: query_id, rank, example_id, score, text),
``DIR/metrics.json`` (MRR and recall@10 per method, over the queries that carry ``proponents``),
``DIR/throughput.json`` (examples/s and seconds per method, also printed), ``DIR/bm25/`` (the saved
BM25 index) and ``DIR/embeddings.f16`` (the example embeddings, reused by a later run).
Methods: ``plmkit.attribution``. ``plm attribute bench`` / ``plm attribute forget`` build the
fact-tracing benchmark and the remove-and-retrain loop (``plmkit.cli.attribute_bench``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from plmkit.checks import POSITIVE, arg

HELP = "Trace facts to training examples: BM25, embedding similarity, TracIn over a run's checkpoints."
METHODS = ("bm25", "embedding", "tracin", "bm25+tracin")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="bm25,embedding,tracin",
                   help=f"comma-separated among {', '.join(METHODS)} (bm25+tracin: BM25's top --rerank-k "
                        f"reordered by TracIn)")
    p.add_argument("--run", default=None, help="plmkit pretraining run directory (its token store, tokenizer, "
                                               "checkpoints)")
    p.add_argument("--model", default=None, help="instead of --run: a model (HF-format / plmkit checkpoint "
                                                 "directory, pkg:NAME); TracIn then uses this one model with lr 1")
    p.add_argument("--tokenizer", default=None, help="tokenizer for --model (None: the model's own)")
    p.add_argument("--corpus", nargs="+", default=None,
                   help="training text files (one example per document) or a token store directory; with "
                        "--run: checked against the run's token store (None: the run's data.train)")
    p.add_argument("--doc-sep", choices=("line", "blank"), default="line",
                   help="document separator of --corpus files (with --model; a run uses its recipe's)")
    p.add_argument("--queries", default=None, help="JSONL: {id, prompt, target[, proponents]} per line")
    p.add_argument("--top-k", type=arg(int, POSITIVE), default=100, help="ranked examples written per query and method")
    p.add_argument("--max-len", type=int, default=None, help="truncate examples to this many tokens")
    p.add_argument("--layer", type=int, default=None,
                   help="embedding: hidden-state index (0 = embeddings .. num_layers; None: num_layers // 2)")
    p.add_argument("--bm25-index", default=None, help="load this saved BM25 index instead of building one")
    p.add_argument("--bm25-k1", type=float, default=1.5, help="BM25 k1")
    p.add_argument("--bm25-b", type=float, default=0.75, help="BM25 b")
    p.add_argument("--proj-dim", type=int, default=0,
                   help="TracIn: random projection size d (0 = exact gradient dot products)")
    p.add_argument("--projection", choices=("kronecker", "gaussian"), default="kronecker",
                   help="TracIn with --proj-dim: per weight matrix A^T G C with small Gaussian A, C, or a dense "
                        "Gaussian matrix per parameter (plmkit.attribution.tracin)")
    p.add_argument("--seed", type=int, default=0, help="TracIn: projection seed")
    p.add_argument("--tracin-layers", default=None,
                   help="TracIn: comma-separated transformer layer indices to differentiate (None, and no "
                        "--tracin-params: all parameters)")
    p.add_argument("--tracin-params", default=None,
                   help="TracIn: comma-separated fnmatch patterns of parameter names (e.g. 'layers.1.mlp.*')")
    p.add_argument("--checkpoints", default=None,
                   help="TracIn: comma-separated checkpoint steps to use (None: every one the run kept)")
    p.add_argument("--rerank-k", type=int, default=100, help="bm25+tracin: BM25 candidates reranked per query")
    p.add_argument("--out", default=None, help="output directory")
    _add_bench_commands(p)


def _add_bench_commands(p: argparse.ArgumentParser) -> None:
    """``plm attribute bench|forget`` from ``plmkit.cli.attribute_bench`` (when that module is present)."""
    try:
        import importlib

        mod = importlib.import_module("plmkit.cli.attribute_bench")
    except ModuleNotFoundError as e:
        if e.name != "plmkit.cli.attribute_bench":
            raise
        return
    subs = p.add_subparsers(dest="attribute_command", metavar="{bench,forget}")
    if hasattr(mod, "add_subcommands"):
        mod.add_subcommands(subs)
        return
    for name in ("bench", "forget"):
        fn = getattr(mod, f"main_{name}", None)
        if fn is not None:
            # no option prefix: every argument (--help included) is passed on to main_NAME(argv)
            sp = subs.add_parser(name, help=f"plm attribute {name} (see plm attribute {name} --help)",
                                 add_help=False, prefix_chars="\x00")
            sp.add_argument("argv", nargs=argparse.REMAINDER, help=f"the arguments of plm attribute {name}")
            sp.set_defaults(_sub_main=fn)


def _ints(text: str | None, flag: str) -> list[int] | None:
    from plmkit.errors import UserError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers") from None


def _examples(args):
    """(examples, tokenizer, model loader) from --run or --model + --corpus."""
    from plmkit.attribution import TrainingExamples
    from plmkit.errors import UserError

    corpus = args.corpus
    is_store = bool(corpus) and len(corpus) == 1 and (Path(corpus[0]) / "manifest.json").is_file()
    if args.run:
        run = Path(args.run)
        if is_store:
            ex = TrainingExamples.from_run(run, max_len=args.max_len)
            _check_same_store(Path(corpus[0]), run / "data" / "train")
        else:
            ex = TrainingExamples.from_run(run, corpus=corpus, max_len=args.max_len)
        return ex
    from plmkit import load_tokenizer

    if not corpus:
        raise UserError("--model needs --corpus (training text files or a token store)")
    tok = load_tokenizer(args.tokenizer or args.model)
    if is_store:
        return TrainingExamples.from_store(corpus[0], tok, max_len=args.max_len)
    return TrainingExamples.from_files(corpus, tok, max_len=args.max_len, doc_sep=args.doc_sep)


def _check_same_store(given: Path, run_store: Path) -> None:
    from plmkit.errors import UserError

    try:
        a = json.loads((given / "manifest.json").read_text(encoding="utf-8"))
        b = json.loads((run_store / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"--corpus {given}: cannot read the token store manifest ({e})") from None
    key = lambda m: (m.get("num_documents"), m.get("num_tokens"),
                     [s.get("sha256") for s in m.get("shards", [])])  # noqa: E731
    if key(a) != key(b):
        raise UserError(f"--corpus {given}: not the run's token store {run_store} ({a.get('num_documents')} "
                        f"documents / {a.get('num_tokens')} tokens vs {b.get('num_documents')} / "
                        f"{b.get('num_tokens')}, or different contents)")


def _final_model(run: Path):
    from plmkit.models import load
    from plmkit.training.checkpoint import latest_checkpoint

    for cand in (run / "final", latest_checkpoint(run / "checkpoints")):
        if cand is not None and (Path(cand) / "config.json").is_file():
            return load(cand)
    from plmkit.errors import UserError

    raise UserError(f"--run {run}: no final/ model and no checkpoint to embed with")


def _model_path(value: str | None) -> str | None:
    """``pkg:NAME`` (a checkpoint shipped in an installed package) -> its folder; other values unchanged."""
    if value and value.startswith("pkg:"):
        from plmkit.errors import UserError
        from plmkit.packages import package_dir

        try:
            return package_dir(value[4:])
        except UserError as e:
            raise UserError(f"--model: {e}") from None
    return value


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from plmkit.attribution import load_queries, mrr, recall_at_k
    from plmkit.attribution.metrics import first_gold_rank
    from plmkit.attribution.bm25 import top_k
    from plmkit.attribution.queries import check_proponents
    from plmkit.errors import UserError

    if getattr(args, "attribute_command", None):  # plm attribute bench|forget (plmkit.cli.attribute_bench)
        sub = getattr(args, "_sub_main", None)
        if sub is not None:
            return int(sub(list(args.argv)) or 0)
        fn = getattr(args, "func", None)  # add_subcommands may set_defaults(_run=...) (called directly) or func
        if fn is None:
            raise UserError(f"plm attribute {args.attribute_command}: the sub-command set no function to run")
        return int(fn(args) or 0)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise UserError(f"--method {m!r}: expected one of {', '.join(METHODS)}")
    if not methods:
        raise UserError(f"--method: expected one or more of {', '.join(METHODS)}")
    if bool(args.run) == bool(args.model):
        raise UserError("pass exactly one of --run RUN_DIR and --model M (with --corpus)")
    args.model = _model_path(args.model)
    args.tokenizer = _model_path(args.tokenizer)
    for flag in ("queries", "out"):
        if not getattr(args, flag):
            raise UserError(f"--{flag} is required")
    tlayers = _ints(args.tracin_layers, "--tracin-layers")
    tparams = [s.strip() for s in args.tracin_params.split(",")] if args.tracin_params else None
    steps = _ints(args.checkpoints, "--checkpoints")
    queries = load_queries(args.queries)
    if args.run:
        run_dir = Path(args.run)
        if not (run_dir / "recipe.yaml").is_file():
            raise UserError(f"--run {run_dir}: not a plmkit run directory (no recipe.yaml)")
        if any(m in ("tracin", "bm25+tracin") for m in methods):
            from plmkit.attribution.tracin import run_checkpoints

            run_checkpoints(run_dir)  # no checkpoints -> one line before anything else runs
    ex = _examples(args)
    check_proponents(queries, len(ex), args.queries)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    say = lambda msg: print(f"plm attribute: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"{len(ex)} training examples, {len(queries)} queries, methods {', '.join(methods)}")

    built: dict[str, object] = {}
    throughput: dict[str, dict] = {}
    model_cache: list = []

    def model():
        if not model_cache:
            from plmkit.models import load

            model_cache.append(_final_model(Path(args.run)) if args.run else load(args.model))
        return model_cache[0]

    def bm25():
        if "bm25" not in built:
            from plmkit.attribution import BM25Index

            if args.bm25_index:
                t0 = time.perf_counter()
                idx = BM25Index.load(args.bm25_index)
                if len(idx) != len(ex):
                    raise UserError(f"--bm25-index {args.bm25_index}: {len(idx)} examples, the corpus has {len(ex)}")
                throughput["bm25"] = {"index_loaded_seconds": round(time.perf_counter() - t0, 3)}
            else:
                idx = BM25Index.build(ex, k1=args.bm25_k1, b=args.bm25_b)
                idx.save(out / "bm25")
                throughput["bm25"] = {"index_seconds": round(idx.index_seconds, 3),
                                      "index_examples_per_s": round(len(ex) / max(idx.index_seconds, 1e-9), 1)}
            built["bm25"] = idx
        return built["bm25"]

    def tracin():
        if "tracin" not in built:
            from plmkit.attribution import TracIn

            kw = dict(layers=tlayers, params=tparams, proj_dim=args.proj_dim or None, seed=args.seed,
                      max_len=args.max_len, projection=args.projection)
            if args.run:
                built["tracin"] = TracIn.from_run(args.run, examples=ex, checkpoints=steps, **kw)
            else:
                built["tracin"] = TracIn([(model(), 1.0)], ex.tokenizer, ex, **kw)
        return built["tracin"]

    metrics: dict[str, dict] = {}
    gold = [q for q in queries if q.proponents]
    for method in methods:
        t0 = time.perf_counter()
        if method == "bm25":
            idx = bm25()
            t1 = time.perf_counter()
            S = [idx.scores(q) for q in queries]
            ranked = [top_k(s, args.top_k) for s in S]
            qs = time.perf_counter() - t1
            throughput["bm25"].update({"query_seconds": round(qs, 3), "queries": len(queries),
                                       "query_examples_per_s": round(len(ex) * len(queries) / max(qs, 1e-9), 1)})
        elif method == "embedding":
            from plmkit.attribution import EmbeddingIndex

            emb = EmbeddingIndex.build(model(), ex.tokenizer, ex, layer=args.layer, path=out / "embeddings.f16")
            t1 = time.perf_counter()
            S = emb.scores_many(queries)
            ranked = [top_k(s, args.top_k) for s in S]
            qs = time.perf_counter() - t1
            throughput["embedding"] = {
                "layer": emb.layer, "index_seconds": round(emb.build_seconds, 3),
                "index_examples_per_s": round(len(ex) / max(emb.build_seconds, 1e-9), 1),
                "query_seconds": round(qs, 3), "queries": len(queries)}
        elif method == "tracin":
            tr = tracin()
            S = tr.scores_many(queries)
            ranked = [top_k(s, args.top_k) for s in S]
            throughput["tracin"] = {
                "checkpoints": tr.steps, "lrs": tr.lrs, "proj_dim": tr.proj_dim,
                "projection": tr.projection if tr.proj_dim else None,
                "selected_parameters": tr.num_selected, "seconds": round(time.perf_counter() - t0, 3),
                "examples_per_s": round(tr.examples_done / max(tr.example_seconds, 1e-9), 2)}
        else:  # bm25+tracin: only the reranked top --rerank-k has scores
            from plmkit.attribution.rerank import rerank

            S = None
            idx, tr = bm25(), tracin()
            e0, d0 = tr.example_seconds, tr.examples_done
            reranked = [rerank(idx, tr, q, max(args.rerank_k, args.top_k)) for q in queries]
            ranked = [r[: args.top_k] for r in reranked]
            throughput["bm25+tracin"] = {
                "rerank_k": args.rerank_k, "seconds": round(time.perf_counter() - t0, 3),
                "examples_per_s": round((tr.examples_done - d0) / max(tr.example_seconds - e0, 1e-9), 2)}
        throughput[method]["total_seconds"] = round(time.perf_counter() - t0, 3)
        name = method.replace("+", "_")
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for q, rows in zip(queries, ranked):
                for r, (i, s) in enumerate(rows, 1):
                    f.write(json.dumps({"query_id": q.id, "rank": r, "example_id": i,
                                        "score": float(s) if np.isfinite(s) else None,
                                        "text": ex.text(i)}, ensure_ascii=False) + "\n")
        if gold:
            by_id = {q.id: rows for q, rows in zip(queries, reranked if S is None else ranked)}
            if S is not None:  # the rank of the first gold example over the full training set
                full = {q.id: s for q, s in zip(queries, S)}
                mrrs = [1.0 / first_gold_rank(full[q.id], q.proponents) for q in gold]
            else:
                mrrs = [mrr([i for i, _ in by_id[q.id]], q.proponents) for q in gold]
            recs = [recall_at_k([i for i, _ in (top_k(full[q.id], 10) if S is not None else by_id[q.id])],
                                q.proponents, 10) for q in gold]
            metrics[method] = {"mrr": float(np.mean(mrrs)), "recall_at_10": float(np.mean(recs)),
                               "n_queries": len(gold)}
        tp = throughput[method]
        rate = tp.get("examples_per_s") or tp.get("index_examples_per_s")
        say(f"{method}: {tp['total_seconds']:.2f}s" + (f", {rate} examples/s" if rate else "")
            + (f"; MRR {metrics[method]['mrr']:.3f}, recall@10 {metrics[method]['recall_at_10']:.3f}"
               if method in metrics else ""))
    (out / "throughput.json").write_text(json.dumps({"num_examples": len(ex), **throughput}, indent=1),
                                         encoding="utf-8")
    if metrics:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        note = (" (MRR over the full training set; bm25+tracin over its reranked top --rerank-k)"
                if "bm25+tracin" in metrics else " (MRR over the full training set)")
        say(f"metrics of {len(gold)} queries with proponents in {out / 'metrics.json'}{note}")
    say(f"wrote {', '.join(m.replace('+', '_') + '.jsonl' for m in methods)} in {out}")
    return 0
