"""Text classification as text matching (``plm finetune --label-as-text``): each label's name or description
is the second segment of a sentence pair, ``[CLS] text [SEP] label text [SEP]``, and a yes / no classifier
scores whether they match ("constructing meaningful labels"; the -B formats of Sun et al. 2019 applied to
any single-sentence task). Training: every example gives one pair per label, "1" for its own label and "0"
for the others. Prediction: the label whose pair has the highest "yes" probability.

The label texts: ``names`` (the label strings themselves) or a YAML mapping ``label: text`` naming every
label of the task (``recipes/label-text/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plmkit.errors import UserError
from plmkit.tasks.readers import TextExample


def load_label_texts(source: str, labels: list[str]) -> dict[str, str]:
    """``names`` -> each label reads as itself; else a YAML file ``{label: text}`` covering ``labels``."""
    if source == "names":
        return {lab: lab for lab in labels}
    from plmkit.prompting.templates import read_yaml

    path = Path(source)
    if not path.is_file():
        raise UserError(f"--label-as-text {source}: no such file (expected 'names' or a YAML file label: text)")
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a mapping label: text, got {type(raw).__name__}")
    texts = {str(k): v for k, v in raw.items()}
    for k, v in texts.items():
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{path}: label {k!r}: expected a non-empty text, got {v!r}")
    missing = [lab for lab in labels if lab not in texts]
    if missing:
        raise UserError(f"{path}: no text for label {missing[0]!r} (the task's labels: {', '.join(labels)})")
    return {lab: texts[lab].strip() for lab in labels}


def expand(examples: list[TextExample], labels: list[str], texts: dict[str, str]) -> list[TextExample]:
    """One pair per (example, label) in ``labels`` order: (text, label text), "1" for the gold label."""
    out = []
    for e in examples:
        if e.text_pair is not None:
            raise UserError(f"{e.source}: --label-as-text makes the label the second segment; it needs a "
                            "single-sentence task, this row has a text pair")
        for lab in labels:
            out.append(TextExample(e.text, texts[lab], None if e.label is None else ("1" if e.label == lab else "0"),
                                   e.source))
    return out


def label_scores(probs: np.ndarray, num_labels: int) -> np.ndarray:
    """(n * K, 2) no / yes probabilities of the expanded pairs -> (n, K) yes probabilities; the prediction is
    their argmax."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != 2 or probs.shape[0] % num_labels:
        raise ValueError(f"expected (n * {num_labels}, 2) yes/no probabilities, got {probs.shape}")
    return probs[:, 1].reshape(-1, num_labels)
