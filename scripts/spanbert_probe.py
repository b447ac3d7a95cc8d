"""Probe pretrained MLM encoders on held-out text: masked-token accuracy under span masking (SpanBERT's
spans: whole words, geometric lengths) and under BERT token masking, the same masks for every model.

    python scripts/spanbert_probe.py RUN_DIR [RUN_DIR ...] --text ../shared/data/wikitext-2/test.txt

    python scripts/spanbert_probe.py RUN_A RUN_B --text ... --plot curves.png   (+ held-out MLM loss curves)

Each RUN_DIR is a ``plm pretrain --out`` directory (its ``final/`` model and tokenizer). Masks are drawn
with a per-window seeded generator from the first run's tokenizer; runs with a different tokenizer get
their own (same seeds). Prints one JSON line per run: span_acc, span_acc_by_length (accuracy by the
position's span length in words, 1-2 / 3-5 / 6-10), token_acc, and the number of predicted tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import plmkit  # noqa: E402
from plmkit.objectives import build  # noqa: E402


def windows(tok, text: Path, T: int, n: int) -> list[dict]:
    special = set(tok.all_special_ids)
    stream: list[int] = []
    for line in text.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.strip().startswith("="):
            stream += [i for i in tok.encode(line.strip()) if i not in special]
    return [{"input_ids": stream[s:s + T]} for s in range(0, len(stream) - T + 1, T)][:n]


def probe(run: Path, text: Path, T: int, n: int) -> dict:
    tok = plmkit.load_tokenizer(run / "final")
    model = plmkit.load(run / "final").eval()
    data = windows(tok, text, T, n)
    out = {"run": str(run)}
    for masking in ("span", "token"):
        obj = build("mlm", tokenizer=tok, masking=masking, mask_prob=1.0, random_prob=0.0)
        hit = tot = 0
        by_len = {"1-2": [0, 0], "3-5": [0, 0], "6-10": [0, 0]}
        for k in range(0, len(data), 16):
            ms = [obj.mask_example(x, generator=torch.Generator().manual_seed(1000 + k + j))
                  for j, x in enumerate(data[k:k + 16])]
            ids = torch.tensor([m.input_ids for m in ms])
            labels = torch.tensor([m.labels for m in ms])
            sel = labels != -100
            with torch.no_grad():
                logits = model(ids, labels_mask=sel).logits
            ok = (logits.argmax(-1) == labels[sel]).tolist()
            hit += sum(ok)
            tot += len(ok)
            if masking == "span":
                lens = []
                for m in ms:
                    L = [0] * len(m.labels)
                    for (s, e), w in zip(m.units, m.realised_words):
                        for p in range(s, e):
                            L[p] = w
                    lens += [L[p] for p in range(len(L)) if m.labels[p] != -100]
                for w, o in zip(lens, ok):
                    key = "1-2" if w <= 2 else ("3-5" if w <= 5 else "6-10")
                    by_len[key][0] += o
                    by_len[key][1] += 1
        out[f"{masking}_acc"] = hit / max(tot, 1)
        out[f"{masking}_tokens"] = tot
        if masking == "span":
            out["span_acc_by_length"] = {k: (h / t if t else None, t) for k, (h, t) in by_len.items()}
    return out


def plot(runs: list[Path], out: Path) -> None:
    """Held-out MLM loss (``eval.jsonl`` ``mlm_loss``) and training MLM loss (``metrics.jsonl``) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for run in runs:
        for k, name in enumerate(("metrics.jsonl", "eval.jsonl")):
            rows = [json.loads(x) for x in (run / name).read_text().splitlines() if x.strip()]
            rows = [r for r in rows if "mlm_loss" in r]
            ax[k].plot([r["step"] for r in rows], [r["mlm_loss"] for r in rows], marker="o" if k else None,
                       label=run.name)
    for a, t in zip(ax, ("training MLM loss", "held-out MLM loss (own masking)")):
        a.set_xlabel("step")
        a.set_title(t)
        a.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--text", type=Path, required=True)
    p.add_argument("--seq-len", type=int, default=126)
    p.add_argument("--windows", type=int, default=400)
    p.add_argument("--plot", type=Path, help="also write the loss curves of the runs to this PNG")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.plot:
        plot(a.runs, a.plot)
    for run in a.runs:
        print(json.dumps(probe(run, a.text, a.seq_len, a.windows)), flush=True)


if __name__ == "__main__":
    main()
