"""Layer-wise linear probes for POS / chunk / NER with control tasks (Hewitt & Liang 2019).

Features: the frozen word vectors of every layer (``features.iter_word_states``: sub-word pieces
mean-pooled; 0 = embeddings). Labels: CoNLL-2003 columns 2 (POS), 3 (chunk, BIO) and 4 (NER, BIO).
Per layer and task a multinomial logistic regression (features standardised with the training mean
and std, L2 weight ``l2``, full-batch L-BFGS) is trained on the training sentences and scored by word
accuracy on the test sentences.

Control task: every word type (case-sensitive, training and test words alike) gets one label drawn
once from the task's empirical training label distribution (seeded); the same probe is trained on
these labels. ``selectivity = accuracy - control_accuracy``: what the representation adds beyond the
probe's capacity to memorise word identities.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from plmkit.errors import UserError

from .features import check_layers, iter_word_states, num_states

TASKS = {"pos": 1, "chunk": 2, "ner": 3}
"""task -> column index (0-based, the word is column 0) in a CoNLL-2003 line."""


def read_conll(path: str, max_sentences: int | None = None) -> list[list[list[str]]]:
    """Sentences as lists of rows ``[word, pos, chunk, ner]`` (``-DOCSTART-`` skipped)."""
    from pathlib import Path

    from plmkit.textio import iter_lines

    if not Path(path).is_file():
        raise UserError(f"{path}: CoNLL file not found")
    sents: list[list[list[str]]] = []
    cur: list[list[str]] = []
    for n, line in enumerate(iter_lines(path), 1):
        cols = line.split()
        if not cols:
            if cur:
                sents.append(cur)
                cur = []
                if max_sentences is not None and len(sents) >= max_sentences:
                    return sents
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 4:
            raise UserError(f"{path}:{n}: expected 4 columns (word POS chunk NER), got {len(cols)}")
        cur.append(cols[:4])
    if cur:
        sents.append(cur)
    return sents[:max_sentences] if max_sentences is not None else sents


def collect(model: Any, tok: Any, sents: Sequence[Sequence[Sequence[str]]], layers: Sequence[int],
            batch_size: int = 16, max_len: int = 128) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(features (len(layers), N, H) float16, [(sentence, word)] of the N words kept)."""
    words = [[r[0] for r in s] for s in sents]
    chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, states, mask in iter_word_states(model, tok, words, batch_size=batch_size, max_len=max_len):
        chunks[i] = (states[list(layers)][:, mask].astype(np.float16), np.nonzero(mask)[0])
    feats, index = [], []
    for i in sorted(chunks):
        x, pos = chunks[i]
        feats.append(x)
        index += [(i, int(j)) for j in pos]
    return np.concatenate(feats, 1), index


def control_labels(types: Sequence[str], train_labels: Sequence[int], n_classes: int, seed: int) -> dict[str, int]:
    """One label per word type from the empirical training label distribution (Hewitt & Liang)."""
    counts = np.bincount(np.asarray(train_labels), minlength=n_classes).astype(np.float64)
    rng = np.random.default_rng(seed)
    uniq = sorted(set(types))
    draws = rng.choice(n_classes, size=len(uniq), p=counts / counts.sum())
    return dict(zip(uniq, draws.tolist()))


def train_probe(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, max_iter: int = 100,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Multinomial logistic regression; returns (W, b, mean, std)."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    W = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ W + b, yt) + l2 * W.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach(), mu, sd


def accuracy(probe, x: np.ndarray, y: np.ndarray) -> float:
    W, b, mu, sd = probe
    pred = (torch.from_numpy(((x - mu) / sd).astype(np.float32)) @ W + b).argmax(-1).numpy()
    return float((pred == y).mean())


def probe_layers(model: Any, tok: Any, train: Sequence, test: Sequence, tasks: Sequence[str] = ("pos", "chunk", "ner"),
                 layers: Sequence[int] | None = None, control: bool = True, l2: float = 1e-3, max_iter: int = 100,
                 seed: int = 0, batch_size: int = 16, max_len: int = 128) -> dict:
    """Accuracy (and control accuracy, selectivity) per layer per task; see the module docstring."""
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"unknown probe task {t!r}; expected some of {', '.join(TASKS)}")
    layers = check_layers(layers, num_states(model))
    if not train or not test:
        raise UserError("probing needs training and test sentences (got "
                        f"{len(train)} / {len(test)})")
    xtr, itr = collect(model, tok, train, layers, batch_size, max_len)
    xte, ite = collect(model, tok, test, layers, batch_size, max_len)
    wtr = [train[i][j][0] for i, j in itr]
    wte = [test[i][j][0] for i, j in ite]
    result: dict = {"layers": layers, "tasks": {}, "n_train_words": len(itr), "n_test_words": len(ite),
                    "n_train_sentences": len(train), "n_test_sentences": len(test),
                    "probe": f"linear (multinomial logistic regression, L2 {l2}, L-BFGS {max_iter} iterations)",
                    "pooling": "mean of the word's sub-word token states"}
    for t in tasks:
        c = TASKS[t]
        names = sorted({train[i][j][c] for i, j in itr})
        lab = {n: k for k, n in enumerate(names)}
        ytr = np.array([lab[train[i][j][c]] for i, j in itr])
        yte = np.array([lab.get(test[i][j][c], -1) for i, j in ite])  # unseen test labels count as errors
        rows = []
        ctrl = control_labels(wtr + wte, ytr, len(names), seed) if control else None
        for k, layer in enumerate(layers):
            a = accuracy(train_probe(xtr[k].astype(np.float32), ytr, len(names), l2, max_iter, seed), xte[k].astype(np.float32), yte)
            row = {"layer": layer, "accuracy": a}
            if ctrl is not None:
                cy_tr = np.array([ctrl[w] for w in wtr])
                cy_te = np.array([ctrl[w] for w in wte])
                ca = accuracy(train_probe(xtr[k].astype(np.float32), cy_tr, len(names), l2, max_iter, seed),
                              xte[k].astype(np.float32), cy_te)
                row.update(control_accuracy=ca, selectivity=a - ca)
            rows.append(row)
        majority = Counter(ytr.tolist()).most_common(1)[0][0]
        result["tasks"][t] = {"labels": len(names), "majority_baseline": float((yte == majority).mean()), "per_layer": rows}
    return result


def plot(result: dict, path: str, title: str) -> None:
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for t, r in result["tasks"].items():
        xs = [row["layer"] for row in r["per_layer"]]
        axes[0].plot(xs, [row["accuracy"] for row in r["per_layer"]], marker="o", markersize=3, label=t)
        if "selectivity" in r["per_layer"][0]:
            axes[1].plot(xs, [row["selectivity"] for row in r["per_layer"]], marker="o", markersize=3, label=t)
    axes[0].set_title(f"{title}: probe accuracy")
    axes[1].set_title("selectivity (accuracy - control)")
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
