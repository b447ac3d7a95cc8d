"""The classical-LM perplexity table: n-gram (1-4, KN) vs FFNN / RNN / LSTM / small Transformer (+ ELMo).

Datasets (read in place from $PLMKIT_DATA, default ../shared/data):
- WikiText-2, word level: train on valid.txt, evaluate on test.txt; vocabulary = the training
  types (valid.txt already contains ``<unk>``; unseen test words map to it). One sentence per
  non-empty line, ending in ``</s>`` (n-grams) / ``<eos>`` (neural stream): the same events.
- Tiny Shakespeare, character level: first 90% of the lines train, last 10% test (char-rnn's
  split); one sentence per non-empty line, the newline is the ``</s>`` / ``<eos>`` event.

n-gram models: plmkit.classic.ngram (unigram = add-one free MLE over the closed vocabulary;
bigram..4-gram interpolated Kneser-Ney and modified KN), trained on the whole training file.

Neural models (FFNN, Elman RNN, 2-layer LSTM, small GPT-2 Transformer; all with tied input/output
embeddings, dropout, AdamW weight decay) train for a budget of CPU seconds of their own process
(one torch thread; CPU time rather than wall-clock so that a shared, loaded machine does not
shrink the budget): epochs of shuffled non-overlapping (T+1)-token windows of the training
stream, B windows a batch, 5% linear warm-up then cosine decay, gradient clipping 0.5. The last
``--heldout`` (5%) of the training lines are held out (words unseen in the rest map to <unk>);
the held-out perplexity is measured 12 times per budget and the best state is kept (early
stopping after 4 evaluations without improvement). Nothing is tuned on the test file. Test
perplexity comes from ``plmkit.training.evaluate_perplexity`` (``clm`` objective) on consecutive
test windows: each window predicts T tokens given at most T previous ones (the n-grams see n-1,
and restart at each line). ELMo (char-CNN + 2-layer forward/backward LSTMs) trains the same way
with ``bilm_loss`` and reports its forward and backward perplexities; ``--elmo-save DIR`` writes
it with a word-level tokenizer (``plmkit.classic.elmo.save_elmo``; ``--elmo-extra-words`` adds an
SST-2 training vocabulary, spelled by the char-CNN) for ``plm finetune --model DIR --mode features``.

The WikiText-2 table in bench/results/classic_table.json came from one model per invocation
(never two at once), e.g.

    .venv/bin/python scripts/classic_table.py --datasets wikitext2 --budget 450 --models lstm \
        --out bench/results/classic_table.json
    .venv/bin/python scripts/classic_table.py --datasets wikitext2 --budget 450 --models transformer \
        --no-ngrams --merge --out bench/results/classic_table.json      # then ffnn, rnn
    .venv/bin/python scripts/classic_table.py --datasets wikitext2 --budget 450 --models --no-ngrams --merge \
        --elmo --elmo-save runs/elmo-wt2 --elmo-extra-words ../shared/data/glue/SST-2/train.tsv \
        --out bench/results/classic_table.json

The Tiny Shakespeare table in bench/results/classic_table_shakespeare.json: the n-gram rows are
from the earlier run (same split); the neural rows were retrained with this procedure (T = 128
chars, B = 32, 300 CPU-s each), one model per invocation, after dropping the old neural rows:

    for m in lstm transformer rnn ffnn; do
        OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/classic_table.py --datasets shakespeare \
            --budget 300 --models $m --no-ngrams --merge --out bench/results/classic_table_shakespeare.json
    done

(The LSTM was run twice, dropout 0.2 then 0.1; 0.1 is kept, chosen on held-out ppl, 5.46 vs 5.58.)
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


# Hyper-parameters of the neural rows. WikiText-2 (216k training tokens) needs strong regularisation:
# dropout on embeddings / between layers / before the output, weight decay, tied input-output
# embeddings; the char-level Tiny Shakespeare models keep light dropout.
def neural_models(dataset: str, V: int, T: int) -> dict:
    from plmkit.models import load as load_model
    from plmkit.classic.recurrent import build

    if dataset == "wikitext2":
        return {
            "FFNN (Bengio, n-1=5)": (dict(lr=2e-3, weight_decay=0.1), lambda: build(
                "ffnn-small", vocab_size=V, context_size=5, embedding_size=200, hidden_size=500, dropout=0.4,
                tie_word_embeddings=True)),
            "RNN (Elman, 1x256, tied)": (dict(lr=2e-3, weight_decay=0.1), lambda: build(
                "rnn-small", vocab_size=V, embedding_size=256, hidden_size=256, dropout=0.4,
                tie_word_embeddings=True)),
            "LSTM (2x256, tied)": (dict(lr=3e-3, weight_decay=0.1), lambda: build(
                "lstm-small", vocab_size=V, embedding_size=256, hidden_size=256, num_layers=2, dropout=0.3,
                tie_word_embeddings=True)),
            "Transformer (GPT-2, 4x192, tied)": (dict(lr=1.5e-3, weight_decay=0.1), lambda: load_model(
                "gpt2-tiny", vocab_size=V, hidden_size=192, num_layers=4, num_heads=4, intermediate_size=4 * 192,
                max_position_embeddings=T + 1, hidden_dropout=0.3, attention_dropout=0.2,
                tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)),
        }
    # Tiny Shakespeare, char level (V = 66, ~1M training chars): the same procedure with char-sized
    # models, light dropout and weight decay, longer contexts (T = 128 chars; the FFNN sees 10).
    return {
        "FFNN (Bengio, n-1=10, tied)": (dict(lr=2e-3, weight_decay=0.01), lambda: build(
            "ffnn-small", vocab_size=V, context_size=10, embedding_size=64, hidden_size=512, dropout=0.1,
            tie_word_embeddings=True)),
        "RNN (Elman, 1x512, tied)": (dict(lr=2e-3, weight_decay=0.01), lambda: build(
            "rnn-small", vocab_size=V, embedding_size=512, hidden_size=512, dropout=0.1,
            tie_word_embeddings=True)),
        "LSTM (2x256, tied)": (dict(lr=3e-3, weight_decay=0.01), lambda: build(
            "lstm-small", vocab_size=V, embedding_size=256, hidden_size=256, num_layers=2, dropout=0.1,
            tie_word_embeddings=True)),
        "Transformer (GPT-2, 4x128, tied)": (dict(lr=2e-3, weight_decay=0.1), lambda: load_model(
            "gpt2-tiny", vocab_size=V, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=4 * 128,
            max_position_embeddings=T + 1, hidden_dropout=0.1, attention_dropout=0.1,
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)),
    }


def lr_at(base: float, frac: float, warmup: float = 0.05, floor: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of the budget, then cosine decay to ``floor * base``."""
    if frac < warmup:
        return base * max(frac / warmup, 0.01)
    t = min(1.0, (frac - warmup) / (1 - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices / embeddings only (not biases, gains, scalars)."""
    seen, decay, rest = set(), [], []
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr)


def epoch_windows(n_tokens: int, T: int, rng: random.Random) -> list[int]:
    """Start offsets of the non-overlapping (T + 1)-token windows covering the stream once, from a
    random phase, shuffled: one epoch."""
    phase = rng.randrange(T)
    starts = list(range(phase, n_tokens - T - 1, T))
    rng.shuffle(starts)
    return starts


def fit(model, step_loss, eval_loss, train_ids, T, B, budget, lr, weight_decay, eval_every, patience, seed) -> dict:
    """Train ``model`` for ``budget`` seconds of this process's CPU time (epochs over ``train_ids``;
    CPU time, not wall-clock, so that a model's budget does not shrink when other jobs load the
    shared machine), evaluating the held-out loss every ``eval_every`` CPU seconds; keep the best
    state (early stopping after ``patience`` evaluations without improvement). Evaluation time is
    not charged to the budget."""
    import copy

    rng = random.Random(seed)
    opt = make_optimizer(model, lr, weight_decay)
    best, best_state, best_at, bad = float("inf"), None, None, 0
    step, epoch, wall, cpu, next_eval, curve, stop = 0, 0, 0.0, 0.0, eval_every, [], ""
    model.train()
    while not stop:
        starts = epoch_windows(len(train_ids), T, rng)
        epoch += 1
        for i in range(0, len(starts) - B + 1, B):
            t, c = time.perf_counter(), time.process_time()
            for g in opt.param_groups:
                g["lr"] = lr_at(lr, cpu / budget)
            batch = torch.tensor([train_ids[s:s + T + 1] for s in starts[i:i + B]])
            loss = step_loss(model, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            step += 1
            wall += time.perf_counter() - t
            cpu += time.process_time() - c
            if cpu >= next_eval or cpu >= budget:
                next_eval += eval_every
                held = eval_loss(model)
                model.train()
                curve.append({"step": step, "epoch": round(epoch - 1 + (i + B) / len(starts), 2),
                              "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                              "train_loss": round(float(loss.detach()), 3), "heldout_ppl": round(math.exp(held), 2)})
                print(f"  {curve[-1]}", file=sys.stderr, flush=True)
                if held < best - 1e-4:
                    best, best_at, bad = held, curve[-1], 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                    if bad >= patience:
                        stop = f"early stop: no held-out improvement in {patience} evaluations"
                        break
                if cpu >= budget:
                    stop = "budget"
                    break
    model.load_state_dict(best_state)
    return {"steps": step, "epochs": curve[-1]["epoch"], "train_cpu_seconds": round(cpu, 1),
            "train_wall_seconds": round(wall, 1), "stopped": stop, "best": best_at,
            "heldout_ppl": round(math.exp(best), 2), "curve": curve}


def windows_of(ids: list[int], T: int) -> list[list[int]]:
    """Consecutive (T + 1)-token windows overlapping by one token: each predicts T tokens."""
    w = [ids[i:i + T + 1] for i in range(0, len(ids) - 1, T)]
    return [x for x in w if len(x) > 1]


def train_neural(make, hp: dict, obj, train_ids, held_ids, test_ids, T, B, budget, seed=0) -> dict:
    import torch.nn.functional as F

    from plmkit.training import evaluate_perplexity

    torch.manual_seed(seed)
    model = make()
    obj.prepare(model)
    held = windows_of(held_ids, T)

    def step_loss(m, batch):  # full logits (cheaper than the objective's recomputed chunks at this size)
        logits = m(batch[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))

    def eval_loss(m):
        return math.log(evaluate_perplexity(m, obj, held, batch_size=32))

    r = fit(model, step_loss, eval_loss, train_ids, T, B, budget, hp["lr"], hp["weight_decay"],
            eval_every=max(20.0, budget / 12), patience=4, seed=seed)
    t = time.perf_counter()
    ppl = evaluate_perplexity(model, obj, windows_of(test_ids, T), batch_size=32)
    seen = {id(p): p.numel() for p in model.parameters()}
    return {"ppl": round(ppl, 2), **r, "params": sum(seen.values()), "eval_seconds": round(time.perf_counter() - t, 1),
            "hparams": {**hp, "T": T, "B": B, "budget_cpu_s": budget, "grad_clip": 0.5, "optimizer": "AdamW",
                        "schedule": "5% linear warm-up, cosine to 5% (by training CPU time)",
                        "dropout": getattr(model.config, "dropout", None) or getattr(model.config, "hidden_dropout", None)}}


def train_elmo(vocab: WordVocab, train_ids, held_ids, test_ids, T, B, budget, lr, seed=0,
               save: str | None = None, extra_words: list[str] | None = None) -> dict:
    from plmkit.classic.recurrent import build
    from plmkit.objectives.bilm import bilm_loss

    torch.manual_seed(seed)
    model = build("elmo-small", vocab_size=len(vocab), hidden_size=384, lstm_size=192, dropout=0.3)
    model.set_vocabulary(vocab.itos)

    def rows(ids):
        return torch.tensor(ids[: (len(ids) // T) * T]).view(-1, T)

    def evaluate(ids) -> tuple[float, float]:
        data = rows(ids)
        model.eval()
        sf = sb = 0.0
        with torch.no_grad():
            for i in range(0, len(data), 32):
                _, m = bilm_loss(model, data[i:i + 32])
                sf += m["fwd_loss"] * len(data[i:i + 32])
                sb += m["bwd_loss"] * len(data[i:i + 32])
        return sf / len(data), sb / len(data)

    def eval_loss(m):
        f, b = evaluate(held_ids)
        return (f + b) / 2

    r = fit(model, lambda m, batch: bilm_loss(m, batch)[0], eval_loss, train_ids, T, B, budget, lr, 0.1,
            eval_every=max(20.0, budget / 12), patience=4, seed=seed)
    t = time.perf_counter()
    f, b = evaluate(test_ids)
    out = {"fwd_ppl": round(math.exp(f), 2), "bwd_ppl": round(math.exp(b), 2), **r,
           "params": sum(p.numel() for p in model.parameters()), "eval_seconds": round(time.perf_counter() - t, 1),
           "hparams": {"lr": lr, "weight_decay": 0.1, "T": T, "B": B, "budget_cpu_s": budget, "dropout": 0.3,
                       "hidden_size": 384, "lstm_size": 192, "char_filters": model.config.char_filters}}
    if save:
        out["checkpoint"] = save_elmo(model, vocab, save, extra_words or [])
    return out


def save_elmo(model, vocab: WordVocab, out_dir: str, extra_words: list[str]) -> dict:
    """plmkit.classic.elmo.save_elmo: checkpoint + word-level tokenizer (``plm finetune --model OUT_DIR``)."""
    from plmkit.classic.elmo import save_elmo as save

    return save(model, vocab.itos, out_dir, extra_words)


def sst2_words(path: str) -> list[str]:
    """Whitespace tokens of an SST-2 train.tsv (header ``sentence<TAB>label``)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    return sorted({w for l in lines for w in l.split("\t")[0].split()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["wikitext2", "shakespeare"])
    ap.add_argument("--budget", type=float, default=480, help="training CPU seconds per neural model")
    ap.add_argument("--models", nargs="*", default=None, help="substrings selecting neural models (default all; "
                    "pass none to skip them)")
    ap.add_argument("--no-ngrams", action="store_true", help="skip the n-gram rows (kept from --out with --merge)")
    ap.add_argument("--elmo", action="store_true", help="also train ELMo on WikiText-2 (forward/backward ppl)")
    ap.add_argument("--elmo-save", default=None, help="save the ELMo biLM + tokenizer here (plm finetune --model)")
    ap.add_argument("--elmo-extra-words", default=None, help="SST-2 train.tsv whose words join the saved vocabulary")
    ap.add_argument("--heldout", type=float, default=0.05, help="fraction of training lines held out for early stopping")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test tokens only (smoke runs)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", action="store_true", help="update --out in place: replace rows by model name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import plmkit.objectives as objectives

    results = json.loads(Path(args.out).read_text()) if args.merge and args.out and Path(args.out).exists() else {}
    for ds in args.datasets:
        train, test = load_dataset(ds)
        types = sorted({t for s in train for t in s})
        specials = ["<eos>", "<pad>"] + ([] if "<unk>" in types else [])
        vocab = WordVocab(specials + types)
        T, B = (64, 16) if ds == "wikitext2" else (128, 32)
        cut = int(round(len(train) * (1 - args.heldout)))
        # held-out words never seen in the training part become <unk> (as unseen test words do);
        # otherwise a neural LM's held-out ppl is dominated by words it was trained never to predict
        seen = {t for s in train[:cut] for t in s}
        unk = "<unk>" if "<unk>" in vocab.stoi else None
        held = [[t if t in seen or unk is None else unk for t in s] for s in train[cut:]]
        train_ids, held_ids, test_ids = vocab.encode(train[:cut]), vocab.encode(held), vocab.encode(test)
        if args.test_limit:
            test_ids = test_ids[: args.test_limit]
        all_train = len(train_ids) + len(held_ids)
        print(f"{ds}: train {all_train} tokens ({len(held_ids)} held out), test {len(test_ids)}, vocab {len(vocab)}",
              file=sys.stderr)
        res = results.get(ds, {})
        res.update({"level": "word" if ds == "wikitext2" else "char", "vocab": len(vocab), "train_tokens": all_train,
                    "test_tokens": len(test_ids), "heldout_tokens": len(held_ids),
                    "heldout": f"last {args.heldout:.0%} of the training lines (not trained on; words unseen in the "
                               "rest map to <unk>)"})
        rows = res.get("rows", [])

        def put(row: dict) -> None:
            rows[:] = [r for r in rows if r["model"] != row["model"]] + [row]
            res["rows"] = rows
            results[ds] = res
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1) + "\n")

        if not args.no_ngrams:
            for row in ngram_rows(train, test):
                put(row)
        obj = objectives.build("clm", tokenizer=vocab, separator=False)
        for name, (hp, make) in neural_models(ds, len(vocab), T).items():
            if args.models is not None and not any(m.lower() in name.lower() for m in args.models):
                continue
            print(f"{ds}: {name}", file=sys.stderr, flush=True)
            r = train_neural(make, hp, obj, train_ids, held_ids, test_ids, T, B, args.budget)
            put({"model": name, **r})
            print({k: v for k, v in r.items() if k != "curve"}, file=sys.stderr, flush=True)
        if args.elmo and ds == "wikitext2":
            extra = sst2_words(args.elmo_extra_words) if args.elmo_extra_words else []
            res["elmo"] = train_elmo(vocab, train_ids, held_ids, test_ids, T, B, args.budget, 2e-3,
                                     save=args.elmo_save, extra_words=extra)
            put({"model": "ELMo biLM forward", "ppl": res["elmo"]["fwd_ppl"]})
            put({"model": "ELMo biLM backward", "ppl": res["elmo"]["bwd_ppl"]})
            print({k: v for k, v in res["elmo"].items() if k != "curve"}, file=sys.stderr, flush=True)
    for ds, res in results.items():
        print(f"\n{ds} ({res['level']}-level, vocab {res['vocab']}, {res['train_tokens']} train / "
              f"{res['test_tokens']} test tokens)")
        for r in res["rows"]:
            print(f"  {r['model']:36s} {r['ppl']:>10.2f}")


if __name__ == "__main__":
    main()
