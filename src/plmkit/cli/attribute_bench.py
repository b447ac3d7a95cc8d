"""``plm attribute bench`` and ``plm attribute forget``: the fact-tracing benchmark and the forget loop.

    plm attribute bench [--size small|full|tiny] --out DIR [--data ../shared/data]
    plm attribute forget --bench DIR --k K --out DIR2 [--facts 20] [--arms random,gold,bm25,embedding,tracin]

``bench`` writes DIR/corpus.jsonl (one training example per line), examples.jsonl, facts.jsonl, the
pretraining run DIR/run (checkpoints kept), probe.jsonl (every fact's target rank and log-probability),
queries.jsonl (the learned facts with their gold proponents), metrics.json (MRR / recall@10 per method,
full training set and Akyürek et al.'s candidate sets), per_query.jsonl and report.json (counts, timings,
throughput). Running it again on the same DIR reuses the finished pretraining run.
``forget`` retrains once per arm (DIR2/<arm>/run) and writes DIR2/forget.json; finished arms are reused.
Modules: :mod:`plmkit.attribution.bench`, :mod:`plmkit.attribution.forget`. ``plm attribute``
(``plmkit.cli.attribute``) dispatches here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _data_dir(arg: str | None) -> Path:
    from plmkit.errors import UserError

    d = Path(arg or os.environ.get("PLMKIT_DATA") or "../shared/data")
    for sub in ("lama/TREx", "english-books"):
        if not (d / sub).is_dir():
            raise UserError(f"--data {d}: no {sub}/ folder (pass the shared data folder with --data or "
                            f"set PLMKIT_DATA)")
    return d


def _methods(arg: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    from plmkit.errors import UserError

    out = [m.strip() for m in arg.split(",") if m.strip()]
    for m in out:
        if m not in allowed:
            raise UserError(f"{flag} {m!r}: expected some of {', '.join(allowed)}")
    if not out:
        raise UserError(f"{flag}: expected one or more of {', '.join(allowed)}")
    return out


def _params(arg: str) -> list[str] | None:
    pats = [x.strip() for x in arg.split(",") if x.strip()]
    return None if pats in ([], ["all"]) else pats


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="small", choices=("small", "full", "tiny"),
                   help="small: about 8-10 min of pretraining on one CPU core; full: bigger corpus and model; "
                        "tiny: a one-minute smoke test")
    p.add_argument("--out", required=True, help="benchmark directory (a finished pretraining run there is reused)")
    p.add_argument("--data", default=None, help="shared data folder with lama/ and english-books/ "
                                                "(default: $PLMKIT_DATA, else ../shared/data)")
    p.add_argument("--methods", default="bm25,embedding,tracin", help="comma-separated attribution methods")
    p.add_argument("--seed", type=int, default=0, help="corpus sampling, candidate sets, TracIn projection")
    p.add_argument("--proj-dim", type=int, default=0, help="TracIn random projection size (0 = exact)")
    p.add_argument("--tracin-params", default="layers.*",
                   help="TracIn: comma-separated fnmatch patterns of the parameters differentiated ('all' = every "
                        "one; the default leaves out the tied embedding / output matrix)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for pretraining (0 = default)")


def add_forget_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bench", required=True, help="a directory written by plm attribute bench")
    p.add_argument("--k", type=int, required=True, help="examples removed per fact (top K of each method)")
    p.add_argument("--out", required=True, help="output directory (finished arms there are reused)")
    p.add_argument("--facts", type=int, default=20, help="learned facts to forget (seeded draw)")
    p.add_argument("--max-gold", type=int, default=None,
                   help="draw only facts with at most this many gold proponents (default: K)")
    p.add_argument("--max-rank", type=int, default=1,
                   help="draw only facts whose target ranked at most this before removal (1 = the model's top "
                        "object; 0 = no limit)")
    p.add_argument("--arms", default="random,gold,bm25,embedding,tracin", help="comma-separated arms to run")
    p.add_argument("--seed", type=int, default=0, help="fact draw, random arm, TracIn projection")
    p.add_argument("--random-seed", type=int, default=None,
                   help="the random arm's draw (None: --seed); repeat the control on the same facts in another --out")
    p.add_argument("--proj-dim", type=int, default=0,
                   help="TracIn random projection size (0 = exact; used only when the benchmark saved no scores)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for retraining (0 = default)")


def run_bench(args: argparse.Namespace) -> int:
    from plmkit.attribution.bench import METHODS
    from plmkit.pipelines.attribution import run_bench as bench

    d = _data_dir(args.data)
    report = bench(args.out, d / "lama", d / "english-books", size=args.size, seed=args.seed,
                   methods=_methods(args.methods, METHODS, "--methods"), tracin_proj_dim=args.proj_dim or None,
                   tracin_params=_params(args.tracin_params), num_threads=args.threads, log=_log)
    print(json.dumps(report["metrics"], indent=2))
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from plmkit.attribution.forget import ARMS
    from plmkit.pipelines.attribution import run_forget as forget

    result = forget(args.bench, args.k, args.out, n_facts=args.facts, arms=_methods(args.arms, ARMS, "--arms"),
                    seed=args.seed, random_seed=args.random_seed, max_gold=args.max_gold,
                    max_rank=args.max_rank or None,
                    tracin_proj_dim=args.proj_dim or None, num_threads=args.threads, log=_log)
    print(json.dumps(result, indent=2))
    return 0


def add_subcommands(subparsers) -> None:
    """``bench`` and ``forget`` under ``plm attribute`` (called by ``plmkit.cli.attribute``)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    b = subparsers.add_parser("bench", help="build the fact-tracing benchmark, pretrain, evaluate the methods",
                              description="Build a corpus of english-books text and LAMA T-REx facts in "
                                          "paraphrases, pretrain a small causal LM on it (checkpoints kept), "
                                          "take the facts it learned as queries and score BM25, embedding "
                                          "similarity and TracIn (MRR, recall@10; full set and candidates).",
                              formatter_class=fmt)
    add_bench_arguments(b)
    b.set_defaults(func=run_bench)
    f = subparsers.add_parser("forget", help="remove each method's top-K proponents, retrain, measure",
                              description="Remove the top-K proponents of chosen learned facts (per method, "
                                          "plus random and gold controls), retrain with the same recipe, "
                                          "report forgetting.", formatter_class=fmt)
    add_forget_arguments(f)
    f.set_defaults(func=run_forget)

