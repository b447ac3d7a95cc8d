"""Close the loop: remove the examples an attribution method blames for a fact, retrain, measure.

``plm attribute forget --bench BENCH_DIR --k K --out DIR`` takes a benchmark directory written by
``plm attribute bench`` (its corpus, its pretraining run and its learned facts) and

1. chooses ``n_facts`` learned facts (seeded; by default only facts whose target the model ranks first
   among the benchmark's objects, and with at most K gold proponents, so that removing K examples per
   fact *can* remove all of them);
2. for each arm builds the set of examples to remove, the union over the chosen facts of:
   ``bm25`` / ``embedding`` / ``tracin``: the method's top K over the whole training set;
   ``random``: K examples drawn at random (the control for "any removal + retraining");
   ``gold``: every gold proponent (the examples that state the fact; what a perfect method removes);
3. writes the corpus without those examples and retrains with the benchmark's own recipe (same model,
   tokenizer, seed, steps, batch size and learning-rate schedule; only ``data.train`` differs), in
   ``DIR/<arm>/run``;
4. probes every fact again and reports per arm, for the chosen facts, the mean drop of the target's
   log-probability (before - after: positive = forgotten) and the mean rank of the target after, and
   for the other learned facts the accuracy (object ranked first among the benchmark's objects).

``DIR/forget.json`` = ``{"before": {...}, "random" | "gold" | "bm25" | "embedding" | "tracin":
{"k", "target_logprob_drop", "target_rank_after", "other_facts_accuracy"}, "facts": N}``;
``DIR/<arm>/result.json`` holds each arm's details (ranks per fact, examples removed, timings), so arms
can be run one at a time (``arms=``) and ``forget.json`` gathers whichever are done. The retraining
workflow is :func:`plmkit.pipelines.attribution.run_forget`; this module holds its pieces.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from plmkit.attribution.bench import METHODS, read_jsonl, write_jsonl, read_corpus
from plmkit.errors import UserError

ARMS = ("random", "gold") + METHODS


def bench_state(bench_dir: str | os.PathLike) -> dict:
    """What the forget loop reads from a benchmark directory (UserError naming what is missing)."""
    d = Path(bench_dir)
    for name in ("queries.jsonl", "probe.jsonl", "run/recipe.yaml", "run/final/config.json"):
        if not (d / name).is_file():
            raise UserError(f"--bench {d}: no {name}; run plm attribute bench --out {d} first")
    import yaml

    corpus = read_corpus(d)
    recipe = yaml.safe_load((d / "run" / "recipe.yaml").read_text(encoding="utf-8"))
    return {"dir": d, "corpus": corpus, "queries": read_jsonl(d / "queries.jsonl"),
            "probe": read_jsonl(d / "probe.jsonl"), "recipe": recipe}


def choose_facts(queries: Sequence[dict], k: int, n_facts: int, seed: int = 0,
                 max_gold: int | None = None, probe: Sequence[dict] | None = None, max_rank: int | None = None
                 ) -> list[dict]:
    """``n_facts`` learned facts drawn with ``seed`` among those with at most ``max_gold`` (default K)
    gold proponents and, given the benchmark's ``probe`` rows, a target ranked at most ``max_rank``
    before removal; in query order."""
    limit = k if max_gold is None else max_gold
    rank = {str(r["fact"]): r["rank"] for r in probe or []}
    pool = [q for q in queries if len(q["proponents"]) <= limit
            and (max_rank is None or rank.get(str(q["id"]), max_rank + 1) <= max_rank)]
    if not pool:
        raise UserError(f"no learned fact has at most {limit} gold proponents"
                        + (f" and its target ranked <= {max_rank}" if max_rank is not None else "")
                        + "; raise --k, --max-gold or --max-rank")
    rng = random.Random(seed)
    picked = set(rng.sample(range(len(pool)), min(n_facts, len(pool))))
    return [q for i, q in enumerate(pool) if i in picked]


def removal_set(arm: str, facts: Sequence[dict], k: int, n_examples: int, methods: dict[str, Any] | None = None,
                seed: int = 0) -> list[int]:
    """Sorted example ids to remove for ``arm`` (see the module docstring)."""
    out: set[int] = set()
    if arm == "gold":
        for f in facts:
            out |= set(f["proponents"])
    elif arm == "random":
        rng = random.Random(seed)
        for _ in facts:
            out |= set(rng.sample(range(n_examples), k))
    elif arm in METHODS:
        if not methods or arm not in methods:
            raise ValueError(f"arm {arm!r} needs its attribution method")
        from plmkit.attribution import Query

        from plmkit.attribution.bench import rank_ids

        meth = methods[arm]
        qs = [Query(str(f["id"]), f["prompt"], f["target"], f["proponents"]) for f in facts]
        if hasattr(meth, "scores_many"):  # TracIn: one pass over the examples for all facts
            for row in np.asarray(meth.scores_many(qs)):
                out |= set(rank_ids(row)[:k])
        else:
            for q in qs:
                out |= {int(i) for i, _ in meth.top_k(q, k)}
    else:
        raise UserError(f"unknown arm {arm!r}: expected one of {', '.join(ARMS)}")
    return sorted(out)


def forget_recipe(recipe: dict, corpus_file: str | os.PathLike, tokenizer_dir: str | os.PathLike) -> dict:
    """The benchmark's recipe with only the training file changed (and the run's own tokenizer loaded
    rather than retrained, so every arm tokenizes the text exactly as the original run did)."""
    import copy

    r = copy.deepcopy(recipe)
    r["data"]["train"] = [str(Path(corpus_file).resolve())]
    r["data"]["valid"] = []
    r["tokenizer"] = {"path": str(Path(tokenizer_dir).resolve()), "train": None}
    return r


def write_reduced_corpus(texts: Sequence[str], removed: Sequence[int], path: Path) -> list[int]:
    """Write the corpus without ``removed``; returns the kept original ids (new id i = kept[i])."""
    gone = set(removed)
    kept = [i for i in range(len(texts)) if i not in gone]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, ({"text": texts[i]} for i in kept))
    return kept


def measure_facts(rows: Sequence[dict], chosen: set[int], others: set[int]) -> dict:
    """Mean target log-probability and rank of the ``chosen`` facts, and the accuracy (object ranked
    first) over the ``others``, from probe rows."""
    by = {r["fact"]: r for r in rows}
    lp = [by[i]["target_logprob"] for i in sorted(chosen)]
    rk = [by[i]["rank"] for i in sorted(chosen)]
    acc = [by[i]["rank"] == 1 for i in sorted(others)]
    return {"target_logprob": float(np.mean(lp)), "target_rank": float(np.mean(rk)),
            "target_rank_median": float(np.median(rk)),
            "other_facts_accuracy": float(np.mean(acc)) if acc else None}


def gather(out: Path, state: dict, facts: Sequence[dict], k: int) -> dict:
    """``forget.json`` from the arms done so far (issue 18's shape) plus the before-removal figures."""
    chosen = {int(f["id"]) for f in facts}
    others = {int(q["id"]) for q in state["queries"]} - chosen
    before = measure_facts(state["probe"], chosen, others)
    result: dict[str, Any] = {
        "before": {"target_logprob": round(before["target_logprob"], 4), "target_rank": round(before["target_rank"], 2),
                   "other_facts_accuracy": round(before["other_facts_accuracy"], 4)
                   if before["other_facts_accuracy"] is not None else None},
        "facts": len(facts), "k": k}
    for arm in ARMS:
        p = out / arm / "result.json"
        if p.is_file():
            r = json.loads(p.read_text(encoding="utf-8"))
            result[arm] = {key: r[key] for key in ("k", "target_logprob_drop", "target_rank_after",
                                                     "other_facts_accuracy")}
    return result
