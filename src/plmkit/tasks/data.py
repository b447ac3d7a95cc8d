"""The task data of a run: the task spec from the options, example subsets, label inventories, encoding.

- :func:`task_spec`: the ``TaskSpec`` of a fine-tuning config (column overrides, SQuAD article slices)
- :func:`subsample`: a seeded random subset, in file order
- :func:`label_list` / :func:`check_token_labels`: the label inventory from training data; dev rows with
  unseen tags counted as bad rows
- :func:`encode`: examples -> features for any task kind (``plmkit.tasks.encoding``)
"""

from __future__ import annotations

import random
from pathlib import Path

import plmkit.tasks.encoding as E
from plmkit.errors import UserError
from plmkit.tasks.readers import BadRows
from plmkit.tasks.specs import TaskSpec, get_task, parse_slice


def task_spec(cfg) -> TaskSpec:
    """The task spec of a fine-tuning config: column overrides, SQuAD article slices."""
    over = {}
    if cfg.text_column is not None:
        over["text_column"] = cfg.text_column
    if cfg.text_pair_column is not None:
        over["text_pair_column"] = cfg.text_pair_column
    if cfg.label_column is not None:
        over["label_column"] = cfg.label_column
    if getattr(cfg, "no_header", False):
        over["header"] = False
    if getattr(cfg, "strip_digit_suffix", None) is not None:
        over["strip_digit_suffix"] = cfg.strip_digit_suffix
    spec = get_task(cfg.task, **over)
    if spec.kind == "qa":
        tr, dv = parse_slice(cfg.train_articles), parse_slice(cfg.dev_articles)
        data = Path(cfg.data)
        # SQuAD with only the dev file at hand: train on the first 36 articles, evaluate on the rest
        if cfg.task == "squad" and cfg.train_file is None and not (data / "train-v1.1.json").exists():
            tr = tr or slice(0, 36)
            dv = dv or slice(36, None)
        spec.train_articles, spec.dev_articles = tr, dv
    return spec


def subsample(items: list, n: int | None, seed: int) -> list:
    """``n`` items drawn with ``seed``, kept in their original order (all of them when ``n`` is None)."""
    if n is None or n >= len(items):
        return items
    idx = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in idx]


def label_list(spec: TaskSpec, train: list) -> list[str]:
    """Sorted label inventory from training data (for token tasks, "O" first)."""
    if spec.kind == "classification":
        labs = sorted({e.label for e in train}, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    elif spec.kind == "multilabel":
        labs = sorted({lab for e in train for lab in e.label})
    elif spec.kind == "token":
        labs = sorted({t for e in train for t in e.tags}, key=lambda t: (t != "O", t[2:], t))
    else:
        labs = []
    return labs


def check_token_labels(dev: list, labels: list[str], bad: BadRows) -> list:
    """Dev sentences whose tags were all seen in training; the others are counted as bad rows."""
    known, out = set(labels), []
    for e in dev:
        unseen = [t for t in e.tags if t not in known]
        if unseen:
            bad.bad(f"{e.source}: tag {unseen[0]!r} not seen in training (known: {sorted(known)})")
            continue
        out.append(e)
    return out


def encode(spec: TaskSpec, tok, examples: list, labels: list[str], max_len: int, train: bool, doc_stride: int = 128) -> list[dict]:
    """Features of ``examples`` for the task's kind (QA: overlapping windows, answers only when ``train``)."""
    if spec.kind in ("classification", "regression", "multilabel"):
        return E.encode_texts(tok, examples, max_len, spec.kind, labels)
    if spec.kind == "token":
        return E.encode_tokens(tok, examples, max_len, labels)
    if spec.kind == "qa":
        return E.encode_qa(tok, examples, max_len, doc_stride=doc_stride, train=train)
    if spec.kind == "multiple_choice":
        return E.encode_choices(tok, examples, max_len)
    raise UserError(f"task kind {spec.kind!r} cannot be encoded")
