"""Figures of docs/MODELS.md from finished `plm pretrain` runs.

    python scripts/models_figures.py prophetnet RUN_N2 RUN_N1 [--examples 256] [--out docs/figures/prophetnet.png]
    python scripts/models_figures.py ernie2 RUN_KEEP RUN_SEQ [--out docs/figures/ernie2.png]

prophetnet: for each run (its final/ model, tokenizer and data/valid store), on the first ``--examples``
held-out 128-token windows corrupted by MASS with one fixed seed (the recipe's fragment_ratio 0.15):
teacher-forced next-token loss / accuracy of the main stream, and free-running greedy decoding of the
masked span (the decoder is fed its own predictions at the span's positions): token accuracy of the
generated span against the original. Prints a markdown table (and a PNG of the held-out curves).

ernie2: per-task held-out accuracy (``eval.jsonl``) at every evaluation of both runs: a markdown table
and a PNG (one panel per task, both runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _evals(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines() if line.strip()]


@torch.no_grad()
def prophetnet(runs: list[Path], examples: int, out: Path | None) -> None:
    import plmkit
    from plmkit.data import TokenStore
    from plmkit.objectives import build

    rows = []
    for run in runs:
        tok = plmkit.load_tokenizer(run / "final")
        model = plmkit.load(run / "final").eval()
        store = TokenStore(run / "data" / "valid", tokenizer=tok)
        wins = store.windows(128)
        data = [wins[i] for i in range(min(examples, len(wins)))]
        mass = build("mass", tokenizer=tok, fragment_ratio=0.15)
        torch.manual_seed(1234)
        nll = correct = n = gen_ok = 0
        for s in range(0, len(data), 32):
            batch = mass.make_batch(data[s:s + 32])
            kw = {k: batch[k] for k in ("attention_mask", "decoder_input_ids", "decoder_attention_mask",
                                        "decoder_position_ids")}
            logits = model(batch["input_ids"], **kw).logits
            sel = batch["labels"] != -100
            y = batch["labels"][sel]
            nll += float(torch.nn.functional.cross_entropy(logits[sel].float(), y, reduction="sum"))
            correct += int((logits[sel].argmax(-1) == y).sum())
            n += int(y.numel())
            # free-running greedy decoding of the span at its positions
            enc = model.encode(batch["input_ids"], batch["attention_mask"])[0]
            dec = batch["decoder_input_ids"][:, :1]
            U = batch["labels"].shape[1]
            for t in range(U):
                lg = model(encoder_outputs=enc, attention_mask=batch["attention_mask"], decoder_input_ids=dec,
                           decoder_position_ids=batch["decoder_position_ids"][:, :t + 1]).logits[:, -1]
                dec = torch.cat([dec, lg.argmax(-1, keepdim=True)], dim=1)
            gen = dec[:, 1:]
            gen_ok += int((gen[sel] == y).sum())
        rows.append((run.name, nll / n, correct / n, gen_ok / n, n))
    print("| run | held-out next-token loss | next-token acc | greedy span token acc | span tokens |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} |")
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for run in runs:
            ev = _evals(run)
            ax.plot([e["step"] for e in ev], [e["prophetnet_loss"] for e in ev], marker="o", label=run.name)
        ax.set_xlabel("step")
        ax.set_ylabel("held-out next-token loss (main stream)")
        ax.legend()
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)


def ernie2(runs: list[Path], out: Path | None) -> None:
    tasks = [("mlm", "mlm/mlm_acc"), ("cap_pred", "cap_pred/cap_acc"), ("sent_reorder", "sent_reorder/reorder_acc"),
             ("sent_distance", "sent_distance/distance_acc")]
    print("| run | step | " + " | ".join(t for t, _ in tasks) + " |")
    print("|---|---|" + "---|" * len(tasks))
    for run in runs:
        for e in _evals(run):
            print(f"| {run.name} | {e['step']} | " + " | ".join(f"{e.get(k, float('nan')):.3f}" for _, k in tasks)
                  + " |")
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3))
        for ax, (t, k) in zip(axes, tasks):
            for run in runs:
                ev = _evals(run)
                ax.plot([e["step"] for e in ev], [e[k] for e in ev], marker="o", label=run.name)
            ax.set_title(t)
            ax.set_xlabel("step")
        axes[0].set_ylabel("held-out accuracy")
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=["prophetnet", "ernie2"])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.which == "prophetnet":
        prophetnet(a.runs, a.examples, a.out)
    else:
        ernie2(a.runs, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
