"""Pretraining parity: plmkit vs Hugging Face transformers on the same token stream, same optimiser, 3 seeds.

A BERT-shape MLM and a GPT-2-shape CLM are trained for the same number of steps by
- plmkit: its own model (``plmkit.models``), objective (``objectives.build("mlm" / "clm")``) and ``Trainer``
  (``Trainer.train_step``: AdamW with its decay / no-decay groups, linear warm-up + decay, grad clipping);
- transformers: ``BertForMaskedLM`` / ``GPT2LMHeadModel`` + ``DataCollatorForLanguageModeling`` (which draws
  the MLM masks) + a plain loop (``torch.optim.AdamW`` with the same groups, ``get_linear_schedule_with_warmup``,
  ``clip_grad_norm_``).

What is identical on both sides: the token ids (one WordPiece tokenizer trained by plmkit on the training
text, the text tokenized once and cut into windows), the batches and their order (the Trainer's own
permutation, replayed for the HF loop), the masking rate (15% of non-special tokens, 80/10/10), the model
shape, dropout, the optimiser settings (lr / betas / eps / weight decay from ``shared/bench/hf_baseline.py``;
warm-up, linear decay to 0 and clip-norm 1.0 chosen here), and the held-out batches (for MLM with one fixed set
of masks drawn here by neither side's code). What differs on purpose: the masks drawn during training
(plmkit's MLM objective vs the collator), initial weights, dropout draws -- each side's own code with the
run's seed. So curves can agree only within the seed-to-seed spread.

Known differences between the two sides' recipes (both are the toolkit defaults):
- plmkit selects exactly round(15% x n) tokens per sequence (stochastic rounding), the collator an
  independent Bernoulli(0.15) per token; plmkit's 10% random replacements are non-special tokens, the
  collator's any vocabulary id;
- HF's warm-up starts at LR 0 (step/warmup), plmkit's at 1/warmup ((step+1)/warmup): one step apart.

Verdict per model (stated in the JSON): final held-out loss, ``|mean_plmkit - mean_hf| <= 2 x pooled sd``
with pooled sd = sqrt((sd_plmkit^2 + sd_hf^2) / 2) over the seeds -> "agree", else "differ"; Welch's t
and p beside it.

Speed: tokens per CPU-second of the training steps (input tokens B x T per step, evaluation excluded;
``time.process_time`` of this process, 1 thread by default): robust to a shared, loaded machine.

    python bench/pretrain_parity.py [--steps 600] [--seeds 3] [--threads 1] [--eval-every 50]
        [--out bench/results/pretrain_parity.json] [--plot docs/figures/pretrain_parity.png]
    python bench/pretrain_parity.py --replot   (JSON -> summary + plot again)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
HF_BASELINE = REPO.parent / "shared" / "bench" / "hf_baseline.py"
sys.path.insert(0, str(HF_BASELINE.parent))
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import hf_baseline as hb  # noqa: E402  (optimiser constants, model configs)

DATA = Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))
MODELS = ("mlm", "clm")
SIDES = ("plmkit", "hf")


# ----------------------------------------------------------------------------------------------- settings
def default_settings(**kw: Any) -> dict:
    """Everything a run depends on; the shape fields override hf_baseline's BERT / GPT-2 configs."""
    s = dict(
        steps=600, batch_size=16, seq_len=64, hidden=128, layers=2, heads=2, intermediate=512, vocab_size=4000,
        dropout=0.1, warmup_frac=0.1, clip=1.0, lr=2e-3, weight_decay=hb.WEIGHT_DECAY, betas=list(hb.BETAS),
        eps=hb.EPS, mlm_prob=hb.MLM_PROB, mask_prob=0.8, random_prob=0.1, eval_every=50, eval_batches=8,
    )
    unknown = set(kw) - set(s)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    s.update(kw)
    return s


def warmup_steps(s: dict) -> int:
    return int(round(s["warmup_frac"] * s["steps"]))


# ----------------------------------------------------------------------------------------------- data
def train_tokenizer(texts: Sequence[str], vocab_size: int):
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    return train_tokenizer_from_iterator(texts, kind="wordpiece", vocab_size=vocab_size, log=lambda m: None)


def token_stream(tok, lines: Sequence[str]) -> list[int]:
    """All non-empty lines, encoded without special tokens and concatenated."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    out: list[int] = []
    for ids in tok.encode_batch(lines, add_special_tokens=False):
        out += ids
    return out


def windows(stream: Sequence[int], seq_len: int, model: str, tok) -> list[list[int]]:
    """Consecutive windows of ``seq_len`` token ids: MLM windows are ``[CLS] x (seq_len-2) [SEP]`` (both sides get
    these exact ids; neither adds anything), CLM windows are ``seq_len`` raw tokens."""
    if model == "mlm":
        cls, sep = tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
        n = seq_len - 2
        return [[cls] + list(stream[i:i + n]) + [sep] for i in range(0, len(stream) - n + 1, n)]
    return [list(stream[i:i + seq_len]) for i in range(0, len(stream) - seq_len + 1, seq_len)]


def batch_order(n: int, batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """The example indices of each step as plmkit's Trainer draws them (its cursor, seeded by ``seed``);
    the HF loop replays them. The test checks that the Trainer really consumed these."""
    from plmkit.training import distributed as D
    from plmkit.training.trainer import _Cursor

    cur = _Cursor(n, seed, batch_size, D.DistInfo())
    return [cur.next() for _ in range(steps)]


def special_ids(tok) -> set[int]:
    return set(tok.all_special_ids)


def fixed_mlm_masks(rows: Sequence[Sequence[int]], tok, s: dict, seed: int = 12345) -> list[dict]:
    """Held-out MLM examples with one fixed set of masks (drawn here, by neither side's masking code):
    exactly round(rate x n) non-special positions per row, 80% [MASK], 10% a random non-special id, 10% kept."""
    g = torch.Generator().manual_seed(seed)
    special = special_ids(tok)
    mask_id = tok.convert_tokens_to_ids("[MASK]")
    normal = torch.tensor([i for i in range(len(tok)) if i not in special])
    out = []
    for row in rows:
        ids = torch.tensor(row)
        cand = torch.tensor([i for i, t in enumerate(row) if t not in special])
        k = int(round(s["mlm_prob"] * len(cand)))
        pos = cand[torch.randperm(len(cand), generator=g)[:k]]
        labels = torch.full_like(ids, -100)
        labels[pos] = ids[pos]
        inp = ids.clone()
        u = torch.rand(k, generator=g)
        rnd = normal[torch.randint(len(normal), (k,), generator=g)]
        inp[pos] = torch.where(u < s["mask_prob"], torch.full_like(rnd, mask_id),
                               torch.where(u < s["mask_prob"] + s["random_prob"], rnd, ids[pos]))
        out.append({"input_ids": inp, "labels": labels})
    return out


def eval_batches(model: str, rows: Sequence[Sequence[int]], tok, s: dict) -> list[dict]:
    """The fixed held-out batches, as tensors both sides accept (labels: MLM -100 where unselected; CLM the
    input ids, each side shifting them itself)."""
    B = s["batch_size"]
    rows = list(rows)[: B * s["eval_batches"]]
    if model == "mlm":
        ex = fixed_mlm_masks(rows, tok, s)
        return [{"input_ids": torch.stack([e["input_ids"] for e in ex[i:i + B]]),
                 "labels": torch.stack([e["labels"] for e in ex[i:i + B]])} for i in range(0, len(ex), B)]
    return [{"input_ids": torch.tensor(rows[i:i + B])} for i in range(0, len(rows), B)]


def prepare_data(s: dict, train_path: Path, valid_path: Path) -> dict:
    """Tokenizer (trained on the training text), token windows of both models, held-out rows."""
    train_lines = train_path.read_text(encoding="utf-8").splitlines()
    valid_lines = valid_path.read_text(encoding="utf-8").splitlines()
    tok = train_tokenizer([ln for ln in train_lines if ln.strip()], s["vocab_size"])
    tr, va = token_stream(tok, train_lines), token_stream(tok, valid_lines)
    data = {"tokenizer": tok, "train_tokens": len(tr), "valid_tokens": len(va)}
    for m in MODELS:
        data[m] = windows(tr, s["seq_len"], m, tok)
        data[m + "_eval"] = windows(va, s["seq_len"], m, tok)
    # unigram entropy of the training tokens (nats): the loss of a model that ignores context
    counts = torch.bincount(torch.tensor(tr), minlength=len(tok)).double()
    p = counts[counts > 0] / counts.sum()
    data["unigram_nats"] = float(-(p * p.log()).sum())
    return data


# ----------------------------------------------------------------------------------------------- models
def hf_config(model: str, tok, s: dict):
    """The HF config: hf_baseline's BERT / GPT-2 config with this bench's shape, vocabulary and dropout."""
    from transformers import BertConfig, GPT2Config

    if model == "mlm":
        c = dict(hb.BERT_CONFIG, vocab_size=len(tok), hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                 num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
                 max_position_embeddings=max(s["seq_len"], 64), hidden_dropout_prob=s["dropout"],
                 attention_probs_dropout_prob=s["dropout"], pad_token_id=tok.convert_tokens_to_ids("[PAD]"))
        return BertConfig(**c, attn_implementation="sdpa")
    c = dict(hb.GPT2_CONFIG, vocab_size=len(tok), n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"],
             n_inner=s["intermediate"], n_positions=max(s["seq_len"], 64), resid_pdrop=s["dropout"],
             embd_pdrop=s["dropout"], attn_pdrop=s["dropout"], bos_token_id=tok.convert_tokens_to_ids("[SEP]"),
             eos_token_id=tok.convert_tokens_to_ids("[SEP]"))
    return GPT2Config(**c, attn_implementation="sdpa")


def plm_config(model: str, tok, s: dict):
    """plmkit's config of the same shape (from its bert / gpt2 presets; no pooler: BertForMaskedLM has none)."""
    from plmkit.models.presets import preset_config

    common = dict(vocab_size=len(tok), hidden_size=s["hidden"], num_layers=s["layers"], num_heads=s["heads"],
                  intermediate_size=s["intermediate"], max_position_embeddings=max(s["seq_len"], 64),
                  hidden_dropout=s["dropout"], attention_dropout=s["dropout"])
    if model == "mlm":
        return preset_config("bert-base", **common, pooler=False, pad_token_id=tok.convert_tokens_to_ids("[PAD]"),
                             mask_token_id=tok.convert_tokens_to_ids("[MASK]"),
                             layer_norm_eps=hb.BERT_CONFIG["layer_norm_eps"])
    sep = tok.convert_tokens_to_ids("[SEP]")
    return preset_config("gpt2", **common, embedding_dropout=s["dropout"], bos_token_id=sep, eos_token_id=sep,
                         layer_norm_eps=hb.GPT2_CONFIG["layer_norm_epsilon"])


def build_plm(model: str, tok, s: dict):
    from plmkit.models import from_config

    return from_config(plm_config(model, tok, s))


def build_hf(model: str, tok, s: dict):
    from transformers import BertForMaskedLM, GPT2LMHeadModel

    return (BertForMaskedLM if model == "mlm" else GPT2LMHeadModel)(hf_config(model, tok, s))


def hf_tokenizer(tok):
    """The same tokenizer wrapped for transformers (the collator needs [MASK], [PAD] and the special ids)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok.backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def plm_as_hf_state(model: str, plm_model) -> dict[str, torch.Tensor]:
    """plmkit's tensors under HF names (plmkit's interop name map)."""
    from plmkit.interop import hf as H

    spec = H.family_spec("bert" if model == "mlm" else "gpt2")
    sd, _ = H.to_hf_state_dict(spec, {k: v.detach() for k, v in plm_model.state_dict().items()}, plm_model.config,
                               prefixed=True)
    return sd


def init_stats(model: str, tok, s: dict, seed: int = 0) -> dict:
    """Initial-weight std per HF-named tensor for both sides' own initialisation (same seed); the summary is the
    largest relative difference of the stds over the weight matrices and embeddings."""
    torch.manual_seed(seed)
    plm = plm_as_hf_state(model, build_plm(model, tok, s))
    torch.manual_seed(seed)
    hf = {k: v.detach() for k, v in build_hf(model, tok, s).state_dict().items()}
    rows = {}
    for k, v in plm.items():
        if k not in hf or not v.is_floating_point() or v.numel() < 2:
            continue
        a, b = float(v.float().std()), float(hf[k].float().std())
        ma, mb = float(v.float().mean()), float(hf[k].float().mean())
        rows[k] = {"plmkit_std": a, "hf_std": b, "plmkit_mean": ma, "hf_mean": mb}
    mats = {k: r for k, r in rows.items() if r["hf_std"] > 0 and k.endswith("weight") and
            ("embeddings" in k or "wte" in k or "wpe" in k or "dense" in k or "attn" in k or "mlp" in k
             or "query" in k or "key" in k or "value" in k)}
    worst = max(mats.items(), key=lambda kv: abs(kv[1]["plmkit_std"] / kv[1]["hf_std"] - 1))
    consts = {k: r for k, r in rows.items() if r["hf_std"] == 0}
    const_ok = all(r["plmkit_std"] == 0 and abs(r["plmkit_mean"] - r["hf_mean"]) < 1e-6 for r in consts.values())
    return {"tensors": rows, "compared": len(mats), "max_rel_std_diff": abs(worst[1]["plmkit_std"] / worst[1]["hf_std"] - 1),
            "worst_tensor": worst[0], "constant_tensors_equal": const_ok, "n_constant": len(consts),
            "missing_in_hf": sorted(set(plm) - set(hf)), "missing_in_plmkit": sorted(set(hf) - set(plm))}


# ----------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def eval_plm(model: str, plm_model, obj, batches: list[dict]) -> float:
    """Token-weighted mean held-out loss with plmkit's own loss (objective.loss) in eval mode."""
    was = plm_model.training
    plm_model.eval()
    tot, n = 0.0, 0
    for b in batches:
        ids = b["input_ids"]
        if model == "mlm":
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": b["labels"]}
            cnt = int((b["labels"] != -100).sum())
        else:
            batch = obj.make_batch([r.tolist() for r in ids])
            cnt = int((batch["labels"] != -100).sum())
        loss, _ = obj.loss(plm_model, batch)
        tot += float(loss) * cnt
        n += cnt
    plm_model.train(was)
    return tot / n


@torch.no_grad()
def eval_hf(model: str, hf_model, batches: list[dict]) -> float:
    """Token-weighted mean held-out loss with the HF model's own loss in eval mode."""
    was = hf_model.training
    hf_model.eval()
    tot, n = 0.0, 0
    for b in batches:
        ids = b["input_ids"]
        labels = b["labels"] if model == "mlm" else ids
        out = hf_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        cnt = int((labels != -100).sum()) if model == "mlm" else int(ids.shape[0] * (ids.shape[1] - 1))
        tot += float(out.loss) * cnt
        n += cnt
    hf_model.train(was)
    return tot / n


# ----------------------------------------------------------------------------------------------- training
class Recording(Sequence):
    """A data sequence that records which indices were read (to check both sides saw the same batches)."""

    def __init__(self, data: Sequence):
        self.data, self.seen = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):  # type: ignore[override]
        self.seen.append(int(i))
        return self.data[i]


def plm_objective(model: str, tok, s: dict):
    from plmkit import objectives

    if model == "mlm":
        return objectives.build("mlm", tokenizer=tok, rate=s["mlm_prob"], mask_prob=s["mask_prob"],
                                random_prob=s["random_prob"])
    return objectives.build("clm", tokenizer=tok)


def train_config(s: dict, seed: int, threads: int):
    from plmkit.config import TrainConfig

    return TrainConfig(max_steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], weight_decay=s["weight_decay"],
                       beta1=s["betas"][0], beta2=s["betas"][1], eps=s["eps"], schedule="linear",
                       warmup_steps=warmup_steps(s), clip_grad_norm=s["clip"], seed=seed, progress=False,
                       tensorboard=False, plots=False, save_every=0, eval_every=0, num_threads=threads)


class Run:
    """One side's training of one model for ``steps``; ``step()`` returns the training loss."""

    tokens_per_step: int

    def step(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def evaluate(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError


class PlmRun(Run):
    """plmkit's model + objective + ``Trainer.train_step`` (the Trainer draws the batches: ``batch_order``)."""

    def __init__(self, model: str, tok, s: dict, data: Sequence, evals: list[dict], seed: int, threads: int,
                 init_state: dict | None = None, swap_masks: bool = False):
        from plmkit.training import Trainer

        torch.manual_seed(seed)
        self.model_kind = model
        self.model = build_plm(model, tok, s)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.obj = plm_objective(model, tok, s)
        self.obj.prepare(self.model)
        if swap_masks and model == "mlm":  # diagnostic: MLM masks drawn by transformers' collator instead
            self.obj.make_batch = hf_collator(model, tok, s)
        self.data = Recording(data)
        self.trainer = Trainer(self.model, self.obj, self.data, train_config(s, seed, threads))
        self.evals = evals
        self.tokens_per_step = s["batch_size"] * s["seq_len"]

    def step(self) -> float:
        return float(self.trainer.train_step()["loss"])

    def evaluate(self) -> float:
        return eval_plm(self.model_kind, self.model, self.obj, self.evals)


def hf_collator(model: str, tok, s: dict) -> Callable[[Sequence[Sequence[int]]], dict]:
    """transformers' ``DataCollatorForLanguageModeling`` over rows of token ids (MLM: it draws the masks)."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(
        hf_tokenizer(tok), mlm=model == "mlm", mlm_probability=s["mlm_prob"],
        mask_replace_prob=s["mask_prob"], random_replace_prob=s["random_prob"])

    def collator(rows):
        return collate([{"input_ids": list(r)} for r in rows])

    return collator


def hf_param_groups(model, weight_decay: float) -> list[dict]:
    """Decay on matrices and embeddings, none on biases and LayerNorm (HF Trainer's rule; plmkit's is ndim >= 2:
    the same split for these models)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class HfRun(Run):
    """transformers' model + ``DataCollatorForLanguageModeling`` (or ``collator``: rows -> batch) + a plain loop
    over the batches of ``order``."""

    def __init__(self, model: str, tok, s: dict, data: Sequence, order: list[list[int]], evals: list[dict],
                 seed: int, threads: int, init_state: dict | None = None, collator=None, swap_masks: bool = False):
        from transformers import get_linear_schedule_with_warmup

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.model_kind = model
        self.model = build_hf(model, tok, s)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.model.train()
        if collator is None and swap_masks and model == "mlm":  # diagnostic: plmkit's MLM objective masks
            collator = plm_objective(model, tok, s).make_batch
        self.collator = collator or hf_collator(model, tok, s)
        self.opt = torch.optim.AdamW(hf_param_groups(self.model, s["weight_decay"]), lr=s["lr"],
                                     betas=tuple(s["betas"]), eps=s["eps"])
        self.sched = get_linear_schedule_with_warmup(self.opt, warmup_steps(s), s["steps"])
        self.data, self.order, self.clip = data, order, s["clip"]
        self.evals = evals
        self.i = 0
        self.seen: list[int] = []
        self.tokens_per_step = s["batch_size"] * s["seq_len"]

    def next_batch(self) -> dict:
        idx = self.order[self.i]
        self.seen += idx
        return self.collator([self.data[j] for j in idx])

    def step(self) -> float:
        batch = self.next_batch()
        self.i += 1
        out = self.model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    def evaluate(self) -> float:
        return eval_hf(self.model_kind, self.model, self.evals)


def train_run(run: Run, s: dict, label: str, log: Callable[[str], None], every_s: float = 5.0) -> dict:
    """Train ``steps`` steps, evaluate at step 0 and every ``eval_every``; CPU time of the training steps only."""
    curve = [[0, run.evaluate()]]
    train_loss = []
    cpu = 0.0
    wall0 = time.perf_counter()
    last = wall0
    for k in range(1, s["steps"] + 1):
        c0 = time.process_time()
        train_loss.append(run.step())
        cpu += time.process_time() - c0
        if k % s["eval_every"] == 0 or k == s["steps"]:
            curve.append([k, run.evaluate()])
        now = time.perf_counter()
        if now - last >= every_s or k == s["steps"]:
            last = now
            log(f"{label} step {k}/{s['steps']} train loss {statistics.fmean(train_loss[-10:]):.3f} held-out "
                f"{curve[-1][1]:.3f} (step {curve[-1][0]}) {k * run.tokens_per_step / max(cpu, 1e-9):.0f} tok/cpu-s")
    return {"curve": curve, "train_loss": train_loss, "train_cpu_s": cpu,
            "tokens_per_cpu_s": s["steps"] * run.tokens_per_step / cpu, "wall_s": time.perf_counter() - wall0}


# ----------------------------------------------------------------------------------------------- statistics
def mean_sd(xs: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's t, its degrees of freedom and the two-sided p (scipy's t distribution; nan without scipy)."""
    ma, sa = mean_sd(a)
    mb, sb = mean_sd(b)
    va, vb = sa ** 2 / len(a), sb ** 2 / len(b)
    if va + vb == 0:
        return (0.0 if ma == mb else math.inf), float("nan"), (1.0 if ma == mb else 0.0)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if len(a) > 1 else 0) + (vb ** 2 / (len(b) - 1) if len(b) > 1 else 0))
    try:
        from scipy import stats

        p = float(2 * stats.t.sf(abs(t), df))
    except ImportError:  # pragma: no cover
        p = float("nan")
    return t, df, p


RULE = ("final held-out loss: agree if |mean_plmkit - mean_hf| <= 2 x pooled sd, pooled sd = "
        "sqrt((sd_plmkit^2 + sd_hf^2) / 2) over seeds (sample sd); Welch's t-test reported beside it")


def summarise(res: dict) -> dict:
    """Mean +- sd per eval point and side, tokens/s, and the verdict per model."""
    out = {}
    for m in MODELS:
        runs = res["runs"].get(m, {})
        if not all(runs.get(side) for side in SIDES):
            continue
        seeds = sorted(set(runs["plmkit"]) & set(runs["hf"]), key=int)
        if not seeds:
            continue
        per = {}
        for side in SIDES:
            curves = [runs[side][sd]["curve"] for sd in seeds]
            steps = [st for st, _ in curves[0]]
            pts = []
            for j, st in enumerate(steps):
                mu, sd = mean_sd([c[j][1] for c in curves])
                pts.append({"step": st, "mean": mu, "sd": sd})
            tps = [runs[side][sd]["tokens_per_cpu_s"] for sd in seeds]
            per[side] = {"points": pts, "final": [c[-1][1] for c in curves],
                         "tokens_per_cpu_s": mean_sd(tps), "train_cpu_s": sum(runs[side][sd]["train_cpu_s"]
                                                                             for sd in seeds)}
        a, b = per["plmkit"]["final"], per["hf"]["final"]
        (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
        pooled = math.sqrt((sa ** 2 + sb ** 2) / 2)
        diff = abs(ma - mb)
        t, df, p = welch(a, b)
        verdict = "agree" if diff <= 2 * pooled else "differ"
        if len(seeds) < 2:
            verdict = "inconclusive (one seed: no spread)"
        out[m] = {"seeds": [int(x) for x in seeds], "per_side": per,
                  "final_plmkit": [ma, sa], "final_hf": [mb, sb], "abs_diff": diff, "pooled_sd": pooled,
                  "diff_over_pooled_sd": diff / pooled if pooled else math.inf,
                  "welch_t": t, "welch_df": df, "welch_p": p, "verdict": verdict, "rule": RULE,
                  "speed_ratio_plmkit_over_hf": per["plmkit"]["tokens_per_cpu_s"][0] / per["hf"]["tokens_per_cpu_s"][0],
                  "unigram_nats": res.get("unigram_nats")}
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = res["summary"]
    fig, axes = plt.subplots(1, len(summ), figsize=(6 * len(summ), 4.2), squeeze=False)
    colors = {"plmkit": "tab:blue", "hf": "tab:orange"}
    names = {"mlm": "BERT-shape MLM", "clm": "GPT-2-shape CLM"}
    for ax, (m, sm) in zip(axes[0], summ.items()):
        for side in SIDES:
            pts = sm["per_side"][side]["points"]
            x = [p["step"] for p in pts]
            mu = [p["mean"] for p in pts]
            sd = [p["sd"] for p in pts]
            for sd_key, run in res["runs"][m][side].items():
                ax.plot([c[0] for c in run["curve"]], [c[1] for c in run["curve"]], color=colors[side], alpha=0.25,
                        lw=0.8)
            tps = sm["per_side"][side]["tokens_per_cpu_s"][0]
            ax.plot(x, mu, color=colors[side], lw=2,
                    label=f"{'plmkit' if side == 'plmkit' else 'transformers'} (mean of {len(sm['seeds'])} seeds; "
                          f"{tps:.0f} tok/cpu-s)")
            ax.fill_between(x, [a - b for a, b in zip(mu, sd)], [a + b for a, b in zip(mu, sd)], color=colors[side],
                            alpha=0.2)
        if sm.get("unigram_nats"):
            ax.axhline(sm["unigram_nats"], color="gray", ls="--", lw=1, label="unigram entropy")
        ax.set_title(f"{names[m]}: final {sm['final_plmkit'][0]:.3f}±{sm['final_plmkit'][1]:.3f} vs "
                     f"{sm['final_hf'][0]:.3f}±{sm['final_hf'][1]:.3f} ({sm['verdict']})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("held-out loss (nats/token)")
        lo = min(p["mean"] for side in SIDES for p in sm["per_side"][side]["points"])
        ax.set_ylim(lo - 0.3, (sm.get("unigram_nats") or lo) + 1.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(res: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="mlm,clm")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--lr", type=float, default=2e-3,
                   help=f"peak LR (default 2e-3; hf_baseline.py's {hb.LR} is a speed-benchmark setting, see docs)")
    p.add_argument("--train", type=Path, default=DATA / "wikitext-2" / "valid.txt")
    p.add_argument("--valid", type=Path, default=DATA / "wikitext-2" / "test.txt")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pretrain_parity.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "figures" / "pretrain_parity.png")
    p.add_argument("--replot", action="store_true", help="recompute the summary and plot from --out")
    p.add_argument("--swap-masks", action="store_true",
                   help="diagnostic: each side trains with the other's MLM masking (plmkit's model + Trainer with the "
                        "collator's masks, transformers' model + loop with plmkit's MLM objective's masks)")
    a = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if a.replot:
        res = json.loads(a.out.read_text())
        res["summary"] = summarise(res)
        write_json(res, a.out)
        plot(res, a.plot)
        print(json.dumps({m: {k: v for k, v in sm.items() if k != "per_side"} for m, sm in res["summary"].items()},
                         indent=1))
        return 0
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if any(m not in MODELS for m in models):
        p.error(f"--models: expected a comma list of {MODELS}")
    torch.set_num_threads(a.threads)
    s = default_settings(steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, hidden=a.hidden, layers=a.layers,
                         heads=a.heads, intermediate=4 * a.hidden, vocab_size=a.vocab_size, lr=a.lr,
                         eval_every=a.eval_every, eval_batches=a.eval_batches)
    c0 = time.process_time()
    data = prepare_data(s, a.train, a.valid)
    tok = data["tokenizer"]
    log(f"tokenizer {len(tok)} ids; {data['train_tokens']} training tokens, {data['valid_tokens']} held-out; "
        f"unigram entropy {data['unigram_nats']:.3f} nats; prep {time.process_time() - c0:.1f} cpu-s")
    import transformers

    res: dict[str, Any] = {
        "command": "python bench/pretrain_parity.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": s, "warmup_steps": warmup_steps(s), "threads": a.threads, "train_file": str(a.train),
        "valid_file": str(a.valid), "train_tokens": data["train_tokens"], "valid_tokens": data["valid_tokens"],
        "vocab": len(tok), "unigram_nats": data["unigram_nats"], "torch": torch.__version__,
        "transformers": transformers.__version__, "load_avg_start": os.getloadavg(), "rule": RULE,
        "speed_unit": "input tokens (batch x seq) per CPU-second of the training steps (time.process_time)",
        "mlm_masks": ("swapped: plmkit side masked by transformers' collator, transformers side by plmkit's MLM "
                      "objective" if a.swap_masks else "each side its own"),
        "init": {}, "runs": {m: {"plmkit": {}, "hf": {}} for m in models},
    }
    for m in models:
        st = init_stats(m, tok, s)
        res["init"][m] = {k: v for k, v in st.items() if k != "tensors"}
        res["init"][m]["tensors"] = st["tensors"]
        log(f"{m}: init std, largest relative difference {st['max_rel_std_diff']:.3f} ({st['worst_tensor']}) over "
            f"{st['compared']} weight tensors; constant tensors equal: {st['constant_tensors_equal']}")
    for seed in range(1, a.seeds + 1):
        for m in models:
            evals = eval_batches(m, data[m + "_eval"], tok, s)
            order = batch_order(len(data[m]), s["batch_size"], seed, s["steps"])
            for side in SIDES:  # alternate so that machine load hits both sides alike
                if side == "plmkit":
                    run: Run = PlmRun(m, tok, s, data[m], evals, seed, a.threads, swap_masks=a.swap_masks)
                else:
                    run = HfRun(m, tok, s, data[m], order, evals, seed, a.threads, swap_masks=a.swap_masks)
                r = train_run(run, s, f"{m} {side} seed {seed}", log)
                seen = run.data.seen if side == "plmkit" else run.seen
                r["same_batches_as_order"] = seen == [j for idx in order for j in idx]
                res["runs"][m][side][str(seed)] = r
                res["summary"] = summarise(res)
                res["total_cpu_s"] = time.process_time() - c0
                res["load_avg_end"] = os.getloadavg()
                write_json(res, a.out)
    res["summary"] = summarise(res)
    write_json(res, a.out)
    plot(res, a.plot)
    for m, sm in res["summary"].items():
        log(f"{m}: final held-out plmkit {sm['final_plmkit'][0]:.4f} ± {sm['final_plmkit'][1]:.4f}, transformers "
            f"{sm['final_hf'][0]:.4f} ± {sm['final_hf'][1]:.4f}; |diff| {sm['abs_diff']:.4f} = "
            f"{sm['diff_over_pooled_sd']:.2f} pooled sd -> {sm['verdict']} (Welch p {sm['welch_p']:.3f}); "
            f"tokens/cpu-s plmkit {sm['per_side']['plmkit']['tokens_per_cpu_s'][0]:.0f} vs hf "
            f"{sm['per_side']['hf']['tokens_per_cpu_s'][0]:.0f}")
    log(f"total {time.process_time() - c0:.0f} cpu-s; wrote {a.out} and {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
