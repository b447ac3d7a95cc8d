"""Evaluation metrics for fine-tuning tasks.

- classification: accuracy, F1 (binary / macro / micro), Matthews correlation (CoLA);
- regression: Pearson and Spearman correlation (STS-B; Spearman uses average ranks for ties);
- multi-label: micro/macro F1 over label indicators;
- token classification: entity-level span precision/recall/F1 as ``conlleval`` and
  ``seqeval`` (default, non-strict mode) compute them: an ``I-X`` that does not continue
  an ``X`` entity starts a new one; an entity counts only if type, start and end all match;
- extractive QA: the official SQuAD v1.1 evaluation script's answer normalisation,
  exact match and token F1, max over the gold answers (Rajpurkar et al. 2016).

All functions take plain Python lists / numpy arrays and return floats in [0, 1] (or [-1, 1]).
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# classification and regression
# ----------------------------------------------------------------------------------------------


def accuracy(preds: Sequence, labels: Sequence) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set")
    return float((preds == labels).mean())


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def f1(preds: Sequence, labels: Sequence, average: str = "binary", pos_label=1) -> float:
    """F1 for single-label classification: ``binary`` (of ``pos_label``), ``macro`` or ``micro``."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if average == "binary":
        tp = float(((preds == pos_label) & (labels == pos_label)).sum())
        fp = float(((preds == pos_label) & (labels != pos_label)).sum())
        fn = float(((preds != pos_label) & (labels == pos_label)).sum())
        return _prf(tp, fp, fn)[2]
    classes = np.union1d(preds, labels)
    if average == "macro":
        return float(np.mean([f1(preds, labels, "binary", c) for c in classes]))
    if average == "micro":
        # single-label micro F1 equals accuracy; computed from counts for clarity
        tp = sum(float(((preds == c) & (labels == c)).sum()) for c in classes)
        fp = sum(float(((preds == c) & (labels != c)).sum()) for c in classes)
        fn = sum(float(((preds != c) & (labels == c)).sum()) for c in classes)
        return _prf(tp, fp, fn)[2]
    raise ValueError(f"unknown F1 average {average!r} (binary, macro, micro)")


def multilabel_f1(pred: np.ndarray, gold: np.ndarray, average: str = "micro") -> float:
    """F1 over a (N, C) 0/1 indicator matrix."""
    pred, gold = np.asarray(pred).astype(bool), np.asarray(gold).astype(bool)
    if average == "micro":
        return _prf(float((pred & gold).sum()), float((pred & ~gold).sum()), float((~pred & gold).sum()))[2]
    if average == "macro":
        return float(
            np.mean(
                [
                    _prf(float((p & g).sum()), float((p & ~g).sum()), float((~p & g).sum()))[2]
                    for p, g in zip(pred.T, gold.T)
                ]
            )
        )
    raise ValueError(f"unknown F1 average {average!r} (micro, macro)")


def matthews_corrcoef(preds: Sequence, labels: Sequence) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004; equals the binary formula for 2 classes)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(preds, labels)
    idx = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.float64)
    for p, t in zip(preds, labels):
        cm[idx[t], idx[p]] += 1
    t_sum, p_sum = cm.sum(1), cm.sum(0)
    n, correct = cm.sum(), np.trace(cm)
    cov_ytyp = correct * n - float(t_sum @ p_sum)
    cov_ypyp = n * n - float(p_sum @ p_sum)
    cov_ytyt = n * n - float(t_sum @ t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((xc * xc).sum() * (yc * yc).sum()))
    return float((xc * yc).sum() / denom) if denom else 0.0


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties share the mean rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    sa = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_rankdata(np.asarray(x, dtype=np.float64)), _rankdata(np.asarray(y, dtype=np.float64)))


# ----------------------------------------------------------------------------------------------
# entity-level span F1 (conlleval / seqeval semantics)
# ----------------------------------------------------------------------------------------------


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Spans ``(type, start, end_inclusive)`` of a BIO/IOB sequence, conlleval-style.

    An entity starts at ``B-X``, or at ``I-X`` when the previous tag is not of type X
    (O, or another type); it ends before the next tag that does not continue it.
    """
    spans = []
    typ, start = None, -1
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, t = tag.partition("-") if tag != "O" else ("O", "", "")
        ends = typ is not None and (prefix in ("O", "B") or t != typ)
        if ends:
            spans.append((typ, start, i - 1))
            typ = None
        if prefix == "B" or (prefix == "I" and typ is None):
            typ, start = t, i
    return spans


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision / recall / F1 over entity spans, and per-type F1 (``f1_PER`` ...)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
    for k, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sequence {k}: {len(g)} gold tags but {len(p)} predicted")
        gs = set((t, s, e) for t, s, e in get_entities(g))
        ps = set((t, s, e) for t, s, e in get_entities(p))
        for t, *_ in gs & ps:
            tp[t] += 1
        for t, *_ in ps - gs:
            fp[t] += 1
        for t, *_ in gs - ps:
            fn[t] += 1
    p, r, f = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    out = {"precision": p, "recall": r, "f1": f}
    for t in sorted(set(tp) | set(fp) | set(fn)):
        out[f"f1_{t}"] = _prf(tp[t], fp[t], fn[t])[2]
    return out


# ----------------------------------------------------------------------------------------------
# SQuAD v1.1 official EM / F1
# ----------------------------------------------------------------------------------------------

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop articles (a/an/the), collapse whitespace (official script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_scores(predictions: dict[str, str], gold: dict[str, list[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in [0, 1] (the official script prints them x100), max over gold answers.

    Questions without a prediction count as wrong, as in the official script.
    """
    if not gold:
        raise ValueError("no gold answers to score")
    em = f = 0.0
    for qid, answers in gold.items():
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(squad_exact(pred, a) for a in answers)
        f += max(squad_f1(pred, a) for a in answers)
    return {"exact_match": em / len(gold), "f1": f / len(gold)}


def roc_auc(y_true: Sequence, scores: Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` for the binary labels ``y_true`` (truthy = positive): the
    probability that a random positive scores above a random negative, ties counting 1/2 (Mann-Whitney U
    from average ranks). NaN when one class is absent (undefined)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
