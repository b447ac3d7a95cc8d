"""Recall@k of the gold paragraph for ICT-style queries: REALM's retriever before / after the ICT warm-up.

For each paragraph (non-heading line) of FILE with at least two sentences, one sentence (seeded) is the query;
the index holds every paragraph of FILE, the query's own paragraph with that sentence deleted (so the gold
document never contains the query verbatim). Encoder = ``--model`` (a plm pretrain ``final`` directory, or
``random:DIR`` = a freshly initialised model of DIR's architecture, seed ``--seed``: what REALM's retriever starts
from without a warm-up), pooled like ``objective ict`` (mean or cls), exact inner-product search.

usage: python bench/realm_ict_recall.py --model runs/ict/final --tokenizer runs/ict/final \
           --file ../shared/data/wikitext-2/test.txt [--queries 500] [--pooling mean] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

import plmkit
from plmkit.objectives.realm import collate
from plmkit.objectives.realm_ict import pool_hidden
from plmkit.tokenization.words import sentence_starts


def paragraphs(path: str) -> list[str]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s and not (s.startswith("=") and s.endswith("=")):
            out.append(s)
    return out


@torch.no_grad()
def embed(model, tok, texts: list[str], max_len: int, pooling: str, bs: int = 64) -> torch.Tensor:
    b, e = tok.cls_token_id if hasattr(tok, "cls_token_id") else None, getattr(tok, "sep_token_id", None)
    seqs = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False)[: max_len - 2]
        seqs.append(([b] if b is not None else []) + ids + ([e] if e is not None else []))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.empty(len(seqs), model.config.hidden_size)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for s in range(0, len(order), bs):
        idx = order[s: s + bs]
        ids, mask = collate([seqs[i] for i in idx], pad)
        out[torch.tensor(idx)] = pool_hidden(model, ids, mask, pooling).float()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory, or random:DIR")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    ap.add_argument("--query-len", type=int, default=48)
    ap.add_argument("--doc-len", type=int, default=96)
    ap.add_argument("--ks", default="1,5,20,100")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tok = plmkit.load_tokenizer(a.tokenizer)
    if a.model.startswith("random:"):
        src = plmkit.load(a.model[len("random:"):])
        torch.manual_seed(a.seed)
        model = type(src)(src.config)
        del src
    else:
        model = plmkit.load(a.model)
    model.eval()
    paras = paragraphs(a.file)
    rng = random.Random(a.seed)
    cand = []
    for i, p in enumerate(paras):
        st = sentence_starts(p)
        if len(st) >= 2:
            cand.append((i, st))
    rng.shuffle(cand)
    cand = cand[: a.queries]
    docs = list(paras)
    queries, gold = [], []
    for i, st in cand:
        j = rng.randrange(len(st))
        s, e = st[j], (st[j + 1] if j + 1 < len(st) else len(paras[i]))
        queries.append(paras[i][s:e].strip())
        docs[i] = (paras[i][:s] + paras[i][e:]).strip()
        gold.append(i)
    D = embed(model, tok, docs, a.doc_len, a.pooling)
    Q = embed(model, tok, queries, a.query_len, a.pooling)
    ranks = []
    scores = Q @ D.T
    for r, g in enumerate(gold):
        ranks.append(int((scores[r] > scores[r, g]).sum()) + 1)
    ks = [int(k) for k in a.ks.split(",")]
    res = {"model": a.model, "file": a.file, "documents": len(docs), "queries": len(queries), "pooling": a.pooling,
           "seed": a.seed, **{f"recall@{k}": sum(x <= k for x in ranks) / len(ranks) for k in ks},
           "mrr": sum(1 / x for x in ranks) / len(ranks), "median_rank": sorted(ranks)[len(ranks) // 2],
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
