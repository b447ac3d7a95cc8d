"""``plm icl``: zero/few-shot in-context evaluation of a causal LM with prompt templates.

    plm icl --model M --task sst2 --data ../shared/data/glue/SST-2 --template recipes/prompts/sst2
            --shots 0,1,4,8 --seeds 5 [--balanced] [--score sum|mean|pmi] [--calibrate] [--chat]
            [--limit N] [--cache-benchmark N] [--precision auto|fp32|bf16] [--overwrite] --out DIR

    plm icl --model M --task multiple-choice|generation --data DIR --template recipes/prompts/generation ...

Writes ``DIR/metrics.json`` (``by_shots`` / ``calibrated_by_shots``: mean, std and min over seeds and
templates per shot count; ``by_template``; ``scoring`` states how labels were scored; ``precision``) and
``DIR/predictions.jsonl`` (one line per template, shot count, seed and example, with the number of
demonstrations actually used). Classification tasks keep each finished (template, shots, seed) run in
``DIR/runs/``: the same command started again after an interruption reuses them (``--overwrite``
discards them). Conventions: ``plmkit.prompting.icl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from plmkit.checks import POSITIVE, arg

HELP = ("Zero/few-shot in-context evaluation with prompt templates: classification (verbalizers, contextual "
        "calibration), multiple choice, short-answer generation (EM / F1).")
TASKS = ("sst2", "rte", "mrpc", "cola", "classification", "pair", "multiple-choice", "generation")
QA_TASKS = ("multiple-choice", "generation")


def _shots(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated shot counts like 0,1,4,8, got {value!r}") from None
    if not out or any(v < 0 for v in out):
        raise argparse.ArgumentTypeError(f"expected non-negative shot counts like 0,1,4,8, got {value!r}")
    return list(dict.fromkeys(out))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="causal LM: HF-format directory, .gguf file or preset")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's)")
    p.add_argument("--task", required=True, choices=TASKS, help="task (data layout and labels)")
    p.add_argument("--data", required=True, help="task data directory (train + dev files)")
    p.add_argument("--template", required=True, nargs="+", help="template YAML files or directories of them")
    p.add_argument("--shots", type=_shots, default=[0, 1, 4, 8], help="comma-separated demonstration counts")
    p.add_argument("--seeds", type=arg(int, POSITIVE), default=5, help="demonstration seeds per shot count (0, 1, ...)")
    p.add_argument("--balanced", action="store_true", help="class-balanced demonstrations")
    p.add_argument("--score", choices=("sum", "mean", "pmi"), default="sum", help="label scoring")
    p.add_argument("--calibrate", action="store_true", help="also report contextual calibration (Zhao et al. 2021)")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--single-token", action="store_true", help="require one-token verbalizers")
    p.add_argument("--max-length", type=arg(int, POSITIVE), default=None,
                   help="prompt token limit (default: the model's position limit); earliest demonstrations dropped")
    p.add_argument("--limit", type=arg(int, POSITIVE), default=None, help="evaluate the first N dev examples only")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=8, help="rows per forward pass")
    p.add_argument("--no-share-prefix", action="store_true", help="re-encode the demonstrations for every example")
    p.add_argument("--cache-benchmark", type=int, default=0, metavar="N",
                   help="time N examples at the largest shot count with and without the shared prefix cache")
    p.add_argument("--max-new-tokens", type=arg(int, POSITIVE), default=16,
                   help="--task generation: greedy answer length limit (the answer is cut at the first newline)")
    p.add_argument("--threads", type=arg(int, POSITIVE), default=None, help="torch CPU threads")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="bf16: score with a copy whose linear weights are bfloat16, under bf16 autocast (residual stream, "
                        "norms, head and log-softmax float32; ~1.7x less CPU on SmolLM2); "
                        "auto: bf16 on CPUs that multiply bf16 natively (AMX or AVX-512 BF16), fp32 elsewhere "
                        "(said on stderr); recorded in metrics.json; docs/PROMPTING.md")
    p.add_argument("--overwrite", action="store_true",
                   help="discard the finished runs stored in --out (by default they are reused when their settings "
                        "match, and a run stored under other settings is refused)")
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    import torch

    import plmkit
    from plmkit import progress
    from plmkit.errors import UserError
    from plmkit.models.kernels import resolve_precision
    from plmkit.prompting.chat import require_chat_template
    from plmkit.prompting.icl import CONTENT_FREE, ICLSettings, PromptBuilder, RunStore, evaluate_icl, \
        examples_digest, prefix_cache_benchmark, sample_demonstrations
    from plmkit.prompting.scoring import scoring_model
    from plmkit.prompting.templates import load_templates
    from plmkit.tasks.specs import get_task, read_split, resolve_file

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task in QA_TASKS:
        return _run_qa(args)
    spec = get_task(args.task)
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"--data {data}: not a directory")
    train = read_split(spec, resolve_file(data, spec.train_file, "training"), "train")
    dev = read_split(spec, resolve_file(data, spec.dev_file, "dev"), "dev")
    if args.limit:
        dev = dev[: args.limit]
    labels = tuple(spec.labels) if spec.labels else tuple(sorted({e.label for e in train}))
    pair = spec.text_pair_column is not None
    templates = load_templates(args.template, labels=labels, pair=pair, task=args.task)
    chat = require_chat_template(args.tokenizer or args.model) if args.chat else None

    model = plmkit.load(args.model)
    cfg = model.config
    if not getattr(cfg, "causal", False) or getattr(cfg, "head", None) != "lm":
        raise UserError(f"{args.model}: plm icl scores continuations with a causal LM; this is a "
                        f"{getattr(cfg, 'family', type(model).__name__)!r} model without a causal LM head")
    model.eval()
    tok = plmkit.load_tokenizer(args.tokenizer or args.model)
    max_length = args.max_length or (cfg.max_position_embeddings - getattr(cfg, "position_offset", 0))
    positive = "1" if spec.name == "mrpc" else None
    s = ICLSettings(shots=args.shots, seeds=args.seeds, balanced=args.balanced, score=args.score,
                    chat_template=chat, max_length=max_length, batch_size=args.batch_size,
                    share_prefix=not args.no_share_prefix, single_token=args.single_token,
                    metrics=tuple(spec.metrics), positive_label=positive)
    for k in args.shots:  # refuse impossible shot counts before any scoring
        sample_demonstrations(train, k, 0, labels, args.balanced)
    if args.single_token:  # and multi-token verbalizers
        for t in templates:
            PromptBuilder(tok, t, chat).check_single_token()
    out = Path(args.out)
    precision = resolve_precision(args.precision, "plm icl", say=False)
    settings = {  # what a stored run's results depend on besides its template, shots and seed
        "model": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
        "tokenizer": str(Path(args.tokenizer).resolve()) if args.tokenizer else None,
        "task": args.task, "data": str(data.resolve()), "train_digest": examples_digest(train),
        "eval_digest": examples_digest(dev), "limit": args.limit, "labels": list(labels), "score": args.score,
        "balanced": args.balanced, "calibration": list(CONTENT_FREE),
        "chat_template": hashlib.sha256(chat.encode("utf-8")).hexdigest() if chat is not None else None,
        "max_length": max_length, "batch_size": args.batch_size, "share_prefix": not args.no_share_prefix,
        "precision": precision,
    }
    store = RunStore(out, settings, overwrite=args.overwrite)  # refuses other settings before any scoring
    resolve_precision(args.precision, "plm icl")  # says what auto chose
    progress.set_hint(f"the finished runs are kept in {store.dir}: the same command continues from them")
    scorer = scoring_model(model, precision)
    out.mkdir(parents=True, exist_ok=True)
    print(f"plm icl: {args.task}, {len(dev)} dev / {len(train)} train examples, templates "
          f"{', '.join(t.name for t in templates)}, shots {args.shots}, seeds {args.seeds}, score {args.score}, "
          f"precision {precision}")
    with torch.inference_mode():
        result = evaluate_icl(scorer, tok, templates, train, dev, labels, s, out / "predictions.jsonl", store=store)
        if store.reused:
            print(f"reused {store.reused} finished runs stored in {store.dir}")
        if args.cache_benchmark > 0:
            k = max(args.shots)
            b = PromptBuilder(tok, templates[0], chat)
            demos = sample_demonstrations(train, k, 0, labels, args.balanced)
            result["prefix_cache"] = prefix_cache_benchmark(scorer, b, demos, dev[: args.cache_benchmark], labels,
                                                            args.batch_size)
            pc = result["prefix_cache"]
            print(f"prefix cache: {pc['examples']} examples, {k} shots ({pc['prefix_tokens']} prefix tokens): "
                  f"{pc['seconds_shared_prefix']}s shared vs {pc['seconds_reencoded_prefix']}s re-encoded "
                  f"= {pc['speedup']}x (max |diff| {pc['max_abs_logprob_diff']:.2e})")
    if not args.calibrate:
        result.pop("calibrated_by_shots")
        for v in result["by_template"].values():
            v.pop("calibrated")
        for r in result["runs"]:
            r.pop("calibrated_metrics")
    result.update({"model": str(args.model), "task": args.task, "precision": precision,
                   "threads": torch.get_num_threads()})
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
    for k, v in result["by_shots"].items():
        main = spec.main_metric
        line = f"shots {k}: {main} {v[main]:.4f} ± {v[main + '_std']:.4f} (min {v[main + '_min']:.4f}, {v['runs']} runs)"
        if args.calibrate:
            c = result["calibrated_by_shots"][k]
            line += f" | calibrated {c[main]:.4f} ± {c[main + '_std']:.4f} (min {c[main + '_min']:.4f})"
        print(line)
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0


def _load_causal_lm(path: str):
    import plmkit
    from plmkit.errors import UserError

    model = plmkit.load(path)
    cfg = model.config
    if not getattr(cfg, "causal", False) or getattr(cfg, "head", None) != "lm":
        raise UserError(f"{path}: plm icl scores continuations with a causal LM; this is a "
                        f"{getattr(cfg, 'family', type(model).__name__)!r} model without a causal LM head")
    return model.eval()


def _run_qa(args: argparse.Namespace) -> int:
    """Multiple choice (options scored as continuations) and generation (greedy answers, EM / F1)."""
    import torch

    import plmkit
    from plmkit.errors import UserError
    from plmkit.models.kernels import resolve_precision
    from plmkit.prompting.chat import require_chat_template
    from plmkit.prompting.qa import evaluate_qa, load_qa_templates, read_qa_data, sample_qa_demonstrations
    from plmkit.prompting.scoring import scoring_model

    for flag, on in (("--calibrate", args.calibrate), ("--balanced", args.balanced),
                     ("--single-token", args.single_token), ("--cache-benchmark", args.cache_benchmark > 0)):
        if on:
            raise UserError(f"{flag} applies to classification tasks (a fixed label set), not --task {args.task}")
    if args.task == "generation" and args.score != "sum":
        raise UserError(f"--score {args.score}: --task generation decodes greedily and scores exact match / F1; "
                        "drop --score")
    train, dev = read_qa_data(Path(args.data), args.task)
    if args.limit:
        dev = dev[: args.limit]
    templates = load_qa_templates(args.template, args.task)
    chat = require_chat_template(args.tokenizer or args.model) if args.chat else None
    for k in args.shots:
        sample_qa_demonstrations(train, k, 0)
    model = _load_causal_lm(args.model)
    precision = resolve_precision(args.precision, "plm icl")
    model = scoring_model(model, precision)
    tok = plmkit.load_tokenizer(args.tokenizer or args.model)
    cfg = model.config
    max_length = args.max_length or (cfg.max_position_embeddings - getattr(cfg, "position_offset", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"plm icl: {args.task}, {len(dev)} dev / {len(train)} train examples, templates "
          f"{', '.join(t.name for t in templates)}, shots {args.shots}, seeds {args.seeds}")
    with torch.inference_mode():
        result = evaluate_qa(model, tok, args.task, templates, train, dev, args.shots, args.seeds, chat, args.score,
                             max_length, args.batch_size, not args.no_share_prefix, args.max_new_tokens,
                             out / "predictions.jsonl")
    result.update({"model": str(args.model), "task": args.task, "precision": precision,
                   "threads": torch.get_num_threads()})
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
    for k, v in result["by_shots"].items():
        print(f"shots {k}: " + ", ".join(f"{m} {v[m]:.4f} ± {v[m + '_std']:.4f} (min {v[m + '_min']:.4f})"
                                         for m in (("accuracy",) if args.task == "multiple-choice"
                                                   else ("exact_match", "f1"))) + f", {v['runs']} runs")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0
