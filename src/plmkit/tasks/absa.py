"""Aspect-based sentiment analysis as sentence-pair classification (Sun, Huang & Qiu 2019, "Utilizing BERT
for Aspect-Based Sentiment Analysis via Constructing Auxiliary Sentence", NAACL).

Data (``../shared/data/absa``, the authors' copies):

- SentiHood (Saeidi et al. 2016), targeted ABSA: each sentence names LOCATION1 (and maybe LOCATION2); every
  (target, aspect) pair over the four aspects general, price, transit-location, safety gets a label None /
  Positive / Negative (None: no opinion). Targets are LOCATION1 plus LOCATION2 when the text names it, as the
  authors' ``generate/data_utils_sentihood.py``; opinions on other aspects are ignored.
- SemEval-2014 Task 4 restaurants, aspect categories: every sentence x each of the five categories gets a
  label positive / neutral / negative / conflict / none.

Each (target, aspect) becomes an :class:`Instance`; :func:`build_examples` turns instances into
:class:`~plmkit.tasks.readers.TextExample` rows for one ``--absa-format``:

- ``single``: the sentence alone, one classifier per (target, aspect) (the paper's BERT-single; 8 models on
  SentiHood, 5 on SemEval);
- ``qa-m``: sentence + "what do you think of the safety of location - 1 ?", 3 (5) classes;
- ``nli-m``: sentence + "location - 1 - safety", 3 (5) classes;
- ``qa-b``: one pair per sentiment label, "the polarity of the aspect safety of location - 1 is positive .",
  labelled yes ("1") / no ("0");
- ``nli-b``: one pair per label, "positive - location - 1 - safety" (label first, as the authors'
  generation script writes it), yes / no.

-B formats predict, for each instance, the label whose pair has the highest "yes" probability; the three
(five) yes-probabilities normalised to sum 1 are the instance's scores, as the authors' ``evaluation.py``.

Metrics (:func:`sentihood_metrics`, :func:`semeval_metrics`) follow that ``evaluation.py``; see docs/ABSA.md.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmkit.errors import UserError
from plmkit.tasks.metrics import roc_auc
from plmkit.tasks.readers import BadRows, TextExample
from plmkit.textio import read_text

FORMATS = ("single", "qa-m", "nli-m", "qa-b", "nli-b")

SENTIHOOD_ASPECTS = ("general", "price", "transit-location", "safety")
SENTIHOOD_LABELS = ("None", "Positive", "Negative")
SENTIHOOD_TARGETS = ("LOCATION1", "LOCATION2")
SEMEVAL_ASPECTS = ("price", "anecdotes/miscellaneous", "food", "ambience", "service")
SEMEVAL_LABELS = ("positive", "neutral", "negative", "conflict", "none")

# how an aspect / target reads inside an auxiliary sentence (the authors' wording)
ASPECT_WORDS = {"transit-location": "transit location", "anecdotes/miscellaneous": "anecdotes"}
TARGET_WORDS = {"LOCATION1": "location - 1", "LOCATION2": "location - 2"}


@dataclass
class Instance:
    """One (sentence, target, aspect) with its gold label."""

    sentence_id: str
    text: str  # the sentence as the model reads it (SentiHood: LOCATION1 -> "location - 1")
    target: str | None  # SentiHood: LOCATION1 / LOCATION2; SemEval: None
    aspect: str
    label: str
    source: str  # "file:id"


@dataclass(frozen=True)
class AbsaDataset:
    """What differs between the two data sets."""

    name: str
    aspects: tuple[str, ...]
    labels: tuple[str, ...]  # label 0 is "no opinion"
    none_label: str


SENTIHOOD = AbsaDataset("sentihood", SENTIHOOD_ASPECTS, SENTIHOOD_LABELS, "None")
SEMEVAL = AbsaDataset("semeval", SEMEVAL_ASPECTS, SEMEVAL_LABELS, "none")
DATASETS = {"sentihood": SENTIHOOD, "semeval": SEMEVAL}


def dataset(name: str) -> AbsaDataset:
    if name not in DATASETS:
        raise UserError(f"unknown ABSA data set {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------------------------
# readers
# ----------------------------------------------------------------------------------------------


def _sentihood_text(text: str) -> str:
    for t, w in TARGET_WORDS.items():
        text = text.replace(t, w)
    return " ".join(text.split())


def read_sentihood(path: str | Path, bad: BadRows | None = None) -> list[Instance]:
    """SentiHood JSON (``[{"id", "text", "opinions": [{"target_entity", "aspect", "sentiment"}]}]``) ->
    instances, sentence by sentence, targets in order LOCATION1, LOCATION2, aspects in
    :data:`SENTIHOOD_ASPECTS` order."""
    path = Path(path)
    bad = bad if bad is not None else BadRows()
    try:
        items = json.loads(read_text(path, bad.encoding_errors))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of sentences, got {type(items).__name__}")
    out: list[Instance] = []
    for k, d in enumerate(items):
        where = f"{path}:item {k}"
        if not isinstance(d, dict) or not isinstance(d.get("text"), str) or not isinstance(d.get("opinions"), list):
            bad.bad(f"{where}: expected an object with a string 'text' and a list 'opinions'")
            continue
        sid = str(d.get("id", k))
        where = f"{path}:id {sid}"
        gold: dict[tuple[str, str], str] = {}
        ok = True
        for op in d["opinions"]:
            t, a, s = (op.get(x) if isinstance(op, dict) else None for x in ("target_entity", "aspect", "sentiment"))
            if t not in SENTIHOOD_TARGETS or s not in SENTIHOOD_LABELS[1:] or not isinstance(a, str):
                bad.bad(f"{where}: opinion {op!r}: expected target_entity LOCATION1/LOCATION2, a string aspect "
                        f"and sentiment Positive/Negative")
                ok = False
                break
            if a not in SENTIHOOD_ASPECTS:
                continue  # the usual TABSA setting keeps four aspects
            if gold.get((t, a), s) != s:
                bad.bad(f"{where}: two opinions on ({t}, {a}) disagree ({gold[(t, a)]} and {s})")
                ok = False
                break
            gold[(t, a)] = s
        if not ok:
            continue
        if "LOCATION1" not in d["text"]:
            bad.bad(f"{where}: the text does not name LOCATION1")
            continue
        targets = [t for t in SENTIHOOD_TARGETS if t in d["text"]]
        missing = {t for t, _ in gold} - set(targets)
        if missing:
            bad.bad(f"{where}: an opinion on {sorted(missing)[0]}, which the text does not name")
            continue
        text = _sentihood_text(d["text"])
        for t in targets:
            for a in SENTIHOOD_ASPECTS:
                out.append(Instance(sid, text, t, a, gold.get((t, a), "None"), where))
    if not out:
        raise UserError(f"{path}: no usable sentences")
    return out


def read_semeval(path: str | Path, bad: BadRows | None = None) -> list[Instance]:
    """SemEval-2014 Task 4 XML (``<sentence id><text/><aspectCategories><aspectCategory category polarity/>``)
    -> one instance per sentence and category of :data:`SEMEVAL_ASPECTS` (label "none" when absent)."""
    path = Path(path)
    bad = bad if bad is not None else BadRows()
    try:  # the data set's own files; ElementTree does not fetch external entities
        root = ET.fromstring(read_text(path, bad.encoding_errors))
    except ET.ParseError as e:
        line = e.position[0] if getattr(e, "position", None) else "?"
        raise UserError(f"{path}:{line}: not well-formed XML ({e})") from None
    out: list[Instance] = []
    for k, s in enumerate(root.iter("sentence")):
        sid = s.get("id", str(k))
        where = f"{path}:id {sid}"
        text_el = s.find("text")
        if text_el is None or not (text_el.text or "").strip():
            bad.bad(f"{where}: sentence without <text>")
            continue
        gold: dict[str, str] = {}
        ok = True
        for c in s.iter("aspectCategory"):
            cat, pol = c.get("category"), c.get("polarity")
            if cat not in SEMEVAL_ASPECTS or pol not in SEMEVAL_LABELS[:4]:
                bad.bad(f"{where}: aspectCategory {cat!r} / polarity {pol!r}: expected a category of "
                        f"{', '.join(SEMEVAL_ASPECTS)} and polarity positive/neutral/negative/conflict")
                ok = False
                break
            gold[cat] = pol
        if not ok:
            continue
        text = " ".join(text_el.text.split())
        for a in SEMEVAL_ASPECTS:
            out.append(Instance(sid, text, None, a, gold.get(a, "none"), where))
    if not out:
        raise UserError(f"{path}: no <sentence> elements")
    return out


def read_semeval_categories(path: str | Path, bad: BadRows | None = None, labelled: bool = True) -> list[TextExample]:
    """Sentence classification by aspect category (``--task absa-semeval-category``): the SemEval-2014
    sentences with exactly one aspect category, labelled with it (the others are left out, not bad rows)."""
    by_sentence: dict[str, list[Instance]] = {}
    for i in read_semeval(path, bad):
        by_sentence.setdefault(i.source, []).append(i)
    out = []
    for src, inst in by_sentence.items():
        cats = [i.aspect for i in inst if i.label != "none"]
        if len(cats) == 1:
            out.append(TextExample(inst[0].text, None, cats[0] if labelled else None, src))
    return out


def read_instances(name: str, path: str | Path, bad: BadRows | None = None) -> list[Instance]:
    return read_sentihood(path, bad) if dataset(name) is SENTIHOOD else read_semeval(path, bad)


def subsample_sentences(instances: list[Instance], n: int | None, seed: int) -> list[Instance]:
    """The instances of ``n`` sentences drawn with ``seed`` (all when None), in file order."""
    import random

    ids = list(dict.fromkeys(i.source for i in instances))
    if n is None or n >= len(ids):
        return instances
    keep = set(random.Random(seed).sample(ids, n))
    return [i for i in instances if i.source in keep]


# ----------------------------------------------------------------------------------------------
# auxiliary sentences
# ----------------------------------------------------------------------------------------------


def auxiliary_sentence(fmt: str, aspect: str, target: str | None = None, label: str | None = None) -> str:
    """The auxiliary sentence of one (target, aspect) [and label, for -B formats]; ``target`` None: SemEval."""
    a = ASPECT_WORDS.get(aspect, aspect)
    t = TARGET_WORDS.get(target, target) if target is not None else None
    lab = label.lower() if label is not None else None
    if fmt in ("qa-b", "nli-b") and lab is None:
        raise ValueError(f"{fmt} needs a label")
    if fmt == "qa-m":
        return f"what do you think of the {a} of {t} ?" if t else f"what do you think of the {a} of it ?"
    if fmt == "nli-m":
        return f"{t} - {a}" if t else a
    if fmt == "qa-b":
        return f"the polarity of the aspect {a} of {t} is {lab} ." if t else f"the polarity of the aspect {a} is {lab} ."
    if fmt == "nli-b":
        return f"{lab} - {t} - {a}" if t else f"{lab} - {a}"
    raise UserError(f"--absa-format {fmt!r}: expected one of {', '.join(FORMATS)}")


def model_labels(ds: AbsaDataset, fmt: str) -> list[str]:
    """The classifier's classes: the sentiment labels, or no / yes ("0", "1") for -B formats."""
    return ["0", "1"] if fmt.endswith("-b") else list(ds.labels)


def build_examples(instances: list[Instance], fmt: str, ds: AbsaDataset) -> list[TextExample]:
    """Rows for the classifier; -B formats: ``len(ds.labels)`` rows per instance, in label order."""
    if fmt not in FORMATS:
        raise UserError(f"--absa-format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = []
    for i in instances:
        if fmt == "single":
            out.append(TextExample(i.text, None, i.label, i.source))
        elif fmt.endswith("-m"):
            out.append(TextExample(i.text, auxiliary_sentence(fmt, i.aspect, i.target), i.label, i.source))
        else:
            for lab in ds.labels:
                out.append(TextExample(i.text, auxiliary_sentence(fmt, i.aspect, i.target, lab),
                                       "1" if lab == i.label else "0", i.source))
    return out


def groups(instances: list[Instance], fmt: str) -> list[tuple[str | None, str | None]]:
    """The separately trained models: one per (target, aspect) for ``single``, else one for everything."""
    if fmt != "single":
        return [(None, None)]
    return list(dict.fromkeys((i.target, i.aspect) for i in instances))


def in_group(i: Instance, group: tuple[str | None, str | None]) -> bool:
    return group == (None, None) or (i.target, i.aspect) == group


def instance_scores(fmt: str, ds: AbsaDataset, probs: np.ndarray) -> np.ndarray:
    """Per-instance label scores (n, len(labels)) from the classifier's class probabilities: -M / single
    rows are already per instance; -B rows come in groups of ``len(labels)`` and each label's score is its
    "yes" probability normalised over the group (the authors' ``evaluation.py``)."""
    probs = np.asarray(probs, dtype=np.float64)
    if not fmt.endswith("-b"):
        return probs
    k = len(ds.labels)
    if probs.shape[0] % k:
        raise ValueError(f"{probs.shape[0]} yes/no rows is not a multiple of {k} labels")
    yes = probs[:, 1].reshape(-1, k)
    return yes / np.maximum(yes.sum(1, keepdims=True), 1e-300)


# ----------------------------------------------------------------------------------------------
# metrics (the authors' evaluation.py definitions; docs/ABSA.md)
# ----------------------------------------------------------------------------------------------


def _by_key(keys: list) -> dict:
    out: dict = {}
    for n, k in enumerate(keys):
        out.setdefault(k, []).append(n)
    return out


def _mean_defined(values: list[float]) -> float:
    vals = [v for v in values if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def sentihood_metrics(instances: list[Instance], scores: np.ndarray) -> dict[str, float]:
    """SentiHood metrics from per-instance scores (n, 3) over (None, Positive, Negative).

    - ``aspect_accuracy``: strict accuracy over (sentence, target): all four aspects' predicted labels equal
      the gold labels (the authors' ``sentihood_strict_acc`` compares the 3-way labels);
      ``aspect_detection_accuracy``: the same on None / not-None only;
    - ``aspect_f1``: Macro-F1: per (sentence, target) with at least one gold aspect, precision and recall of
      the predicted aspect set; the F1 of the averaged precision and recall;
    - ``aspect_auc``: per aspect, ROC AUC of P(None) for "gold is None"; mean over aspects;
    - ``sentiment_accuracy``: over gold non-None instances, Negative iff P(Neg) / (P(Pos) + P(Neg)) > 0.5;
    - ``sentiment_auc``: per aspect, ROC AUC of that ratio for "gold is Negative"; mean over aspects.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = list(SENTIHOOD_LABELS)
    gold = np.array([labels.index(i.label) for i in instances])
    pred = scores.argmax(1)
    sets = _by_key([(i.sentence_id, i.source, i.target) for i in instances])
    strict = [all(pred[n] == gold[n] for n in idx) for idx in sets.values()]
    detect = [all((pred[n] > 0) == (gold[n] > 0) for n in idx) for idx in sets.values()]
    p_all = r_all = 0.0
    count = 0
    for idx in sets.values():
        a = {instances[n].aspect for n in idx if pred[n] != 0}
        b = {instances[n].aspect for n in idx if gold[n] != 0}
        if not b:
            continue
        ab = a & b
        p_all += len(ab) / len(a) if ab else 0.0
        r_all += len(ab) / len(b) if ab else 0.0
        count += 1
    ma_p, ma_r = (p_all / count, r_all / count) if count else (0.0, 0.0)
    f1 = 2 * ma_p * ma_r / (ma_p + ma_r) if ma_p + ma_r > 0 else 0.0
    by_aspect = _by_key([i.aspect for i in instances])
    aspect_auc = [roc_auc(gold[idx] == 0, scores[idx, 0]) for idx in by_aspect.values()]
    opinion = gold > 0
    neg_score = scores[:, 2] / np.maximum(scores[:, 1] + scores[:, 2], 1e-300)
    sent_acc = float(np.mean((neg_score[opinion] > 0.5) == (gold[opinion] == 2))) if opinion.any() else float("nan")
    sent_auc = []
    for idx in by_aspect.values():
        idx = [n for n in idx if opinion[n]]
        sent_auc.append(roc_auc(gold[idx] == 2, neg_score[idx]) if idx else float("nan"))
    return {"aspect_accuracy": float(np.mean(strict)), "aspect_detection_accuracy": float(np.mean(detect)),
            "aspect_f1": f1, "aspect_precision": ma_p, "aspect_recall": ma_r,
            "aspect_auc": _mean_defined(aspect_auc), "sentiment_accuracy": sent_acc,
            "sentiment_auc": _mean_defined(sent_auc)}


def _semeval_sentiment_acc(gold: np.ndarray, pred: np.ndarray, scores: np.ndarray, classes: int) -> float:
    """The authors' ``semeval_Acc``: over gold instances of the kept classes (4: all but none; 3: positive,
    neutral, negative; 2: positive, negative), a prediction outside them is replaced by the argmax over them."""
    keep = {4: [0, 1, 2, 3], 3: [0, 1, 2], 2: [0, 2]}[classes]
    right = total = 0
    for g, p, s in zip(gold, pred, scores):
        if g not in keep:
            continue
        total += 1
        if p not in keep:
            p = keep[int(np.argmax(s[keep]))]
        right += int(p == g)
    return right / total if total else float("nan")


def semeval_metrics(instances: list[Instance], scores: np.ndarray) -> dict[str, float]:
    """SemEval-2014 metrics from per-instance scores (n, 5) over (positive, neutral, negative, conflict, none).

    - ``aspect_precision`` / ``aspect_recall`` / ``aspect_f1``: micro P / R / F1 of the predicted category
      sets over sentences (the authors' ``semeval_PRF``);
    - ``sentiment_accuracy`` (4-way), ``sentiment_accuracy_3way``, ``sentiment_accuracy_binary``:
      ``semeval_Acc``;
    - ``aspect_accuracy`` (all five categories' labels right) and ``aspect_auc`` (per category, ROC AUC of
      P(none) for "gold is none", mean), ``sentiment_auc`` (per category, over gold positive / negative,
      AUC of P(neg) / (P(pos) + P(neg)), mean): the SentiHood definitions, which the paper does not report
      for SemEval.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = list(SEMEVAL_LABELS)
    none = labels.index("none")
    gold = np.array([labels.index(i.label) for i in instances])
    pred = scores.argmax(1)
    sets = _by_key([(i.sentence_id, i.source) for i in instances])
    s_all = g_all = sg_all = 0
    for idx in sets.values():
        s = {instances[n].aspect for n in idx if pred[n] != none}
        g = {instances[n].aspect for n in idx if gold[n] != none}
        if not g:
            continue
        s_all += len(s)
        g_all += len(g)
        sg_all += len(s & g)
    p = sg_all / s_all if s_all else 0.0
    r = sg_all / g_all if g_all else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    by_aspect = _by_key([i.aspect for i in instances])
    posneg = (gold == 0) | (gold == 2)
    neg_score = scores[:, 2] / np.maximum(scores[:, 0] + scores[:, 2], 1e-300)
    sent_auc = []
    for idx in by_aspect.values():
        idx = [n for n in idx if posneg[n]]
        sent_auc.append(roc_auc(gold[idx] == 2, neg_score[idx]) if idx else float("nan"))
    return {"aspect_precision": p, "aspect_recall": r, "aspect_f1": f,
            "aspect_accuracy": float(np.mean([all(pred[n] == gold[n] for n in idx) for idx in sets.values()])),
            "aspect_auc": _mean_defined([roc_auc(gold[idx] == none, scores[idx, none]) for idx in by_aspect.values()]),
            "sentiment_accuracy": _semeval_sentiment_acc(gold, pred, scores, 4),
            "sentiment_accuracy_3way": _semeval_sentiment_acc(gold, pred, scores, 3),
            "sentiment_accuracy_binary": _semeval_sentiment_acc(gold, pred, scores, 2),
            "sentiment_auc": _mean_defined(sent_auc)}


def absa_metrics(ds: AbsaDataset, instances: list[Instance], scores: np.ndarray) -> dict[str, float]:
    return sentihood_metrics(instances, scores) if ds is SENTIHOOD else semeval_metrics(instances, scores)
