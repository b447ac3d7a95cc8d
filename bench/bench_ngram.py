"""Benchmark plmkit's n-gram LMs against nltk.lm on the same counts (perplexity and speed).

1) WikiText-2 (train valid.txt, evaluate test.txt): counting time, count-table memory and test
   perplexity for orders 1-4 and every smoothing method.
2) Parity and speed vs nltk.lm on a slice (nltk's Kneser-Ney scans every n-gram of the next order
   for each query, so the slice is small): MLE (on training text), Laplace, interpolated KN
   (discount 0.1, nltk's unigram base), feeding nltk exactly the n-grams plmkit counted.

    .venv/bin/python bench/bench_ngram.py --out bench/results/ngram.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from plmkit.classic.ngram import ArpaLM, NgramCounts, build_model, read_sentences, write_arpa  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--nltk-lines", type=int, default=150, help="training lines of the nltk slice")
    args = ap.parse_args()
    d = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data")) / "wikitext-2"
    train, test = read_sentences(d / "valid.txt"), read_sentences(d / "test.txt")
    out: dict = {"wikitext2": []}
    for order in (1, 2, 3, 4):
        t = time.perf_counter()
        counts = NgramCounts.build(train, order)
        t_count = time.perf_counter() - t
        for method in ("mle", "laplace", "addk", "katz", "kn", "mkn"):
            t = time.perf_counter()
            lm = build_model(counts, method)
            t_build = time.perf_counter() - t
            t = time.perf_counter()
            ppl = lm.perplexity(test)
            row = {"order": order, "method": method, "ppl": round(ppl, 2) if math.isfinite(ppl) else "inf",
                   "count_s": round(t_count, 2), "build_s": round(t_build, 2),
                   "eval_s": round(time.perf_counter() - t, 2), "memory_mb": counts.summary()["memory_mb"],
                   "ngrams": counts.summary()["ngrams"]}
            if lm.is_backoff and order > 1:
                path = Path("/tmp") / f"bench_ngram_{os.getpid()}.arpa"
                write_arpa(lm, path)
                row["arpa_ppl"] = round(ArpaLM(path).perplexity(test), 2)
                row["arpa_mb"] = round(path.stat().st_size / 2**20, 1)
                path.unlink()
            out["wikitext2"].append(row)
            print(row, file=sys.stderr, flush=True)

    from nltk.lm import MLE, KneserNeyInterpolated, Laplace
    from nltk.lm import Vocabulary as NltkVocab

    tr, te = train[: args.nltk_lines], test[: args.nltk_lines // 3]
    out["nltk"] = []
    for order in (2, 3):
        counts = NgramCounts.build(tr, order)
        it = counts.vocab.itos
        for method, ref_cls, kw, opts, eval_set in (
                ("mle", MLE, {}, {}, tr[:50]), ("laplace", Laplace, {}, {}, te),
                ("kn", KneserNeyInterpolated, {"discount": 0.1}, {"discount": 0.1, "uniform_floor": False}, te)):
            t = time.perf_counter()
            ours = build_model(counts, method, **opts).perplexity(eval_set)
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            ref = ref_cls(order, **kw)
            ref.fit([[tuple(it[i] for i in g) for g in counts.everygrams(counts.vocab.lookup(s))] for s in tr],
                    NltkVocab(it))
            grams = [g for s in eval_set for g in counts.ngrams(counts.vocab.lookup(s))]
            ref_ppl = math.exp(-sum(math.log(ref.score(it[g[-1]], [it[i] for i in g[:-1]])) for g in grams) / len(grams))
            t_ref = time.perf_counter() - t
            row = {"order": order, "method": method, "plmkit_ppl": ours, "nltk_ppl": ref_ppl,
                   "rel_diff": abs(ours / ref_ppl - 1), "plmkit_s": round(t_ours, 3), "nltk_s": round(t_ref, 3),
                   "speedup": round(t_ref / max(t_ours, 1e-9), 1)}
            out["nltk"].append(row)
            print(row, file=sys.stderr, flush=True)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
