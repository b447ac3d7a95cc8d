"""``plm probe``: what a language model knows.

    plm probe lama --model M --data ../shared/data/lama [--source trex] [--relations P19,P103]
                   [--uhn] [--layers] [--max-facts N] --out DIR

``lama`` writes ``DIR/metrics.json`` (``{"sources", "relations", "overall"}``, plus ``"layers"`` and
``"uhn"`` when asked), ``DIR/predictions.jsonl`` (one line per fact) and, with ``--layers``,
``DIR/layers.png``. Conventions: ``plmkit.knowledge.lama``.
"""

from __future__ import annotations

import argparse

HELP = "Probe what a model knows: LAMA cloze probing (per layer, LAMA-UHN)."


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="probe", metavar="PROBE", required=True)
    la = sub.add_parser("lama", help="LAMA probe (T-REx, Google-RE, SQuAD) of an MLM or a causal LM",
                        description="LAMA probe (Petroni et al. 2019) of an MLM or a causal LM.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    la.add_argument("--model", required=True, help="HF-format model directory, .gguf file, or preset (with --tokenizer)")
    la.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    la.add_argument("--data", required=True, help="LAMA folder (relations.jsonl, TREx/, Google_RE/, Squad/)")
    la.add_argument("--source", default="trex", help="comma-separated sources: trex, google-re, squad")
    la.add_argument("--relations", default=None, help="comma-separated relation ids (default: all of the sources)")
    la.add_argument("--max-facts", type=int, default=None, help="probe the first N facts of each relation")
    la.add_argument("--uhn", action="store_true", help="also report the LAMA-UHN filtered numbers")
    la.add_argument("--layers", action="store_true", help="read the probe out at every layer (+ layers.png)")
    la.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    la.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    import torch

    from plmkit.errors import UserError
    from plmkit.knowledge import lama, report
    from plmkit.knowledge.lama_data import load_lama
    from plmkit.knowledge.loading import load_for_knowledge

    if args.max_facts is not None and args.max_facts < 1:
        raise UserError(f"--max-facts must be >= 1, got {args.max_facts}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    relations = load_lama(args.data, _csv(args.source), _csv(args.relations), args.max_facts)
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = sum(len(r.facts) for r in relations)
    done, t0 = [0], time.time()

    def progress(n: int) -> None:
        done[0] += n
        print(f"\r{done[0]}/{total} facts, {time.time() - t0:.0f}s", end="", file=sys.stderr, flush=True)

    with torch.inference_mode():
        metrics, records = lama.probe_lama(struct, tok, relations, uhn=args.uhn, layers=args.layers,
                                           batch_size=args.batch_size, progress=progress)
    print(file=sys.stderr)
    metrics["model"] = str(args.model)
    metrics["kind"] = struct.kind
    metrics["seconds"] = round(time.time() - t0, 1)
    report.write_json(out / "metrics.json", metrics)
    report.write_jsonl(out / "predictions.jsonl", records)
    if args.layers:
        curves = {"all facts": metrics["layers"]}
        if args.uhn:
            curves["LAMA-UHN"] = metrics["uhn"]["layers"]
        report.plot_curves(out / "layers.png", curves, f"LAMA P@1 per layer ({Path(args.model).name})", "P@1")
    o = metrics["overall"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, m in list(metrics["sources"].items()) + [("overall", o)]:
        print(f"{name:10s} P@1 {fmt(m['p_at_1'])}  P@10 {fmt(m['p_at_10'])}  MRR {fmt(m['mrr'])}  "
              f"facts {m['n_facts']}  skipped {m['n_skipped']}")
    if args.uhn:
        u = metrics["uhn"]["overall"]
        print(f"LAMA-UHN   P@1 {fmt(u['p_at_1'])}  P@10 {fmt(u['p_at_10'])}  MRR {fmt(u['mrr'])}  facts {u['n_facts']} "
              f"(removed {metrics['uhn']['n_removed']})")
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0
