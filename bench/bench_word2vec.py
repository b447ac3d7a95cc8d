"""Benchmark plmkit's word2vec against gensim on the same corpus and hyper-parameters.

Corpus: WikiText-2 valid + test (already word-tokenised) + SQuAD v1.1 dev contexts (tokenised
with a \\w+ | punctuation regex), lower-cased. Reports, for each model: training time, the
built-in analogy set (plmkit.classic.word2vec.ANALOGY_PAIRS, evaluated by each library's own
analogy code on the same questions file), nearest neighbours of common words, and the overlap
of top-10 neighbours with gensim (a gensim run with another seed gives the ceiling). JSON out.

    .venv/bin/python bench/bench_word2vec.py --out bench/results/word2vec.json [--arch skipgram --loss ns]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from plmkit.classic.word2vec import (WordVectors, Word2VecConfig, analogy_questions,  # noqa: E402
                                     train_word2vec, write_questions)

QUERY = ["king", "city", "music", "war", "france", "university", "river", "game", "water", "three", "he", "good"]


def data_dir() -> Path:
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


def load_corpus() -> list[list[str]]:
    d = data_dir()
    sents = []
    for name in ("valid.txt", "test.txt"):
        for line in (d / "wikitext-2" / name).read_text(encoding="utf-8").splitlines():
            toks = line.lower().split()
            if toks and not toks[0] == "=":
                sents.append(toks)
    squad = json.loads((d / "squad-v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))
    for art in squad["data"]:
        for para in art["paragraphs"]:
            sents.append(re.findall(r"\w+|[^\w\s]", para["context"].lower()))
    return sents


def overlap(a: WordVectors, b, words: list[str], topn: int = 10) -> float:
    """Mean Jaccard of the top-n neighbour sets (b is plmkit WordVectors or a gensim KeyedVectors)."""
    scores = []
    for w in words:
        na = {x for x, _ in a.most_similar(w, topn=topn)}
        nb = {x for x, _ in b.most_similar(w, topn=topn)}
        scores.append(len(na & nb) / len(na | nb))
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="skipgram", choices=["skipgram", "cbow"])
    ap.add_argument("--loss", default="ns", choices=["ns", "hs"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1, help="gensim worker threads = torch threads of plmkit")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from gensim.models import KeyedVectors
    from gensim.models import Word2Vec as GensimW2V

    sents = load_corpus()
    n_words = sum(map(len, sents))
    print(f"corpus: {len(sents)} sentences, {n_words} words", file=sys.stderr)
    cfg = Word2VecConfig(architecture=args.arch, loss=args.loss, vector_size=args.dim, epochs=args.epochs,
                         window=5, min_count=5, negative=5, sample=1e-3, batch_size=args.batch_size,
                         workers=args.workers)
    questions = analogy_questions()
    tmp = Path(tempfile.mkdtemp())
    qfile = tmp / "questions.txt"
    write_questions(questions, qfile)

    t = time.perf_counter()
    ours = train_word2vec(sents, cfg, progress=True)
    t_ours = time.perf_counter() - t
    g_kw = dict(vector_size=args.dim, window=5, min_count=5, negative=5 if args.loss == "ns" else 0,
                hs=int(args.loss == "hs"), sample=1e-3, sg=int(args.arch == "skipgram"), epochs=args.epochs,
                workers=args.workers, alpha=cfg.lr, min_alpha=cfg.min_alpha)
    t = time.perf_counter()
    gen = GensimW2V(sents, seed=1, **g_kw)
    t_gensim = time.perf_counter() - t
    gen2 = GensimW2V(sents, seed=2, **g_kw)

    # gensim's own evaluation on both vector sets (same code path), and ours for the skip count
    ours.save_word2vec_format(tmp / "ours.bin", binary=True)
    ours_kv = KeyedVectors.load_word2vec_format(str(tmp / "ours.bin"), binary=True)
    res = {}
    for name, kv in (("plmkit", ours_kv), ("gensim", gen.wv), ("gensim_seed2", gen2.wv)):
        acc, sections = kv.evaluate_word_analogies(str(qfile), restrict_vocab=300000)
        res[name] = {"analogy_accuracy": acc,
                     "sections": {s["section"]: round(len(s["correct"]) / max(1, len(s["correct"]) + len(s["incorrect"])), 4)
                                  for s in sections if s["section"] != "Total accuracy"}}
    own = ours.evaluate_analogies(questions)
    common = [w for w in ours.words[50:250]]
    neighbours = {w: [x for x, _ in ours.most_similar(w, topn=8)] for w in QUERY if w in ours}
    g_neighbours = {w: [x for x, _ in gen.wv.most_similar(w, topn=8)] for w in QUERY if w in gen.wv}
    out = {
        "corpus": {"sentences": len(sents), "words": n_words, "vocab": len(ours)},
        "config": ours.train_stats["config"],
        "seconds": {"plmkit": round(t_ours, 2), "gensim": round(t_gensim, 2),
                    "ratio_plmkit_over_gensim": round(t_ours / t_gensim, 2), "gensim_workers": args.workers},
        "epoch_loss": ours.train_stats["epoch_loss"],
        "analogy": {**res, "questions": len(questions), "evaluated_plmkit_own": own["evaluated"],
                    "skipped_unknown": own["skipped"], "plmkit_own_accuracy": own["accuracy"]},
        "neighbour_overlap_top10": {"plmkit_vs_gensim": overlap(ours, gen.wv, common),
                                    "gensim_seed2_vs_gensim": overlap(gen2.wv, gen.wv, common)},
        "neighbours_plmkit": neighbours, "neighbours_gensim": g_neighbours,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
