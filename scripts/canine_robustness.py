"""Issue 22: CANINE vs WordPiece BERT, clean and misspelled dev accuracy (docs/MODELS.md, CANINE section).

Fine-tune mode: for one language, fine-tune each pretrained model (`plm finetune`, 1 epoch on a random subset)
for each seed, evaluate on the task's dev set (clean) and on a misspelled copy of it (`plm evaluate`, the copy
built by scripts/misspell.py), and append one JSON line per (model, seed) to ``--results``.

    python scripts/canine_robustness.py finetune --lang en --canine RUNS/canine-en/final --bert RUNS/bert-en/final \
        --data ../shared/data/glue/SST-2 --noisy NOISY/sst2 --work RUNS/ft --results RUNS/results.jsonl --seeds 1 2

Plot mode: the bar figure (clean and misspelled accuracy, mean over seeds, each seed as a dot) and a markdown table.

    python scripts/canine_robustness.py plot --results RUNS/results.jsonl --out docs/figures/canine_robustness.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

TASK = {"en": "sst2", "zh": "chnsenticorp"}


def plm(*args: str) -> None:
    cmd = [sys.executable, "-m", "plmkit", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ))


def finetune(a: argparse.Namespace) -> None:
    models = {"canine": (a.canine, a.canine_seq_len), "bert": (a.bert, a.bert_seq_len)}
    for seed in a.seeds:
        for name, (path, seq_len) in models.items():
            out = a.work / f"{a.lang}-{name}-s{seed}"
            plm("finetune", "--task", TASK[a.lang], "--model", str(path), "--data", str(a.data), "--out", str(out),
                "--epochs", str(a.epochs), "--max-train-examples", str(a.train_examples), "--lr", str(a.lr),
                "--batch-size", str(a.batch_size), "--max-seq-len", str(seq_len), "--seed", str(seed),
                "--no-progress")
            clean = json.loads((out / "eval.json").read_text())
            plm("evaluate", "--checkpoint", str(out), "--data", str(a.noisy), "--out", str(out / "eval_misspelled.json"))
            noisy = json.loads((out / "eval_misspelled.json").read_text())
            row = {"lang": a.lang, "task": TASK[a.lang], "model": name, "seed": seed, "pretrained": str(path),
                   "max_seq_len": seq_len, "train_examples": clean.get("train_examples"),
                   "train_time_s": clean.get("train_time_s"), "truncated_dev": clean.get("truncated", {}).get("dev"),
                   "clean_acc": clean["accuracy"], "misspelled_acc": noisy["accuracy"]}
            with a.results.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def plot(a: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in a.results.read_text().splitlines() if line.strip()]
    arms = [(lang, model) for lang in ("en", "zh") for model in ("bert", "canine")
            if any(r["lang"] == lang and r["model"] == model for r in rows)]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.38
    table = ["| language / task | model | seeds | clean acc (per seed) | misspelled acc (per seed) | drop (clean - misspelled) |", "|---|---|---|---|---|---|"]
    for i, (lang, model) in enumerate(arms):
        rs = [r for r in rows if r["lang"] == lang and r["model"] == model]
        clean = [r["clean_acc"] for r in rs]
        noisy = [r["misspelled_acc"] for r in rs]
        for off, vals, color, label in ((-width / 2, clean, "tab:blue", "clean dev"),
                                        (width / 2, noisy, "tab:orange", "misspelled dev")):
            ax.bar(i + off, statistics.mean(vals), width, color=color, label=label if i == 0 else None)
            ax.plot([i + off] * len(vals), vals, "k.", ms=5)
        drop = statistics.mean(c - n for c, n in zip(clean, noisy))
        table.append(f"| {lang} / {rs[0]['task']} | {model} | {len(rs)} | {statistics.mean(clean):.3f} "
                     f"({', '.join(f'{v:.3f}' for v in clean)}) | {statistics.mean(noisy):.3f} "
                     f"({', '.join(f'{v:.3f}' for v in noisy)}) | {drop:+.3f} |")
    ax.set_xticks(range(len(arms)), [f"{'SST-2' if l == 'en' else 'ChnSentiCorp'}\n{m}" for l, m in arms])
    ax.set_ylabel("dev accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("CANINE vs WordPiece BERT: clean vs misspelled dev (dots: seeds)", fontsize=9)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print("\n".join(table))
    print(f"wrote {a.out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finetune")
    f.add_argument("--lang", choices=sorted(TASK), required=True)
    f.add_argument("--canine", type=Path, required=True)
    f.add_argument("--bert", type=Path, required=True)
    f.add_argument("--data", type=Path, required=True, help="the task's data folder (train.tsv, dev.tsv)")
    f.add_argument("--noisy", type=Path, required=True, help="folder with the misspelled dev.tsv")
    f.add_argument("--work", type=Path, required=True)
    f.add_argument("--results", type=Path, required=True)
    f.add_argument("--seeds", type=int, nargs="+", default=[1])
    f.add_argument("--train-examples", type=int, default=5000)
    f.add_argument("--epochs", type=float, default=1.0)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--canine-seq-len", type=int, default=256, help="characters")
    f.add_argument("--bert-seq-len", type=int, default=64, help="WordPiece tokens")
    p = sub.add_parser("plot")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    (finetune if a.cmd == "finetune" else plot)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
