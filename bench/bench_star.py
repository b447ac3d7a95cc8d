"""Star-Transformer (``extra.attention="star"``) vs full attention of the same size.

Two measurements:

  python bench/bench_star.py speed [--lengths 128 256 ... 4096] [--threads 1]
      forward and forward+backward time and peak memory of one sequence (batch 1) through the same
      encoder (hidden 128, 2 layers, 4 heads, FFN 512, no output head) with star or full attention, as
      the sequence length grows. Every (attention, length) runs in a fresh subprocess; peak memory is
      that process's ru_maxrss minus its RSS after building the model (activations + gradients).
      Writes bench/results/star_speed.json.

  python bench/bench_star.py sst2 --data ../shared/data/glue/SST-2 [--seeds 1 2] [--epochs 1]
      SST-2 from scratch: a WordPiece tokenizer trained on the SST-2 training sentences, a small
      encoder (hidden 64, 2 layers, 4 heads, FFN 256) with star or full attention, classifier on
      [h_0; max-pool over tokens] (the relay + max-pool of the Star-Transformer paper, used for both
      arms), AdamW, dev accuracy. Same data order, steps and initial weights per seed for both arms.
      Writes bench/results/star_sst2.json.

Load matters on a shared machine: each run prints ``os.getloadavg()`` before it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

RESULTS = REPO / "bench" / "results"


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------- speed / memory
def one_speed(attention: str, T: int, reps: int) -> dict:
    import torch

    import plmkit

    torch.manual_seed(0)
    extra = {"attention": "star"} if attention == "star" else {}
    model = plmkit.load("bert-tiny", vocab_size=8000, hidden_size=128, num_layers=2, num_heads=4,
                        intermediate_size=512, max_position_embeddings=max(T, 512), head=None,
                        hidden_dropout=0.0, attention_dropout=0.0, extra=extra)
    ids = torch.randint(5, 8000, (1, T))
    base = _rss_kb()
    fwd, fb = [], []
    for r in range(reps + 1):
        with torch.no_grad():
            t0 = time.perf_counter()
            model(ids)
            t1 = time.perf_counter()
        t2 = time.perf_counter()
        model(ids).last_hidden_state.float().pow(2).mean().backward()
        t3 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        if r:  # the first repetition warms up
            fwd.append(t1 - t0)
            fb.append(t3 - t2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {"attention": attention, "T": T, "forward_s": statistics.median(fwd),
            "forward_backward_s": statistics.median(fb), "peak_mb": (peak - base) / 1024.0}


def speed(args) -> None:
    rows = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for T in args.lengths:
        for att in ("full", "star"):
            cmd = [sys.executable, __file__, "_one", att, str(T), str(args.reps)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                raise SystemExit(res.returncode)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)
    print("\n| T | full fwd (s) | star fwd (s) | full fwd+bwd (s) | star fwd+bwd (s) | full peak MB | star peak MB |")
    print("|---|---|---|---|---|---|---|")
    by = {(r["attention"], r["T"]): r for r in rows}
    for T in args.lengths:
        f, s = by[("full", T)], by[("star", T)]
        print(f"| {T} | {f['forward_s']:.3f} | {s['forward_s']:.3f} | {f['forward_backward_s']:.3f} | "
              f"{s['forward_backward_s']:.3f} | {f['peak_mb']:.0f} | {s['peak_mb']:.0f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "star_speed.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


# ----------------------------------------------------------------------------- SST-2
def _read_tsv(path: Path) -> list[tuple[str, int]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            s, y = line.rstrip("\n").rsplit("\t", 1)
            rows.append((s.strip(), int(y)))
    return rows


def sst2(args) -> None:
    import torch
    import torch.nn.functional as F

    import plmkit
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    train, dev = _read_tsv(data / "train.tsv"), _read_tsv(data / "dev.tsv")
    if args.max_train:
        g = torch.Generator().manual_seed(0)
        train = [train[i] for i in torch.randperm(len(train), generator=g)[: args.max_train].tolist()]
    tok = train_tokenizer_from_iterator((s for s, _ in train), kind="wordpiece", vocab_size=args.vocab)

    def encode(rows):
        out = []
        for s, y in rows:
            ids = tok.encode(s)[: args.max_len]
            out.append((ids, y))
        return out

    tr, dv = encode(train), encode(dev)
    pad = tok.pad_token_id

    def batchify(rows):
        T = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), T), pad, dtype=torch.long)
        for i, (x, _) in enumerate(rows):
            ids[i, : len(x)] = torch.tensor(x)
        am = (torch.arange(T)[None] < torch.tensor([len(r[0]) for r in rows])[:, None]).long()
        return ids, am, torch.tensor([r[1] for r in rows])

    class Classifier(torch.nn.Module):
        def __init__(self, attention: str):
            super().__init__()
            extra = {"attention": "star"} if attention == "star" else {}
            self.enc = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=args.hidden, num_layers=args.layers,
                                   num_heads=4, intermediate_size=4 * args.hidden, head=None, pooler=False,
                                   pad_token_id=pad, extra=extra)
            self.drop = torch.nn.Dropout(0.1)
            self.out = torch.nn.Linear(2 * args.hidden, 2)

        def forward(self, ids, am):
            h = self.enc(ids, attention_mask=am).last_hidden_state  # (B, T, H)
            mx = h.masked_fill(~am.bool()[..., None], float("-inf")).amax(1)
            return self.out(self.drop(torch.cat([h[:, 0], mx], -1)))

    results = []
    print(f"load average before: {os.getloadavg()}; train {len(tr)}, dev {len(dv)}, vocab {len(tok)}", flush=True)
    for seed in args.seeds:
        for att in ("full", "star"):
            torch.manual_seed(seed)  # same parameters in the same order: identical initial weights per seed
            model = Classifier(att)
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
            g = torch.Generator().manual_seed(seed)
            steps = 0
            t0 = time.time()
            total = args.epochs * ((len(tr) + args.batch_size - 1) // args.batch_size)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / total))
            model.train()
            for _ in range(args.epochs):
                order = torch.randperm(len(tr), generator=g).tolist()
                for i in range(0, len(order), args.batch_size):
                    ids, am, y = batchify([tr[j] for j in order[i:i + args.batch_size]])
                    loss = F.cross_entropy(model(ids, am), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    steps += 1
            train_s = time.time() - t0
            model.eval()
            correct = 0
            with torch.no_grad():
                for i in range(0, len(dv), 128):
                    ids, am, y = batchify(dv[i:i + 128])
                    correct += int((model(ids, am).argmax(-1) == y).sum())
            row = {"attention": att, "seed": seed, "dev_acc": correct / len(dv), "steps": steps,
                   "train_s": round(train_s, 1), "final_train_loss": float(loss.detach()), "load": os.getloadavg()[0]}
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for att in ("full", "star"):
        accs = [r["dev_acc"] for r in results if r["attention"] == att]
        summary[att] = {"mean": statistics.mean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                        "n": len(accs)}
        print(f"{att}: dev acc {summary[att]['mean']:.4f} ± {summary[att]['sd']:.4f} (sd) over {len(accs)} seeds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / args.results).write_text(json.dumps({"args": vars(args), "runs": results, "summary": summary},
                                                       indent=1, default=str))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(one_speed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    s.add_argument("--reps", type=int, default=3)
    s.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("sst2")
    c.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    c.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--max-train", type=int, default=0, help="subsample the training set (0 = all 67,349)")
    c.add_argument("--max-len", type=int, default=64)
    c.add_argument("--vocab", type=int, default=8000)
    c.add_argument("--hidden", type=int, default=64)
    c.add_argument("--layers", type=int, default=2)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--results", default="star_sst2.json", help="file name under bench/results/")
    args = p.parse_args()
    speed(args) if args.cmd == "speed" else sst2(args)


if __name__ == "__main__":
    main()
