"""SST-2 from sentence features: word2vec alone vs [word2vec; CoVe] (McCann et al. 2017), one classifier.

    PYTHONPATH=src python scripts/cove_sst2.py --cove runs/cove/final --data ../shared/data/glue/SST-2 \
        --train-sizes 1000 5000 --seeds 1 2 --out runs/cove_sst2.json

- word2vec (``plmkit.classic.word2vec``, skip-gram, negative sampling) is trained on the SST-2 training
  sentences (``--w2v-sentences`` of them, whitespace words, as GLUE ships them: lower-cased, tokenized);
- CoVe = the outputs of the MT-LSTM's encoder (``plmkit.classic.recurrent.CoVe``, trained by
  ``plm pretrain recipes/cove/mt-cmn-eng.yaml``) over the sentence in the MT model's own WordPiece
  tokens, the source laid out as in training (tokens + [SEP]);
- a sentence's features: the mean of its word vectors (unknown words skipped), and for CoVe the mean and the
  max over its positions (the paper feeds [GloVe(w); CoVe(w)] per word into a biattentive classification
  network; a pooled linear classifier is the small version);
- the classifier: standardised features -> logistic regression (full-batch Adam, ``--steps``, weight decay),
  the same for each arm; a seed draws the training subset and the initialisation. Scored on the dev set.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch


def read_sst2(path: Path) -> tuple[list[str], list[int]]:
    from plmkit.tasks.readers import read_table

    rows = read_table(path)
    return [r.text for r in rows], [int(r.label) for r in rows]


def w2v_features(vectors, sentences: list[str]) -> np.ndarray:
    out = np.zeros((len(sentences), vectors.vectors.shape[1]), dtype=np.float32)
    for i, s in enumerate(sentences):
        vs = [vectors[w] for w in s.split() if w in vectors]
        if vs:
            out[i] = np.mean(vs, 0)
    return out


@torch.no_grad()
def cove_features(model, tok, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    model.eval()
    sep = tok.sep_token_id
    feats = []
    for b in range(0, len(sentences), batch_size):
        ids = [tok.encode(s, add_special_tokens=False)[:62] + [sep] for s in sentences[b:b + batch_size]]
        T = max(len(x) for x in ids)
        x = torch.full((len(ids), T), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        enc = model(x, attention_mask=mask).last_hidden_state  # (B, T, 2H)
        m = mask[..., None].bool()
        mean = (enc * m).sum(1) / m.sum(1)
        mx = enc.masked_fill(~m, float("-inf")).max(1).values
        feats.append(torch.cat([mean, mx], -1).numpy())
    return np.concatenate(feats)


def logistic_regression(xtr: np.ndarray, ytr: np.ndarray, xdev: np.ndarray, seed: int, steps: int,
                        lr: float, weight_decay: float) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xt = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    xd = torch.tensor((xdev - mu) / sd, dtype=torch.float32)
    y = torch.tensor(ytr, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(xt.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (xd @ w + b > 0).long().numpy()


def main(argv=None) -> int:
    import plmkit
    from plmkit.classic.word2vec import train_word2vec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cove", required=True, help="the MT-LSTM checkpoint directory (plm pretrain ... final/)")
    ap.add_argument("--data", required=True, help="GLUE SST-2 directory (train.tsv, dev.tsv)")
    ap.add_argument("--train-sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--w2v-sentences", type=int, default=67349)
    ap.add_argument("--w2v-dim", type=int, default=100)
    ap.add_argument("--w2v-epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    tr_text, tr_y = read_sst2(Path(a.data) / "train.tsv")
    dev_text, dev_y = read_sst2(Path(a.data) / "dev.tsv")
    w2v = train_word2vec([s.split() for s in tr_text[: a.w2v_sentences]], vector_size=a.w2v_dim,
                         epochs=a.w2v_epochs, min_count=2, seed=1)
    print(f"word2vec: {len(w2v)} words, {time.time() - t0:.0f}s", file=sys.stderr)
    model = plmkit.load(a.cove)
    tok = plmkit.load_tokenizer(a.cove)
    need = sorted({i for n in a.train_sizes for s in a.seeds for i in random.Random(s).sample(range(len(tr_text)), n)})
    idx_of = {i: k for k, i in enumerate(need)}
    sub_text = [tr_text[i] for i in need]
    feats = {"w2v": (w2v_features(w2v, sub_text), w2v_features(w2v, dev_text))}
    c_tr, c_dev = cove_features(model, tok, sub_text), cove_features(model, tok, dev_text)
    feats["cove"] = (c_tr, c_dev)
    feats["w2v+cove"] = (np.concatenate([feats["w2v"][0], c_tr], 1), np.concatenate([feats["w2v"][1], c_dev], 1))
    print(f"features: {len(need)} train + {len(dev_text)} dev sentences, {time.time() - t0:.0f}s", file=sys.stderr)
    ydev = np.array(dev_y)
    results = []
    for n in a.train_sizes:
        for s in a.seeds:
            rows = [idx_of[i] for i in random.Random(s).sample(range(len(tr_text)), n)]
            ytr = np.array([tr_y[need[r]] for r in rows])
            for arm, (xtr, xdev) in feats.items():
                pred = logistic_regression(xtr[rows], ytr, xdev, s, a.steps, a.lr, a.weight_decay)
                acc = float((pred == ydev).mean())
                results.append({"train": n, "seed": s, "features": arm, "dim": int(xtr.shape[1]), "dev_accuracy": acc})
                print(json.dumps(results[-1]), file=sys.stderr)
    summary = {}
    for n in a.train_sizes:
        for arm in feats:
            accs = [r["dev_accuracy"] for r in results if r["train"] == n and r["features"] == arm]
            summary[f"{arm}@{n}"] = {"mean": float(np.mean(accs)), "spread": float(np.max(accs) - np.min(accs)),
                                     "runs": len(accs)}
    out = {"config": vars(a), "word2vec_vocab": len(w2v), "cove_dim": int(c_tr.shape[1] // 2),
           "results": results, "summary": summary, "seconds": round(time.time() - t0, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    for k, v in summary.items():
        print(f"{k}: {v['mean']:.4f} (spread {v['spread']:.4f}, {v['runs']} seeds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
