"""BM25 over the training examples, with the ``bm25s`` library (Lù 2024).

Tokenisation (index and query alike): Unicode NFKC is not applied; the text is lowercased
(``str.lower``) and split into maximal runs of word characters (regex ``\\w+``, Unicode), so
punctuation is dropped and single characters and digits are kept. No stemming, no stop words.

Scoring: bm25s's ``lucene`` variant, k1 = 1.5, b = 0.75 by default::

    score(q, d) = sum over query tokens t (repeats counted) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

This IDF is positive for every df, so the zero / negative-IDF pitfalls do not arise: with the
original Robertson IDF ``ln((N - df + 0.5) / (df + 0.5))`` a term in more than half the documents gets
a negative weight (rank-bm25's ``BM25Okapi`` replaces those by ``epsilon * mean idf``, and bm25s's
``robertson`` clamps them to 0), which in a small corpus silences exactly the shared words of a fact
(a subject that occurs in most documents). A query whose tokens are all unknown to the index scores
every example 0 (bm25s itself would fail on an empty token list).

The index (bm25s's sparse CSC score matrix + vocabulary) is saved with ``save(dir)`` and read back
with ``BM25Index.load(dir)`` (``plmkit-bm25.json`` records the tokenisation, parameters and size).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from plmkit.errors import UserError

TOKEN_RE = re.compile(r"\w+")
TOKENISATION = "lowercase, regex \\w+ (Unicode word-character runs), no stemming, no stop words"
META = "plmkit-bm25.json"


def tokenize(text: str) -> list[str]:
    """The BM25 tokens of ``text`` (see the module docstring)."""
    return TOKEN_RE.findall(text.lower())


def _query_text(query: Any) -> str:
    return query if isinstance(query, str) else query.text


class BM25Index:
    """A bm25s index over ``len(examples)`` training examples (ids 0..N-1)."""

    def __init__(self, retriever: Any, num_examples: int, k1: float, b: float, index_seconds: float = 0.0):
        self.retriever = retriever
        self.num_examples = num_examples
        self.k1, self.b = k1, b
        self.index_seconds = index_seconds
        self.query_seconds = 0.0
        self.num_queries = 0

    @classmethod
    def build(cls, examples: Any, k1: float = 1.5, b: float = 0.75) -> "BM25Index":
        """Index ``examples`` (a ``TrainingExamples`` or a sequence of strings)."""
        import bm25s

        t0 = time.perf_counter()
        texts: Iterable[str] = examples.texts() if hasattr(examples, "texts") else examples
        corpus = [tokenize(t) for t in texts]
        if not corpus:
            raise UserError("BM25: no training examples to index")
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(corpus, show_progress=False)
        return cls(retriever, len(corpus), k1, b, time.perf_counter() - t0)

    def save(self, out_dir: str | os.PathLike) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(out), show_progress=False)
        meta = {"format": "plmkit-bm25", "library": "bm25s", "method": "lucene", "k1": self.k1, "b": self.b,
                "num_examples": self.num_examples, "tokenisation": TOKENISATION,
                "index_seconds": round(self.index_seconds, 3)}
        (out / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return out

    @classmethod
    def load(cls, index_dir: str | os.PathLike, mmap: bool = False) -> "BM25Index":
        import bm25s

        d = Path(index_dir)
        try:
            meta = json.loads((d / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{d / META}: not a saved plmkit BM25 index ({e})") from None
        retriever = bm25s.BM25.load(str(d), mmap=mmap, show_progress=False)
        return cls(retriever, int(meta["num_examples"]), float(meta["k1"]), float(meta["b"]),
                   float(meta.get("index_seconds", 0.0)))

    def __len__(self) -> int:
        return self.num_examples

    def scores(self, query: Any, candidate_ids: Sequence[int] | None = None) -> np.ndarray:
        """BM25 score of every example (or of ``candidate_ids``, in that order) for a ``Query`` or a string."""
        t0 = time.perf_counter()
        ids = self.retriever.get_tokens_ids(tokenize(_query_text(query)))
        if ids:
            s = np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float32)
        else:  # no query token is in the index
            s = np.zeros(self.num_examples, dtype=np.float32)
        if candidate_ids is not None:
            s = s[np.asarray(candidate_ids, dtype=np.int64)]
        self.query_seconds += time.perf_counter() - t0
        self.num_queries += 1
        return s

    def top_k(self, query: Any, k: int) -> list[tuple[int, float]]:
        return top_k(self.scores(query), k)


def top_k(scores: np.ndarray, k: int, ids: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """The ``k`` best (id, score), best first; ties broken by the smaller position (stable)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    k = min(int(k), n)
    if k <= 0:
        return []
    if k < n:  # everything at least as good as the k-th best score (ties at the cut kept), then sorted
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(n)
    order = cand[np.lexsort((cand, -scores[cand]))][:k]
    ids_arr = np.arange(n) if ids is None else np.asarray(ids)
    return [(int(ids_arr[i]), float(scores[i])) for i in order]
