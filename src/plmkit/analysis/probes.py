"""Layer-wise linear probes for POS / chunk / NER with control tasks (Hewitt & Liang 2019).

Features: the frozen word vectors of every layer (``features.iter_word_states``: sub-word pieces
mean-pooled; 0 = embeddings). Labels: CoNLL-2003 columns 2 (POS), 3 (chunk, BIO) and 4 (NER, BIO).
Per layer and task a multinomial logistic regression (features standardised with the training mean
and std, L2 weight ``l2``, full-batch L-BFGS) is trained on the training sentences and scored by word
accuracy on the test sentences. With ``hidden > 0`` (``--probe mlp``) the probe is an MLP with one hidden
ReLU layer (He-initialised from ``seed``, same L2 on both weight matrices, same L-BFGS).

Control task: every word type (case-sensitive, training and test words alike) gets one label drawn
once from the task's empirical training label distribution (seeded); the same probe is trained on
these labels. ``selectivity = accuracy - control_accuracy``: what the representation adds beyond the
probe's capacity to memorise word identities.
"""

from __future__ import annotations

import math
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


class Probe:
    """A trained probe: standardisation, then linear (``hidden == 0``) or one hidden ReLU layer."""

    def __init__(self, params: list[torch.Tensor], mu: np.ndarray, sd: np.ndarray, hidden: int) -> None:
        self.params, self.mu, self.sd, self.hidden = params, mu, sd, hidden

    def logits(self, x: np.ndarray) -> torch.Tensor:
        return _forward(self.params, torch.from_numpy(((x - self.mu) / self.sd).astype(np.float32)), self.hidden)


def _forward(params: list[torch.Tensor], x: torch.Tensor, hidden: int) -> torch.Tensor:
    if hidden:
        W1, b1, W2, b2 = params
        return torch.relu(x @ W1 + b1) @ W2 + b2
    W, b = params
    return x @ W + b


def train_probe(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, max_iter: int = 100,
                seed: int = 0, hidden: int = 0) -> Probe:
    """Multinomial logistic regression (``hidden == 0``) or an MLP with one hidden ReLU layer of ``hidden``
    units, on standardised features, full-batch L-BFGS with L2 weight ``l2`` on the weight matrices."""
    gen = torch.Generator().manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    d = x.shape[1]
    if hidden:
        params = [(torch.randn(d, hidden, generator=gen) * math.sqrt(2.0 / d)), torch.zeros(hidden),
                  (torch.randn(hidden, n_classes, generator=gen) * math.sqrt(1.0 / hidden)), torch.zeros(n_classes)]
    else:
        params = [torch.zeros(d, n_classes), torch.zeros(n_classes)]
    for p in params:
        p.requires_grad_(True)
    weights = params[0::2]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(_forward(params, xt, hidden), yt) + l2 * sum(w.square().sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)
    return Probe([p.detach() for p in params], mu, sd, hidden)


def accuracy(probe: Probe, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = probe.logits(x).argmax(-1).numpy()
    return float((pred == y).mean())


def probe_layers(model: Any, tok: Any, train: Sequence, test: Sequence, tasks: Sequence[str] = ("pos", "chunk", "ner"),
                 layers: Sequence[int] | None = None, control: bool = True, l2: float = 1e-3, max_iter: int = 100,
                 seed: int = 0, batch_size: int = 16, max_len: int = 128, hidden: int = 0) -> dict:
    """Accuracy (and control accuracy, selectivity) per layer per task; see the module docstring.
    ``hidden > 0``: MLP probes with one hidden ReLU layer of that width instead of linear ones."""
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
                    "probe": (f"MLP (one hidden ReLU layer of {hidden} units, L2 {l2}, L-BFGS {max_iter} iterations)" if hidden
                              else f"linear (multinomial logistic regression, L2 {l2}, L-BFGS {max_iter} iterations)"),
                    "probe_hidden": hidden,
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
            a = accuracy(train_probe(xtr[k].astype(np.float32), ytr, len(names), l2, max_iter, seed, hidden), xte[k].astype(np.float32), yte)
            row = {"layer": layer, "accuracy": a}
            if ctrl is not None:
                cy_tr = np.array([ctrl[w] for w in wtr])
                cy_te = np.array([ctrl[w] for w in wte])
                ca = accuracy(train_probe(xtr[k].astype(np.float32), cy_tr, len(names), l2, max_iter, seed, hidden),
                              xte[k].astype(np.float32), cy_te)
                row.update(control_accuracy=ca, selectivity=a - ca)
            rows.append(row)
        majority = Counter(ytr.tolist()).most_common(1)[0][0]
        result["tasks"][t] = {"labels": len(names), "majority_baseline": float((yte == majority).mean()), "per_layer": rows}
    return result


def read_lama_curve(path: str, layers: Sequence[int]) -> dict:
    """The LAMA P@1-by-layer curve of ``plm probe lama --layers`` (``DIR/metrics.json``'s ``"layers"``: one value per
    state, 0 = embeddings) at ``layers``."""
    import json
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    if not p.is_file():
        raise UserError(f"{p}: LAMA metrics not found (expected the metrics.json of plm probe lama --layers)")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{p}: not valid JSON ({e})") from None
    curve = m.get("layers") if isinstance(m, dict) else None
    if not isinstance(curve, list) or not curve:
        raise UserError(f"{p}: no \"layers\" curve; run plm probe lama with --layers")
    if max(layers) >= len(curve):
        raise UserError(f"{p}: the LAMA curve has {len(curve)} layers (0..{len(curve) - 1}) but the probed model has "
                        f"layer {max(layers)}: was it measured on the same model?")
    return {"source": str(p), "p_at_1": [curve[i] for i in layers],
            "uhn_p_at_1": ([m["uhn"]["layers"][i] for i in layers] if isinstance(m.get("uhn"), dict)
                           and isinstance(m["uhn"].get("layers"), list) and len(m["uhn"]["layers"]) == len(curve) else None)}


def plot(result: dict, path: str, title: str) -> None:
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for t, r in result["tasks"].items():
        xs = [row["layer"] for row in r["per_layer"]]
        axes[0].plot(xs, [row["accuracy"] for row in r["per_layer"]], marker="o", markersize=3, label=t)
        if "selectivity" in r["per_layer"][0]:
            axes[1].plot(xs, [row["selectivity"] for row in r["per_layer"]], marker="o", markersize=3, label=t)
    lama = result.get("lama")
    if lama:
        xs = result["layers"]
        axes[0].plot(xs, [v if v is not None else float("nan") for v in lama["p_at_1"]], marker="s", markersize=3,
                     linestyle="--", color="k", label="LAMA P@1")
    kind = "MLP probe" if result.get("probe_hidden") else "probe"
    axes[0].set_title(f"{title}: {kind} accuracy" + (" / LAMA P@1" if lama else ""))
    axes[1].set_title("selectivity (accuracy - control)")
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
