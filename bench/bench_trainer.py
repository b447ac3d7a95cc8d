"""Trainer overhead vs a bare PyTorch training loop on the same model and the same batches.

The bare loop is the minimum any training needs: forward + loss (the objective's ``loss``), backward,
gradient clipping, AdamW step, LR-schedule step, zero_grad, over batches built beforehand. The Trainer
run adds everything else it does per step: drawing records from the sequence and ``make_batch``, the
NaN/inf check, metrics.jsonl + TensorBoard logging, the progress bar and its bookkeeping. Checkpoint
writing is timed separately (``checkpoint_s``) since its cost depends on ``save_every``.

Runs alternate (bare, trainer, bare, trainer, ...) so that load changes on a shared machine hit both;
the ratio reported is median(trainer step time) / median(bare step time) - 1 ("overhead_ratio"), with
min/min (the least-disturbed steps, robust on a busy machine) and the per-round ratios beside it.
The same two loops are also run with a free one-parameter model (the real ``make_batch`` kept): their
difference is the trainer's absolute per-step cost, reported as a fraction of the real bare step
("overhead_fraction_from_null"), which is far less sensitive to machine load. Output: one JSON object.

    python bench/bench_trainer.py [--steps 40] [--repeats 3] [--threads 1] [--out bench/results/trainer.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build(seq_len: int, n: int, seed: int = 0):
    """gpt2-tiny (h128, 4 layers) + clm over a char tokenizer of the printable ASCII characters."""
    import string

    from plmkit import objectives
    from plmkit.models import load
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    tok = train_tokenizer_from_iterator([string.printable] * 4, kind="char", vocab_size=0)
    vocab = len(tok)
    torch.manual_seed(seed)
    model = load("gpt2-tiny", vocab_size=vocab, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                 max_position_embeddings=seq_len + 8, hidden_dropout=0.0, attention_dropout=0.0)
    obj = objectives.build("clm", tokenizer=tok)
    obj.prepare(model)
    g = torch.Generator().manual_seed(seed)
    special = set(tok.all_special_ids)
    ids = [i for i in range(vocab) if i not in special]
    data = [{"input_ids": [ids[j] for j in torch.randint(0, len(ids), (seq_len,), generator=g).tolist()]}
            for _ in range(n)]
    return model, obj, data


def bare_loop(model, obj, batches, cfg) -> list[float]:
    from plmkit.training.optim import build_optimizer, build_scheduler

    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    model.train()
    times = []
    for batch in batches:
        t = time.perf_counter()
        loss, _ = obj.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times


def trainer_loop(model, obj, data, cfg, out_dir) -> tuple[list[float], float]:
    from plmkit.training import Trainer

    trainer = Trainer(model, obj, data, cfg, out_dir=out_dir)
    stamps: list[float] = []
    trainer.add_callback("on_train_begin", lambda tr: stamps.append(time.perf_counter()))
    trainer.add_callback("on_step_end", lambda tr, step: stamps.append(time.perf_counter()))
    trainer.fit()
    times = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    t = time.perf_counter()
    trainer.save_checkpoint()
    return times, time.perf_counter() - t


class _Null(torch.nn.Module):
    """A one-parameter 'model': with it a step costs only the loop's own work."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


class _NullObjective:
    """The real objective's make_batch (data loading stays in the measurement), a free loss."""

    name = "null"

    def __init__(self, obj):
        self.obj = obj

    def make_batch(self, examples):
        return self.obj.make_batch(examples)

    def loss(self, model, batch):
        return (model.w - 1.0) ** 2, {"x": 0.0}


def null_overhead(obj, data, batches, cfg) -> tuple[float, float]:
    """Median seconds per step of the Trainer and of the bare loop when the model costs nothing."""
    null_obj = _NullObjective(obj)
    bare = bare_loop(_Null(), null_obj, batches, cfg)
    with tempfile.TemporaryDirectory() as d:
        trained, _ = trainer_loop(_Null(), null_obj, data, cfg, d)
    return statistics.median(trained[2:]), statistics.median(bare[2:])


def main(argv=None) -> int:
    from plmkit.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = a.steps * a.batch_size
    model, obj, data = build(a.seq_len, n)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(max_steps=a.steps, batch_size=a.batch_size, lr=1e-3, log_every=10, save_every=0,
                      eval_every=0, progress=True, tensorboard=True, plots=False, seed=0, num_threads=a.threads)
    # The bare loop gets exactly the batches the trainer will draw (same permutation, same make_batch).
    from plmkit.training.trainer import _Cursor
    from plmkit.training import distributed as D

    cur = _Cursor(len(data), cfg.seed, cfg.batch_size, D.DistInfo())
    batches = [obj.make_batch([data[i] for i in cur.next()]) for _ in range(a.steps)]
    bare, trained, ckpt_s, paired = [], [], [], []
    for r in range(a.repeats + 1):  # the first round warms up both
        model.load_state_dict(init)
        b = bare_loop(model, obj, batches, cfg)
        model.load_state_dict(init)
        with tempfile.TemporaryDirectory() as d:
            t, c = trainer_loop(model, obj, data, cfg, d)
        if r:
            bare += b[2:]
            trained += t[2:]
            ckpt_s.append(c)
            paired.append(sum(t[2:]) / sum(b[2:]) - 1)
    mb, mt = statistics.median(bare), statistics.median(trained)
    null_t, null_b = null_overhead(obj, data, batches, cfg)
    result = {
        "bench": "trainer_overhead", "model": "gpt2-tiny h128 L4", "batch_size": a.batch_size,
        "seq_len": a.seq_len, "threads": a.threads, "steps_per_run": a.steps, "repeats": a.repeats,
        "bare_step_s_median": mb, "trainer_step_s_median": mt, "overhead_ratio": mt / mb - 1,
        "overhead_ratio_min": min(trained) / min(bare) - 1,
        "overhead_ratio_per_round": paired,
        "bare_step_s_mean": statistics.mean(bare), "trainer_step_s_mean": statistics.mean(trained),
        "checkpoint_s_median": statistics.median(ckpt_s),
        # The same loops with a free model: what the Trainer adds per step in absolute terms, and that
        # as a fraction of the real bare step (a low-noise estimate of the overhead).
        "null_model_trainer_step_s": null_t, "null_model_bare_step_s": null_b,
        "overhead_s_per_step": null_t - null_b, "overhead_fraction_from_null": (null_t - null_b) / mb, "torch": torch.__version__,
    }
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
