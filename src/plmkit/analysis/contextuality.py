"""How contextual are a model's word representations, layer by layer (Ethayarajh 2019).

Per layer (0 = embeddings), over word vectors from ``features.iter_word_states`` (sub-word pieces
mean-pooled to words):

- ``self_similarity``: for a word w with occurrences x_1..x_n (n >= ``min_occurrences``), the mean
  cosine over all ordered pairs j != k; averaged over the words.
- ``intra_sentence``: for a sentence with word vectors x_1..x_m (m >= 2), the mean cosine between each
  x_i and the sentence's mean vector; averaged over the sentences.
- ``mev`` (maximum explainable variance): sigma_1^2 / sum_i sigma_i^2 of a word's (n x H) occurrence
  matrix (uncentred, as in the paper); averaged over the words. It is the share of the word's
  representations that the best single static vector explains.
- ``anisotropy``: the mean cosine between ``n_random`` word occurrences drawn uniformly from the corpus
  (all pairs of distinct draws); ``mev_baseline``: the mev of a random matrix with the same number of
  rows as each counted word (drawn from the same pool), averaged over the words.
- ``*_adjusted`` = raw - baseline (anisotropy for the similarities, mev_baseline for mev).

Which words count: whitespace tokens with at least one letter or digit, other than ``<unk>``; each
word type keeps its first ``max_occurrences`` occurrences. Sentences: one per line of ``sentences``
(the corpus reader below splits paragraphs after ``.``, ``!``, ``?`` tokens).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from plmkit.errors import UserError

from .features import check_layers, iter_word_states, num_states


def countable(word: str) -> bool:
    return word != "<unk>" and any(c.isalnum() for c in word)


def read_sentences(path: str, max_sentences: int | None = None, max_words: int = 60,
                   errors: str = "strict") -> list[list[str]]:
    """Sentences (lists of whitespace words) from a text file: WikiText headings (``= x =``) skipped,
    paragraphs split after ``.``, ``!``, ``?`` tokens, sentences of 2..max_words words kept."""
    from plmkit.textio import iter_lines

    out: list[list[str]] = []
    for line in iter_lines(path, errors=errors):
        line = line.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        cur: list[str] = []
        for w in line.split():
            cur.append(w)
            if w in (".", "!", "?"):
                if 2 <= len(cur) <= max_words:
                    out.append(cur)
                cur = []
        if 2 <= len(cur) <= max_words:
            out.append(cur)
        if max_sentences is not None and len(out) >= max_sentences:
            return out[:max_sentences]
    return out


def select_occurrences(sentences: Sequence[Sequence[str]], min_occurrences: int = 5,
                       max_occurrences: int = 30) -> dict[str, list[tuple[int, int]]]:
    """word -> its first ``max_occurrences`` (sentence, position) pairs, for words seen >= min times."""
    occ: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, s in enumerate(sentences):
        for j, w in enumerate(s):
            if countable(w):
                occ[w].append((i, j))
    return {w: v[:max_occurrences] for w, v in occ.items() if len(v) >= min_occurrences}


def self_similarity(x: np.ndarray) -> float:
    """Mean cosine over ordered pairs j != k of the rows of x (n, H)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    n = len(u)
    tot = float(np.square(u.sum(0)).sum())
    return (tot - float(np.square(u).sum())) / (n * (n - 1))


def mev(x: np.ndarray) -> float:
    """Share of the first singular value's square in the sum of squares (uncentred)."""
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    return float(s[0] ** 2 / max(np.square(s).sum(), 1e-30))


def intra_sentence(x: np.ndarray) -> float:
    """Mean cosine between each row of x (m, H) and the mean row."""
    m = x.mean(0)
    num = x @ m
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(m)
    return float(np.mean(num / den.clip(1e-12)))


def contextuality(model: Any, tok: Any, sentences: Sequence[Sequence[str]], *, min_occurrences: int = 5,
                  max_occurrences: int = 30, min_words: int = 10, n_random: int = 1000, seed: int = 0,
                  layers: Sequence[int] | None = None, batch_size: int = 16, max_len: int = 128) -> dict:
    """The per-layer statistics of the module docstring; ``{"layers": [...], "n_words", ...}``."""
    n_states = num_states(model)
    layers = check_layers(layers, n_states)
    occ = select_occurrences(sentences, min_occurrences, max_occurrences)
    if len(occ) < min_words:
        raise UserError(f"too few repeated words: {len(occ)} word types occur >= {min_occurrences} times in the "
                        f"{len(sentences)} sentences read; need at least {min_words} (use a larger corpus or "
                        "--max-sentences)")
    rng = random.Random(seed)
    all_pos = [(i, j) for i, s in enumerate(sentences) for j, w in enumerate(s) if countable(w)]
    pool = rng.sample(all_pos, min(n_random, len(all_pos)))
    need: dict[tuple[int, int], int] = {}
    for p in [p for v in occ.values() for p in v] + pool:
        need.setdefault(p, len(need))
    by_sent: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (i, j), r in need.items():
        by_sent[i].append((j, r))
    store: np.ndarray | None = None
    present = np.zeros(len(need), dtype=bool)
    intra = np.zeros(len(layers))
    n_sent = 0
    for i, states, mask in iter_word_states(model, tok, sentences, batch_size=batch_size, max_len=max_len):
        states = states[layers]
        if store is None:
            store = np.zeros((len(layers), len(need), states.shape[-1]), dtype=np.float32)
        for j, r in by_sent.get(i, ()):
            if mask[j]:
                store[:, r] = states[:, j]
                present[r] = True
        if mask.sum() >= 2:
            x = states[:, mask]
            intra += [intra_sentence(x[k]) for k in range(len(layers))]
            n_sent += 1
    if store is None:
        raise UserError("no sentence could be encoded")
    words = {w: [need[p] for p in v if present[need[p]]] for w, v in occ.items()}
    words = {w: r for w, r in words.items() if len(r) >= min_occurrences}
    pool_rows = [need[p] for p in pool if present[need[p]]]
    if len(words) < min_words:
        raise UserError(f"too few repeated words: {len(words)} word types occur >= {min_occurrences} times within "
                        f"the first {max_len} tokens of their sentences; need at least {min_words}")
    base_rows = {w: rng.sample(pool_rows, min(len(r), len(pool_rows))) for w, r in words.items()}
    out = []
    for k, layer in enumerate(layers):
        ss = float(np.mean([self_similarity(store[k, r]) for r in words.values()]))
        mv = float(np.mean([mev(store[k, r]) for r in words.values()]))
        mvb = float(np.mean([mev(store[k, base_rows[w]]) for w in words]))
        an = self_similarity(store[k, pool_rows])
        it = float(intra[k] / max(n_sent, 1))
        out.append({"layer": layer, "self_similarity": ss, "intra_sentence": it, "mev": mv, "anisotropy": an,
                    "mev_baseline": mvb, "self_similarity_adjusted": ss - an, "intra_sentence_adjusted": it - an,
                    "mev_adjusted": mv - mvb})
    return {"layers": out, "n_sentences": len(sentences), "n_sentences_scored": n_sent, "n_words": len(words),
            "n_occurrences": int(sum(len(r) for r in words.values())), "n_random": len(pool_rows),
            "min_occurrences": min_occurrences, "max_occurrences": max_occurrences,
            "pooling": "mean of the word's sub-word token states", "seed": seed}


def plot(result: dict, path: str, title: str) -> None:
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    rows = result["layers"]
    xs = [r["layer"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("self_similarity", "intra_sentence", "mev", "anisotropy"):
        axes[0].plot(xs, [r[key] for r in rows], marker="o", markersize=3, label=key)
    for key in ("self_similarity_adjusted", "intra_sentence_adjusted", "mev_adjusted"):
        axes[1].plot(xs, [r[key] for r in rows], marker="o", markersize=3, label=key)
    axes[0].set_title(f"{title}: raw")
    axes[1].set_title("anisotropy-adjusted")
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
