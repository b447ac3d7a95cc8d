"""Speed of the knowledge methods on a real causal LM (e.g. the SmolLM2-135M-Instruct GGUF).

    OMP_NUM_THREADS=1 python bench/bench_knowledge.py lama --model $SMOL --data ../shared/data/lama \
        --relations P27,P106 --max-facts 5
    OMP_NUM_THREADS=1 python bench/bench_knowledge.py trace --model $SMOL \
        --facts ../shared/data/knowledge-editing/known_1000.json --n 1

``lama``: candidate-mode scoring with the shared template prefix (one prefix forward + the candidates'
continuations on its KV cache) against one full forward per candidate sentence, on the same queries;
prints seconds per fact for both and the largest score difference.
``trace``: ``Tracer.trace`` with the fast path (corrupted run's KV cache reused, runs start at the
restored layer and token) against the reference path (one full batched forward per kind and layer),
default settings (5 kinds, 10 samples, window 10); prints seconds per fact and the largest difference.
"""

from __future__ import annotations

import argparse
import time

import torch


def bench_lama(args) -> None:
    from plmkit.knowledge import lama
    from plmkit.knowledge.lama_data import load_lama
    from plmkit.knowledge.loading import load_for_knowledge

    model, tok, struct = load_for_knowledge(args.model)
    rels = load_lama(args.data, ["trex"], args.relations.split(","), max_facts=args.max_facts)
    vocab = lama.CandidateVocab(tok, model.config.vocab_size)
    vocab.mask(" ")
    out = {}
    with torch.inference_mode():
        for share in (True, False) if not args.shared_only else (True,):
            qs = [q for r in rels for q in lama.prepare(struct, tok, r, vocab)]
            qs = [q for q in qs if q.mode == "candidates"]
            t0, c0 = time.perf_counter(), time.process_time()
            lama.score(struct, tok, qs, vocab, batch_size=args.batch_size, share_prefix=share)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            n_seq = sum(len(q.cand_ids) for q in qs)
            print(f"share_prefix={share}: {len(qs)} candidate facts ({n_seq} sentences) in {dt:.1f} s wall, "
                  f"{dc:.1f} s CPU = {dc / max(1, len(qs)):.2f} s CPU per fact", flush=True)
            out[share] = qs
    if len(out) == 2:
        diff = max(abs(a.result["gold_score"] - b.result["gold_score"]) for a, b in zip(out[True], out[False]))
        same = all(a.result["rank"] == b.result["rank"] for a, b in zip(out[True], out[False]))
        print(f"max |gold score difference| {diff:.2e}, ranks equal: {same}")


def bench_trace(args) -> None:
    import json

    from plmkit.knowledge import trace as tr
    from plmkit.knowledge.loading import load_for_knowledge

    model, tok, struct = load_for_knowledge(args.model)
    facts = json.load(open(args.facts))[: args.n]
    prepared = [tr.prepare_fact(tok, f["prompt"], f["subject"], f["attribute"]) for f in facts]
    std = tr.embedding_std(struct, tok, [f["subject"] for f in facts])
    results = {}
    with torch.inference_mode():
        for fast in (True, False) if not args.fast_only else (True,):
            t = tr.Tracer(struct, 3 * std, samples=args.samples, window=args.window, fast=fast)
            t0, c0 = time.perf_counter(), time.process_time()
            results[fast] = [t.trace(f) for f in prepared]
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"fast={fast}: {len(prepared)} facts ({[len(f.ids) for f in prepared]} tokens) in {dt:.1f} s wall, "
                  f"{dc:.1f} s CPU = {dt / len(prepared):.1f} s wall per fact", flush=True)
    if len(results) == 2:
        diff = max(abs(x - y) for a, b in zip(results[True], results[False]) for k in a["effects"]
                   for ra, rb in zip(a["effects"][k], b["effects"][k]) for x, y in zip(ra, rb))
        print(f"max |effect difference| fast vs reference: {diff:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    la = sub.add_parser("lama")
    la.add_argument("--model", required=True)
    la.add_argument("--data", required=True)
    la.add_argument("--relations", default="P27,P106")
    la.add_argument("--max-facts", type=int, default=5)
    la.add_argument("--batch-size", type=int, default=32)
    la.add_argument("--shared-only", action="store_true")
    trc = sub.add_parser("trace")
    trc.add_argument("--model", required=True)
    trc.add_argument("--facts", required=True)
    trc.add_argument("--n", type=int, default=1)
    trc.add_argument("--samples", type=int, default=10)
    trc.add_argument("--window", type=int, default=10)
    trc.add_argument("--fast-only", action="store_true")
    args = p.parse_args()
    bench_lama(args) if args.what == "lama" else bench_trace(args)


if __name__ == "__main__":
    main()
