"""The metrics of a task (names as in eval.json) from model outputs."""

from __future__ import annotations

import numpy as np

import plmkit.tasks.encoding as E
import plmkit.tasks.metrics as M
from plmkit.errors import UserError
from plmkit.tasks.specs import TaskSpec


def score(spec: TaskSpec, labels: list[str], examples: list, feats: list[dict], outputs: list) -> dict[str, float]:
    """The task's metrics (names as in eval.json) from model outputs."""
    kind = spec.kind
    if kind in ("classification", "multiple_choice"):
        pred = np.array([int(np.argmax(o)) for o in outputs])
        gold = np.array([f["label"] for f in feats])
        res = {"accuracy": M.accuracy(pred, gold)}
        if kind == "classification":
            if len(labels) == 2:
                pos = labels.index("1") if "1" in labels else 1
                res["f1"] = M.f1(pred, gold, "binary", pos)
            res["f1_macro"] = M.f1(pred, gold, "macro")
            res["mcc"] = M.matthews_corrcoef(pred, gold)
        return res
    if kind == "regression":
        pred = np.array([float(o) for o in outputs])
        gold = np.array([f["label"] for f in feats])
        return {"pearson": M.pearson(pred, gold), "spearman": M.spearman(pred, gold)}
    if kind == "multilabel":
        pred = np.array([np.asarray(o) > 0 for o in outputs])
        gold = np.array([f["label"] for f in feats])
        return {"f1_micro": M.multilabel_f1(pred, gold, "micro"), "f1_macro": M.multilabel_f1(pred, gold, "macro")}
    if kind == "token":
        pred = E.decode_tokens(feats, outputs, labels)
        return M.entity_scores([e.tags for e in examples], pred)
    if kind == "qa":
        answers = E.decode_qa(examples, feats, [o[0] for o in outputs], [o[1] for o in outputs])
        gold = {e.id: [a["text"] for a in e.answers] for e in examples}
        return M.squad_scores(answers, gold)
    raise UserError(f"no metrics for task kind {kind!r}")
