"""Claims about pretraining objectives: dynamic vs static masking, NSP vs SOP vs none, 15% vs 40% masking,
ELECTRA's replaced-token detection vs MLM.

Every claim trains arms of the SAME small backbone with plmkit's own pretraining (``ctx.pretrain`` on a recipe
of ``recipes/<family>/``, the arm's objective swapped in), on the same data with the same seeds, and scores
each arm the same way:

- held-out MLM loss / accuracy (where the arm has an MLM head): windows of the held-out text, 15% of their
  tokens selected with 80/10/10 by a per-window seeded generator, so every arm sees the very same masks;
- SST-2 dev accuracy after a short full fine-tune (``plmkit.tasks``), with the learning rate of each arm
  chosen from a grid on a held-out slice of SST-2 *train* (using the arm's first seed), then used for all
  its seeds; the fine-tuning examples and seed are the same for every arm;
- for NSP / SOP: the accuracy of each trained sentence-pair head on held-out NSP pairs and on held-out SOP
  pairs (ALBERT Table 5's cross-evaluation: an NSP head scores a swapped pair as "not next").

All arms of a claim share one tokenizer (trained once, a step of the claim). Arms are compared paired by
seed with :mod:`plmkit.reproduce.stats`; "comparable" claims use :func:`noninferior` (defined here: a
paired non-inferiority rule with a stated margin).
"""

from __future__ import annotations

import copy
import csv
import math
import random
from pathlib import Path
from typing import Callable

from plmkit.errors import UserError
from plmkit.reproduce import stats
from plmkit.reproduce.context import ClaimContext, Outcome
from plmkit.reproduce.registry import claim_runner, default_claims_dir

# ---------------------------------------------------------------------------------------------- verdict rule


def noninferior(new: list[float], old: list[float], *, margin: float, higher_is_better: bool = True,
                z: float = 2.0, what: str = "paired by seed") -> stats.Verdict:
    """Claim: arm ``new`` is comparable to or better than ``old`` (paired by seed).

    d = per-seed difference in the claimed direction. Held when ``mean(d) - z*SE > -margin`` (even the pessimistic
    end of the interval loses less than ``margin``); not held when ``mean(d) + z*SE < -margin`` (``new`` is worse by
    more than the margin); inconclusive otherwise and with fewer than two seeds."""
    if len(new) != len(old) or not new:
        raise ValueError(f"non-inferiority needs equal, non-empty lists (got {len(new)} and {len(old)})")
    sign = 1.0 if higher_is_better else -1.0
    d = [sign * (float(a) - float(b)) for a, b in zip(new, old)]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return stats.Verdict(stats.INCONCLUSIVE, f"{what}: one pair gives no standard error (difference "
                                                 f"{mean:+.4g}); repeat over seeds", mean, None)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n)
    rule = (f"{what}: mean paired difference {mean:+.4g} (positive = as claimed), standard error {se:.2g} over n={n}; "
            f"non-inferiority margin {margin:g}: held if mean - {z:g} SE > -{margin:g}, not held if "
            f"mean + {z:g} SE < -{margin:g}, else inconclusive")
    if mean - z * se > -margin:
        verdict = stats.HELD
    elif mean + z * se < -margin:
        verdict = stats.NOT_HELD
    else:
        verdict = stats.INCONCLUSIVE
    return stats.Verdict(verdict, rule, mean, se)


def above(values: list[float], level: float, *, z: float = 2.0, what: str = "over seeds") -> stats.Verdict:
    """Claim: the figure is above ``level`` (e.g. chance): held when ``mean - z*SE > level``, not held when
    ``mean + z*SE <= level``, inconclusive otherwise (and with one seed)."""
    return stats.paired(values, [level] * len(values), higher_is_better=True, z=z, what=what)


# ---------------------------------------------------------------------------------------------- set-up


def _recipes_dir(ctx: ClaimContext) -> Path:
    for base in ([ctx.claim.path.resolve().parent.parent] if ctx.claim.path else []) + [
            (default_claims_dir() or Path("recipes/claims")).resolve().parent]:
        if (base / "roberta").is_dir():
            return base
    raise UserError(f"claim {ctx.claim.id}: no recipes folder found next to the claims folder "
                    f"(set $PLMKIT_CLAIMS to a checkout's recipes/claims)")


def _base_recipe(ctx: ClaimContext, rel: str) -> dict:
    import yaml

    path = _recipes_dir(ctx) / rel
    if not path.is_file():
        raise UserError(f"claim {ctx.claim.id}: recipe {path} is missing")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _tokenizer_step(ctx: ClaimContext, base: dict) -> Path:
    """One tokenizer for every arm of the claim (the recipe's kind and size, trained on the claim's text)."""
    out = ctx.run_dir("tokenizer")

    def train() -> dict:
        from plmkit import train_tokenizer

        t = base["tokenizer"]["train"]
        tok = train_tokenizer([str(ctx.data(ctx.param("train")))], kind=t["kind"],
                              vocab_size=int(ctx.param("vocab_size", t.get("vocab_size", 8000))),
                              special_tokens=t.get("special_tokens"))
        tok.save(out)
        return {"kind": t["kind"], "size": len(tok)}

    info = ctx.step("tokenizer", train)
    if not (out / "tokenizer.json").is_file():  # the step's record survived but its folder did not
        (Path(ctx.out) / "steps" / "tokenizer.json").unlink()
        info = ctx.step("tokenizer", train)
    del info
    return out


def _arm_recipe(ctx: ClaimContext, base: dict, objective: list[dict], tok_dir: Path, seed: int, steps: int,
                model: dict | None = None) -> dict:
    """The base recipe with this arm's objective, the claim's data / backbone / budget, no in-run evaluation
    (the claim scores every arm itself, on the same held-out masks)."""
    r = copy.deepcopy(base)
    r["model"] = {**r["model"], **(model or {})}
    r["model"]["overrides"] = {**r["model"].get("overrides", {}), **ctx.param("backbone", {})}
    r["tokenizer"] = {"path": str(tok_dir)}
    r["data"] = {"train": [str(ctx.data(ctx.param("train")))], "seq_len": int(ctx.param("seq_len", 128))}
    r["objective"] = objective
    train = dict(r["train"])
    train.update({"max_steps": int(steps), "batch_size": int(ctx.param("batch_size", 16)), "seed": int(seed),
                  "warmup_steps": max(1, int(steps) // 10), "eval_every": 0, "log_every": max(1, int(steps) // 20),
                  "save_every": _save_every(int(steps), int(ctx.param("save_every", 100))), "keep_last": 1,
                  "progress": False})
    if ctx.param("lr", None) is not None:
        train["lr"] = float(ctx.param("lr"))
    r["train"] = train
    return r


def _save_every(steps: int, wanted: int) -> int:
    """The largest interval <= ``wanted`` that divides ``steps``: the last checkpoint is the final step's (it holds
    the objective heads that ``final/`` cannot)."""
    for k in range(max(1, min(wanted, steps)), 0, -1):
        if steps % k == 0:
            return k
    return 1


def _heldout_store(ctx: ClaimContext, tok_dir: Path):
    """The held-out text as a token store (for MLM windows and sentence pairs), prepared once."""
    from plmkit.data.store import TokenStore, prepare

    path = ctx.run_dir("heldout-store")

    def make() -> dict:
        m = prepare([str(ctx.data(ctx.param("heldout")))], str(tok_dir), path, overwrite=True, progress=False,
                    log=lambda msg: None)
        return {"tokens": int(m.get("num_tokens", 0)) if isinstance(m, dict) else None}

    ctx.step("heldout-store", make)
    if not (path / "manifest.json").is_file():
        (Path(ctx.out) / "steps" / "heldout-store.json").unlink()
        ctx.step("heldout-store", make)
    return TokenStore(path)


def _load(run_dir: Path, heads: tuple[str, ...] = ()):
    """The run's final model and tokenizer. ``heads``: objective heads the HF-format ``final/`` cannot hold (an SOP
    classifier) are rebuilt by the objective and filled from the last checkpoint's full state (step = final step)."""
    import json

    import plmkit
    from plmkit.objectives import build

    model = plmkit.load(run_dir / "final")
    tok = plmkit.load_tokenizer(run_dir / "final")
    missing = [h for h in heads if h not in model.heads]
    if missing:
        from safetensors.torch import load_file

        step = json.loads((run_dir / "final" / "train_summary.json").read_text(encoding="utf-8"))["step"]
        path = run_dir / "checkpoints" / f"step-{step}" / "model_state.safetensors"
        if not path.is_file():
            raise UserError(f"{run_dir}: no checkpoint of the final step {step} ({path}) to read the "
                            f"{', '.join(missing)} head(s) from")
        state = load_file(str(path))
        for h in missing:
            build(h, tokenizer=tok).prepare(model)
            sub = {k[len(f"heads.{h}."):]: v for k, v in state.items() if k.startswith(f"heads.{h}.")}
            if not sub:
                raise UserError(f"{path}: holds no weights of head {h!r}")
            model.heads[h].load_state_dict(sub)
    return model.eval(), tok


# ---------------------------------------------------------------------------------------------- scoring


def mlm_eval(model, tok, store, seq_len: int, windows: int, rate: float = 0.15, seed: int = 1234,
             batch: int = 16) -> dict:
    """Held-out MLM loss and accuracy with masks drawn per window by ``Generator(seed + i)``: the same masks for
    every model that shares the tokenizer."""
    import torch
    import torch.nn.functional as F

    from plmkit.objectives import build

    obj = build("mlm", tokenizer=tok, rate=rate)
    view = store.windows(seq_len - 2)
    n = min(int(windows), len(view))
    if n == 0:
        raise UserError(f"held-out text has fewer than {seq_len} tokens: no MLM windows")
    nll = hit = tot = 0.0
    with torch.no_grad():
        for k in range(0, n, batch):
            ms = [obj.mask_example(view[i], generator=torch.Generator().manual_seed(seed + i))
                  for i in range(k, min(n, k + batch))]
            ids = torch.tensor([m.input_ids for m in ms])
            labels = torch.tensor([m.labels for m in ms])
            sel = labels != -100
            logits = model(ids, labels_mask=sel).logits.float()
            y = labels[sel]
            nll += float(F.cross_entropy(logits, y, reduction="sum"))
            hit += float((logits.argmax(-1) == y).sum())
            tot += int(y.numel())
    return {"mlm_loss": nll / tot, "mlm_acc": hit / tot, "mlm_tokens": int(tot), "windows": n}


def pair_batches(tok, store, seq_len: int, kind: str, pairs: int, seed: int = 4321, batch: int = 32) -> list:
    """Held-out NSP or SOP batches (labels drawn with torch's RNG seeded here: the same batches for every model
    sharing the tokenizer)."""
    import torch

    from plmkit.objectives import build

    obj = build(kind, tokenizer=tok)
    view = store.sentence_pairs(seq_len, seed=seed)
    n = min(int(pairs), len(view))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = [obj.make_batch([view[i] for i in range(k, min(n, k + batch))]) for k in range(0, n, batch)]
    finally:
        torch.random.set_rng_state(state)
    return out


def pair_accuracy(model, head: str, batches: list, label_key: str) -> float:
    """Accuracy of the sentence-pair head ``head`` (0 = in order / next, 1 = swapped / random) on ``batches``."""
    import torch

    from plmkit.objectives.base import hidden_only

    hit = tot = 0
    with torch.no_grad():
        for b in batches:
            out = hidden_only(model, b["input_ids"], attention_mask=b["attention_mask"],
                              token_type_ids=b["token_type_ids"])
            pooled = out.pooled if out.pooled is not None else out.last_hidden_state[:, 0]
            pred = model.heads[head](pooled).argmax(-1)
            hit += int((pred == b[label_key]).sum())
            tot += int(b[label_key].numel())
    return hit / max(tot, 1)


def _sst2_split(ctx: ClaimContext) -> dict:
    """SST-2 train shuffled once (seed 0): the first ``ft_train`` rows fine-tune, the next ``ft_heldout`` rows
    choose the learning rate. Written under the claim folder as TSV files."""
    src = ctx.data(ctx.param("sst2", "glue/SST-2"))
    n_train, n_held = int(ctx.param("ft_train", 2000)), int(ctx.param("ft_heldout", 500))
    folder = ctx.run_dir("sst2-split")

    def make() -> dict:
        with open(src / "train.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header, body = rows[0], rows[1:]
        random.Random(0).shuffle(body)
        if len(body) < n_train + n_held:
            raise UserError(f"{src / 'train.tsv'}: {len(body)} rows, fewer than ft_train + ft_heldout")
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in (("train.tsv", body[:n_train]), ("heldout.tsv", body[n_train:n_train + n_held])):
            with open(folder / name, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
                w.writerow(header)
                w.writerows(part)
        return {"train": n_train, "heldout": n_held}

    ctx.step("sst2-split", make)
    if not (folder / "heldout.tsv").is_file():
        (Path(ctx.out) / "steps" / "sst2-split.json").unlink()
        ctx.step("sst2-split", make)
    return {"data": src, "train": folder / "train.tsv", "heldout": folder / "heldout.tsv"}


def sst2_finetune(ctx: ClaimContext, split: dict, model_dir: Path, out: Path, lr: float, dev: str) -> float:
    """Full fine-tune of ``model_dir`` on the SST-2 fine-tuning rows (mean pooling unless ``ft_pooling`` says
    otherwise: the same head for every arm, none of which pretrained a pooler); accuracy on ``dev`` ("heldout" or
    "dev")."""
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.run import finetune

    cfg = FinetuneConfig(task="sst2", model=str(model_dir), data=str(split["data"]), out=str(out),
                         train_file=str(split["train"]),
                         dev_file=str(split["heldout"]) if dev == "heldout" else "dev.tsv",
                         epochs=float(ctx.param("ft_epochs", 1.0)), lr=float(lr),
                         batch_size=int(ctx.param("ft_batch_size", 32)), max_seq_len=int(ctx.param("ft_seq_len", 64)),
                         seed=int(ctx.param("ft_seed", 1)), pooling=str(ctx.param("ft_pooling", "mean")),
                         eval_each_epoch=False, progress=False)
    result = finetune(cfg)
    for p in Path(out).glob("*.safetensors"):  # the fine-tuned weights are not needed: keep the folder small
        p.unlink()
    return float(result["accuracy"])


# ---------------------------------------------------------------------------------------------- the arms


class Arms:
    """Pretrain each (arm, seed), then score it; every unit is a resumable step."""

    def __init__(self, ctx: ClaimContext, base_rel: str, arms: dict[str, dict]):
        """``arms``: name -> {"objective": [...], "model": {...} (optional), "steps": int (optional)}."""
        self.ctx, self.arms = ctx, arms
        self.base = _base_recipe(ctx, base_rel)
        self.tok_dir = _tokenizer_step(ctx, self.base)
        self.steps = int(ctx.param("steps"))
        self.seq_len = int(ctx.param("seq_len", 128))

    def run_name(self, arm: str, seed: int) -> str:
        return f"{arm}-s{seed}"

    def pretrain(self, arm: str, seed: int) -> dict:
        spec = self.arms[arm]
        recipe = _arm_recipe(self.ctx, self.base, spec["objective"], self.tok_dir, seed,
                             spec.get("steps", self.steps), spec.get("model"))
        return self.ctx.pretrain(recipe, self.run_name(arm, seed))

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.ctx.run_dir(self.run_name(arm, seed))

    def choose_lr(self, arm: str, split: dict) -> dict:
        """The arm's fine-tuning LR: best held-out-train accuracy over ``ft_lrs`` (first seed's model)."""
        ctx = self.ctx
        seed = ctx.seeds[0]
        self.pretrain(arm, seed)
        grid = [float(x) for x in ctx.param("ft_lrs", [1e-4, 3e-4, 1e-3])]

        def one(lr: float) -> float:
            return sst2_finetune(ctx, split, self.run_dir(arm, seed) / "final",
                                 ctx.run_dir(f"ft-select/{arm}-lr{lr:g}"), lr, "heldout")

        accs = {f"{lr:g}": ctx.step(f"ft-select-{arm}-lr{lr:g}", lambda lr=lr: one(lr)) for lr in grid}
        best = max(grid, key=lambda lr: (accs[f"{lr:g}"], -lr))
        return {"lr": best, "heldout_acc_by_lr": accs}

    def score(self, arm: str, seed: int, fn: Callable[[Path], dict]) -> dict:
        """Pretrain (arm, seed) and score it with ``fn(run_dir)`` as one step."""

        def unit() -> dict:
            summary = self.pretrain(arm, seed)
            out = fn(self.run_dir(arm, seed))
            out["pretrain_seconds"] = summary.get("seconds")
            return out

        return self.ctx.step(f"score-{self.run_name(arm, seed)}", unit)

    def sst2(self, arm: str, seed: int, split: dict, lr: float) -> float:
        ctx = self.ctx
        return ctx.step(f"ft-dev-{self.run_name(arm, seed)}",
                        lambda: sst2_finetune(ctx, split, self.run_dir(arm, seed) / "final",
                                              ctx.run_dir(f"ft-dev/{self.run_name(arm, seed)}"), lr, "dev"))

    def runs(self) -> list[str]:
        return [f"runs/{self.run_name(a, s)}" for a in self.arms for s in self.ctx.seeds]


def _mlm_scorer(arms: Arms, ctx: ClaimContext) -> Callable[[Path], dict]:
    def fn(run_dir: Path) -> dict:
        model, tok = _load(run_dir)
        store = _heldout_store(ctx, arms.tok_dir)
        return mlm_eval(model, tok, store, arms.seq_len, int(ctx.param("eval_windows", 200)))
    return fn


def _per_arm(ctx: ClaimContext, arms: Arms, scorer: Callable[[Path], dict] | None,
             downstream: tuple[str, ...] | None = None) -> dict:
    """{arm: {"rows": [per-seed dicts], "lr": ...}}: intrinsic scores and SST-2 dev accuracy per seed (of the
    ``downstream`` arms; None: all)."""
    downstream = tuple(arms.arms) if downstream is None else downstream
    split = _sst2_split(ctx) if downstream else None
    res: dict[str, dict] = {}
    for arm in arms.arms:
        rows = []
        for seed in ctx.seeds:
            row = dict(arms.score(arm, seed, scorer)) if scorer else {}
            if not scorer:
                arms.pretrain(arm, seed)
            row["seed"] = seed
            rows.append(row)
        res[arm] = {"rows": rows}
    if downstream:
        for arm in downstream:
            pick = ctx.step(f"ft-lr-{arm}", lambda arm=arm: arms.choose_lr(arm, split))
            res[arm]["lr"] = pick
            for row in res[arm]["rows"]:
                row["sst2_dev_acc"] = arms.sst2(arm, row["seed"], split, pick["lr"])
    return res


def majority_rate(split: dict) -> float:
    """The SST-2 dev accuracy of always answering the most frequent dev label."""
    with open(Path(split["data"]) / "dev.tsv", encoding="utf-8", newline="") as f:
        labels = [r[-1] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:] if r]
    return max(labels.count(v) for v in set(labels)) / len(labels)


def above_floor(verdict: stats.Verdict, accs: dict[str, list[float]], floor: float, margin: float = 0.01
                ) -> stats.Verdict:
    """A downstream comparison only counts when every arm learnt the task: an arm whose mean accuracy is within
    ``margin`` of the majority-class rate ``floor`` makes the part inconclusive (two arms at the floor are
    "comparable" for no reason)."""
    low = [arm for arm, v in accs.items() if sum(v) / len(v) <= floor + margin]
    if not low:
        return verdict
    return stats.Verdict(stats.INCONCLUSIVE, verdict.rule + f"; but {', '.join(low)} stay(s) within {margin:g} of the "
                         f"majority-class rate {floor:.4f}, so the fine-tune does not separate the arms: inconclusive",
                         verdict.effect, verdict.se)


def learnt(verdict: stats.Verdict, heads: dict[str, tuple[list[float], float]], margin: float = 0.01) -> stats.Verdict:
    """Cross-task comparisons of sentence-pair heads only count when each head learnt its own task:
    ``heads``: name -> (per-seed accuracy on its own task, majority-label rate). A head whose mean accuracy is within
    ``margin`` of the majority rate makes the part inconclusive."""
    low = [f"{name} {sum(v) / len(v):.3f} (majority rate {floor:.3f})" for name, (v, floor) in heads.items()
           if sum(v) / len(v) <= floor + margin]
    if not low:
        return verdict
    return stats.Verdict(stats.INCONCLUSIVE, verdict.rule + f"; but a head did not learn its own task at this budget "
                         f"({'; '.join(low)}): inconclusive", verdict.effect, verdict.se)


def _sst2_part(ctx: ClaimContext, res: dict, verdict: stats.Verdict, arms: tuple[str, ...]) -> stats.Verdict:
    accs = {arm: _col(res, arm, "sst2_dev_acc") for arm in arms}
    return above_floor(verdict, accs, majority_rate(_sst2_split(ctx)))


def _col(res: dict, arm: str, key: str) -> list[float]:
    return [float(r[key]) for r in res[arm]["rows"]]


def _table(res: dict, keys: list[tuple[str, str]]) -> dict:
    cols = ["arm", "seed"] + [label for _, label in keys]
    rows = []
    for arm, d in res.items():
        for r in d["rows"]:
            rows.append([arm, r["seed"]] + [None if r.get(k) is None else round(float(r[k]), 4) for k, _ in keys])
    return {"columns": cols, "rows": rows}


def _lrs(res: dict) -> dict:
    return {arm: d.get("lr") for arm, d in res.items() if d.get("lr")}


# ---------------------------------------------------------------------------------------------- the claims


@claim_runner
def dynamic_masking(ctx: ClaimContext) -> Outcome:
    """RoBERTa Table 1: dynamic masking is comparable to (or slightly better than) static masking.

    Static = BERT's pre-masked data with ``dup_factor`` copies (``objective.mode=static``); with few steps a small
    ``dup_factor`` keeps the regime static (each copy is seen several times, as BERT's 4 times over 40 epochs)."""
    dup = int(ctx.param("dup_factor", 1))
    arms = Arms(ctx, "roberta/mlm-wikitext2.yaml", {
        "dynamic": {"objective": [{"name": "mlm", "mode": "dynamic"}]},
        "static": {"objective": [{"name": "mlm", "mode": "static", "dup_factor": dup}]}})
    res = _per_arm(ctx, arms, _mlm_scorer(arms, ctx))
    margin_acc = float(ctx.param("margin_acc", 0.01))
    margin_loss = float(ctx.param("margin_loss", 0.02))
    parts = {
        "SST-2 dev accuracy: dynamic >= static - margin": _sst2_part(ctx, res, noninferior(
            _col(res, "dynamic", "sst2_dev_acc"), _col(res, "static", "sst2_dev_acc"), margin=margin_acc,
            what="SST-2 dev accuracy, paired by seed"), ("dynamic", "static")),
        "held-out MLM loss: dynamic <= static + margin": noninferior(
            _col(res, "dynamic", "mlm_loss"), _col(res, "static", "mlm_loss"), margin=margin_loss,
            higher_is_better=False, what="held-out MLM loss (same masks), paired by seed"),
    }
    ours = {f"{arm} {label}": stats.summary(_col(res, arm, key)) for arm in arms.arms
            for key, label in (("sst2_dev_acc", "SST-2 dev acc"), ("mlm_loss", "held-out MLM loss"))}
    return Outcome(ours=ours, verdict=stats.combine(parts),
                   table=_table(res, [("mlm_loss", "held-out MLM loss"), ("mlm_acc", "held-out MLM acc"),
                                      ("sst2_dev_acc", "SST-2 dev acc")]),
                   runs=arms.runs(), details={"parts": {k: v.as_dict() for k, v in parts.items()},
                                              "finetune_lr": _lrs(res), "dup_factor": dup})


@claim_runner
def nsp_sop(ctx: ClaimContext) -> Outcome:
    """ALBERT Table 5 (an SOP-trained head solves NSP, an NSP-trained head does not solve SOP) and RoBERTa
    Table 2 (no sentence objective is not worse downstream than NSP). Arms: MLM + NSP, MLM + SOP (the MLM loss in
    the same forward pass on the pair, as BERT / ALBERT), MLM alone on windows; the same tokens per step."""
    arms = Arms(ctx, "bert/mlm-nsp-wikitext2.yaml", {
        "nsp": {"objective": [{"name": "nsp", "mlm_weight": 1.0}]},
        "sop": {"objective": [{"name": "sop", "mlm_weight": 1.0}]},
        "none": {"objective": [{"name": "mlm"}]}})
    n_pairs = int(ctx.param("eval_pairs", 1000))

    def scorer(run_dir: Path) -> dict:
        model, tok = _load(run_dir, tuple(h for h in ("nsp", "sop") if run_dir.name.startswith(h)))
        store = _heldout_store(ctx, arms.tok_dir)
        out = mlm_eval(model, tok, store, arms.seq_len, int(ctx.param("eval_windows", 200)))
        for head in ("nsp", "sop"):
            if head not in model.heads:
                continue
            for task in ("nsp", "sop"):
                batches = pair_batches(tok, store, arms.seq_len, task, n_pairs)
                out[f"{head}_head_on_{task}"] = pair_accuracy(model, head, batches, f"{task}_labels")
        return out

    def label_rates() -> dict:
        """The majority-label rate of the held-out NSP and SOP pairs: a constant head's accuracy."""
        import torch

        import plmkit

        tok = plmkit.load_tokenizer(arms.tok_dir)
        store = _heldout_store(ctx, arms.tok_dir)
        out = {}
        for task in ("nsp", "sop"):
            y = torch.cat([b[f"{task}_labels"] for b in pair_batches(tok, store, arms.seq_len, task, n_pairs)])
            rate = float(y.float().mean())
            out[task] = max(rate, 1.0 - rate)
        return out

    res = _per_arm(ctx, arms, scorer, downstream=("nsp", "none"))  # the RoBERTa part compares these two
    floor = ctx.step("pair-majority", label_rates)
    margin_acc = float(ctx.param("margin_acc", 0.01))
    sop_on_nsp = _col(res, "sop", "sop_head_on_nsp")
    nsp_on_sop = _col(res, "nsp", "nsp_head_on_sop")
    own = {"NSP head on NSP": (_col(res, "nsp", "nsp_head_on_nsp"), floor["nsp"]),
           "SOP head on SOP": (_col(res, "sop", "sop_head_on_sop"), floor["sop"])}
    parts = {
        "ALBERT: the SOP-trained head scores NSP above the majority rate": learnt(above(
            sop_on_nsp, floor["nsp"], what=f"NSP accuracy of the SOP-trained head minus the majority rate "
                                            f"{floor['nsp']:.3f}, over seeds"), {"SOP head on SOP": own["SOP head on SOP"]}),
        "ALBERT: on SOP, the SOP-trained head beats the NSP-trained head": learnt(stats.paired(
            _col(res, "sop", "sop_head_on_sop"), nsp_on_sop, what="held-out SOP accuracy, paired by seed"), own),
        "RoBERTa: no sentence objective >= NSP - margin on SST-2": _sst2_part(ctx, res, noninferior(
            _col(res, "none", "sst2_dev_acc"), _col(res, "nsp", "sst2_dev_acc"), margin=margin_acc,
            what="SST-2 dev accuracy, paired by seed"), ("none", "nsp")),
    }
    ours = {"NSP head: NSP acc": stats.summary(_col(res, "nsp", "nsp_head_on_nsp")),
            "NSP head: SOP acc": stats.summary(nsp_on_sop),
            "SOP head: NSP acc": stats.summary(sop_on_nsp),
            "SOP head: SOP acc": stats.summary(_col(res, "sop", "sop_head_on_sop"))}
    ours |= {f"{arm} SST-2 dev acc": stats.summary(_col(res, arm, "sst2_dev_acc")) for arm in ("nsp", "none")}
    ours |= {f"{arm} held-out MLM loss": stats.summary(_col(res, arm, "mlm_loss")) for arm in arms.arms}
    table = _table(res, [("nsp_head_on_nsp", "NSP head: NSP acc"), ("nsp_head_on_sop", "NSP head: SOP acc"),
                         ("sop_head_on_nsp", "SOP head: NSP acc"), ("sop_head_on_sop", "SOP head: SOP acc"),
                         ("mlm_loss", "held-out MLM loss"), ("sst2_dev_acc", "SST-2 dev acc")])
    return Outcome(ours=ours, verdict=stats.combine(parts), table=table, runs=arms.runs(),
                   details={"parts": {k: v.as_dict() for k, v in parts.items()}, "finetune_lr": _lrs(res),
                            "eval_pairs": n_pairs, "majority_rate": floor})


@claim_runner
def mask_rate(ctx: ClaimContext) -> Outcome:
    """Wettig et al. 2022: masking 40% matches or beats 15% downstream. Held-out MLM loss is measured at 15%
    for both (reported, not part of the verdict: the 40% model was trained for a different task)."""
    high = float(ctx.param("high_rate", 0.4))
    arms = Arms(ctx, "roberta/mlm-wikitext2.yaml", {
        "rate-0.15": {"objective": [{"name": "mlm", "rate": 0.15}]},
        f"rate-{high:g}": {"objective": [{"name": "mlm", "rate": high}]}})
    res = _per_arm(ctx, arms, _mlm_scorer(arms, ctx))
    hi = f"rate-{high:g}"
    parts = {f"SST-2 dev accuracy: {high:.0%} >= 15% - margin": _sst2_part(ctx, res, noninferior(
        _col(res, hi, "sst2_dev_acc"), _col(res, "rate-0.15", "sst2_dev_acc"),
        margin=float(ctx.param("margin_acc", 0.01)), what="SST-2 dev accuracy, paired by seed"), (hi, "rate-0.15"))}
    ours = {f"{arm} {label}": stats.summary(_col(res, arm, key)) for arm in arms.arms
            for key, label in (("sst2_dev_acc", "SST-2 dev acc"), ("mlm_loss", "held-out MLM loss at 15%"))}
    return Outcome(ours=ours, verdict=stats.combine(parts),
                   table=_table(res, [("mlm_loss", "held-out MLM loss (15% masks)"),
                                      ("mlm_acc", "held-out MLM acc"), ("sst2_dev_acc", "SST-2 dev acc")]),
                   runs=arms.runs(), details={"parts": {k: v.as_dict() for k, v in parts.items()},
                                              "finetune_lr": _lrs(res)})


def step_flops(ctx: ClaimContext, tok_dir: Path, base: dict, objective: dict, model: dict) -> float:
    """Forward + backward FLOPs of one training step of (model, objective) on a batch of random windows, counted
    by ``torch.utils.flop_counter`` (matrix products and attention; ``model``: preset and config overrides)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import plmkit
    from plmkit.objectives import build

    tok = plmkit.load_tokenizer(tok_dir)
    over = {**base["model"].get("overrides", {}), **ctx.param("backbone", {}), **model.get("overrides", {})}
    ids = {k: getattr(tok, k) for k in ("pad_token_id", "mask_token_id") if getattr(tok, k, None) is not None}
    net = plmkit.load(model["preset"], vocab_size=len(tok), **ids, **over)
    opts = dict(objective)
    obj = build(opts.pop("name"), tokenizer=tok, **opts)
    obj.prepare(net)
    T, B = int(ctx.param("seq_len", 128)), int(ctx.param("batch_size", 16))
    g = torch.Generator().manual_seed(0)
    normal = obj.vocab.normal_ids()
    rows = [normal[torch.randint(len(normal), (T - 2,), generator=g)].tolist() for _ in range(B)]
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        batch = obj.make_batch(rows)
        counter = FlopCounterMode(display=False)
        with counter:
            loss, _ = obj.loss(net, batch)
            loss.backward()
    finally:
        torch.random.set_rng_state(state)
    return float(counter.get_total_flops())


@claim_runner
def electra_vs_mlm(ctx: ClaimContext) -> Outcome:
    """ELECTRA: replaced-token detection (discriminator + 1/4-width generator) beats MLM on the same backbone at
    equal pretraining compute. The MLM arm gets ``round(steps * F_rtd / F_mlm)`` steps, F = one step's forward +
    backward FLOPs (generator included), counted by torch's FLOP counter."""
    base = _base_recipe(ctx, "electra/rtd-wikitext2.yaml")
    tok_dir = _tokenizer_step(ctx, base)
    preset = base["model"]["preset"]
    rtd_obj = {"name": "rtd", "generator_ratio": float(ctx.param("generator_ratio", 0.25))}
    mlm_model = {"preset": preset, "overrides": {"head": "mlm"}}
    flops = ctx.step("flops", lambda: {
        "rtd": step_flops(ctx, tok_dir, base, rtd_obj, {"preset": preset}),
        "mlm": step_flops(ctx, tok_dir, base, {"name": "mlm"}, mlm_model)})
    steps = int(ctx.param("steps"))
    mlm_steps = max(1, round(steps * flops["rtd"] / flops["mlm"]))
    mlm_over = {**base["model"].get("overrides", {}), "head": "mlm"}
    arms = Arms(ctx, "electra/rtd-wikitext2.yaml", {
        "electra": {"objective": [rtd_obj]},
        "mlm": {"objective": [{"name": "mlm"}], "steps": mlm_steps, "model": {"overrides": mlm_over}}})
    res = _per_arm(ctx, arms, None)
    parts = {"SST-2 dev accuracy: ELECTRA > MLM at equal FLOPs": _sst2_part(ctx, res, stats.paired(
        _col(res, "electra", "sst2_dev_acc"), _col(res, "mlm", "sst2_dev_acc"),
        what="SST-2 dev accuracy, paired by seed"), ("electra", "mlm"))}
    ours = {f"{arm} SST-2 dev acc": stats.summary(_col(res, arm, "sst2_dev_acc")) for arm in arms.arms}
    return Outcome(ours=ours, verdict=stats.combine(parts), table=_table(res, [("sst2_dev_acc", "SST-2 dev acc")]),
                   runs=arms.runs(),
                   details={"parts": {k: v.as_dict() for k, v in parts.items()}, "finetune_lr": _lrs(res),
                            "step_flops": flops, "steps": {"electra": steps, "mlm": mlm_steps},
                            "pretrain_flops": {"electra": flops["rtd"] * steps, "mlm": flops["mlm"] * mlm_steps}})
