"""T5-small-shape speed: plmkit ``EncoderDecoder`` vs transformers ``T5ForConditionalGeneration``.

    python bench/bench_t5.py [--threads 1] [--batch 4] [--src 64] [--tgt 32] [--new 32] [--reps 5]
                             [--out bench/results/bench_t5.json]

Both models have the same T5-small shape and the same weights (HF random init, saved and loaded
into plmkit), dropout 0. Measured in one process, interleaved (HF, plmkit, HF, plmkit, ...) so a
busy machine affects both alike; the median of ``--reps`` timings is reported. ``--cpu-time``
measures process CPU seconds instead of wall seconds (single-threaded, this removes most of the
noise of a shared machine).

- train step: forward (encoder + teacher-forced decoder), cross-entropy on the logits, backward,
  AdamW step (the same torch optimizer for both, ~40% of the step); also forward + backward alone.
  tokens/s counts source + target tokens.
- greedy generation: ``generate(max_new_tokens=--new)`` with no EOS stop, batch ``--batch``;
  the outputs are checked to be identical token for token.
Ratios > 1 mean plmkit is faster.
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


CLOCK = time.perf_counter  # --cpu-time switches to time.process_time


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--batch", type=int, default=4, help="batch size")
    ap.add_argument("--src", type=int, default=64, help="source length")
    ap.add_argument("--tgt", type=int, default=32, help="target length (training)")
    ap.add_argument("--new", type=int, default=32, help="generated tokens")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per side")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time (steadier than wall time on a busy machine; use --threads 1)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter

    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from plmkit.interop.seq2seq import load_seq2seq

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                                dropout_rate=0.0, decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(cfg)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_seq2seq(d)
    B, S, U = args.batch, args.src, args.tgt
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, 32128, (B, S), generator=g)
    am = torch.ones(B, S, dtype=torch.long)
    labels = torch.randint(2, 32128, (B, U), generator=g)
    dec_in = ours.shift_right(labels)

    def train_step(model, opt, is_hf: bool, update: bool = True):
        def step():
            if is_hf:
                logits = model(input_ids=src, attention_mask=am, decoder_input_ids=dec_in).logits
            else:
                logits = model(src, am, dec_in).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if update:
                opt.step()
            return float(loss.detach())
        return step

    hf.train()
    ours.train()
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    step_hf, step_ours = train_step(hf, opt_hf, True), train_step(ours, opt_ours, False)
    l_hf, l_ours = step_hf(), step_ours()  # warm-up (and same first loss: same weights)
    t_hf, t_ours = [], []
    for _ in range(args.reps):
        t_hf.append(_median_time(step_hf, 1))
        t_ours.append(_median_time(step_ours, 1))
    train = dict(hf_s=statistics.median(t_hf), plmkit_s=statistics.median(t_ours),
                 first_loss_hf=round(l_hf, 5), first_loss_plmkit=round(l_ours, 5))
    train["ratio"] = round(train["hf_s"] / train["plmkit_s"], 3)
    fb_hf, fb_ours = train_step(hf, opt_hf, True, False), train_step(ours, opt_ours, False, False)
    f_hf, f_ours = [], []
    for _ in range(args.reps):
        f_hf.append(_median_time(fb_hf, 1))
        f_ours.append(_median_time(fb_ours, 1))
    train["fwd_bwd_hf_s"], train["fwd_bwd_plmkit_s"] = statistics.median(f_hf), statistics.median(f_ours)
    train["fwd_bwd_ratio"] = round(train["fwd_bwd_hf_s"] / train["fwd_bwd_plmkit_s"], 3)
    train["plmkit_tokens_per_s"] = round(B * (S + U) / train["plmkit_s"], 1)

    # generation: reload identical weights (training changed both differently)
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_seq2seq(d)
    out = {}

    def gen_hf():
        with torch.inference_mode():
            out["hf"] = hf.generate(src, attention_mask=am, max_new_tokens=args.new, min_new_tokens=args.new,
                                    do_sample=False, num_beams=1)

    def gen_ours():
        out["ours"] = ours.generate(src, am, max_new_tokens=args.new, eos_token_id=[])

    gen_hf(), gen_ours()
    g_hf, g_ours = [], []
    for _ in range(args.reps):
        g_hf.append(_median_time(gen_hf, 1))
        g_ours.append(_median_time(gen_ours, 1))
    same = out["hf"].tolist() == out["ours"].tolist()
    gen = dict(hf_s=statistics.median(g_hf), plmkit_s=statistics.median(g_ours), identical_tokens=same)
    gen["ratio"] = round(gen["hf_s"] / gen["plmkit_s"], 3)
    gen["plmkit_ms_per_token"] = round(1000 * gen["plmkit_s"] / args.new, 2)
    res = dict(shape="t5-small (d512, 6+6 layers, 8 heads, d_ff 2048, vocab 32128)", batch=B, src=S, tgt=U,
               new_tokens=args.new, threads=args.threads, clock="process CPU time" if args.cpu_time else "wall",
               torch=torch.__version__,
               transformers=transformers.__version__, train_step=train, greedy_generation=gen)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
