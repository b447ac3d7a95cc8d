"""Running a task model: head outputs per feature, and DeeBERT's early-exit curve."""

from __future__ import annotations

import time

import numpy as np
import torch

from plmkit.tasks.modes import early_exit_predict
from plmkit.tasks.objective import TaskObjective


@torch.no_grad()
def run_model(model, obj: TaskObjective, feats: list[dict], batch_size: int = 64) -> list:
    """Head outputs per feature, in order (batches sorted by length for speed).

    Returns per feature: classification/multilabel/multiple choice logits (C,), regression score
    (), token logits (T, C), QA (start (T,), end (T,)).
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]) if obj.kind != "multiple_choice"
                   else max(len(s) for s in feats[i]["input_ids"]))
    out: list = [None] * len(feats)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = obj.make_batch([{k: v for k, v in feats[i].items() if k not in ("label", "labels", "start_position", "end_position")} for i in idx])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        _, logits = obj.forward(model, batch)
        if obj.kind == "qa":
            s, e = (t.float().cpu().numpy() for t in logits)
            for j, i in enumerate(idx):
                n = len(feats[i]["input_ids"])
                out[i] = (s[j, :n], e[j, :n])
        elif obj.kind == "token":
            lg = logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = lg[j, : len(feats[i]["input_ids"])]
        else:
            lg = logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = obj.unscale(float(lg[j, 0])) if obj.kind == "regression" else lg[j]
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable)."""
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@torch.no_grad()
def early_exit_curve(model, obj, feats: list[dict], gold: list, thresholds) -> list[dict]:
    """Accuracy, mean layers used and wall-clock speed-up vs the full model for each entropy threshold."""
    model.eval()
    L = model.num_layers
    curve = []
    base_time = None
    for th in sorted(set(thresholds)):
        correct, layers = 0, 0
        t0 = time.perf_counter()
        for f, g in zip(feats, gold):
            batch = obj.make_batch([{k: v for k, v in f.items() if k != "label"}])
            logits, used = early_exit_predict(model, obj, batch, th)
            correct += int(int(logits.argmax(-1)[0]) == g)
            layers += used
        dt = time.perf_counter() - t0
        if th == 0.0 or base_time is None:
            base_time = base_time or dt
        curve.append({"threshold": th, "accuracy": correct / len(feats), "mean_layers": layers / len(feats),
                      "layer_speedup": L * len(feats) / layers, "time_s": round(dt, 2),
                      "wall_speedup": round(base_time / dt, 3)})
    return curve
