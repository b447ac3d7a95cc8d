"""plmkit vs Hugging Face transformers on the workloads of ``shared/bench/hf_baseline.py``.

Run:  python bench/bench_models.py                 (fp32 and bf16-autocast, every case, both impls)
      python bench/bench_models.py --amp fp32      (one precision)
      python bench/bench_models.py --case train_bert_mlm --impl plmkit   (one measurement, this process)

Every measurement runs in a fresh subprocess (so ru_maxrss is that case's peak RSS); the HF side
is ``hf_baseline.py --case NAME`` itself, the plmkit side replays the same constants (configs,
shapes, AdamW, dropout on, seeds, warm-up / iteration counts) on ``plmkit.models``. Prints JSON lines,
then a table of plmkit/HF ratios, and writes ``bench/results/models.json``.

plmkit workloads:
- train_bert_mlm: forward with ``labels_mask`` (MLM head only at the ~15% labelled positions) + CE.
- train_gpt2_lm: ``backbone`` + ``linear_cross_entropy`` (chunked fused CE, no (B, T, V) logits).
- infer_bert: the encoder + pooler (HF ``BertModel``), eval + no_grad.
- gen_gpt2_b{1,8}: ``model.generate`` greedy with the static KV cache, 32-token prompt, 128 new tokens; in
  bf16 the model's weights are bf16 (what ``plm generate --precision bf16`` does: autocast would re-cast or
  bypass the weights at every step), while the HF side keeps hf_baseline's autocast.
- train_bertbase_mlm: the MLM step at the bert-base shape (12 x 768, batch 16 x 128); both sides built here
  (HF ``BertForMaskedLM`` with bert-base sizes, same batch recipe as hf_baseline's MLM case).

MFU: ``peak`` (a subprocess at the start and at the end of the run) times 4096^3 matrix products in
fp32 and bf16 on the benchmark's threads; every row gets model FLOPs per token (``plmkit.models.flops``:
the matrix products of the workload at the positions plmkit computes, x3 for a training step) x tokens/s
as a fraction of the best fp32 and bf16 peak of the run. Both impls are credited with the same FLOPs
(HF's MLM head projects every position, not only the labelled ones: that extra work is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF_BASELINE = REPO.parent / "shared" / "bench" / "hf_baseline.py"
sys.path.insert(0, str(HF_BASELINE.parent))
sys.path.insert(0, str(REPO / "src"))

import hf_baseline as hb  # noqa: E402  (the workload constants)

TARGETS = {  # plmkit / HF tokens-per-second ratio the issues ask for (fp32)
    "train_bert_mlm": 1.5, "train_gpt2_lm": 1.5, "infer_bert": 1.5, "gen_gpt2_b1": 1.5, "gen_gpt2_b8": 1.5,
}
BF16_VS_HF_FP32 = {"train_bert_mlm": 3.0}  # plmkit bf16 / HF fp32 the performance issue asks for
MFU_TARGET = {"train_bertbase_mlm": 0.5}  # training MFU (of the fp32 peak) at the bert-base shape
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def bert_config(**kw):
    from plmkit.models import ModelConfig

    c = hb.BERT_CONFIG
    fields = dict(
        family="bert", vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
        max_position_embeddings=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
        activation="gelu", hidden_dropout=c["hidden_dropout_prob"], attention_dropout=c["attention_probs_dropout_prob"],
        layer_norm_eps=c["layer_norm_eps"], pad_token_id=c["pad_token_id"], mask_token_id=hb.BERT_MASK_TOKEN_ID)
    return ModelConfig(**{**fields, **kw})


def gpt2_config():
    from plmkit.models.presets import preset_config

    c = hb.GPT2_CONFIG
    return preset_config(
        "gpt2", vocab_size=c["vocab_size"], hidden_size=c["n_embd"], num_layers=c["n_layer"], num_heads=c["n_head"],
        intermediate_size=c["n_inner"] or 4 * c["n_embd"], max_position_embeddings=c["n_positions"],
        hidden_dropout=c["resid_pdrop"], embedding_dropout=c["embd_pdrop"], attention_dropout=c["attn_pdrop"],
        layer_norm_eps=c["layer_norm_epsilon"], bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"])


def _common(torch, model):
    return {"impl": "plmkit", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "amp": hb.AMP or "fp32", "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def _train(torch, name, model, loss_fn, extra):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=hb.LR, betas=hb.BETAS, eps=hb.EPS, weight_decay=hb.WEIGHT_DECAY)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with hb.amp_ctx(torch):
            loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    rss0 = hb.rss_mb()
    times = hb.timed(step, hb.TRAIN_WARMUP, hb.TRAIN_ITERS)
    med = statistics.median(times)
    rec = dict(bench=name, batch=hb.TRAIN_BATCH, seq=hb.TRAIN_SEQ,
               tokens_per_s=round(hb.TRAIN_BATCH * hb.TRAIN_SEQ / med, 1), median_s=round(med, 4),
               times_s=[round(t, 4) for t in times], loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4),
               rss_before_train_mb=round(rss0, 1), peak_rss_mb=round(hb.peak_rss_mb(), 1), **extra)
    rec.update(_common(torch, model))
    return rec


def case_train_bert_mlm():
    torch = hb.setup()
    from plmkit.models import from_config

    model = from_config(bert_config(pooler=False, head="mlm"))  # BertForMaskedLM has no pooler
    g = torch.Generator().manual_seed(hb.SEED)
    batch, n_labels = hb.mlm_batch(torch, g)
    return _train(torch, "train_bert_mlm", model, _plmkit_mlm_loss(model, batch), dict(mlm_labels=n_labels))


def _plmkit_mlm_loss(model, batch):
    """The MLM loss of a plmkit model, its head computed only at the labelled positions (``labels_mask``)."""
    import torch.nn.functional as F

    sel = batch["labels"] != -100
    targets = batch["labels"][sel]

    def loss_fn():
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], labels_mask=sel)
        return F.cross_entropy(out.logits.float(), targets)

    return loss_fn


def case_train_bertbase_mlm(impl: str):
    torch = hb.setup()
    g = torch.Generator().manual_seed(hb.SEED)
    batch, n_labels = hb.mlm_batch(torch, g)
    extra = dict(mlm_labels=n_labels, config=dict(hb.BERT_CONFIG, **BERT_BASE))
    if impl == "hf":
        from transformers import BertConfig, BertForMaskedLM

        model = BertForMaskedLM(BertConfig(**extra["config"], **hb.model_kwargs()))
        rec = _train(torch, "train_bertbase_mlm", model, lambda: model(**batch).loss, extra)
        rec.update(impl="hf-transformers", attn_impl=getattr(model.config, "_attn_implementation", None))
        return rec
    from plmkit.models import from_config

    model = from_config(bert_config(pooler=False, head="mlm", hidden_size=768, num_layers=12, num_heads=12,
                                    intermediate_size=3072))
    return _train(torch, "train_bertbase_mlm", model, _plmkit_mlm_loss(model, batch), extra)


def case_peak():
    """Best-of-5 GFLOP/s of a 4096^3 matrix product in fp32 and bf16 on the benchmark's threads."""
    torch = hb.setup()
    n = 4096
    rec = {"bench": "peak", "n": n, "threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        times = hb.timed(lambda: torch.mm(a, b), 1, 5)
        rec[f"{name}_gflops"] = round(2 * n ** 3 / min(times) / 1e9, 1)
    return rec


def flops_per_token(case: str) -> float:
    """Model FLOPs per token (per new token for generation) of a workload, from its config."""
    import torch

    from plmkit.models.flops import forward_flops, generation_flops

    B, T = hb.TRAIN_BATCH, hb.TRAIN_SEQ
    if case in ("train_bert_mlm", "train_bertbase_mlm"):
        kw = dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072) if "base" in case else {}
        _, n_labels = hb.mlm_batch(torch, torch.Generator().manual_seed(hb.SEED))
        cfg = bert_config(pooler=False, head="mlm", **kw)
        return forward_flops(cfg, B, T, head_positions=n_labels).training() / (B * T)
    if case == "train_gpt2_lm":
        return forward_flops(gpt2_config(), B, T, head_positions=B * (T - 1)).training() / (B * T)
    if case == "infer_bert":
        cfg = bert_config(pooler=True, head=None)
        return forward_flops(cfg, hb.INFER_BATCH, hb.INFER_SEQ).total / (hb.INFER_BATCH * hb.INFER_SEQ)
    bsz = int(case.rsplit("_b", 1)[1])
    return generation_flops(gpt2_config(), bsz, hb.GEN_PROMPT, hb.GEN_NEW_TOKENS) / (bsz * hb.GEN_NEW_TOKENS)


def case_train_gpt2_lm():
    torch = hb.setup()
    from plmkit.models import from_config
    from plmkit.models.heads import linear_cross_entropy

    model = from_config(gpt2_config())
    g = torch.Generator().manual_seed(hb.SEED)
    ids = torch.randint(0, hb.GPT2_CONFIG["vocab_size"], (hb.TRAIN_BATCH, hb.TRAIN_SEQ), generator=g)
    mask = torch.ones_like(ids)
    labels = ids[:, 1:].reshape(-1)

    def loss_fn():
        hidden, _, _ = model.backbone(ids, mask)
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        return linear_cross_entropy(h, model.head.decoder, labels)

    return _train(torch, "train_gpt2_lm", model, loss_fn, {})


def case_infer_bert():
    torch = hb.setup()
    from plmkit.models import from_config

    model = from_config(bert_config(pooler=True, head=None)).eval()  # = HF BertModel
    g = torch.Generator().manual_seed(hb.SEED)
    ids = torch.randint(1000, hb.BERT_CONFIG["vocab_size"], (hb.INFER_BATCH, hb.INFER_SEQ), generator=g)
    inp = dict(attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    outs = []

    def fwd():
        with torch.no_grad(), hb.amp_ctx(torch):
            outs.append(model(ids, **inp).last_hidden_state)
            if len(outs) > 1:
                outs.pop(0)

    times = hb.timed(fwd, hb.INFER_WARMUP, hb.INFER_ITERS)
    med = statistics.median(times)
    rec = dict(bench="infer_bert", batch=hb.INFER_BATCH, seq=hb.INFER_SEQ,
               tokens_per_s=round(hb.INFER_BATCH * hb.INFER_SEQ / med, 1), median_s=round(med, 4),
               times_s=[round(t, 4) for t in times], out_finite=bool(torch.isfinite(outs[-1]).all()),
               peak_rss_mb=round(hb.peak_rss_mb(), 1))
    rec.update(_common(torch, model))
    return rec


def gen_case(bsz):
    torch = hb.setup()
    from plmkit.models import from_config

    model = from_config(gpt2_config()).eval()
    if hb.AMP == "bf16":  # plmkit's bf16 decoding is bf16 weights (plm generate --precision bf16), not autocast
        model = model.to(torch.bfloat16)
    g = torch.Generator().manual_seed(hb.SEED + bsz)
    prompt = torch.randint(0, hb.GPT2_CONFIG["vocab_size"], (bsz, hb.GEN_PROMPT), generator=g)
    mask = torch.ones_like(prompt)
    res = {}

    def run():
        with torch.no_grad():
            res["out"] = model.generate(prompt, attention_mask=mask, max_new_tokens=hb.GEN_NEW_TOKENS,
                                        eos_token_id=[])  # transformers' side has EOS off too

    times = hb.timed(run, hb.GEN_WARMUP, hb.GEN_ITERS)
    assert res["out"].shape == (bsz, hb.GEN_PROMPT + hb.GEN_NEW_TOKENS), res["out"].shape
    med = statistics.median(times)
    rec = dict(bench=f"gen_gpt2_b{bsz}", method="generate", batch=bsz, prompt=hb.GEN_PROMPT,
               new_tokens=hb.GEN_NEW_TOKENS, new_tokens_per_s=round(bsz * hb.GEN_NEW_TOKENS / med, 1),
               median_s=round(med, 4), ms_per_step=round(1000 * med / hb.GEN_NEW_TOKENS, 3),
               times_s=[round(t, 4) for t in times], peak_rss_mb=round(hb.peak_rss_mb(), 1))
    rec.update(_common(torch, model))
    return rec


RUNNERS = {"train_bert_mlm": case_train_bert_mlm, "train_gpt2_lm": case_train_gpt2_lm,
           "infer_bert": case_infer_bert, "gen_gpt2_b1": lambda: gen_case(1), "gen_gpt2_b8": lambda: gen_case(8),
           "train_bertbase_mlm": lambda: case_train_bertbase_mlm("plmkit")}
HF_HERE = {"train_bertbase_mlm": lambda: case_train_bertbase_mlm("hf")}  # HF sides hf_baseline.py lacks


def _run_sub(cmd, env) -> list[dict]:
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=hb.CASE_TIMEOUT_S * 2, env=env)
    except subprocess.TimeoutExpired:
        return [{"error": "timeout"}]
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not recs:
        recs.append({"error": f"exit {p.returncode}"})
    return recs


def _rate(rec: dict) -> float | None:
    return rec.get("tokens_per_s") or rec.get("new_tokens_per_s")


def _mfu(rate: float | None, fpt: float, peak_gflops: float) -> float | None:
    return round(rate * fpt / (peak_gflops * 1e9), 4) if rate and peak_gflops else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=[*RUNNERS, "peak"], help="run one case in this process")
    ap.add_argument("--impl", choices=["plmkit", "hf"], default="plmkit", help="implementation for --case")
    ap.add_argument("--amp", choices=["fp32", "bf16", "both"], default="both", help="precision(s) to run")
    ap.add_argument("--cases", default=",".join(RUNNERS), help="comma-separated cases to run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "models.json"), help="results file")
    args = ap.parse_args()
    if args.case:
        if args.case == "peak":
            rec = case_peak()
        elif args.impl == "hf":
            rec = HF_HERE[args.case]()
        else:
            rec = RUNNERS[args.case]()
        print(json.dumps(rec), flush=True)
        return 0
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in RUNNERS]
    if unknown:
        ap.error(f"--cases: unknown {unknown} (expected some of {list(RUNNERS)})")
    env0 = dict(os.environ)
    env0.pop("HF_BASELINE_AMP", None)
    env0["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env0.get("PYTHONPATH", "")
    peaks = _run_sub([sys.executable, __file__, "--case", "peak"], env0)
    print(json.dumps(peaks[0]), flush=True)
    results, rows = list(peaks), []
    amps = ["fp32", "bf16"] if args.amp == "both" else [args.amp]
    for amp in amps:
        env = dict(env0)
        if amp == "bf16":
            env["HF_BASELINE_AMP"] = "bf16"
        for case in cases:
            ours = _run_sub([sys.executable, __file__, "--case", case], env)
            hf_cmd = ([sys.executable, __file__, "--case", case, "--impl", "hf"] if case in HF_HERE
                      else [sys.executable, str(HF_BASELINE), "--case", case])
            hf = _run_sub(hf_cmd, env)
            hf_main = next((r for r in hf if r.get("method", "generate") == "generate" and "error" not in r), {})
            hf_loop = next((r for r in hf if r.get("method") == "manual_loop"), {})
            o = ours[0]
            for r in ours + hf:
                print(json.dumps(r), flush=True)
            ratio = round(_rate(o) / _rate(hf_main), 3) if _rate(o) and _rate(hf_main) else None
            row = dict(case=case, amp=amp, plmkit=_rate(o), hf=_rate(hf_main), ratio=ratio,
                       target=TARGETS.get(case) if amp == "fp32" else None,
                       flops_per_token=flops_per_token(case),
                       plmkit_peak_rss_mb=o.get("peak_rss_mb"), hf_peak_rss_mb=hf_main.get("peak_rss_mb"))
            if hf_loop:
                row["hf_manual_loop"] = _rate(hf_loop)
                row["ratio_vs_manual_loop"] = round(_rate(o) / _rate(hf_loop), 3) if _rate(o) else None
            rows.append(row)
            results += [dict(r, amp=amp) for r in ours + hf]
    end_peak = _run_sub([sys.executable, __file__, "--case", "peak"], env0)
    print(json.dumps(end_peak[0]), flush=True)
    results += end_peak
    peak = {k: max((p.get(f"{k}_gflops") or 0) for p in peaks + end_peak) for k in ("fp32", "bf16")}
    fp32_rate = {(r["case"]): r for r in rows if r["amp"] == "fp32"}
    for r in rows:
        for who in ("plmkit", "hf"):
            r[f"{who}_mfu_fp32"] = _mfu(r[who], r["flops_per_token"], peak["fp32"])
            r[f"{who}_mfu_bf16"] = _mfu(r[who], r["flops_per_token"], peak["bf16"])
        base = fp32_rate.get(r["case"])
        if r["amp"] == "bf16" and base and base["hf"] and r["plmkit"]:
            r["ratio_vs_hf_fp32"] = round(r["plmkit"] / base["hf"], 3)
            r["target_vs_hf_fp32"] = BF16_VS_HF_FP32.get(r["case"])
    print(f"\nmatmul peak (4096^3, {hb.NUM_THREADS} threads, best of start/end): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s")
    print(f"{'case':18} {'amp':5} {'plmkit':>9} {'hf':>9} {'ratio':>6} {'target':>6} {'GF/tok':>7} "
          f"{'MFU ours fp32/bf16':>19} {'MFU hf fp32/bf16':>17} {'rss ours/hf MB':>15}")
    for r in rows:
        notes = []
        if r["target"] is not None and r["ratio"] is not None:
            notes.append("met" if r["ratio"] >= r["target"] else "MISSED")
        if r.get("target_vs_hf_fp32"):
            ok = r["ratio_vs_hf_fp32"] >= r["target_vs_hf_fp32"]
            notes.append(f"{r['ratio_vs_hf_fp32']:.2f}x hf-fp32 (target {r['target_vs_hf_fp32']}: "
                         f"{'met' if ok else 'MISSED'})")
        if r["case"] in MFU_TARGET and r["amp"] == "fp32" and r["plmkit_mfu_fp32"] is not None:
            ok = r["plmkit_mfu_fp32"] >= MFU_TARGET[r["case"]]
            notes.append(f"MFU target {MFU_TARGET[r['case']]:.0%}: {'met' if ok else 'MISSED'}")
        pct = lambda v: f"{100 * v:5.1f}%" if v is not None else "    -"  # noqa: E731
        print(f"{r['case']:18} {r['amp']:5} {r['plmkit'] or 0:>9.1f} {r['hf'] or 0:>9.1f} {r['ratio'] or 0:>6.2f} "
              f"{r['target'] or '':>6} {r['flops_per_token'] / 1e9:>7.3f} "
              f"{pct(r['plmkit_mfu_fp32']):>9}/{pct(r['plmkit_mfu_bf16']):<9} "
              f"{pct(r['hf_mfu_fp32']):>8}/{pct(r['hf_mfu_bf16']):<8} "
              f"{r['plmkit_peak_rss_mb'] or 0:>7.0f}/{r['hf_peak_rss_mb'] or 0:<7.0f} {'; '.join(notes)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"summary": rows, "peak_gflops": peak, "records": results,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
