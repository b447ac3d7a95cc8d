"""Speed of the knowledge methods on a real causal LM (e.g. the SmolLM2-135M-Instruct GGUF).

    OMP_NUM_THREADS=1 python bench/bench_knowledge.py lama --model $SMOL --data ../shared/data/lama \
        --relations P27,P106 --max-facts 5
    OMP_NUM_THREADS=1 python bench/bench_knowledge.py trace --model $SMOL \
        --facts ../shared/data/knowledge-editing/known_1000.json --n 2 [--kinds hidden,mlp_window,attn_window]

``lama``: candidate-mode scoring with the shared template prefix (one prefix forward + the candidates'
continuations on its KV cache) against one full forward per candidate sentence, on the same queries;
prints seconds per fact for both and the largest score difference.
``trace``: ``Tracer.trace`` (fast path) on the first N known facts in each ``--precisions`` arm (fp32,
bf16 autocast, bf16 weights; ``--reference`` adds the fp32 reference path), default settings (5 kinds,
10 samples, window 10): CPU and wall seconds per fact, and per arm the largest absolute difference of
the indirect-effect maps from fp32 (``--json FILE`` writes all of it).
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


def _merge(a: dict, b: dict) -> dict:
    """Two ``Tracer.trace`` results of one fact (different kinds) as one."""
    return {**a, **b, "effects": {**a.get("effects", {}), **b["effects"]}}


def bench_trace(args) -> None:
    import json
    import platform

    from plmkit.knowledge import trace as tr
    from plmkit.knowledge.loading import load_for_knowledge
    from plmkit.models.kernels import cpu_bf16

    model, tok, struct = load_for_knowledge(args.model)
    facts = json.load(open(args.facts))
    kinds = tuple(args.kinds.split(","))
    first = tuple(k for k in kinds if k in args.first.split(","))
    rest = tuple(k for k in kinds if k not in first)
    prepared = []
    with torch.inference_mode():  # the first N facts whose object is SmolLM2's top-1 (plm trace --known-only)
        for f in facts:
            p = tr.prepare_fact(tok, f["prompt"], f["subject"], f["attribute"])
            if not args.all_facts and int(model(torch.tensor([p.ids])).logits[0, -1].argmax()) != p.target_id:
                continue
            prepared.append(p)
            if len(prepared) == args.n:
                break
    std = tr.embedding_std(struct, tok, [f.subject for f in prepared])
    arms = [(p, True) for p in args.precisions.split(",")] + ([("fp32", False)] if args.reference else [])
    results, record = {}, {"facts": [{"prompt": f.prompt, "tokens": len(f.ids)} for f in prepared], "arms": {}}
    with torch.inference_mode():
        for prec, fast in arms:
            name = prec if fast else "fp32-reference"
            t = tr.Tracer(struct, 3 * std, samples=args.samples, window=args.window, fast=fast, precision=prec)
            cpu, wall, res = [], [], []
            for f in prepared:  # the --first kinds in one trace call, then the others in a second one
                r, cw = {}, []
                for group in (first, rest):
                    if group:
                        t0, c0 = time.perf_counter(), time.process_time()
                        r = _merge(r, t.trace(f, group))
                        cw.append((time.process_time() - c0, time.perf_counter() - t0))
                res.append(r)
                cpu.append([c for c, _ in cw])
                wall.append([w for _, w in cw])
            results[name] = res
            arm = {"cpu_s_per_fact": sum(map(sum, cpu)) / len(cpu), "wall_s_per_fact": sum(map(sum, wall)) / len(wall),
                   "cpu_s_per_fact_first_kinds": sum(c[0] for c in cpu) / len(cpu),
                   "wall_s_per_fact_first_kinds": sum(w[0] for w in wall) / len(wall),
                   "cpu_s": [[round(x, 2) for x in c] for c in cpu], "wall_s": [[round(x, 2) for x in w] for w in wall]}
            if name != "fp32" and "fp32" in results:  # effect maps against fp32
                diffs = {k: max(abs(x - y) for a, b in zip(res, results["fp32"]) for ra, rb in
                                zip(a["effects"][k], b["effects"][k]) for x, y in zip(ra, rb)) for k in kinds}
                peaks = sum(int(torch.tensor(a["effects"][k]).argmax() == torch.tensor(b["effects"][k]).argmax())
                            for a, b in zip(res, results["fp32"]) for k in kinds)
                arm.update(max_abs_effect_diff=diffs, max_abs_effect_diff_all=max(diffs.values()),
                           same_peak_maps=f"{peaks}/{len(res) * len(kinds)}",
                           max_abs_p_clean_diff=max(abs(a["p_clean"] - b["p_clean"]) for a, b in zip(res, results["fp32"])),
                           max_abs_p_corrupt_diff=max(abs(a["p_corrupt"] - b["p_corrupt"])
                                                      for a, b in zip(res, results["fp32"])))
            record["arms"][name] = arm
            print(f"{name}: {len(prepared)} facts ({[len(f.ids) for f in prepared]} tokens), kinds {','.join(kinds)}: "
                  f"{arm['cpu_s_per_fact']:.1f} s CPU, {arm['wall_s_per_fact']:.1f} s wall per fact ("
                  f"{','.join(first)}: {arm['cpu_s_per_fact_first_kinds']:.1f} s CPU, "
                  f"{arm['wall_s_per_fact_first_kinds']:.1f} s wall)"
                  + (f"; max |effect - fp32| {arm['max_abs_effect_diff_all']:.4f}, same peak in "
                     f"{arm['same_peak_maps']} maps" if "max_abs_effect_diff" in arm else ""), flush=True)
    if args.json:
        record.update(model=args.model, kinds=list(kinds), samples=args.samples, window=args.window,
                      noise=3 * std, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                      cpu_bf16=cpu_bf16(), torch=torch.__version__,
                      max_abs_effect=max(abs(x) for r in results[next(iter(results))] for k in kinds
                                         for row in r["effects"][k] for x in row),
                      load_average=list(__import__("os").getloadavg()))
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1)


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
    trc.add_argument("--kinds", default=",".join(("hidden", "mlp", "attn", "mlp_window", "attn_window")))
    trc.add_argument("--first", default="hidden,mlp_window,attn_window",
                     help="kinds timed on their own first (the paper's figure kinds), then the rest")
    trc.add_argument("--precisions", default="fp32,bf16-autocast,bf16", help="fast-path arms, in this order")
    trc.add_argument("--reference", action="store_true", help="also the fp32 reference path (slow)")
    trc.add_argument("--all-facts", action="store_true", help="the first N facts, known or not")
    trc.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    bench_lama(args) if args.what == "lama" else bench_trace(args)


if __name__ == "__main__":
    main()
