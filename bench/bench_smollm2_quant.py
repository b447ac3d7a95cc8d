"""SmolLM2 (a llama GGUF file) quantized several ways: WikiText-2 perplexity and greedy generation speed.

    OMP_NUM_THREADS=1 python bench/bench_smollm2_quant.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
        --text shared/data/wikitext-2/test.txt --tokens 8192 --window 1024 --out results/compression_smollm2_quant.json

Arms (``--arms``, comma-separated):
- ``fp32``: ``plmkit.interop.load_pretrained`` (every GGUF tensor de-quantized to fp32): the baseline;
- ``dynamic-int8`` / ``weight-int8`` / ``weight-int4`` (groups of 32): ``quantize_model`` on that fp32
  model's block linears (so weight-int4 re-quantizes the de-quantized Q4_1 weights); ``-bf16`` suffix on
  the weight-only arms: their kernels run with bf16 activations (``activations="bfloat16"``);
- ``gguf-q4``: the file's Q4_1 blocks kept as they are (``plmkit.compression.gguf_quant``), fp32
  activations; ``gguf-q4-bf16``: the same with bf16 activations.
Embeddings and the (tied) LM head stay fp32 in every arm.

Perplexity: the text file's first ``--tokens`` tokens (SmolLM2's tokenizer, text as stored, no BOS), cut
into non-overlapping windows of ``--window`` tokens; every token after the first of its window is scored
(context = the preceding tokens of its window); ppl = exp(mean NLL). The weight-only arms with fp32
activations are scored through their de-quantized weights in ``F.linear`` (the same weights; their
fp32-activation kernels are 38-75x slower than fp32 on multi-row inputs, see quantization.py): the
largest logit difference between that path and the kernel on the first ``--check-tokens`` tokens is
reported as ``kernel_vs_dequant_max_logit_diff``. ``gguf-q4``'s weights equal fp32's up to float rounding
(``max_abs_weight_diff``), so its perplexity is fp32's and is not recomputed.

Generation: batch 1, the first ``--prompt`` tokens of the text as prompt, ``--new`` greedy tokens (no early
stop), ``--gen-reps`` runs after one warm-up run; process CPU time and wall per run, medians reported;
``tokens_per_cpu_s`` = new tokens / median CPU seconds (one thread: the steady figure on a loaded
machine). ``same_tokens_as_fp32``: how many of the generated tokens equal the fp32 arm's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ALL = ("fp32", "dynamic-int8", "weight-int8", "weight-int8-bf16", "weight-int4", "weight-int4-bf16",
       "gguf-q4", "gguf-q4-bf16")


def build(arm: str, gguf: str):
    from plmkit.compression.gguf_quant import load_gguf_quantized
    from plmkit.compression.quantization import quantize_model, set_activations
    from plmkit.interop import load_pretrained

    bf16 = arm.endswith("-bf16")
    base = arm[: -len("-bf16")] if bf16 else arm
    if base == "gguf-q4":
        model, record = load_gguf_quantized(gguf)
    else:
        model, record = load_pretrained(gguf), None
        if base != "fp32":
            record = quantize_model(model, base, group_size=32)
    if bf16:
        set_activations(model, "bfloat16")
        record = {**record, "activations": "bfloat16"}
    return model.eval(), record


@contextlib.contextmanager
def dequantized_linears(model):
    """Run the weight-only int8 / int4 modules as ``F.linear`` on their de-quantized weights."""
    from plmkit.compression.quantization import WeightInt4Linear, WeightInt8Linear

    saved = []
    for m in model.modules():
        if isinstance(m, (WeightInt8Linear, WeightInt4Linear)) and m.activations == "float32":
            w = (m.dequantized_weight() if isinstance(m, WeightInt4Linear)
                 else m.weight_int8.float() * m.weight_scale[:, None])
            m.forward = (lambda x, w=w, b=m.bias: F.linear(x, w, b))
            saved.append(m)
    try:
        yield bool(saved)
    finally:
        for m in saved:
            del m.forward


@torch.inference_mode()
def perplexity(model, ids: torch.Tensor, window: int) -> tuple[float, int]:
    nll, n = 0.0, 0
    for s in range(0, len(ids), window):
        w = ids[s:s + window][None]
        if w.shape[1] < 2:
            break
        logits = model(w).logits[0, :-1].float()
        nll += F.cross_entropy(logits, w[0, 1:], reduction="sum").item()
        n += w.shape[1] - 1
    return math.exp(nll / n), n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", required=True)
    p.add_argument("--text", required=True, help="WikiText-2 test.txt")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--check-tokens", type=int, default=128)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--gen-reps", type=int, default=2)
    p.add_argument("--arms", default=",".join(ALL))
    p.add_argument("--no-ppl", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from plmkit.generation.decode import generate
    from plmkit.interop.gguf import gguf_tokenizer

    tok = gguf_tokenizer(args.gguf)
    all_ids = tok.encode(Path(args.text).read_text(encoding="utf-8"), add_special_tokens=False)
    ids = torch.tensor(all_ids[: args.tokens])
    prompt = ids[None, : args.prompt]
    res = {"gguf": args.gguf, "text": args.text, "text_tokens_total": len(all_ids), "ppl_tokens": len(ids),
           "window": args.window, "prompt_tokens": args.prompt, "new_tokens": args.new, "threads": 1,
           "torch": torch.__version__, "load_average_start": os.getloadavg(), "arms": {}}
    fp32_tokens = None
    for arm in args.arms.split(","):
        t0 = time.perf_counter()
        model, record = build(arm, args.gguf)
        e = {"build_wall_s": round(time.perf_counter() - t0, 1),
             "record": None if record is None else {k: v for k, v in record.items() if k not in ("modules", "kept")},
             "quantized_modules": 0 if record is None else len(record["modules"]),
             "state_mb": round(sum(t.numel() * t.element_size() for t in  # tied tensors once
                                   {t.data_ptr(): t for t in model.state_dict().values()}.values()) / 2**20, 1),
             "load_average": os.getloadavg()}
        if not args.no_ppl and arm != "gguf-q4":
            c0, w0 = time.process_time(), time.perf_counter()
            with dequantized_linears(model) as via:
                if via:
                    with torch.inference_mode():
                        ref = model(ids[None, : args.check_tokens]).logits
                ppl, n = perplexity(model, ids, args.window)
            if via:
                with torch.inference_mode():
                    ker = model(ids[None, : args.check_tokens]).logits
                e["kernel_vs_dequant_max_logit_diff"] = (ker - ref).abs().max().item()
            e.update(ppl=round(ppl, 4), scored_tokens=n, ppl_via="dequantized F.linear" if via else "the kernels",
                     ppl_cpu_s=round(time.process_time() - c0, 1), ppl_wall_s=round(time.perf_counter() - w0, 1))
        elif arm == "gguf-q4":
            e["ppl"] = "= fp32 (same weights, max_abs_weight_diff in record)"
            with torch.inference_mode():
                ker = model(ids[None, : args.check_tokens]).logits
                ref = build("fp32", args.gguf)[0](ids[None, : args.check_tokens]).logits
            e["kernel_vs_fp32_max_logit_diff"] = (ker - ref).abs().max().item()
        def gen(n, model=model):
            return generate(model, prompt, max_new_tokens=n, eos_token_id=[])

        gen(4)  # warm-up: packs the weights
        cpu, wall = [], []
        for _ in range(args.gen_reps):
            c0, w0 = time.process_time(), time.perf_counter()
            out = gen(args.new)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        new = out[0, args.prompt:].tolist()
        if arm == "fp32":
            fp32_tokens = new
        e.update(gen_cpu_s=[round(x, 2) for x in cpu], gen_wall_s=[round(x, 2) for x in wall],
                 tokens_per_cpu_s=round(args.new / statistics.median(cpu), 2),
                 tokens_per_wall_s=round(args.new / statistics.median(wall), 2),
                 same_tokens_as_fp32=None if fp32_tokens is None else sum(a == b for a, b in zip(new, fp32_tokens)),
                 text=tok.decode(new)[:200])
        res["arms"][arm] = e
        print(arm, json.dumps({k: v for k, v in e.items() if k != "text"}), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
        del model
        gc.collect()
    res["load_average_end"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
