"""Active learning with a pretrained LM (the seed notes' arXiv:2010.05522, active learning for sentence matching
with a PLM's uncertainty, diversity and reconstruction-loss criteria).

``plm finetune --active-learning --al-strategy S --al-init N0 --al-batch K --al-rounds R`` runs
:func:`finetune_active`: the training file (after ``--max-train-examples``) is the unlabelled pool; a seeded
random set of ``N0`` examples is labelled first; then, R times: fine-tune a fresh copy of ``--model`` on the
labelled set (the ordinary :func:`plmkit.tasks.finetuning.train`, all the usual options), score dev, and
label K more pool examples chosen by the strategy with that model. The learning curve (dev metrics vs
labelled count, one point per round plus the final one) is ``OUT/eval.json``'s ``curve``; the labelled
indices of each round are ``OUT/labelled.json``. Budget: ``N0 + R x K`` labels, each pool example at most
once.

Strategies (:func:`select`):

- ``entropy`` (uncertainty): the K pool examples whose predicted class distribution has the largest
  entropy ``-sum_c p_c log p_c``;
- ``kmeans`` (diversity): k-means (k = K, k-means++ start, Lloyd iterations) over the model's pooled
  sentence representations of the pool (the vector its classification head reads); from each cluster the
  example nearest its centroid, so the batch covers the representation space;
- ``random``: K pool examples uniformly (the baseline);
- ``coverage`` and ``noise``: the paper's two criteria from the PLM's *reconstruction loss*, read from a causal
  LM given by ``--al-lm`` (a plmkit / HF-format directory or a ``.gguf`` file, e.g. SmolLM2-135M; its own
  tokenizer). all-MiniLM-L6-v2 ships without an MLM head, so its reconstruction loss does not exist without
  training a head first; a causal LM's per-token loss ``s_t = -log p(x_t | x_<t)`` (the sentence read after
  the LM's BOS token; a pair's two sentences each on their own) is the same kind of signal from a PLM that
  has one. :func:`token_surprisal` computes it once for the whole pool, before the first round.

  * ``coverage``: the labelled set "covers" the LM token types it contains (``V``, from the initial labels
    on). An example's coverage gain is the surprisal mass of the types it would add:
    ``gain(x | V) = sum over types w in x, w not in V of max_{t in x, x_t = w} s_t``. The batch is picked
    greedily: take the example of largest gain (ties: the lowest pool position), add its types to ``V``,
    recompute, K times -- so the batch goes where the labelled set's vocabulary is thin, weighted by how
    informative (surprising to the PLM) the missing tokens are. It needs no task model.
  * ``noise``: uncertainty with the noisy examples down-weighted. ``l(x)`` = the mean per-token surprisal
    of x; ``z = (l - mean) / std`` over the pool; an example whose loss is extreme (``z > NOISE_Z`` = 1.0:
    the PLM reconstructs it far worse than the pool, typical of garbled or off-domain text) gets the weight
    ``exp(-(z - NOISE_Z))``, the others 1; the K examples with the largest ``entropy x weight`` are
    labelled. Low loss is not treated as noise (one-sided).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import UserError

STRATEGIES = ("entropy", "kmeans", "random", "coverage", "noise")
LM_STRATEGIES = ("coverage", "noise")  # need --al-lm
NOISE_Z = 1.0


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of ``probs`` (N, C); 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(-1)


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: ``(centroids (k, D), assignment (N,))``."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k must be in 1..{n}, got {k}")
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centres.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
    c = np.array(centres)
    assign = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (N, k)
        new = d2.argmin(1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = int(d2[np.arange(n), assign].argmax())
                c[j] = x[far]
                assign[far] = j
    return c, assign


Profile = list[tuple[int, float]]  # (LM token id, surprisal in nats) per token of one example


def noise_weights(losses: np.ndarray, z0: float = NOISE_Z) -> np.ndarray:
    """``exp(-(z - z0))`` where ``z = (l - mean) / std`` of ``losses`` exceeds ``z0``, else 1 (std 0: all 1)."""
    x = np.asarray(losses, dtype=np.float64)
    sd = x.std()
    if not sd > 0:
        return np.ones_like(x)
    z = (x - x.mean()) / sd
    return np.where(z > z0, np.exp(-(z - z0)), 1.0)


def coverage_gain(profile: Profile, covered: set[int]) -> float:
    """Surprisal mass of the token types of ``profile`` not in ``covered`` (each type once, at its largest
    surprisal in the example)."""
    best: dict[int, float] = {}
    for t, v in profile:
        if t not in covered and v > best.get(t, -1.0):
            best[t] = v
    return float(sum(best.values()))


def select_coverage(profiles: list[Profile], k: int, covered: set[int]) -> list[int]:
    """Greedy coverage batch: K times the largest :func:`coverage_gain` (ties: lowest position), its types
    then count as covered."""
    covered = set(covered)
    picked: list[int] = []
    left = list(range(len(profiles)))
    for _ in range(min(k, len(profiles))):
        gains = [coverage_gain(profiles[i], covered) for i in left]
        j = int(np.argmax(gains))  # first maximum
        i = left.pop(j)
        picked.append(i)
        covered.update(t for t, _ in profiles[i])
    return sorted(picked)


@torch.no_grad()
def token_surprisal(lm, tok, texts: list[str], batch_size: int = 16, max_len: int = 128) -> list[Profile]:
    """Per text: ``[(token id, -log p(token | BOS + the tokens before it))]`` under the causal LM ``lm`` (its own
    tokenizer ``tok``; the text is read after the tokenizer's BOS token, else its EOS, and cut to ``max_len``
    tokens). Rows are right-padded: under causal attention no scored position sees a pad."""
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    seqs = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False)[:max_len]
        seqs.append(([start] if start is not None else []) + ids)
    lm.eval()
    dev = next(lm.parameters()).device
    pad = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    out: list[Profile] = [[] for _ in texts]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = [i for i in order[b:b + batch_size] if len(seqs[i]) >= 2]
        if not idx:
            continue
        T = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        mask = torch.zeros(len(idx), T, dtype=torch.bool)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, :len(seqs[i]) - 1] = True  # position p predicts token p + 1
        logits = lm(ids.to(dev), labels_mask=mask.to(dev)).logits
        if logits.dim() == 3:
            logits = logits[mask.to(dev)]
        logp = torch.log_softmax(logits.float(), -1).cpu()
        n = 0
        for i in idx:
            tgt = torch.tensor(seqs[i][1:])
            vals = -logp[n: n + len(tgt)].gather(-1, tgt[:, None]).squeeze(-1)
            out[i] = list(zip(seqs[i][1:], vals.tolist()))
            n += len(tgt)
    return out


def example_profile(lm, tok, examples, batch_size: int = 16, max_len: int = 128) -> list[Profile]:
    """:func:`token_surprisal` of each example's text, a pair's second text scored on its own and appended."""
    texts = [e.text for e in examples]
    prof = token_surprisal(lm, tok, texts, batch_size, max_len)
    pairs = [i for i, e in enumerate(examples) if getattr(e, "text_pair", None)]
    if pairs:
        second = token_surprisal(lm, tok, [examples[i].text_pair for i in pairs], batch_size, max_len)
        for i, p in zip(pairs, second):
            prof[i] = prof[i] + p
    return prof


def select(strategy: str, k: int, probs: np.ndarray | None = None, reps: np.ndarray | None = None,
           seed: int = 0, profiles: list[Profile] | None = None, covered: set[int] | None = None) -> list[int]:
    """Positions (into the pool arrays) of the ``k`` examples to label next; see the module docstring.
    ``coverage`` reads ``profiles`` (one per pool example) and ``covered``; ``noise`` reads ``probs`` and
    ``profiles``."""
    if strategy == "coverage":
        return select_coverage(profiles, k, covered or set())
    n = len(probs) if probs is not None else len(reps)
    k = min(k, n)
    if strategy == "random":
        return sorted(random.Random(seed).sample(range(n), k))
    if strategy == "entropy":
        h = entropy(probs)
        return sorted(np.argsort(-h, kind="stable")[:k].tolist())
    if strategy == "noise":
        loss = np.array([np.mean([v for _, v in p]) if p else 0.0 for p in profiles])
        score = entropy(probs) * noise_weights(loss)
        return sorted(np.argsort(-score, kind="stable")[:k].tolist())
    if strategy == "kmeans":
        centres, assign = kmeans(reps, k, seed)
        picked = []
        for j in range(k):
            members = np.flatnonzero(assign == j)
            if len(members) == 0:
                continue
            d2 = ((reps[members] - centres[j]) ** 2).sum(-1)
            picked.append(int(members[d2.argmin()]))
        return sorted(set(picked))
    raise UserError(f"--al-strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


@torch.no_grad()
def pool_predictions(model, obj, feats: list[dict], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (N, C), pooled representations (N, H))`` of ``feats`` under the task model: the
    softmax of the head's logits, and the vector the head pools before its classifier."""
    model.eval()
    head = model.heads[obj.head_name]
    probs, reps = [], []
    for b in range(0, len(feats), batch_size):
        chunk = [{k: v for k, v in f.items() if k != "label"} for f in feats[b:b + batch_size]]
        batch = obj.make_batch(chunk)
        tt = batch["token_type_ids"] if getattr(model.config, "type_vocab_size", 1) else None
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=tt,
                    output_hidden_states=obj.scalar_mix)
        reps.append(head.pool(out, batch["attention_mask"]).float().cpu().numpy())
        probs.append(torch.softmax(head(out, batch["attention_mask"]).float(), -1).cpu().numpy())
    return np.concatenate(probs), np.concatenate(reps)


def _pool_profiles(cfg, examples) -> list[Profile]:
    """The reconstruction profile of every pool example under ``--al-lm`` (a causal LM)."""
    import plmkit
    from plmkit.objectives.base import require_decoder
    from plmkit.tasks.finetuning import _log

    t0 = time.perf_counter()
    lm = plmkit.load(cfg.al_lm)
    require_decoder(f"--al-strategy {cfg.al_strategy} (--al-lm {cfg.al_lm})", lm)
    tok = plmkit.load_tokenizer(cfg.al_lm)
    prof = example_profile(lm, tok, examples, batch_size=cfg.eval_batch_size // 4 or 1, max_len=cfg.max_seq_len)
    _log(f"active learning: reconstruction loss of {len(examples)} pool examples under {cfg.al_lm} "
         f"({time.perf_counter() - t0:.0f}s)")
    return prof


def _check(cfg, pool_size: int) -> int:
    if cfg.al_strategy not in STRATEGIES:
        raise UserError(f"--al-strategy {cfg.al_strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if cfg.al_strategy in LM_STRATEGIES and not cfg.al_lm:
        raise UserError(f"--al-strategy {cfg.al_strategy} reads a PLM's reconstruction loss: give --al-lm (a causal "
                        f"LM directory or .gguf file, e.g. SmolLM2-135M)")
    init = cfg.al_init if cfg.al_init is not None else cfg.al_batch
    budget = init + cfg.al_rounds * cfg.al_batch
    if budget > pool_size:
        raise UserError(f"--active-learning: the budget --al-init {init} + --al-rounds {cfg.al_rounds} x --al-batch "
                        f"{cfg.al_batch} = {budget} labels exceeds the pool of {pool_size} training examples")
    for bad, on in (("--multi-task", cfg.multi_task), ("--verbalizer", cfg.verbalizer), ("--mode pet", cfg.mode == "pet"),
                    ("--early-exit", cfg.early_exit)):
        if on:
            raise UserError(f"--active-learning does not combine with {bad}")
    return init


def finetune_active(cfg) -> dict[str, Any]:
    """The active-learning loop (module docstring); returns the eval.json dict."""
    import plmkit
    from plmkit.tasks.checkpoint import write_json_atomic
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.finetuning import (TaskData, TaskFeatures, _log, _seed_everything, build_task_model,
                                         encode_task_data, read_task_data, train, training_config)
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.modes import count_parameters
    from plmkit.tasks.scoring import score

    spec = task_spec(cfg)
    if spec.kind != "classification":
        raise UserError(f"--active-learning selects by class probabilities: it needs a classification task, "
                        f"not {spec.kind}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    data = read_task_data(cfg, spec)
    init = _check(cfg, len(data.train))
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    feats = encode_task_data(cfg, spec, tok, data)
    if len(feats.train) != len(data.train):
        raise UserError("--active-learning needs one feature per training example")
    profiles = _pool_profiles(cfg, data.train) if cfg.al_strategy in LM_STRATEGIES else None
    out.mkdir(parents=True, exist_ok=True)
    if profiles is not None:
        write_json_atomic(out / "reconstruction.json", {"lm": cfg.al_lm, "mean_surprisal": [
            round(float(np.mean([v for _, v in p])), 4) if p else None for p in profiles]})
    labelled = sorted(random.Random(cfg.seed).sample(range(len(data.train)), init))
    rounds: list[list[int]] = [list(labelled)]
    curve: list[dict] = []
    t0 = time.perf_counter()
    for r in range(cfg.al_rounds + 1):
        _seed_everything(cfg.seed + r)
        sub = TaskData([data.train[i] for i in labelled], data.dev, data.labels, data.bad, data.train_path)
        sub_feats = TaskFeatures([feats.train[i] for i in labelled], feats.dev)
        model, obj, _ = build_task_model(cfg, spec, tok, data.labels, None)
        logs = out / "logs" / f"round-{r}"
        logs.mkdir(parents=True, exist_ok=True)
        rcfg = replace(cfg, eval_each_epoch=False)
        summary, *_ = train(rcfg, spec, model, obj, tok, sub, sub_feats,
                            training_config(rcfg, model, len(labelled)), logs)
        metrics = score(spec, data.labels, data.dev, feats.dev, run_model(model, obj, feats.dev, cfg.eval_batch_size))
        params = count_parameters(model)
        curve.append({"round": r, "labelled": len(labelled), **metrics, "train_steps": summary["step"]})
        _log(f"active learning round {r}: {len(labelled)} labelled, dev {spec.main_metric} "
             f"{metrics[spec.main_metric]:.4f}")
        if r == cfg.al_rounds:
            break
        chosen = set(labelled)
        pool = [i for i in range(len(data.train)) if i not in chosen]
        need_model = cfg.al_strategy not in ("random", "coverage")
        probs, reps = (pool_predictions(model, obj, [feats.train[i] for i in pool], cfg.eval_batch_size)
                       if need_model else (None, np.zeros((len(pool), 1))))
        covered = {t for i in labelled for t, _ in profiles[i]} if profiles is not None else None
        picked = [pool[j] for j in select(cfg.al_strategy, cfg.al_batch, probs, reps, seed=cfg.seed * 1000 + r,
                                          profiles=[profiles[i] for i in pool] if profiles is not None else None,
                                          covered=covered)]
        labelled = sorted(chosen | set(picked))
        rounds.append(picked)
        del model
    result = {"task": spec.name, "mode": cfg.mode, "active_learning": {
                  "strategy": cfg.al_strategy, "lm": cfg.al_lm, "init": init, "batch": cfg.al_batch, "rounds": cfg.al_rounds,
                  "pool": len(data.train), "budget": init + cfg.al_rounds * cfg.al_batch},
              "curve": curve, **{k: v for k, v in curve[-1].items() if k not in ("round", "train_steps")},
              "main_metric": spec.main_metric, **params, "train_examples": len(labelled),
              "dev_examples": len(data.dev), "train_time_s": round(time.perf_counter() - t0, 1)}
    write_json_atomic(out / "labelled.json", {"rounds": rounds, "labelled": labelled})
    write_json_atomic(out / "eval.json", result)
    _log(f"active learning ({cfg.al_strategy}): curve {json.dumps([(c['labelled'], round(c[spec.main_metric], 4)) for c in curve])}; "
         f"wrote {out / 'eval.json'}")
    return result
