"""The fact-tracing benchmark and the forget loop as workflows: corpus -> pretraining -> evaluation, and
remove -> retrain -> probe (the bodies of ``plm attribute bench`` and ``plm attribute forget``).

The pieces live in :mod:`plmkit.attribution.bench` (corpus, recipe, probing, candidate sets, metrics) and
:mod:`plmkit.attribution.forget` (fact choice, removal sets, the retraining recipe, forget.json); this
module adds what needs the pretraining pipeline (:func:`plmkit.pipelines.run_pretraining`), which the
attribution package, a layer below, may not import.

    from plmkit.pipelines.attribution import run_bench, run_forget
    run_bench("runs/bench", "../shared/data/lama", "../shared/data/english-books", size="small")
    run_forget("runs/bench", k=8, out_dir="runs/forget")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from plmkit.attribution.bench import (METHODS, TRACIN_PARAMS, BenchSize, SavedScores, write_jsonl, build_corpus,
                                      build_methods, evaluate, get_size, load_final, pretrain_recipe, probe_facts,
                                      queries_from_facts, save_scores, write_json)
from plmkit.attribution.forget import (ARMS, bench_state, choose_facts, forget_recipe, gather, measure_facts,
                                       removal_set, write_reduced_corpus)
from plmkit.errors import UserError


def pretrain(recipe: dict, run_dir: str | os.PathLike, overrides: list[str] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    from plmkit.pipelines.pretrain import run_pretraining

    return run_pretraining(recipe, run_dir, overrides=overrides or [], overwrite=True, progress=False, log=log)


def _fingerprint(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def ensure_pretrained(recipe: dict, run_dir: Path, log: Callable[[str], None]) -> dict:
    """Pretrain ``recipe`` into ``run_dir`` unless it already holds a finished run of this very recipe and
    corpus (``run_dir/bench_run.json`` records both); returns the training summary."""
    import copy

    corpus = Path(recipe["data"]["train"][0])
    same = copy.deepcopy(recipe)
    same["train"].pop("num_threads", None)  # changes the speed, not the result
    key = {"recipe": same, "corpus_sha256": _fingerprint(corpus)}
    stamp = run_dir / "bench_run.json"
    if stamp.is_file() and (run_dir / "final" / "config.json").is_file():
        old = json.loads(stamp.read_text(encoding="utf-8"))
        if old.get("key") == json.loads(json.dumps(key)):
            log(f"{run_dir}: reusing the finished pretraining run of this recipe and corpus")
            return old["summary"]
    summary = pretrain(recipe, run_dir, log=log)
    if summary.get("interrupted") or not (run_dir / "final" / "config.json").is_file():
        raise UserError(f"{run_dir}: pretraining did not finish; run the command again")
    keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    write_json(stamp, {"key": key, "summary": keep})
    return keep


def run_bench(out_dir: str | os.PathLike, lama_dir: str | os.PathLike, books_dir: str | os.PathLike,
              size: str | BenchSize = "small", seed: int = 0, methods: Sequence[str] = METHODS,
              learned_rank: int = 10, tracin_proj_dim: int | None = None,
              tracin_params: Sequence[str] | None = TRACIN_PARAMS, num_threads: int = 0,
              log: Callable[[str], None] = print) -> dict:
    """Build the corpus, pretrain (or reuse the finished run in ``DIR/run``), pick the learned facts as
    queries and evaluate ``methods``; writes ``metrics.json`` (issue 18's shape) and ``report.json``."""
    out = Path(out_dir)
    size_name = size if isinstance(size, str) else "custom"
    size = get_size(size)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    corpus = build_corpus(out, lama_dir, books_dir, size, seed=seed)
    n_fact_ex = sum(e["kind"] == "fact" for e in corpus.examples)
    log(f"corpus: {len(corpus)} examples ({n_fact_ex} state one of {len(corpus.facts)} facts, "
        f"{len(corpus) - n_fact_ex} background) in {time.perf_counter() - t0:.1f}s")
    recipe = pretrain_recipe(out / "corpus.jsonl", size)
    if num_threads:
        recipe["train"]["num_threads"] = int(num_threads)
    summary = ensure_pretrained(recipe, out / "run", log)
    model, tok = load_final(out / "run")
    t0 = time.perf_counter()
    rows = probe_facts(model, tok, corpus.facts)
    probe_s = time.perf_counter() - t0
    write_jsonl(out / "probe.jsonl", rows)
    queries = queries_from_facts(corpus.facts, rows, learned_rank)
    write_jsonl(out / "queries.jsonl", queries)
    by_rep: dict[int, dict] = {}
    for f, r in zip(corpus.facts, rows):
        d = by_rep.setdefault(f.repeats, {"facts": 0, "learned": 0})
        d["facts"] += 1
        d["learned"] += r["rank"] <= learned_rank
    log(f"learned facts (object rank <= {learned_rank} among {len({f.object for f in corpus.facts})} objects): "
        f"{len(queries)}/{len(corpus.facts)}; by repeats " +
        ", ".join(f"{k}x: {v['learned']}/{v['facts']}" for k, v in sorted(by_rep.items())))
    if not queries:
        raise UserError("the model learned none of the facts (no object ranks in the top "
                        f"{learned_rank}); train longer (--size full) or check the run in {out / 'run'}")
    from plmkit.attribution import load_queries

    qs = load_queries(out / "queries.jsonl")
    methods = list(methods)
    need = list(dict.fromkeys(["bm25"] + methods))  # BM25 seeds the candidate sets
    ex, built, build_s = build_methods(out / "run", out, need, model, tok, tracin_proj_dim=tracin_proj_dim,
                                       seed=seed, tracin_params=tracin_params, log=log)
    if len(ex) != len(corpus):
        raise UserError(f"{out / 'run'}: the run's token store has {len(ex)} documents, the corpus "
                        f"{len(corpus)} examples; rebuild with another --out")
    metrics, details = evaluate({m: built[m] for m in methods}, qs, corpus.texts, built["bm25"], seed=seed,
                                log=log)
    write_json(out / "metrics.json", metrics)
    write_jsonl(out / "per_query.jsonl", details.pop("per_query"))
    save_scores(out / "scores", [q.id for q in qs], details.pop("scores"))
    n, nq = len(ex), len(qs)
    throughput = {}
    for m in methods:
        q_s = details["query_seconds"][m]
        throughput[m] = {"build_seconds": build_s[m], "query_seconds": q_s,
                         "build_examples_per_s": round(n / build_s[m], 1) if build_s[m] else None,
                         "scored_examples_per_s": round(n * nq / q_s, 1) if q_s else None}
    report = {
        "size": size_name, "seed": seed, "examples": n, "fact_examples": n_fact_ex, "facts": len(corpus.facts),
        "objects": len({f.object for f in corpus.facts}), "learned_rank": learned_rank,
        "learned": {"queries": nq, "rank_1": sum(r["rank"] == 1 for r in rows), "by_repeats": by_rep},
        "pretrain": {k: summary.get(k) for k in ("seconds", "step", "num_parameters", "train_examples")
                     if k in summary},
        "probe_seconds": round(probe_s, 1), "throughput": throughput,
        "tracin": {"params": list(tracin_params) if tracin_params else "all", "proj_dim": tracin_proj_dim,
                   "checkpoints": getattr(built.get("tracin"), "steps", None),
                   "lrs": getattr(built.get("tracin"), "lrs", None)}, "mean_candidates": details["mean_candidates"],
        "seconds": round(time.perf_counter() - t_all, 1), "metrics": metrics,
    }
    write_json(out / "report.json", report)
    for m in methods:
        log(f"{m:9s} full MRR {metrics['full'][m]['mrr']:.3f} R@10 {metrics['full'][m]['recall_at_10']:.3f} | "
            f"candidates MRR {metrics['candidates'][m]['mrr']:.3f} R@10 "
            f"{metrics['candidates'][m]['recall_at_10']:.3f}")
    return report


def run_arm(state: dict, arm: str, facts: Sequence[dict], k: int, out: Path, methods: dict[str, Any] | None,
            seed: int = 0, num_threads: int = 0, log: Callable[[str], None] = print) -> dict:
    """Remove, retrain and probe for one arm; writes and returns ``out/<arm>/result.json``."""
    corpus = state["corpus"]
    removed = removal_set(arm, facts, k, len(corpus.texts), methods, seed=seed)
    gold = set().union(*(set(f["proponents"]) for f in facts))
    arm_dir = out / arm
    kept = write_reduced_corpus(corpus.texts, removed, arm_dir / "corpus.jsonl")
    recipe = forget_recipe(state["recipe"], arm_dir / "corpus.jsonl", state["dir"] / "run" / "tokenizer")
    if num_threads:
        recipe["train"]["num_threads"] = int(num_threads)
    log(f"{arm}: removing {len(removed)} examples ({len(gold & set(removed))}/{len(gold)} of the chosen facts' "
        f"gold proponents); retraining on {len(kept)}")
    t0 = time.perf_counter()
    summary = ensure_pretrained(recipe, arm_dir / "run", log)
    model, tok = load_final(arm_dir / "run")
    rows = probe_facts(model, tok, corpus.facts)
    write_jsonl(arm_dir / "probe.jsonl", rows)
    chosen = {int(f["id"]) for f in facts}
    others = {int(q["id"]) for q in state["queries"]} - chosen
    after = measure_facts(rows, chosen, others)
    before = measure_facts(state["probe"], chosen, others)
    per_fact = {r["fact"]: r for r in rows}
    res = {
        "arm": arm, "k": k if arm != "gold" else round(len(removed) / max(1, len(facts)), 2),
        "removed": len(removed), "removed_gold": len(gold & set(removed)), "gold_total": len(gold),
        "target_logprob_drop": round(before["target_logprob"] - after["target_logprob"], 4),
        "target_rank_after": round(after["target_rank"], 2),
        "target_rank_after_median": after["target_rank_median"],
        "other_facts_accuracy": round(after["other_facts_accuracy"], 4) if after["other_facts_accuracy"] is not None
        else None,
        "facts": {str(i): {"rank_after": per_fact[i]["rank"], "logprob_after": per_fact[i]["target_logprob"]}
                  for i in sorted(chosen)},
        "retrain_seconds": round(time.perf_counter() - t0, 1), "train_steps": summary.get("step"),
        "removed_ids": removed,
    }
    write_json(arm_dir / "result.json", res)
    return res


def run_forget(bench_dir: str | os.PathLike, k: int, out_dir: str | os.PathLike, n_facts: int = 20,
               arms: Sequence[str] = ARMS, seed: int = 0, random_seed: int | None = None,
               max_gold: int | None = None, max_rank: int | None = 1,
               tracin_proj_dim: int | None = None, tracin_params: Sequence[str] | None = TRACIN_PARAMS,
               num_threads: int = 0, log: Callable[[str], None] = print) -> dict:
    """Run the chosen ``arms`` (each skipped when ``DIR/<arm>/result.json`` already holds the same choice)
    and write ``DIR/forget.json``. ``seed`` draws the facts; ``random_seed`` (default ``seed``) draws the
    random arm's examples, so another ``--out`` with another ``random_seed`` repeats the control on the
    same facts."""
    if k < 1:
        raise UserError(f"--k {k}: expected a positive integer")
    for a in arms:
        if a not in ARMS:
            raise UserError(f"--arms: unknown arm {a!r}; expected some of {', '.join(ARMS)}")
    state = bench_state(bench_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = choose_facts(state["queries"], k, n_facts, seed, max_gold, state["probe"], max_rank)
    rseed = seed if random_seed is None else random_seed
    choice = {"bench": str(Path(bench_dir).resolve()), "k": k, "seed": seed, "max_rank": max_rank,
              "facts": [int(f["id"]) for f in facts]}
    if rseed != seed:
        choice["random_seed"] = rseed
    old = out / "choice.json"
    if old.is_file() and json.loads(old.read_text(encoding="utf-8")) != choice:
        raise UserError(f"--out {out}: holds a forget run with other facts, --k or --bench; use another --out")
    write_json(old, choice)
    log(f"forgetting {len(facts)} learned facts (ids {', '.join(str(f['id']) for f in facts)}), K = {k}")
    need = [a for a in arms if a in METHODS and not (out / a / "result.json").is_file()]
    methods: dict[str, Any] = {}
    saved = Path(bench_dir) / "scores"
    for a in need:  # the benchmark's own score matrices (every learned fact is a query there)
        if SavedScores.available(saved, a):
            methods[a] = SavedScores(saved, a)
            log(f"{a}: top {k} per fact from the benchmark's scores ({saved / (a + '.npy')})")
    rest = [a for a in need if a not in methods]
    if rest:
        _, built, _ = build_methods(Path(bench_dir) / "run", out, rest, tracin_proj_dim=tracin_proj_dim,
                                    seed=seed, tracin_params=tracin_params, log=log)
        methods.update(built)
    for arm in arms:
        if (out / arm / "result.json").is_file():
            log(f"{arm}: done already ({out / arm / 'result.json'})")
            continue
        r = run_arm(state, arm, facts, k, out, methods, seed=rseed, num_threads=num_threads, log=log)
        log(f"{arm}: target log-prob drop {r['target_logprob_drop']:+.3f}, rank after {r['target_rank_after']:.1f} "
            f"(before {gather(out, state, facts, k)['before']['target_rank']:.1f}), other facts accuracy "
            f"{r['other_facts_accuracy']:.3f}")
    result = gather(out, state, facts, k)
    write_json(out / "forget.json", result)
    return result
