"""Objective benchmarks: batch-construction cost vs a training step, MLM labels-only vs full logits,
and (``--curves``) 200-step training curves of every trainable objective through the Trainer.

1. ``batch``: for every registered objective, the median time of ``make_batch`` on 16 token-store
   windows of 128 tokens (WikiText-2, a WordPiece tokenizer trained on it), divided by the median
   time of one training step (forward + backward + AdamW) on "bert-small" shapes (Turc et al. 2019:
   L=4, H=512, A=8, I=2048, V=30522) with 16x128 inputs. Trainable objectives are timed with their
   own loss on a backbone of those shapes (clm: the same shapes as a GPT-2-style decoder; rtd: an
   ELECTRA-style discriminator + its 1/4 generator; t5_span / bart_denoise / mass: an
   ``EncoderDecoder`` with 4 + 4 layers of those shapes; glm: the GLM backbone; plm: the two-stream
   XLNet backbone). Objectives without a trainable loss (bilm) are compared with the MLM step.
   Target: ratio < 0.10.
2. ``mlm_logits``: one MLM training step with logits at the labelled positions only (``labels_mask``,
   (N, V)) vs the full (B, T, V) logits, same model, same batches, runs alternated.
3. ``--curves``: each trainable objective on a tiny preset, 200 steps of the shared ``Trainer`` on
   WikiText-2 valid (token store built with ``plmkit.data.prepare``), batch 16, 64 tokens, lr 1e-3;
   first/last losses (mean of the first / last 20 steps) and the full per-step curve. A few extra
   entries (``sop_long``) change steps / lr / length, and record the settings they used.

One intra-op thread (the machine is shared; both sides of every ratio are timed the same way).

    python bench/bench_objectives.py [--out bench/results/objectives.json] [--curves]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))
SMALL = dict(num_layers=4, hidden_size=512, num_heads=8, intermediate_size=2048, vocab_size=30522,
             max_position_embeddings=512)


SEQ2SEQ = {"t5_span": "t5-small", "bart_denoise": "bart-base", "mass": "mass-base"}  # plmkit.models presets


def lines(split: str = "valid") -> list[str]:
    p = DATA / "wikitext-2" / f"{split}.txt"
    if not p.is_file():
        sys.exit(f"WikiText-2 not found at {p} (set PLMKIT_DATA)")
    return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.strip().startswith("=")]


def store(tok, workdir: Path):
    from plmkit.data import TokenStore, prepare

    out = workdir / "store"
    prepare([DATA / "wikitext-2" / "valid.txt"], tok, out, progress=False)
    return TokenStore(out)


def median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def examples_for(name: str, st, obj, n: int = 16, T: int = 128):
    kind = obj.example_kind
    if kind == "sentence_pair":
        v = st.sentence_pairs(T - 3)
    elif kind == "document":
        v = st.documents(max_len=T - 2)
    elif kind == "parallel":
        w = st.windows(T // 2 - 2)
        return [{"src": w[i]["input_ids"], "tgt": list(reversed(w[i]["input_ids"]))} for i in range(n)]
    else:
        v = st.windows(T - 2)
    return [v[i] for i in range(n)]


def step_fn(model, obj, batch, opt):
    def f():
        loss, _ = obj.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return f


def bench_batches(tok, st, reps: int, only: set[str] | None = None) -> dict:
    from plmkit import models
    from plmkit.objectives import REGISTRY, build

    results = {}
    torch.manual_seed(0)
    bert = models.load("bert-base", **SMALL)
    mlm = build("mlm", tokenizer=tok)
    mlm.prepare(bert)
    opt = torch.optim.AdamW(bert.parameters(), lr=1e-4)
    ref = step_fn(bert, mlm, mlm.make_batch(examples_for("mlm", st, mlm)), opt)
    ref()
    ref_t = median_time(ref, reps)
    backbones = {"clm": ("gpt2", dict(SMALL, bos_token_id=None, eos_token_id=None)),
                 "rtd": ("electra-base", dict(SMALL, embedding_size=128)),
                 "glm": ("glm-base", dict(SMALL, pad_token_id=tok.pad_token_id)),
                 "plm": ("xlnet-base", dict(SMALL, pad_token_id=tok.pad_token_id))}
    seq2seq = {"t5_span", "bart_denoise", "mass"}
    trainable = {"clm", "mlm", "nsp", "sop", "rtd", "infoword", "tlm", "unilm", "glm", "plm"} | seq2seq
    for name in REGISTRY:
        if only and name not in only:
            continue
        obj = build(name, tokenizer=tok)
        exs = examples_for(name, st, obj)
        obj.make_batch(exs)
        bt = median_time(lambda: obj.make_batch(exs), reps * 3)
        row = {"make_batch_ms": round(bt * 1e3, 2)}
        if name in trainable:
            preset, over = backbones.get(name, ("bert-base", SMALL))
            torch.manual_seed(0)
            if name in seq2seq:
                preset = SEQ2SEQ[name]
                m = models.load(preset, **dict(SMALL, vocab_size=getattr(obj, "required_vocab_size", len(tok))),
                                num_decoder_layers=4, pad_token_id=tok.pad_token_id)
            else:
                m = models.load(preset, **over)
            obj.prepare(m)
            o = torch.optim.AdamW(m.parameters(), lr=1e-4)
            f = step_fn(m, obj, obj.make_batch(exs), o)
            f()
            st_t = median_time(f, reps)
            row.update(step_ms=round(st_t * 1e3, 1), step_model=f"{preset} (bert-small shapes)")
        else:
            st_t = ref_t
            row.update(step_ms=round(st_t * 1e3, 1),
                       step_model=f"bert-base (bert-small shapes) mlm step, a reference: {name} is not trained here")
        row["ratio"] = float(f"{bt / st_t:.3g}")
        results[name] = row
        print(f"{name:13s} make_batch {row['make_batch_ms']:8.2f} ms  step {row['step_ms']:8.1f} ms  "
              f"ratio {row['ratio']:.4f}", flush=True)
    return results


def bench_mlm_logits(tok, st, reps: int) -> dict:
    from plmkit import models
    from plmkit.objectives import build

    torch.manual_seed(0)
    m = models.load("bert-base", **SMALL)
    objs = {k: build("mlm", tokenizer=tok, labels_only=(k == "labels_only")) for k in ("labels_only", "full")}
    objs["labels_only"].prepare(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # weights unchanged: both sides see the same model
    batch = objs["full"].make_batch(examples_for("mlm", st, objs["full"]))
    fns = {k: step_fn(m, o, batch, opt) for k, o in objs.items()}
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(reps):
        for k, f in fns.items():  # alternate so load changes hit both
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    with torch.no_grad():
        la, _ = objs["labels_only"].loss(m.eval(), batch)
        lb, _ = objs["full"].loss(m, batch)
    n = int((batch["labels"] != -100).sum())
    B, T = batch["input_ids"].shape
    V = m.config.vocab_size
    out = {k: round(statistics.median(v) * 1e3, 1) for k, v in times.items()}
    res = {"step_ms": out, "speedup_full_over_labels_only": round(out["full"] / out["labels_only"], 2),
           "logits_floats": {"labels_only": n * V, "full": B * T * V}, "labelled_positions": n,
           "same_loss_eval": abs(la.item() - lb.item()) < 1e-4}
    print("mlm logits:", json.dumps(res), flush=True)
    return res


CURVES = [  # key (objective name, or name + "_" + variant), preset, options, data view[, settings:
    # {"steps", "lr", "seq_len"} where they differ from --steps, 1e-3 and 64]
    ("clm", "gpt2-tiny", {}, "window"),
    ("mlm", "bert-tiny", {}, "window"),
    ("mlm_whole_word", "bert-tiny", {"masking": "whole_word"}, "window"),
    ("mlm_span", "bert-tiny", {"masking": "span"}, "window"),
    ("nsp", "bert-tiny", {}, "sentence_pair"),
    ("sop", "albert-tiny", {"mlm_weight": 1.0}, "sentence_pair"),
    ("sop_alone", "bert-tiny", {}, "sentence_pair"),
    # SOP alone sits at chance (ln 2) for ~200 steps before it starts to fall: the same run, 600 steps
    ("sop_long", "bert-tiny", {}, "sentence_pair", {"steps": 600}),
    ("rtd", "electra-tiny", {}, "window"),
    ("infoword", "bert-tiny", {"mlm_weight": 1.0}, "window"),
    ("tlm", "bert-tiny", {}, "parallel"),
    ("unilm", "bert-tiny", {}, "sentence_pair"),
    ("t5_span", "t5-tiny", {}, "window"),
    ("bart_denoise", "bart-tiny", {}, "document"),
    ("mass", "mass-tiny", {}, "window"),
    ("glm", "glm-tiny", {}, "window"),
    ("plm", "xlnet-tiny", {}, "window"),
]


def objective_of(key: str) -> str:
    """The registered objective a curve key names: the key itself, else its longest registered
    prefix before a "_variant" suffix ("mlm_span" -> mlm, "t5_span" -> t5_span, "sop_long" -> sop)."""
    from plmkit.objectives import REGISTRY

    if key in REGISTRY:
        return key
    heads = [n for n in REGISTRY if key.startswith(n + "_")]
    if not heads:
        raise SystemExit(f"curve {key!r} names no registered objective")
    return max(heads, key=len)


def write_json(out: Path, result: dict) -> None:
    """Merge ``result`` into the JSON file ``out`` (curves merged per name) atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep sections from earlier runs that this run did not redo
        old = json.loads(out.read_text())
        for sec in ("curves", "batch_construction"):  # merged per entry: --only reruns a few
            if sec in result:
                result = {**result, sec: {**old.get(sec, {}), **result[sec]}}
        result = {**old, **result}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def curves(tok, st, steps: int, out_path: Path, only: set[str] | None = None) -> dict:
    from plmkit import models
    from plmkit.objectives import build
    from plmkit.training import TrainConfig, Trainer

    class Parallel:  # English windows and their word-reversed "translation"
        def __init__(self, w):
            self.w = w

        def __len__(self):
            return len(self.w)

        def __getitem__(self, i):
            ids = self.w[i]["input_ids"]
            return {"src": ids, "tgt": list(reversed(ids))}

    def views(T: int) -> dict:
        return {"window": st.windows(T - 2), "sentence_pair": st.sentence_pairs(T - 3),
                "document": st.documents(max_len=T - 2), "parallel": Parallel(st.windows(T // 2 - 2))}

    out = {}
    for key, preset, opts, view, *more in CURVES:
        if only and key not in only:
            continue
        extra = more[0] if more else {}  # per-curve settings that differ from the defaults below
        T, n_steps, lr = extra.get("seq_len", 64), extra.get("steps", steps), extra.get("lr", 1e-3)
        name = objective_of(key)
        torch.manual_seed(0)
        obj = build(name, tokenizer=tok, **opts)
        if name in SEQ2SEQ or name in ("glm", "plm"):
            model = models.load(preset, vocab_size=getattr(obj, "required_vocab_size", len(tok)),
                                pad_token_id=tok.pad_token_id)
        else:
            model = models.load(preset, vocab_size=len(tok))
        obj.prepare(model)
        hist: list[dict] = []
        cfg = TrainConfig(max_steps=n_steps, batch_size=16, lr=lr, warmup_steps=20, schedule="linear", log_every=1,
                          eval_every=0, save_every=0, tensorboard=False, plots=False, progress=False, device="cpu",
                          seed=1, num_threads=1)
        tr = Trainer(model, obj, views(T)[view], cfg, out_dir=None)  # no final save: only the curve matters
        tr.add_callback("on_log", lambda trainer, logs: hist.append(dict(logs)))
        t = time.perf_counter()
        tr.fit()
        loss = [h["loss"] for h in hist]
        first, last = statistics.mean(loss[:20]), statistics.mean(loss[-20:])
        keys = [k for k in hist[-1] if k not in ("step", "lr", "tokens_per_s", "grad_norm", "loss")]
        out[key] = {"preset": preset, "options": opts, "steps": n_steps, "lr": lr, "seq_len": T,
                    "batch_size": 16, "first20_loss": round(first, 4), "last20_loss": round(last, 4),
                    "drop": round(first - last, 4),
                    "first20_metrics": {k: round(statistics.mean(h[k] for h in hist[:20]), 4) for k in keys},
                    "last20_metrics": {k: round(statistics.mean(h[k] for h in hist[-20:]), 4) for k in keys},
                    "seconds": round(time.perf_counter() - t, 1), "curve": [round(x, 4) for x in loss]}
        print(f"{key:15s} {preset:13s} loss {first:.3f} -> {last:.3f}  ({out[key]['seconds']} s)", flush=True)
        write_json(out_path, {"curves": {key: out[key]}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "objectives.json"), help="JSON output")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement")
    ap.add_argument("--curves", action="store_true", help="also run 200-step training curves")
    ap.add_argument("--only-curves", action="store_true", help="run only the training curves")
    ap.add_argument("--steps", type=int, default=200, help="training steps per curve")
    ap.add_argument("--only", default="", help="comma-separated curve / batch-construction names to (re)run; others are kept "
                    "(with --only, the mlm_logits section is skipped)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import plmkit

    tok = plmkit.train_tokenizer([DATA / "wikitext-2" / "valid.txt"], kind="wordpiece", vocab_size=8000)
    result: dict = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                                "cpus": os.cpu_count()}, "tokenizer": {"kind": "wordpiece", "vocab": len(tok)}}
    with tempfile.TemporaryDirectory() as d:
        st = store(tok, Path(d))
        result["store_tokens"] = st.num_tokens
        if not args.only_curves:
            only = set(filter(None, args.only.split(",")))
            result["batch_construction"] = bench_batches(tok, st, args.reps, only)
            if not only:
                result["mlm_logits"] = bench_mlm_logits(tok, st, args.reps)
        if args.curves or args.only_curves:
            write_json(Path(args.out), result)  # sections done so far
            result["curves"] = curves(tok, st, args.steps, Path(args.out),
                                      set(filter(None, args.only.split(","))))
    write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
