"""word2vec: CBOW and skip-gram with negative sampling or hierarchical softmax, vectorised in torch.

Contents
--------
- ``Word2VecConfig``: hyper-parameters (names follow gensim where gensim has one).
- ``train_word2vec(sentences, config) -> WordVectors``: builds the vocabulary (``min_count``), the
  unigram^0.75 negative-sampling distribution or the Huffman tree (hierarchical softmax), then per
  epoch: sub-samples frequent words, draws a dynamic window per centre word, forms all
  (input, output) pairs at once with numpy and runs plain SGD over batches of pairs with a
  linearly decaying learning rate (the update of word2vec.c, applied to a batch at a time with
  ``index_add_``; no Python loop over pairs).
- ``WordVectors``: nearest neighbours, 3CosAdd analogies (unknown words reported and counted),
  the word2vec text and binary formats (``gensim.models.KeyedVectors.load_word2vec_format`` reads
  them; we read them back too).
- ``ANALOGY_PAIRS`` / ``analogy_questions``: a small analogy set built from word pairs
  (capital-country, nationality, gender, plural, past tense, comparative), in the
  ``questions-words.txt`` format that gensim's ``evaluate_word_analogies`` reads.

Conventions as in word2vec.c / gensim: skip-gram uses each context word's input vector to
predict the centre word; CBOW averages the context input vectors (``cbow_mean``) and adds the
un-averaged error to each of them; negatives equal to the target are ignored. Batching
changes one thing: a vector hit n times in a batch moves by the sum of its updates only up to
n = ``row_update_cap``, beyond that by cap x their mean (the root of the Huffman tree and the
words of a tiny vocabulary occur in nearly every example of a batch).

References
----------
1) T. Mikolov, K. Chen, G. Corrado, J. Dean. Efficient Estimation of Word Representations in
   Vector Space. ICLR workshop 2013 (CBOW, skip-gram, the analogy task).
2) T. Mikolov, I. Sutskever, K. Chen, G. Corrado, J. Dean. Distributed Representations of Words and
   Phrases and their Compositionality. NIPS 2013 (negative sampling, sub-sampling).
3) F. Morin, Y. Bengio. Hierarchical Probabilistic Neural Network Language Model. AISTATS 2005.
4) word2vec.c (Google, 2013) and gensim's word2vec_inner.pyx for the exact update rules.
"""

from __future__ import annotations

import heapq
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from plmkit.errors import UserError, suggest
from plmkit.textio import iter_lines


@dataclass(kw_only=True)
class Word2VecConfig:
    """Hyper-parameters of word2vec (defaults of word2vec.c / gensim)."""

    architecture: Literal["skipgram", "cbow"] = "skipgram"
    """"skipgram" predicts the centre word from each context word; "cbow" from their mean."""
    loss: Literal["ns", "hs"] = "ns"
    """Negative sampling ("ns") or hierarchical softmax over a Huffman tree ("hs")."""
    vector_size: int = 100
    window: int = 5
    """Maximum window; the effective window of each centre word is uniform in 1..window."""
    min_count: int = 5
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    """Sub-sampling threshold t: a word of frequency f is kept with prob (sqrt(f/t) + 1) t / f."""
    alpha: float | None = None
    """Initial learning rate; None means 0.025 (skip-gram) / 0.05 (CBOW)."""
    min_alpha: float = 1e-4
    epochs: int = 5
    batch_size: int = 1024
    """Training examples (pairs for skip-gram, centre words for CBOW) per SGD step."""
    max_vocab_size: int | None = None
    seed: int = 1
    workers: int = 1
    """torch intra-op threads while training (the batches are small: 1 is usually fastest)."""
    row_update_cap: int = 256
    """A vector hit n times in one batch moves by min(n, cap) times its mean update (see _train).

    In a batch of 1,024 skip-gram pairs a frequent output vector is hit ~200 times (as a negative). A cap
    of 8 made frequent rows learn ~25x slower than sequential SGD: on WikiText-2 valid (skip-gram, 1 epoch)
    the vectors reached half gensim's length and no pair scored above 0, and 3 epochs left random word
    pairs at a mean cosine of 0.990 (gensim 0.944). With 256 (and gensim's initial range) the length,
    score range and 3-epoch cosine (0.940) match gensim's; tiny vocabularies still train (tests)."""

    def __post_init__(self) -> None:
        checks = {"vector_size": self.vector_size >= 1, "window": self.window >= 1,
                  "min_count": self.min_count >= 1, "epochs": self.epochs >= 1,
                  "batch_size": self.batch_size >= 1, "sample": self.sample >= 0, "workers": self.workers >= 1,
                  "row_update_cap": self.row_update_cap >= 1,
                  "negative": self.negative >= 0 and (self.negative >= 1 or self.loss == "hs")}
        for key, ok in checks.items():
            if not ok:
                raise UserError(f"word2vec: invalid {key}={getattr(self, key)!r}")
        if self.architecture not in ("skipgram", "cbow"):
            raise UserError(f"word2vec: architecture must be 'skipgram' or 'cbow', got {self.architecture!r}"
                            + suggest(self.architecture, ("skipgram", "cbow")))
        if self.loss not in ("ns", "hs"):
            raise UserError(f"word2vec: loss must be 'ns' or 'hs', got {self.loss!r}")

    @property
    def lr(self) -> float:
        return self.alpha if self.alpha is not None else (0.025 if self.architecture == "skipgram" else 0.05)


# ----------------------------------------------------------------------------- vectors
class WordVectors:
    """Words and their vectors (float32 (V, D)), with counts when known."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: Sequence[int] | None = None) -> None:
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors")
        self.words = list(words)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.counts = list(counts) if counts is not None else None
        self._unit: np.ndarray | None = None
        self.train_stats: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        if word not in self.index:
            raise UserError(f"word {word!r} is not in the vocabulary ({len(self)} words)"
                            + suggest(word, self.words[:50000]))
        return self.vectors[self.index[word]]

    @property
    def unit(self) -> np.ndarray:
        if self._unit is None:
            norm = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norm, 1e-12)
        return self._unit

    def similarity(self, a: str, b: str) -> float:
        return float(self.unit[self.index[a]] @ self.unit[self.index[b]]) if a in self and b in self else math.nan

    def most_similar(self, positive: Sequence[str] | str, negative: Sequence[str] = (), topn: int = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Cosine nearest neighbours of mean(unit(positive)) - mean(unit(negative)) (3CosAdd), queries excluded."""
        positive = [positive] if isinstance(positive, str) else list(positive)
        for w in [*positive, *negative]:
            self[w]  # raises a UserError naming an unknown word
        q = np.zeros(self.vectors.shape[1], dtype=np.float32)
        for w in positive:
            q += self.unit[self.index[w]]
        for w in negative:
            q -= self.unit[self.index[w]]
        q /= max(float(np.linalg.norm(q)), 1e-12)
        limit = len(self) if restrict_vocab is None else min(restrict_vocab, len(self))
        sims = self.unit[:limit] @ q
        for w in [*positive, *negative]:
            if self.index[w] < limit:
                sims[self.index[w]] = -np.inf
        k = min(topn, limit)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(self.words[i], float(sims[i])) for i in top]

    def evaluate_analogies(self, questions: Sequence[tuple[str, str, str, str, str]], restrict_vocab: int = 300000,
                           lowercase: bool = True) -> dict[str, Any]:
        """Accuracy of 3CosAdd on (section, a, b, c, d) questions "a:b :: c:d".

        Questions with a word outside the (restricted) vocabulary are skipped, counted and reported.
        """
        limit = min(restrict_vocab, len(self))
        known = {w: i for w, i in self.index.items() if i < limit}
        sections: dict[str, list[int]] = {}
        skipped: list[tuple[str, ...]] = []
        rows = []
        for q in questions:
            sec, words = q[0], [w.lower() if lowercase else w for w in q[1:]]
            if any(w not in known for w in words):
                skipped.append(tuple(words))
                continue
            rows.append((sec, [known[w] for w in words]))
        unit = self.unit[:limit]
        correct_total = 0
        for start in range(0, len(rows), 512):  # batched: (Q, D) @ (D, V)
            chunk = rows[start:start + 512]
            ids = np.array([r[1] for r in chunk])
            q = unit[ids[:, 1]] - unit[ids[:, 0]] + unit[ids[:, 2]]
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            sims = q @ unit.T
            for j in range(3):
                sims[np.arange(len(chunk)), ids[:, j]] = -np.inf
            pred = sims.argmax(1)
            for (sec, _), p, gold in zip(chunk, pred, ids[:, 3]):
                s = sections.setdefault(sec, [0, 0])
                s[0] += int(p == gold)
                s[1] += 1
                correct_total += int(p == gold)
        n = len(rows)
        return {"accuracy": correct_total / n if n else 0.0, "correct": correct_total, "evaluated": n,
                "skipped": len(skipped), "skipped_examples": skipped[:5],
                "sections": {k: {"accuracy": v[0] / v[1], "n": v[1]} for k, v in sections.items()}}

    # --- the word2vec formats
    def save_word2vec_format(self, path: str | os.PathLike, binary: bool = False) -> None:
        """Write "V D" then one word and its vector per line (text) or raw float32 (binary), atomically."""
        path = Path(path)
        for w in self.words:
            if not w or any(ch.isspace() for ch in w):
                raise UserError(f"word {w!r} cannot be written in word2vec format (empty or contains whitespace)")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(f"{len(self)} {self.vectors.shape[1]}\n".encode())
            if binary:
                for w, v in zip(self.words, self.vectors):
                    f.write(w.encode("utf-8") + b" " + v.astype("<f4").tobytes() + b"\n")
            else:
                for w, v in zip(self.words, self.vectors):
                    f.write((w + " " + " ".join(f"{x:.6g}" for x in v) + "\n").encode("utf-8"))
        os.replace(tmp, path)

    @classmethod
    def load_word2vec_format(cls, path: str | os.PathLike, binary: bool | None = None) -> "WordVectors":
        """Read the text or binary word2vec format (binary guessed from the file name when None)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        if binary is None:
            binary = path.suffix == ".bin"
        with open(path, "rb") as f:
            header = f.readline().split()
            try:
                V, D = int(header[0]), int(header[1])
            except (IndexError, ValueError):
                raise UserError(f"{path}:1: expected a header 'VOCAB_SIZE DIM'") from None
            words, vecs = [], np.empty((V, D), dtype=np.float32)
            for i in range(V):
                if binary:
                    word = bytearray()
                    while True:
                        ch = f.read(1)
                        if not ch:
                            raise UserError(f"{path}: truncated after {i} of {V} vectors")
                        if ch == b" ":
                            break
                        if ch != b"\n":
                            word += ch
                    buf = f.read(4 * D)
                    if len(buf) != 4 * D:
                        raise UserError(f"{path}: truncated after {i} of {V} vectors")
                    vecs[i] = np.frombuffer(buf, dtype="<f4")
                    words.append(word.decode("utf-8", errors="replace"))
                else:
                    parts = f.readline().decode("utf-8").rstrip().split(" ")
                    if len(parts) != D + 1:
                        raise UserError(f"{path}:{i + 2}: expected a word and {D} numbers, got {len(parts)} fields")
                    words.append(parts[0])
                    vecs[i] = np.asarray(parts[1:], dtype=np.float32)
        return cls(words, vecs)


# ----------------------------------------------------------------------------- vocabulary / trees
def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 5,
                max_vocab_size: int | None = None) -> tuple[list[str], np.ndarray]:
    """Words with count >= min_count, most frequent first (ties by first occurrence), and their counts."""
    counter: Counter[str] = Counter()
    for s in sentences:
        counter.update(s)
    items = [(w, c) for w, c in counter.most_common() if c >= min_count]
    if max_vocab_size:
        items = items[:max_vocab_size]
    if not items:
        raise UserError(f"word2vec: empty vocabulary (no word occurs >= min_count={min_count} times"
                        f"{' in an empty text' if not counter else ''})")
    return [w for w, _ in items], np.array([c for _, c in items], dtype=np.int64)


def huffman_codes(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman tree over ``counts``: per word its code bits and inner-node ids, padded to the max depth.

    Returns (codes (V, L) int8, points (V, L) int64, lengths (V,)); inner nodes are 0..V-2.
    """
    V = len(counts)
    if V == 1:
        return np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int64), np.ones(1, np.int64)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * V - 1, dtype=np.int64)
    bit = np.zeros(2 * V - 1, dtype=np.int8)
    nxt = V
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a], parent[b] = nxt, nxt
        bit[b] = 1
        heapq.heappush(heap, (c1 + c2, nxt))
        nxt += 1
    root = nxt - 1
    codes, points = [], []
    for i in range(V):
        c, p, node = [], [], i
        while node != root:
            c.append(bit[node])
            node = parent[node]
            p.append(node - V)
        codes.append(c[::-1])
        points.append(p[::-1])
    L = max(len(c) for c in codes)
    code_arr = np.zeros((V, L), np.int8)
    point_arr = np.zeros((V, L), np.int64)
    lengths = np.array([len(c) for c in codes])
    for i in range(V):
        code_arr[i, :lengths[i]] = codes[i]
        point_arr[i, :lengths[i]] = points[i]
    return code_arr, point_arr, lengths


# ----------------------------------------------------------------------------- training
def _epoch_examples(corpus: np.ndarray, sent_ids: np.ndarray, keep_prob: np.ndarray, cfg: Word2VecConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Sub-sample, draw dynamic windows; skip-gram -> (inputs, outputs); CBOW -> (contexts (N, 2W), mask, centres)."""
    keep = rng.random(len(corpus)) < keep_prob[corpus]
    tok, sid = corpus[keep], sent_ids[keep]
    N, W = len(tok), cfg.window
    b = rng.integers(1, W + 1, size=N)  # effective window of each centre
    if cfg.architecture == "skipgram":
        ins, outs = [], []
        for d in range(1, W + 1):
            i = np.arange(N - d)
            ok = (sid[i] == sid[i + d])
            fwd = i[ok & (b[i] >= d)]  # centre i, context i+d
            bwd = i[ok & (b[i + d] >= d)] + d  # centre i+d, context i
            ins += [tok[fwd + d], tok[bwd - d]]
            outs += [tok[fwd], tok[bwd]]
        ins_a, outs_a = np.concatenate(ins), np.concatenate(outs)
        perm = rng.permutation(len(ins_a))
        return ins_a[perm], outs_a[perm]
    ctx = np.zeros((N, 2 * W), dtype=np.int64)
    mask = np.zeros((N, 2 * W), dtype=bool)
    pos = np.arange(N)
    for j, d in enumerate([*range(-W, 0), *range(1, W + 1)]):
        p = pos + d
        valid = (p >= 0) & (p < N) & (np.abs(d) <= b)
        valid[valid] &= sid[p[valid]] == sid[valid]
        ctx[valid, j] = tok[p[valid]]
        mask[:, j] = valid
    has = mask.any(1)
    perm = rng.permutation(int(has.sum()))
    return ctx[has][perm], mask[has][perm], tok[has][perm]


def train_word2vec(sentences: Iterable[Sequence[str]], config: Word2VecConfig | None = None,
                   progress: bool = False, **overrides: Any) -> WordVectors:
    """Train word2vec on tokenised ``sentences`` (lists of words); returns the input vectors.

    ``train_stats`` on the result records the vocabulary size, words and examples per epoch,
    the training time and the mean loss of each epoch.
    """
    if config is None:
        config = Word2VecConfig(**overrides)
    elif overrides:
        config = Word2VecConfig(**{**asdict(config), **overrides})
    cfg = config
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.workers)
    try:
        return _train(sentences, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _train(sentences: Iterable[Sequence[str]], cfg: Word2VecConfig, progress: bool) -> WordVectors:
    sentences = [list(s) for s in sentences]
    if not any(sentences):
        raise UserError("word2vec: empty training text")
    words, counts = build_vocab(sentences, cfg.min_count, cfg.max_vocab_size)
    V, D = len(words), cfg.vector_size
    index = {w: i for i, w in enumerate(words)}
    ids = [np.fromiter((index[w] for w in s if w in index), dtype=np.int64) for s in sentences]
    ids = [a for a in ids if len(a) > 1]
    if not ids:
        raise UserError("word2vec: no sentence keeps two in-vocabulary words (lower min_count?)")
    corpus = np.concatenate(ids)
    sent_ids = np.repeat(np.arange(len(ids)), [len(a) for a in ids])
    total = counts.sum()
    if cfg.sample > 0:
        thr = cfg.sample * total
        keep_prob = np.minimum((np.sqrt(counts / thr) + 1) * thr / counts, 1.0)
    else:
        keep_prob = np.ones(V)

    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    # init as gensim and fastText: input vectors uniform in [-1, 1) / D, output vectors zero (word2vec.c
    # draws from half that range; on short runs the smaller start lets the common direction that negative
    # sampling grows swamp the words sooner; see Word2VecConfig.row_update_cap for the measurements)
    syn0 = (torch.rand(V, D, generator=gen) * 2 - 1) / D
    use_hs = cfg.loss == "hs"
    if use_hs:
        codes, points, lengths = (torch.from_numpy(a) for a in huffman_codes(counts))
        syn1 = torch.zeros(max(V - 1, 1), D)
        code_f = codes.float()
        code_mask = (torch.arange(codes.shape[1])[None, :] < lengths[:, None]).float()
    else:
        syn1 = torch.zeros(V, D)
        noise = torch.from_numpy(counts.astype(np.float64) ** cfg.ns_exponent)
        noise_cdf = torch.cumsum(noise / noise.sum(), 0).float()

    # expected examples for the learning-rate schedule
    est_per_epoch = None
    t0 = time.perf_counter()
    losses, examples_seen = [], 0
    lr0, lr_min = cfg.lr, cfg.min_alpha
    for epoch in range(cfg.epochs):
        ex = _epoch_examples(corpus, sent_ids, keep_prob, cfg, rng)
        n_ex = len(ex[-1])
        if est_per_epoch is None:
            est_per_epoch = n_ex
        total_ex = est_per_epoch * cfg.epochs
        if epoch == 0:
            from plmkit.progress import Heartbeat

            beat = Heartbeat("word2vec training", total_ex, "example", enabled=None if progress else False)
        ex_t = [torch.from_numpy(a) for a in ex]
        loss_sum, loss_n = 0.0, 0
        for start in range(0, n_ex, cfg.batch_size):
            lr = max(lr_min, lr0 - (lr0 - lr_min) * examples_seen / total_ex)
            sl = slice(start, start + cfg.batch_size)
            if cfg.architecture == "skipgram":
                inp_ids, target = ex_t[0][sl], ex_t[1][sl]
                h = syn0[inp_ids]  # (B, D)
            else:
                ctx, mask, target = ex_t[0][sl], ex_t[1][sl], ex_t[2][sl]
                m = mask.float()
                h = (syn0[ctx] * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # (B, D) cbow_mean
            B = len(target)
            if use_hs:
                out_ids = points[target]  # (B, L) inner nodes on the path
                label = 1.0 - code_f[target]  # word2vec.c: g = (1 - code - f)
                weight = code_mask[target]
            else:
                neg = torch.searchsorted(noise_cdf, torch.rand(B, cfg.negative, generator=gen))
                neg.clamp_(max=V - 1)
                out_ids = torch.cat([target[:, None], neg], 1)  # (B, 1 + K)
                label = torch.zeros(B, 1 + cfg.negative)
                label[:, 0] = 1.0
                weight = torch.ones_like(label)
                weight[:, 1:] = (neg != target[:, None]).float()  # skip negatives equal to the target
            u = syn1[out_ids]  # (B, K, D)
            score = torch.bmm(u, h[:, :, None]).squeeze(2)  # (B, K)
            f = torch.sigmoid(score)
            g = (label - f) * weight * lr  # (B, K)
            # loss for monitoring: -log sigma(+-score)
            loss_sum += float(-(torch.nn.functional.logsigmoid(torch.where(label > 0, score, -score)) * weight).sum())
            loss_n += B
            # Batched SGD: a row hit n times in a batch gets the sum of its n updates (what n
            # sequential steps would do for small steps), but at most `row_update_cap` times the
            # mean: with tiny vocabularies, and for the root of the Huffman tree, n reaches the
            # batch size and the summed step would diverge.
            cap = float(cfg.row_update_cap)
            hits1 = torch.bincount(out_ids.reshape(-1), weights=weight.reshape(-1), minlength=syn1.shape[0])
            g = g * (cap / hits1.clamp(min=cap))[out_ids]
            grad_h = torch.bmm(g[:, None, :], u).squeeze(1)  # (B, D)
            syn1.index_add_(0, out_ids.reshape(-1), (g[:, :, None] * h[:, None, :]).reshape(-1, D))
            if cfg.architecture == "skipgram":
                hits0 = torch.bincount(inp_ids, minlength=V)
                syn0.index_add_(0, inp_ids, grad_h * (cap / hits0.clamp(min=cap))[inp_ids][:, None])
            else:  # the error is added un-averaged to every context word (word2vec.c, gensim cbow_mean=1)
                rows = ctx[mask]
                hits0 = torch.bincount(rows, minlength=V)
                upd = grad_h[:, None, :].expand(-1, ctx.shape[1], -1)[mask]
                syn0.index_add_(0, rows, upd * (cap / hits0.clamp(min=cap))[rows][:, None])
            examples_seen += B
            beat.update(examples_seen, epoch=f"{epoch + 1}/{cfg.epochs}",
                        loss=f"{loss_sum / max(loss_n, 1):.4f}")
        losses.append(loss_sum / max(loss_n, 1))
        if progress:
            import sys
            print(f"word2vec epoch {epoch + 1}/{cfg.epochs}: {n_ex} examples, loss {losses[-1]:.4f}, "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    wv = WordVectors(words, syn0.numpy(), counts.tolist())
    wv.train_stats = {"vocab_size": V, "corpus_words": int(len(corpus)), "examples_per_epoch": est_per_epoch,
                      "seconds": time.perf_counter() - t0, "epoch_loss": losses, "config": asdict(cfg)}
    return wv


# ----------------------------------------------------------------------------- analogy set
ANALOGY_PAIRS: dict[str, list[tuple[str, str]]] = {
    "capital-country": [("athens", "greece"), ("berlin", "germany"), ("paris", "france"), ("rome", "italy"),
                        ("madrid", "spain"), ("moscow", "russia"), ("tokyo", "japan"), ("beijing", "china"),
                        ("cairo", "egypt"), ("dublin", "ireland"), ("ottawa", "canada"), ("canberra", "australia"),
                        ("lisbon", "portugal"), ("vienna", "austria"), ("stockholm", "sweden"), ("oslo", "norway"),
                        ("warsaw", "poland"), ("baghdad", "iraq"), ("tehran", "iran"), ("havana", "cuba"),
                        ("london", "england"), ("edinburgh", "scotland"), ("budapest", "hungary"),
                        ("bangkok", "thailand"), ("delhi", "india"), ("nairobi", "kenya")],
    "country-nationality": [("france", "french"), ("germany", "german"), ("italy", "italian"), ("spain", "spanish"),
                            ("china", "chinese"), ("japan", "japanese"), ("england", "english"),
                            ("russia", "russian"), ("india", "indian"), ("canada", "canadian"),
                            ("australia", "australian"), ("ireland", "irish"), ("poland", "polish"),
                            ("greece", "greek"), ("egypt", "egyptian"), ("america", "american"),
                            ("britain", "british"), ("mexico", "mexican"), ("sweden", "swedish"),
                            ("scotland", "scottish"), ("portugal", "portuguese"), ("norway", "norwegian")],
    "gender": [("he", "she"), ("his", "her"), ("man", "woman"), ("men", "women"), ("king", "queen"),
               ("father", "mother"), ("son", "daughter"), ("sons", "daughters"), ("brother", "sister"),
               ("brothers", "sisters"), ("boy", "girl"), ("boys", "girls"), ("husband", "wife"),
               ("uncle", "aunt"), ("prince", "princess"), ("lord", "lady"), ("male", "female"),
               ("actor", "actress"), ("emperor", "empress"), ("duke", "duchess"), ("nephew", "niece"),
               ("grandfather", "grandmother"), ("kings", "queens"), ("himself", "herself")],
    "plural": [("year", "years"), ("game", "games"), ("city", "cities"), ("song", "songs"), ("album", "albums"),
               ("player", "players"), ("team", "teams"), ("day", "days"), ("film", "films"),
               ("family", "families"), ("church", "churches"), ("ship", "ships"), ("war", "wars"),
               ("state", "states"), ("country", "countries"), ("island", "islands"), ("building", "buildings"),
               ("river", "rivers"), ("village", "villages"), ("student", "students"), ("book", "books"),
               ("road", "roads"), ("house", "houses"), ("group", "groups"), ("man", "men"), ("woman", "women"),
               ("child", "children"), ("member", "members"), ("week", "weeks"), ("month", "months")],
    "past-tense": [("play", "played"), ("win", "won"), ("go", "went"), ("take", "took"), ("make", "made"),
                   ("begin", "began"), ("write", "wrote"), ("see", "saw"), ("become", "became"),
                   ("give", "gave"), ("find", "found"), ("lead", "led"), ("build", "built"), ("know", "knew"),
                   ("leave", "left"), ("come", "came"), ("say", "said"), ("tell", "told"), ("run", "ran"),
                   ("hold", "held"), ("use", "used"), ("move", "moved"), ("live", "lived"), ("die", "died")],
    "comparative": [("large", "larger"), ("small", "smaller"), ("high", "higher"), ("long", "longer"),
                    ("strong", "stronger"), ("big", "bigger"), ("good", "better"), ("late", "later"),
                    ("early", "earlier"), ("low", "lower"), ("great", "greater"), ("old", "older"),
                    ("young", "younger"), ("close", "closer"), ("wide", "wider"), ("deep", "deeper")],
}


def analogy_questions(pairs: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple[str, str, str, str, str]]:
    """All questions a:b :: c:d from ordered pairs of distinct pairs of each section (section, a, b, c, d)."""
    pairs = ANALOGY_PAIRS if pairs is None else pairs
    out = []
    for sec, ps in pairs.items():
        for i, (a, b) in enumerate(ps):
            for j, (c, d) in enumerate(ps):
                if i != j and len({a, b, c, d}) == 4:
                    out.append((sec, a, b, c, d))
    return out


def write_questions(questions: Sequence[tuple[str, str, str, str, str]], path: str | os.PathLike) -> None:
    """Write questions in the questions-words.txt format (": section" headers)."""
    lines, current = [], None
    for sec, a, b, c, d in questions:
        if sec != current:
            lines.append(f": {sec}")
            current = sec
        lines.append(f"{a} {b} {c} {d}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_questions(path: str | os.PathLike, errors: str = "strict") -> list[tuple[str, str, str, str, str]]:
    """Read a questions-words.txt file; a non-header line must have 4 words."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    out, sec = [], "default"
    for lineno, line in enumerate(iter_lines(p, errors), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            sec = line[1:].strip()
            continue
        parts = line.split()
        if len(parts) != 4:
            raise UserError(f"{p}:{lineno}: expected 4 words 'a b c d', got {len(parts)}")
        out.append((sec, *parts))
    return out
