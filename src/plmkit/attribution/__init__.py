"""Tracing facts back to the training data (Akyürek et al. 2022): which training examples taught a fact.

A training example of a run is one document of its training token store (``store.documents()`` order,
id = index). Three ways to rank them for a query (``prompt`` + ``target``):

- :class:`BM25Index` (``bm25.py``): lexical BM25 with the ``bm25s`` library, saved / loaded;
- :class:`EmbeddingIndex` (``embedding.py``): cosine of mean-pooled hidden states of one layer,
  example vectors kept in a float16 memmap;
- :class:`TracIn` (``tracin.py``): TracInCP over the run's checkpoints and their learning rates, with
  per-example gradients from ``torch.func`` and an optional seeded random projection;
- :func:`rerank` (``rerank.py``): BM25's top-k reordered by another method (e.g. TracIn).

Every method has ``scores(query, candidate_ids=None) -> np.ndarray`` and ``top_k(query, k)``.
``plm attribute`` (``plmkit.cli.attribute``) runs them over a queries file.

    from plmkit.attribution import TrainingExamples, load_queries, BM25Index, TracIn, mrr
    ex = TrainingExamples.from_run("runs/facts")
    bm = BM25Index.build(ex)
    q = load_queries("queries.jsonl")[0]
    print(bm.top_k(q, 10), TracIn.from_run("runs/facts", examples=ex, proj_dim=512).top_k(q, 10))
"""

from __future__ import annotations

__all__ = ["TrainingExamples", "Query", "load_queries", "BM25Index", "EmbeddingIndex", "TracIn", "mrr",
           "recall_at_k", "rerank", "top_k"]

_LAZY = {
    "TrainingExamples": "examples", "Query": "queries", "load_queries": "queries", "BM25Index": "bm25",
    "top_k": "bm25", "EmbeddingIndex": "embedding", "TracIn": "tracin", "mrr": "metrics",
    "recall_at_k": "metrics", "rerank": "rerank",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"plmkit.attribution.{_LAZY[name]}"), name)
