"""The classical-LM perplexity table: n-gram (1-4, KN) vs FFNN / RNN / LSTM / small Transformer (+ ELMo).

Datasets (read in place from $PLMKIT_DATA, default ../shared/data):
- WikiText-2, word level: train on valid.txt, evaluate on test.txt; vocabulary = the training
  types (valid.txt already contains ``<unk>``; unseen test words map to it). One sentence per
  non-empty line, ending in ``</s>`` (n-grams) / ``<eos>`` (neural stream): the same events.
- Tiny Shakespeare, character level: first 90% of the lines train, last 10% test (char-rnn's
  split); one sentence per non-empty line, the newline is the ``</s>`` / ``<eos>`` event.

n-gram models: plmkit.classic.ngram (unigram = add-one free MLE over the closed vocabulary;
bigram..4-gram interpolated Kneser-Ney and modified KN). Neural models are trained through the
``clm`` objective (plmkit.objectives) with a wall-clock budget each (Adam, linear decay, grad
clip 1), on random windows of the training stream, and evaluated with
``plmkit.training.evaluate_perplexity`` on consecutive test windows (each window predicts T tokens
given at most T previous ones; the n-grams see n-1, and restart at each line). ELMo is trained
with ``bilm_loss`` and reports its forward and backward perplexities separately.

    .venv/bin/python scripts/classic_table.py --budget 150 --out bench/results/classic_table.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from plmkit.classic.ngram import NgramCounts, build_model  # noqa: E402


def data_dir() -> Path:
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


class WordVocab:
    """A minimal tokenizer-like object for the clm objective (ids of a closed word/char vocabulary)."""

    def __init__(self, tokens: list[str]):
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        self.eos_token_id = self.stoi["<eos>"]
        self.pad_token_id = self.stoi["<pad>"]
        self.unk_token_id = self.stoi.get("<unk>")
        self.bos_token_id = self.mask_token_id = self.cls_token_id = self.sep_token_id = None
        self.all_special_ids = [self.eos_token_id, self.pad_token_id]
        self.kind = "word"

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sents: list[list[str]]) -> list[int]:
        unk = self.unk_token_id
        out = []
        for s in sents:
            out += [self.stoi.get(t, unk) for t in s] + [self.eos_token_id]
        return out


def load_dataset(name: str) -> tuple[list[list[str]], list[list[str]]]:
    d = data_dir()
    if name == "wikitext2":
        read = lambda f: [l.split() for l in (d / "wikitext-2" / f).read_text(encoding="utf-8").splitlines() if l.split()]  # noqa: E731
        return read("valid.txt"), read("test.txt")
    lines = [l for l in (d / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    cut = int(0.9 * len(lines))
    return [list(l) for l in lines[:cut]], [list(l) for l in lines[cut:]]


def ngram_rows(train, test) -> list[dict]:
    rows = []
    for order, method in [(1, "mle"), (2, "kn"), (3, "kn"), (4, "kn"), (2, "mkn"), (3, "mkn"), (4, "mkn")]:
        t = time.perf_counter()
        counts = NgramCounts.build(train, order)
        lm = build_model(counts, method)
        ppl = lm.perplexity(test)
        rows.append({"model": f"{order}-gram {method if order > 1 else 'MLE'}", "ppl": round(ppl, 2),
                     "seconds": round(time.perf_counter() - t, 1), "memory_mb": counts.summary()["memory_mb"]})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def neural_models(dataset: str, V: int, T: int) -> dict:
    from plmkit.models import load as load_model
    from plmkit.models.recurrent import build

    # sizes chosen for a few minutes of a shared 2-core CPU, not for state-of-the-art numbers
    word = dataset == "wikitext2"
    ctx = 4 if word else 8
    H = 128
    return {
        f"FFNN (Bengio, n-1={ctx})": lambda: build("ffnn-small", vocab_size=V, context_size=ctx,
                                                  embedding_size=64 if word else 32, hidden_size=H if word else 256,
                                                  dropout=0.3 if word else 0.1),
        f"RNN (Elman, 1x{H if word else 256})": lambda: build("rnn-small", vocab_size=V, dropout=0.3 if word else 0.1,
                                                            embedding_size=H if word else 256,
                                                            hidden_size=H if word else 256),
        f"LSTM (2x{H}, tied)": lambda: build("lstm-small", vocab_size=V, dropout=0.3 if word else 0.1,
                                             embedding_size=H, hidden_size=H),
        f"Transformer (GPT-2, 4x{H})": lambda: load_model("gpt2-tiny", vocab_size=V, hidden_size=H, num_layers=4,
                                                         num_heads=4, intermediate_size=4 * H,
                                                         max_position_embeddings=T + 1,
                                                         hidden_dropout=0.2 if word else 0.1,
                                                         attention_dropout=0.2 if word else 0.1,
                                                         bos_token_id=None, eos_token_id=None),
    }


def train_neural(make, obj, train_ids, test_windows, T, B, budget, lr, seed=0) -> dict:
    from plmkit.training import evaluate_perplexity

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, step, curve = time.perf_counter(), 0, []
    obj.prepare(model)
    model.train()
    while (el := time.perf_counter() - t0) < budget:
        for g in opt.param_groups:
            g["lr"] = lr * max(0.05, 1 - el / budget)
        starts = [rng.randrange(0, len(train_ids) - T - 1) for _ in range(B)]
        batch = obj.make_batch([train_ids[s:s + T + 1] for s in starts])
        loss, metrics = obj.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            curve.append((step, round(el, 1), round(float(loss.detach()), 3)))
            print(f"  step {step} {el:.0f}s loss {float(loss.detach()):.3f}", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    ppl = evaluate_perplexity(model, obj, test_windows, batch_size=16)
    return {"ppl": round(ppl, 2), "steps": step, "train_seconds": round(train_s, 1),
            "params": sum(p.numel() for p in model.parameters()), "curve": curve,
            "eval_seconds": round(time.perf_counter() - t0 - train_s, 1)}


def train_elmo(vocab: WordVocab, train_ids, test_ids, T, B, budget, lr, seed=0) -> dict:
    from plmkit.models.recurrent import bilm_loss, build

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = build("elmo-small", vocab_size=len(vocab), lstm_size=256)
    model.set_vocabulary(vocab.itos)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    test = torch.tensor(test_ids[: (len(test_ids) // T) * T]).view(-1, T)

    def evaluate() -> tuple[float, float]:
        model.eval()
        sf = sb = 0.0
        with torch.no_grad():
            for i in range(0, len(test), 16):
                _, m = bilm_loss(model, test[i:i + 16])
                sf += m["fwd_loss"] * len(test[i:i + 16])
                sb += m["bwd_loss"] * len(test[i:i + 16])
        model.train()
        return math.exp(sf / len(test)), math.exp(sb / len(test))

    before = evaluate()
    t0, step, curve = time.perf_counter(), 0, []
    while (el := time.perf_counter() - t0) < budget:
        for g in opt.param_groups:
            g["lr"] = lr * max(0.05, 1 - el / budget)
        starts = [rng.randrange(0, len(train_ids) - T) for _ in range(B)]
        batch = torch.tensor([train_ids[s:s + T] for s in starts])
        loss, m = bilm_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            curve.append((step, round(el, 1), round(m["fwd_loss"], 3), round(m["bwd_loss"], 3)))
            print(f"  elmo step {step} {el:.0f}s fwd {m['fwd_loss']:.3f} bwd {m['bwd_loss']:.3f}", file=sys.stderr, flush=True)
    after = evaluate()
    return {"fwd_ppl_before": round(before[0], 1), "bwd_ppl_before": round(before[1], 1),
            "fwd_ppl": round(after[0], 2), "bwd_ppl": round(after[1], 2), "steps": step, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["wikitext2", "shakespeare"])
    ap.add_argument("--budget", type=float, default=150, help="training seconds per neural model")
    ap.add_argument("--models", nargs="*", default=None, help="substrings selecting neural models (default all)")
    ap.add_argument("--elmo", action="store_true", help="also train ELMo on WikiText-2 (forward/backward ppl)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import plmkit.objectives as objectives

    results = {}
    for ds in args.datasets:
        train, test = load_dataset(ds)
        types = sorted({t for s in train for t in s})
        specials = ["<eos>", "<pad>"] + ([] if "<unk>" in types else [])
        vocab = WordVocab(specials + types)
        T, B = (32, 16) if ds == "wikitext2" else (64, 32)
        train_ids, test_ids = vocab.encode(train), vocab.encode(test)
        test_windows = [test_ids[i:i + T + 1] for i in range(0, len(test_ids) - 1, T)]
        test_windows = [w for w in test_windows if len(w) > 1]
        print(f"{ds}: train {len(train_ids)} tokens, test {len(test_ids)}, vocab {len(vocab)}", file=sys.stderr)
        res = {"level": "word" if ds == "wikitext2" else "char", "vocab": len(vocab),
               "train_tokens": len(train_ids), "test_tokens": len(test_ids), "rows": ngram_rows(train, test)}
        obj = objectives.build("clm", tokenizer=vocab)
        for name, make in neural_models(ds, len(vocab), T).items():
            if args.models and not any(m.lower() in name.lower() for m in args.models):
                continue
            print(f"{ds}: {name}", file=sys.stderr, flush=True)
            lr = 1e-3 if "Transformer" in name else 3e-3
            r = train_neural(make, obj, train_ids, test_windows, T, B, args.budget, lr)
            res["rows"].append({"model": name, **r})
            print({k: v for k, v in r.items() if k != "curve"}, file=sys.stderr, flush=True)
        if args.elmo and ds == "wikitext2":
            res["elmo"] = train_elmo(vocab, train_ids, test_ids, T, B, args.budget, 2e-3)
            print(res["elmo"], file=sys.stderr, flush=True)
        results[ds] = res
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    for ds, res in results.items():
        print(f"\n{ds} ({res['level']}-level, vocab {res['vocab']}, {res['train_tokens']} train / "
              f"{res['test_tokens']} test tokens)")
        for r in res["rows"]:
            print(f"  {r['model']:32s} {r['ppl']:>10.2f}")
        if "elmo" in res:
            e = res["elmo"]
            print(f"  ELMo biLM forward {e['fwd_ppl_before']} -> {e['fwd_ppl']}, "
                  f"backward {e['bwd_ppl_before']} -> {e['bwd_ppl']}")


if __name__ == "__main__":
    main()
