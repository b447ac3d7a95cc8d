"""``plm evaluate``: score one fine-tuned checkpoint, or an ensemble of them, on a data split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from plmkit.errors import UserError
from plmkit.tasks.checkpoint import load_checkpoint, refuse_pair_scoring
from plmkit.tasks.data import check_token_labels, encode, subsample
from plmkit.tasks.encoding import set_language
from plmkit.tasks.inference import run_model, softmax
from plmkit.tasks.modes import average_state_dicts
from plmkit.tasks.readers import BadRows, check_labels
from plmkit.tasks.scoring import score
from plmkit.tasks.specs import get_task, parse_slice, read_split, resolve_file


def read_eval_split(info: dict, data: str, split_file: str | None, bad: BadRows, labelled: bool = True,
                    task: str | None = None):
    """The checkpoint's task spec and the examples of ``split_file`` (default: the task's dev file) in ``data``.

    ``task``: read the data as this task's files instead (its columns and dev file), e.g. a model fine-tuned
    on SST-2 scored on ChnSentiCorp (zero-shot cross-lingual transfer); both tasks must be of the same kind.
    """
    if task is not None and task != info["task"]:
        spec = get_task(task)
        if spec.kind != info["kind"]:
            raise UserError(f"--task {task}: a {spec.kind} task; the checkpoint was fine-tuned on {info['task']} "
                            f"({info['kind']})")
    else:
        spec = get_task(info["task"], **{k: v for k, v in info["spec"].items() if v is not None})
    if spec.kind == "qa" and info["task"] == "squad" and not split_file:
        spec.dev_articles = parse_slice(info["config"].get("dev_articles")) or (
            slice(36, None) if not (Path(data) / "train-v1.1.json").exists() else None)
    path = resolve_file(Path(data), split_file or spec.dev_file, "evaluation")
    return spec, read_split(spec, path, "dev", bad, labelled=labelled)


def evaluate_checkpoints(paths: list[str], data: str, split_file: str | None = None, ensemble: str = "vote",
                         batch_size: int = 64, skip_bad: bool = False, max_examples: int | None = None,
                         encoding_errors: str = "strict", task: str | None = None,
                         language_id: int | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint, or of an ensemble (``vote``: mean of probabilities; ``average``: weights).

    ``task``: score on another task's data with the same labels (see :func:`read_eval_split`).
    ``language_id``: XLM language id given to every token (default: the one the checkpoint was fine-tuned
    with, if any).
    """
    if language_id is not None and (isinstance(language_id, bool) or not isinstance(language_id, int)
                                    or language_id < 0):
        raise UserError(f"language_id: expected a non-negative integer, got {language_id!r}")
    for name, value in (("batch_size", batch_size), ("max_examples", max_examples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserError(f"{name}: expected a positive integer, got {value!r}")
    bad = BadRows(skip=skip_bad, encoding_errors=encoding_errors)
    loaded = [load_checkpoint(p) for p in paths]
    for p, (_, _, inf, _) in zip(paths, loaded):
        refuse_pair_scoring(inf, p, "plm evaluate")
    model, obj, info, tok = loaded[0]
    for p, (_, _, inf, _) in zip(paths[1:], loaded[1:]):
        if inf["task"] != info["task"] or inf["labels"] != info["labels"]:
            raise UserError(f"{p}: an ensemble needs checkpoints of the same task and labels")
    spec, examples = read_eval_split(info, data, split_file, bad, task=task)
    examples = subsample(examples, max_examples, 0)
    if spec.kind in ("classification", "multilabel"):
        examples = check_labels(examples, info["labels"], bad)
    elif spec.kind == "token":
        examples = check_token_labels(examples, info["labels"], bad)
    if hasattr(obj, "encode_examples"):  # a --verbalizer checkpoint encodes its pattern
        feats = obj.encode_examples(tok, examples, info["labels"], info["max_seq_len"], labelled=True)
    else:
        feats = encode(spec, tok, examples, info["labels"], info["max_seq_len"], False, info["doc_stride"])
    if language_id is None:
        language_id = info.get("config", {}).get("language_id")
    if language_id is not None:
        set_language(feats, language_id)
    if len(loaded) == 1:
        outputs = run_model(model, obj, feats, batch_size)
    elif ensemble == "average":
        if any(inf["mode"] not in ("full", "ulmfit") for _, _, inf, _ in loaded):
            raise UserError("weight averaging needs fully fine-tuned checkpoints (mode full or ulmfit)")
        model.load_state_dict(average_state_dicts([m.state_dict() for m, _, _, _ in loaded]))
        outputs = run_model(model, obj, feats, batch_size)
    elif ensemble == "vote":
        if spec.kind not in ("classification", "regression", "multiple_choice", "token"):
            raise UserError(f"vote ensembles support classification, regression, multiple choice and token tasks, not {spec.kind}")
        all_out = [run_model(m, o, feats, batch_size) for m, o, _, _ in loaded]
        if spec.kind == "regression":
            outputs = [float(np.mean(v)) for v in zip(*all_out)]
        else:
            outputs = [np.log(np.mean([softmax(np.asarray(x)) for x in v], 0) + 1e-12) for v in zip(*all_out)]
    else:
        raise UserError(f"unknown ensemble method {ensemble!r} (vote, average)")
    res = score(spec, info["labels"], examples, feats, outputs)
    if task is not None:
        res["task"] = spec.name
    if language_id is not None:
        res["language_id"] = language_id
    res.update({"examples": len(examples), "checkpoints": len(paths), "skipped_bad_rows": bad.count,
                "truncated": sum(bool(f.get("truncated")) for f in feats)})
    if len(paths) > 1:
        res["ensemble"] = ensemble
    return res
