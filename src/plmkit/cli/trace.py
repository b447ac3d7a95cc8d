"""``plm trace``: causal tracing of factual recall (Meng et al. 2022, ROME §2).

    plm trace --model M --facts known_1000.json [--n 50] [--noise 3sigma] [--samples 10]
              [--precision auto|fp32|bf16|bf16-mixed|bf16-autocast] --out DIR

Writes per fact ``DIR/facts/<id>.json`` (indirect-effect arrays, layer x token, per kind) and
``DIR/facts/<id>.png`` (heatmaps), and over the facts ``DIR/summary.json`` (average indirect effect by
layer for each token class and kind; all facts and the facts the model knows) + ``DIR/summary.png``.
Method and conventions: ``plmkit.knowledge.trace``.
"""

from __future__ import annotations

import argparse

from plmkit.checks import POSITIVE, arg

HELP = "Causal tracing: where a causal LM recalls a fact (restore hidden / MLP / attention states)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="causal LM: HF-format directory, .gguf file, or preset (with --tokenizer)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path (default: the model's own)")
    p.add_argument("--facts", required=True, help="JSON list of {prompt, subject, attribute} (ROME's known_1000.json)")
    p.add_argument("--n", type=arg(int, POSITIVE), default=50, help="trace the first N facts")
    p.add_argument("--noise", default="3sigma", help="noise std: 'Ksigma' (K x embedding std) or an absolute number")
    p.add_argument("--noise-corpus", default=None,
                   help="text file whose tokens give the embedding std (default: the subjects of the facts, as ROME)")
    p.add_argument("--samples", type=arg(int, POSITIVE), default=10, help="noise samples per corrupted run")
    p.add_argument("--window", type=arg(int, POSITIVE), default=10, help="layers restored together in the *_window kinds")
    p.add_argument("--kinds", default="hidden,mlp,attn,mlp_window,attn_window",
                   help="comma-separated kinds among hidden, mlp, attn, mlp_window, attn_window")
    p.add_argument("--known-only", action="store_true",
                   help="trace the first N facts whose object is the model's top-1 prediction (ROME's setting)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--batch-size", type=arg(int, POSITIVE), default=1024,
                   help="most rows (restorations x noise samples) per batched forward")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "bf16-mixed", "bf16-autocast"], default="auto",
                   help="bf16-mixed: the blocks' matrices in bfloat16, residual stream, norms and head float32 "
                        "(~1.5x less CPU than fp32 on AVX512-BF16 CPUs, effects within ~0.02 of fp32); bf16: the "
                        "whole model in bfloat16, float32 head (as fast, effects within ~0.03); bf16-autocast: "
                        "float32 weights under bf16 autocast; auto: bf16-mixed on CPUs that multiply bf16 natively "
                        "(AMX or AVX-512 BF16), fp32 elsewhere (said on stderr); docs/KNOWLEDGE.md")
    p.add_argument("--no-plots", action="store_true", help="skip the per-fact heatmap PNGs")
    p.add_argument("--out", required=True, help="output directory")


def read_facts(path: str, n: int) -> list[dict]:
    from pathlib import Path

    from plmkit.errors import UserError
    from plmkit.textio import read_json

    p = Path(path)
    rows = read_json(p, "facts file")
    if not isinstance(rows, list):
        raise UserError(f"{p}: expected a JSON list of facts")
    out = []
    for k, r in enumerate(rows[:n]):
        for key in ("prompt", "subject", "attribute"):
            if not isinstance(r, dict) or not isinstance(r.get(key), str) or not r[key].strip():
                raise UserError(f"{p}: fact {k}: missing or empty {key!r}")
        out.append(r)
    return out


def parse_noise(value: str) -> tuple[float, bool]:
    """(number, relative): '3sigma' -> (3.0, True); '0.1' -> (0.1, False)."""
    from plmkit.errors import UserError

    v = value.strip().lower()
    try:
        if v.endswith("sigma"):
            return float(v[: -len("sigma")] or 1.0), True
        return float(v), False
    except ValueError:
        raise UserError(f"--noise {value!r}: expected e.g. 3sigma or 0.1") from None


def trace_precision(precision: str) -> str:
    """``--precision`` resolved: auto -> bf16-mixed where the CPU multiplies bf16 natively (said on stderr),
    else fp32."""
    from plmkit.models.kernels import resolve_precision

    return resolve_precision(precision, "plm trace", native="bf16-mixed")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from plmkit.errors import UserError
    from plmkit.knowledge import report
    from plmkit.knowledge import trace as tr
    from plmkit.knowledge.loading import load_for_knowledge

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    for k in kinds:
        if k not in tr.KINDS:
            raise UserError(f"--kinds: unknown kind {k!r}: expected some of {', '.join(tr.KINDS)}")
    level, relative = parse_noise(args.noise)
    facts = read_facts(args.facts, None if args.known_only else args.n)
    model, tok, struct = load_for_knowledge(args.model, args.tokenizer)
    if struct.kind != "lm":
        raise UserError(f"{args.model}: causal tracing needs a causal LM (this model has an {struct.kind} head)")
    prepared = []
    for k, f in enumerate(facts):
        try:
            prepared.append(tr.prepare_fact(tok, f["prompt"], f["subject"], f["attribute"]))
        except UserError as e:
            raise UserError(f"{args.facts}: fact {k}: {e}") from None
    scanned = len(prepared)
    if args.known_only:
        keep = []
        with torch.inference_mode():
            for k, f in enumerate(prepared):
                if int(struct.model(torch.tensor([f.ids])).logits[0, -1].argmax()) == f.target_id:
                    keep.append(k)
                if len(keep) == args.n:
                    scanned = k + 1
                    break
        facts, prepared = [facts[k] for k in keep], [prepared[k] for k in keep]
        print(f"{len(keep)} of the first {scanned} facts are known (object = top-1 prediction)", flush=True)
        if not keep:
            raise UserError(f"{args.facts}: the model predicts none of the facts' objects first (try without --known-only)")
        if args.noise_corpus:
            texts = [t for t in Path(args.noise_corpus).read_text(encoding="utf-8").splitlines() if t.strip()]
        else:
            texts = [f["subject"] for f in facts]
        std = tr.embedding_std(struct, tok, texts)
        noise = level * std
    else:
        std, noise = None, level
    out = Path(args.out)
    (out / "facts").mkdir(parents=True, exist_ok=True)
    precision = trace_precision(args.precision)
    tracer = tr.Tracer(struct, noise, samples=args.samples, window=args.window, seed=args.seed,
                       batch_size=args.batch_size, precision=precision)
    traces: list[dict] = []
    times: list[float] = []
    cpu: list[float] = []

    def write_summary() -> dict:
        """summary.json + summary.png over the facts traced so far (rewritten after each fact)."""
        known = [t for t in traces if t["known"]]
        summary = {
            "model": str(args.model), "n_facts": len(traces), "n_requested": len(facts), "n_known": len(known),
            "known_only": args.known_only, "n_scanned": scanned,
            "noise": noise, "embedding_std": std, "noise_arg": args.noise, "samples": args.samples,
            "window": args.window, "kinds": list(kinds), "precision": precision,
            "seconds_per_fact": sum(times) / len(times),
            "cpu_seconds_per_fact": sum(cpu) / len(cpu), "threads": torch.get_num_threads(),
            "mean_p_clean": sum(t["p_clean"] for t in traces) / len(traces),
            "mean_p_corrupt": sum(t["p_corrupt"] for t in traces) / len(traces),
            "classes": list(tr.CLASSES),
            "average": {k: tr.average_by_class(traces, k, struct.num_layers) for k in kinds},
            "average_known": {k: tr.average_by_class(known, k, struct.num_layers) for k in kinds} if known else None,
        }
        report.write_json(out / "summary.json", summary)
        tr.plot_summary(out / "summary.png", summary["average"],
                        f"average indirect effect over {len(traces)} facts ({Path(args.model).name})")
        return summary

    for k, (raw, f) in enumerate(zip(facts, prepared)):
        t0, c0 = time.time(), time.process_time()
        with torch.inference_mode():
            res = tracer.trace(f, kinds)
        times.append(time.time() - t0)
        cpu.append(time.process_time() - c0)
        fid = str(raw.get("known_id", raw.get("case_id", k)))
        res.update(id=fid, prompt=f.prompt, subject=f.subject, target=" " + f.target.strip(),
                   tokens=[tok.decode([i]) for i in f.ids], subject_range=list(f.subject_range),
                   top1=tok.decode([res["top1_id"]]), seconds=round(times[-1], 2), cpu_seconds=round(cpu[-1], 2))
        report.write_json(out / "facts" / f"{fid}.json", res)
        if not args.no_plots:
            tr.plot_fact(out / "facts" / f"{fid}.png", res)
        traces.append(res)
        summary = write_summary()
        print(f"[{k + 1}/{len(facts)}] {f.prompt!r} -> {res['target']!r}: p clean {res['p_clean']:.3f}, "
              f"corrupted {res['p_corrupt']:.3f}, {'known' if res['known'] else 'not top-1'}, {times[-1]:.1f}s "
              f"({cpu[-1]:.1f}s CPU)", flush=True)
    for kind in kinds:
        avg = summary["average"][kind]
        for c in ("last subject token", "last token"):
            ys = [(y, i) for i, y in enumerate(avg[c]) if y is not None]
            if ys:
                y, i = max(ys)
                print(f"{kind:12s} {c:20s} peak {y:+.4f} at layer {i}")
    print(f"{summary['seconds_per_fact']:.1f}s per fact ({summary['cpu_seconds_per_fact']:.1f}s CPU); "
          f"wrote {out / 'summary.json'}")
    return 0
