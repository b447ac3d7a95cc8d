"""``plm edit``: edit what a causal LM knows (ROME, MEMIT, FT, FT+L, KN) and evaluate the edits.

    plm edit --method rome --model M --data counterfact-edit.json [--n 200] [--batch-size 1] --out DIR
    plm edit --method rome --model M --prompt "The Eiffel Tower is located in" --subject "Eiffel Tower" \\
             --target "Rome" --out DIR/edited

With ``--data`` (CounterFact in the EasyEdit layout, or zsRE): each case is edited, measured and
undone (``--batch-size B``: B cases at once); writes ``DIR/metrics.json`` (unedited and edited
scores, seconds per edit), ``DIR/cases.jsonl`` (one line per case) and ``DIR/details.json``
(magnitudes, skipped records, layers, hyper-parameters, covariance cost). With ``--prompt``: one edit,
saved as an HF-format checkpoint (+ tokenizer) in ``--out`` with ``edits.jsonl`` provenance.

Layers: ``--layers``, else (``--layers auto`` or just ``--trace``) the MLP peak at the last subject token of
a ``plm trace`` summary (``--trace DIR``), else the ``layers`` of the ``--hparams`` recipe
(``recipes/editing/<method>-<family>.yaml``). Conventions: docs/EDITING.md.
"""

from __future__ import annotations

import argparse

from plmkit.checks import NON_NEGATIVE, POSITIVE, arg, at_least

HELP = "Edit facts in a causal LM (ROME, MEMIT, FT, FT+L, knowledge neurons); CounterFact / zsRE evaluation."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=["rome", "memit", "ft", "ft-l", "kn"], help="editing method")
    p.add_argument("--model", required=True, help="HF-format model directory, .gguf file, or preset (with --tokenizer)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    p.add_argument("--hparams", default=None, help="hyper-parameter YAML (recipes/editing/<method>-<family>.yaml)")
    p.add_argument("--layers", default=None,
                   help="layers to edit: '5', '3,5', a range '2-6', or 'auto' (from --trace); overrides the recipe")
    p.add_argument("--trace", default=None,
                   help="output folder (or its summary.json) of 'plm trace': edit where the MLP effect at the last "
                        "subject token peaks (ROME: that layer; MEMIT: the five layers ending there)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--data", default=None, help="CounterFact (EasyEdit layout) or zsRE JSON file")
    g.add_argument("--n", type=arg(int, POSITIVE), default=None, help="use N records (the first N, or from --start)")
    g.add_argument("--start", type=arg(int, NON_NEGATIVE), default=0, help="index of the first record used (to continue a run)")
    g.add_argument("--batch-size", type=arg(int, POSITIVE), default=1, help="edits applied at once (then measured and undone)")
    g.add_argument("--fluency-tokens", type=int, default=100,
                   help="tokens sampled for the fluency (n-gram entropy) score; 0 skips it")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (fluency continuations)")
    g.add_argument("--unedited", default=None,
                   help="output folder of an earlier --data run on the same model, data, fluency tokens and seed: "
                        "reuse its unedited scores instead of recomputing them")
    s = p.add_argument_group("single edit")
    s.add_argument("--prompt", default=None, help="prompt mentioning the subject")
    s.add_argument("--subject", default=None, help="the subject in the prompt")
    s.add_argument("--target", default=None, help="the new object")
    s.add_argument("--target-true", default=None, help="the current object (refused when equal to --target)")
    c = p.add_argument_group("key covariance (ROME / MEMIT)")
    c.add_argument("--stats-corpus", default=None, help="text file or folder for C = E[k k^T] (e.g. WikiText)")
    c.add_argument("--stats-samples", type=arg(int, POSITIVE), default=100_000, help="corpus tokens for the statistics")
    c.add_argument("--stats-seq-len", type=arg(int, at_least(2)), default=128, help="window length when reading the corpus")
    c.add_argument("--stats-dir", default=None,
                   help="cache folder for the statistics (default: next to the model)")
    c.add_argument("--no-covariance", action="store_true", help="C = I instead of the corpus statistics")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output directory")


def layers_from_trace(path: str, method: str, num_layers: int) -> tuple[list[int], str]:
    """(layers, a one-line reason): the layer with the largest average MLP indirect effect at the last
    subject token (the known facts' average when the summary has one, the window curve when traced);
    MEMIT gets the five layers ending there. ``path``: a ``plm trace`` output folder or its summary.json."""
    from pathlib import Path

    from plmkit.errors import UserError
    from plmkit.textio import read_json

    p = Path(path)
    if p.is_dir():
        p = p / "summary.json"
    if not p.is_file():
        raise UserError(f"--trace {p}: file not found (expected the output folder of 'plm trace' or its summary.json)")
    summary = read_json(p, "--trace")
    try:
        known = summary.get("average_known")
        avg = known or summary["average"]
        kind = "mlp_window" if "mlp_window" in avg else "mlp"
        curve = avg[kind]["last subject token"]
        vals = [(float(v), i) for i, v in enumerate(curve) if v is not None]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise UserError(f"--trace {p}: expected the summary.json of 'plm trace' with mlp or mlp_window "
                        "effects at the last subject token") from None
    if not vals or len(curve) != num_layers:
        raise UserError(f"--trace {p}: {len(curve)} layers traced, the model has {num_layers}")
    effect, peak = max(vals)
    layers = list(range(max(0, peak - 4), peak + 1)) if method == "memit" else [peak]
    why = (f"{kind} effect at the last subject token peaks at layer {peak} ({effect:+.3f}, "
           f"{'known facts' if known else 'all traced facts'} of {p})")
    return layers, why


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from plmkit.cli.neurons import parse_layers
    from plmkit.errors import UserError
    from plmkit.knowledge import report
    from plmkit.knowledge.edit import USES_COVARIANCE, common, covariance, load_hparams
    from plmkit.knowledge.edit import evaluate as ev
    from plmkit.knowledge.loading import load_for_knowledge

    single = args.prompt is not None
    if single == (args.data is not None):
        raise UserError("give either --data FILE (evaluation) or --prompt/--subject/--target (one edit)")
    if single:
        if args.subject is None or args.target is None:
            raise UserError("--prompt needs --subject and --target")
        request = common.Request(args.prompt, args.subject, args.target, args.target_true).validate("--prompt")
    unedited = None
    if not single:
        kind, cases, skipped = ev.read_cases(args.data, args.n, args.start)
        if not cases:
            raise UserError(f"{args.data}: no editable record among the first {args.n or 'all'} "
                            f"({len(skipped)} skipped: {skipped[0]['reason'] if skipped else ''})")
        if args.unedited is not None:
            unedited = ev.read_unedited(args.unedited, kind, args.model, args.data, args.fluency_tokens, args.seed,
                                        cases)
    hp = load_hparams(args.method, args.hparams, covariance=False if args.no_covariance else None)
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    layers_source = f"recipe {args.hparams}" if args.hparams else "default"
    if args.layers is not None and args.layers.strip().lower() != "auto":
        hp.layers = parse_layers(args.layers, struct.num_layers)
        layers_source = "--layers"
    elif args.trace is not None:
        hp.layers, layers_source = layers_from_trace(args.trace, args.method, struct.num_layers)
        print(f"layers {hp.layers}: {layers_source}", flush=True)
    elif args.layers is not None:
        raise UserError("--layers auto needs --trace DIR (the output of 'plm trace' for this model)")
    if not hp.layers:
        raise UserError(f"{args.method}: no layers to edit; pass --layers, --trace DIR/summary.json or an "
                        "--hparams recipe with layers")
    common.check_layers(struct, hp.layers, "layers")
    if struct.kind != "lm":
        raise UserError("editing needs a causal LM; this model is a masked LM")
    model.requires_grad_(False)
    cov, cov_info = None, {}
    if args.method in USES_COVARIANCE and hp.covariance:
        if args.stats_corpus is None:
            raise UserError(f"{args.method} needs the key covariance: pass --stats-corpus FILE_OR_DIR "
                            "(or --no-covariance for C = I)")
        stats_dir = Path(args.stats_dir) if args.stats_dir else covariance.default_stats_dir(args.model)
        t0 = time.time()
        cov = covariance.layer_stats_many(struct, tok, hp.layers, args.stats_corpus, args.stats_samples,
                                          stats_dir, args.stats_seq_len, progress=not args.no_progress)
        cov_info = round(time.time() - t0, 1)
        print(f"key covariance for layers {hp.layers}: {cov_info} seconds (cache: {stats_dir})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    hp_dict = asdict(hp)
    if single:
        return _single(args, struct, tok, request, hp, hp_dict, cov, out, layers_source)
    print(f"{args.method} on {len(cases)} {kind} cases ({len(skipped)} skipped), layers {hp.layers}", flush=True)
    metrics, rows = ev.run(kind, struct, tok, cases, args.method, hp, cov, args.batch_size, args.fluency_tokens,
                           args.seed, on_rows=lambda rows: report.write_jsonl(out / "cases.jsonl", rows),
                           unedited=unedited)
    report.write_json(out / "metrics.json", metrics)
    report.write_jsonl(out / "cases.jsonl", rows)
    report.write_json(out / "details.json", {
        "method": args.method, "model": str(args.model), "data": str(args.data), "kind": kind,
        "start": args.start, "n_cases": len(rows), "n_skipped": len(skipped), "skipped": skipped,
        "batch_size": args.batch_size,
        "layers": hp.layers, "layers_source": layers_source, "hparams": hp_dict, "fluency_tokens": args.fluency_tokens,
        "seed": args.seed, "unedited_from": args.unedited,
        "covariance": None if cov is None else {"corpus": args.stats_corpus, "samples": args.stats_samples,
                                                "seq_len": args.stats_seq_len, "seconds": cov_info},
        "cpu_seconds_per_edit": sum(r["edit_cpu_seconds"] for r in rows) / max(1, len(rows)),
        "unedited": ev.details(kind, [r["unedited"] for r in rows]),
        "edited": ev.details(kind, [r["edited"] for r in rows])})
    print(json.dumps(metrics))
    print(f"wrote {out / 'metrics.json'}, {out / 'cases.jsonl'}, {out / 'details.json'}")
    return 0


def _single(args, struct, tok, request, hp, hp_dict, cov, out, layers_source) -> int:
    import json
    import time

    import torch

    from plmkit.knowledge import report
    from plmkit.knowledge.edit import common, edit

    p = common.encode(tok, request.prompt).ids
    targets = [common.target_ids(tok, request.target_new)]
    if request.target_true:
        targets.append(common.target_ids(tok, request.target_true))
    with torch.no_grad():
        before = common.target_logprobs(struct, [p] * len(targets), targets).tolist()
    delta = edit(struct.model, [request], args.method, hp, tokenizer=tok, covariance=cov)
    with torch.no_grad():
        after = common.target_logprobs(struct, [p] * len(targets), targets).tolist()
    struct.model.save_pretrained(out)
    if hasattr(tok, "save"):
        tok.save(out)
    prov = {"request": request.to_dict(), "method": args.method, "layers": hp.layers, "layers_source": layers_source,
            "delta_norm": delta.info["delta_norm"], "seconds": delta.info["seconds"], "model": str(args.model),
            "hparams": hp_dict, "covariance": None if cov is None else
            {"corpus": args.stats_corpus, "samples": args.stats_samples},
            "logp_new": {"before": before[0], "after": after[0]},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if len(targets) > 1:
        prov["logp_true"] = {"before": before[1], "after": after[1]}
    prev = (out / "edits.jsonl").read_text(encoding="utf-8").splitlines() if (out / "edits.jsonl").is_file() else []
    report.write_jsonl(out / "edits.jsonl", [json.loads(x) for x in prev if x.strip()] + [prov])
    print(f"{args.method} edit of {request.prompt!r} -> {request.target_new!r} at layers {hp.layers} in "
          f"{delta.info['seconds']:.1f}s: log P(new) {before[0]:.2f} -> {after[0]:.2f}; saved {out} (+ edits.jsonl)")
    return 0
