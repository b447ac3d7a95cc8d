"""``plm probe``: what a language model knows.

    plm probe lama --model M --data ../shared/data/lama [--source trex] [--relations P19,P103]
                   [--uhn] [--layers] [--max-facts N] --out DIR

    plm probe ffn-memories --model M --layer L[,L2|all] --corpus FILE [--keys 10] --out DIR

``lama`` writes ``DIR/metrics.json`` (``{"sources", "relations", "overall"}``, plus ``"layers"`` and
``"uhn"`` when asked), ``DIR/predictions.jsonl`` (one line per fact) and, with ``--layers``,
``DIR/layers.png``. Conventions: ``plmkit.knowledge.lama``.

``ffn-memories`` writes ``DIR/memories.json`` and the readable ``DIR/memories.md`` (per sampled key:
the corpus prefixes that trigger it most, and the tokens its value vector promotes);
``plmkit.knowledge.ffn_memories``.
"""

from __future__ import annotations

import argparse

from plmkit.checks import POSITIVE, arg

HELP = "Probe what a model knows: LAMA cloze probing (per layer, LAMA-UHN); FFN key-value memories."


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="probe", metavar="PROBE", required=True)
    la = sub.add_parser("lama", help="LAMA probe (T-REx, Google-RE, SQuAD) of an MLM, a causal LM, T5 or BART",
                        description="LAMA probe (Petroni et al. 2019) of an MLM, a causal LM or an "
                                    "encoder-decoder (T5: sentinel, BART: mask token).",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    la.add_argument("--model", required=True, help="HF-format model directory, .gguf file, or preset (with --tokenizer)")
    la.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    la.add_argument("--data", required=True, help="LAMA folder (relations.jsonl, TREx/, Google_RE/, Squad/)")
    la.add_argument("--source", default="trex", help="comma-separated sources: trex, google-re, squad")
    la.add_argument("--relations", default=None, help="comma-separated relation ids (default: all of the sources)")
    la.add_argument("--max-facts", type=arg(int, POSITIVE), default=None, help="probe the first N facts of each relation")
    la.add_argument("--uhn", action="store_true", help="also report the LAMA-UHN filtered numbers")
    la.add_argument("--layers", action="store_true", help="read the probe out at every layer (+ layers.png)")
    la.add_argument("--batch-size", type=arg(int, POSITIVE), default=32, help="sequences per forward pass")
    la.add_argument("--out", required=True, help="output directory")
    fm = sub.add_parser("ffn-memories", help="FFN keys: their top trigger prefixes and their values' top tokens",
                        description="FFN layers as key-value memories (Geva et al. 2021).",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fm.add_argument("--model", required=True, help="HF-format model directory, .gguf file, or preset (with --tokenizer)")
    fm.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    fm.add_argument("--layer", required=True, help="layer index, comma-separated indices, or 'all'")
    fm.add_argument("--corpus", required=True, help="text file (one document or sentence per line)")
    fm.add_argument("--keys", type=arg(int, POSITIVE), default=10, help="keys sampled per layer")
    fm.add_argument("--key-ids", default=None, help="comma-separated key indices instead of a sample")
    fm.add_argument("--top-k", type=arg(int, POSITIVE), default=10, help="trigger prefixes kept per key")
    fm.add_argument("--context", type=arg(int, POSITIVE), default=64, help="window length in tokens (a prefix never crosses it)")
    fm.add_argument("--max-tokens", type=arg(int, POSITIVE), default=50000, help="read at most this many corpus tokens")
    fm.add_argument("--batch-size", type=arg(int, POSITIVE), default=16, help="windows per forward pass")
    fm.add_argument("--seed", type=int, default=0, help="seed of the key sample")
    fm.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    return _lama(args) if args.probe == "lama" else _ffn_memories(args)


def _ffn_memories(args: argparse.Namespace) -> int:
    import random
    from pathlib import Path

    from plmkit.errors import UserError
    from plmkit.knowledge import ffn_memories as fm
    from plmkit.knowledge import report
    from plmkit.knowledge.loading import load_for_knowledge

    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise UserError(f"{corpus}: corpus file not found")
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    if args.layer.strip() == "all":
        layers = list(range(struct.num_layers))
    else:
        try:
            layers = [int(x) for x in args.layer.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--layer {args.layer!r}: expected integers or 'all'") from None
    rng = random.Random(args.seed)
    if args.key_ids:
        try:
            ids = [int(x) for x in args.key_ids.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--key-ids {args.key_ids!r}: expected comma-separated integers") from None
        keys = {layer: ids for layer in layers}
    else:
        n = min(args.keys, struct.intermediate_size)
        keys = {layer: sorted(rng.sample(range(struct.intermediate_size), n)) for layer in layers}
    lines = corpus.read_text(encoding="utf-8", errors="replace").splitlines()
    stream = fm.token_stream(tok, lines, args.max_tokens)
    records = fm.memories(struct, tok, stream, keys, args.top_k, args.context, args.batch_size)
    agree = fm.agreement(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "memories.json", {"model": str(args.model), "corpus": str(corpus),
                                              "tokens": int(stream.numel()), "context": args.context,
                                              "agreement_by_layer": agree, "memories": records})
    report.write_text(out / "memories.md", fm.markdown(records))
    for layer, a in agree.items():
        print(f"layer {layer}: next token of a trigger prefix among the value's top tokens in {a:.1%} of prefixes")
    print(f"{len(records)} memories over {stream.numel()} tokens; wrote {out / 'memories.json'} and {out / 'memories.md'}")
    return 0


def _lama(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    import torch

    from plmkit.knowledge import lama, report
    from plmkit.knowledge.lama_data import load_lama
    from plmkit.knowledge.loading import load_for_knowledge

    relations = load_lama(args.data, _csv(args.source), _csv(args.relations), args.max_facts)
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer, allow_seq2seq=True)
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
