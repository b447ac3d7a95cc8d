"""T5-small-shape speed: plmkit ``EncoderDecoder`` vs transformers ``T5ForConditionalGeneration``.

    python bench/bench_t5.py [--threads 1] [--batch 4] [--src 64] [--tgt 32] [--new 32] [--reps 9]
                             [--skip train,fused,gen]
                             [--out bench/results/bench_t5_cputime.json]

Both models have the same T5-small shape and the same weights (HF random init, saved and loaded
into plmkit), dropout 0, fp32, CPU. Measured in one process, interleaved (HF, plmkit, HF, plmkit, ...)
so a busy machine affects both alike; every repetition is timed with both the wall clock and the
process CPU clock and the medians of ``--reps`` are reported (``*_s``: CPU seconds, the steadier one
on a shared machine with one thread; ``*_wall_s``: wall seconds). Ratios (HF time / plmkit time,
> 1 means plmkit is faster) are of the CPU medians; ``ratio_wall`` beside them.

- train_step: forward (encoder + teacher-forced decoder), cross-entropy on the logits (the same code
  for both), backward, ``optimizer.step()`` with the optimizer of ``shared/bench/hf_baseline.py``
  (``torch.optim.AdamW(lr, betas, eps, weight_decay)``, foreach=default, i.e. the per-tensor loop on
  CPU) for both models; tokens/s counts source + target tokens.
- fwd_bwd: the same without the optimizer step (the part the model implementations own).
- train_step_fused: as train_step with ``AdamW(..., fused=True)`` on both sides (the default of both
  plmkit's Trainer and, for torch >= 2.8, transformers' Trainer).
- greedy_generation: ``generate(max_new_tokens=--new)`` with no EOS stop, batch ``--batch``; the
  outputs are checked to be identical token for token.

Results (torch 2.13.0+cpu, transformers 5.24.0, 2-core Xeon VM, otherwise idle during these runs), HF time /
plmkit time of the process-CPU medians (wall-clock ratio in brackets):

    config                    train_step     fwd_bwd        train_step_fused  greedy_generation   file
    1 thread,  B4 S64  T32    1.160 (1.160)  1.094 (1.094)  1.206 (1.206)     1.302 (1.302)       bench_t5_cputime.json
    1 thread,  B1 S32  T16    1.397 (1.397)  1.248 (1.248)  1.477 (1.477)     1.202 (1.202)       bench_t5_b1_cputime.json
    1 thread,  B8 S128 T32    1.094 (1.094)  1.017 (1.017)  1.127 (1.127)     1.252 (1.252)       bench_t5_b8_s128_cputime.json
    2 threads, B4 S64  T32    1.156 (1.156)  1.063 (1.063)  1.205 (1.205)     1.322 (1.322)       bench_t5_2threads.json
    previous revision (stop 12, same machine, idle):
    1 thread,  B4 S64  T32    1.151          1.069          1.178             1.422
    before the tied-table gradient path (B4 S64 T32, 1 thread):
                              0.997 (0.946)  0.995 (0.979)  1.006 (1.004)     1.086 (1.112)

    python bench/bench_t5.py --reps 9 --anatomy --out bench/results/bench_t5_cputime.json
    python bench/bench_t5.py --batch 1 --src 32 --tgt 16 --reps 9 --out bench/results/bench_t5_b1_cputime.json
    python bench/bench_t5.py --batch 8 --src 128 --tgt 32 --reps 7 --out bench/results/bench_t5_b8_s128_cputime.json
    python bench/bench_t5.py --threads 2 --reps 9 --out bench/results/bench_t5_2threads.json

``--anatomy`` (B4, in bench_t5_cputime.json): forward+backward 0.495 s plmkit / 0.601 s HF, of which GEMM kernels
0.408 / 0.418 s (82% / 70%); optimizer 0.251 / 0.247 s. If every non-GEMM operation of plmkit's forward and
backward (0.088 s, ~0.02 s of it the cross-entropy over the 32k vocabulary, the same code on both sides) cost
nothing, the step ratio would be 1.29. 1.2 needs 26-40 ms of it removed (26 from the whole-step medians, 40 from
the separately timed parts): 40-60% of the model's own elementwise / normalisation / attention work. The
candidates measured (a fused RMSNorm backward ~3 ms, the q|k|v split's backward concat ~3.5 ms, the ReLU
backward ~2.7 ms) add up to about a quarter of that.

Repeated B4 runs spread by about +-0.03 (the previous revision's two-thread run, on a busy machine, read 0.92 /
0.81 / 0.96 / 1.24: contention, not the code). What the ratios are made of:
- generation: each decoding step multiplies a few rows by every decoder weight and the (V, H) table, so it is
  the time to read the weights. plmkit decodes with cached contiguous (in, out) copies of them
  (``plmkit.models.kernels.decoding_weights``; BLAS reads them 1.3-1.7x faster than a transposed (out, in) operand
  at 4 rows; 2-7% faster generation even at batch 1-3), plus less per-step Python than HF's generate().
- training: a B4 step is ~0.20 s forward, ~0.30 s backward and ~0.25 s optimizer (plmkit; HF ~0.20 / 0.40 / 0.25,
  measured by phase). The per-tensor AdamW of hf_baseline is the same code on both sides (a third of the step,
  page-faulting two 66 MB temporaries for the word table each step), and the forward GEMMs are the same MKL /
  oneDNN kernels; plmkit's margin is the backward, where it skips HF's dense per-lookup gradients of the tied
  table (two (V, H) gradients zeroed, filled and added: ~0.1 s at B4). Bigger shapes are GEMM-bound and tend to 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
HF_BASELINE = REPO.parent / "shared" / "bench" / "hf_baseline.py"


def _optimizer_constants() -> dict:
    """LR / betas / eps / weight decay of hf_baseline.py (its literal values if the file is absent)."""
    try:
        sys.path.insert(0, str(HF_BASELINE.parent))
        import hf_baseline as hb

        return dict(lr=hb.LR, betas=hb.BETAS, eps=hb.EPS, weight_decay=hb.WEIGHT_DECAY)
    except ImportError:
        return dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def _interleaved(fn_hf, fn_ours, reps: int) -> dict:
    """Time ``reps`` alternating calls of each; medians of CPU and wall seconds and their ratios."""
    cpu = {"hf": [], "plmkit": []}
    wall = {"hf": [], "plmkit": []}
    for _ in range(reps):
        for name, fn in (("hf", fn_hf), ("plmkit", fn_ours)):
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    res = {}
    for name in ("hf", "plmkit"):
        res[f"{name}_s"] = round(statistics.median(cpu[name]), 4)
        res[f"{name}_wall_s"] = round(statistics.median(wall[name]), 4)
    res["ratio"] = round(res["hf_s"] / res["plmkit_s"], 3)
    res["ratio_wall"] = round(res["hf_wall_s"] / res["plmkit_wall_s"], 3)
    res["cpu_s"] = {k: [round(t, 4) for t in v] for k, v in cpu.items()}
    return res


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise",
            "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_flash_attention_backward",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
"""Kernels counted as matrix products (self time: their own work, not the ops they call)."""


def anatomy(hf, ours, fb_hf, fb_ours, opt_kw: dict, reps: int) -> dict:
    """Where a training step's time goes, per side: forward+backward (median of ``reps``), of which GEMM kernels
    (their share of the profiled wall time, profiled self time of GEMM_OPS, applied to the unprofiled median;
    attention kernels are counted with them), and the optimizer step (median). The profiler's per-op overhead
    makes the share, hence the GEMM time, an underestimate: the bound below is, if anything, too high.

    ``bound_if_free_non_gemm`` = HF step / (plmkit GEMMs + plmkit optimizer): the ratio plmkit would reach if every
    non-GEMM operation of its forward and backward took no time at all."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    sides = {"hf": hf, "plmkit": ours}
    opts = {k: torch.optim.AdamW(m.parameters(), **opt_kw) for k, m in sides.items()}
    fb = {"hf": fb_hf, "plmkit": fb_ours}
    for k in sides:
        fb[k]()
        opts[k].step()  # optimizer state allocated
    t_fb = _interleaved(fb["hf"], fb["plmkit"], reps)
    for k in sides:
        fb[k]()  # gradients present for the timed optimizer steps
    t_opt = _interleaved(opts["hf"].step, opts["plmkit"].step, reps)
    for k in sides:
        n = 3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            w = time.perf_counter()
            for _ in range(n):
                fb[k]()
            wall = time.perf_counter() - w
        share = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in GEMM_OPS) / 1e6 / wall
        gemm = share * t_fb[f"{k}_s"]
        out[k] = dict(fwd_bwd_s=t_fb[f"{k}_s"], gemm_share=round(share, 3), gemm_s=round(gemm, 4),
                      non_gemm_s=round(t_fb[f"{k}_s"] - gemm, 4), optimizer_s=t_opt[f"{k}_s"])
    hf_step = out["hf"]["fwd_bwd_s"] + out["hf"]["optimizer_s"]
    ours_step = out["plmkit"]["fwd_bwd_s"] + out["plmkit"]["optimizer_s"]
    out["ratio"] = round(hf_step / ours_step, 3)
    out["bound_if_free_non_gemm"] = round(hf_step / (out["plmkit"]["gemm_s"] + out["plmkit"]["optimizer_s"]), 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--batch", type=int, default=4, help="batch size")
    ap.add_argument("--src", type=int, default=64, help="source length")
    ap.add_argument("--tgt", type=int, default=32, help="target length (training)")
    ap.add_argument("--new", type=int, default=32, help="generated tokens")
    ap.add_argument("--reps", type=int, default=9, help="timed repetitions per side")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip (train,fused,gen)")
    ap.add_argument("--anatomy", action="store_true",
                    help="also split a training step into GEMM kernels / other model work / optimizer (profiler) "
                         "and report the ratio plmkit would reach if its non-GEMM model work cost nothing")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--cpu-time", action="store_true", help="accepted; both clocks are always reported")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}

    import transformers

    sys.path.insert(0, str(REPO / "src"))
    from plmkit.interop.seq2seq import load_seq2seq

    torch.set_num_threads(args.threads)
    opt_kw = _optimizer_constants()

    def build():
        torch.manual_seed(0)
        cfg = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                                    dropout_rate=0.0, decoder_start_token_id=0)
        hf = transformers.T5ForConditionalGeneration(cfg)
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d)
            ours = load_seq2seq(d)
        return hf, ours

    B, S, U = args.batch, args.src, args.tgt
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, 32128, (B, S), generator=g)
    am = torch.ones(B, S, dtype=torch.long)
    labels = torch.randint(2, 32128, (B, U), generator=g)
    res = dict(shape="t5-small (d512, 6+6 layers, 8 heads, d_ff 2048, vocab 32128)", batch=B, src=S, tgt=U,
               new_tokens=args.new, threads=args.threads, reps=args.reps, torch=torch.__version__,
               transformers=transformers.__version__, optimizer=f"torch.optim.AdamW({opt_kw})")

    def train_step(model, opt, is_hf: bool, dec_in):
        def step():
            if is_hf:
                logits = model(input_ids=src, attention_mask=am, decoder_input_ids=dec_in).logits
            else:
                logits = model(src, am, dec_in).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            else:
                model.zero_grad(set_to_none=True)
            loss.backward()
            if opt is not None:
                opt.step()
            return float(loss.detach())
        return step

    if "train" not in skip or "fused" not in skip:
        hf, ours = build()
        dec_in = ours.shift_right(labels)
        hf.train()
        ours.train()
        first = {}
        sections = []
        if "train" not in skip:
            sections += [("train_step", {}), ("fwd_bwd", None)]
        if "fused" not in skip:
            sections += [("train_step_fused", {"fused": True})]
        for name, extra in sections:
            if extra is None:
                s_hf, s_ours = train_step(hf, None, True, dec_in), train_step(ours, None, False, dec_in)
            else:
                s_hf = train_step(hf, torch.optim.AdamW(hf.parameters(), **opt_kw, **extra), True, dec_in)
                s_ours = train_step(ours, torch.optim.AdamW(ours.parameters(), **opt_kw, **extra), False, dec_in)
            l_hf, l_ours = s_hf(), s_ours()  # warm-up (optimizer state allocated)
            first.setdefault("first_loss_hf", round(l_hf, 5))
            first.setdefault("first_loss_plmkit", round(l_ours, 5))
            r = _interleaved(s_hf, s_ours, args.reps)
            if name != "fwd_bwd":
                r["plmkit_tokens_per_s"] = round(B * (S + U) / r["plmkit_s"], 1)
                r["hf_tokens_per_s"] = round(B * (S + U) / r["hf_s"], 1)
            res[name] = r
        res.update(first)
        if args.anatomy:
            res["anatomy"] = anatomy(hf, ours, train_step(hf, None, True, dec_in), train_step(ours, None, False, dec_in),
                                     opt_kw, args.reps)
        del hf, ours

    if "gen" not in skip:
        hf, ours = build()
        hf.eval()
        out = {}

        def gen_hf():
            with torch.inference_mode():
                out["hf"] = hf.generate(src, attention_mask=am, max_new_tokens=args.new, min_new_tokens=args.new,
                                        do_sample=False, num_beams=1)

        def gen_ours():
            out["ours"] = ours.generate(src, am, max_new_tokens=args.new, eos_token_id=[])

        gen_hf(), gen_ours()
        r = _interleaved(gen_hf, gen_ours, args.reps)
        r["identical_tokens"] = out["hf"].tolist() == out["ours"].tolist()
        r["plmkit_ms_per_token"] = round(1000 * r["plmkit_s"] / args.new, 2)
        res["greedy_generation"] = r

    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
