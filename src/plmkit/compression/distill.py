"""``plm distill``: task distillation of a fine-tuned teacher checkpoint into a smaller student.

Steps: load the teacher (``plmkit.tasks.checkpoint``); build the student, either DistilBERT's init (the
teacher with ``student_layers`` of its layers, evenly spaced: every other one when halving) or ``--student``
(a preset = random init, or a pretrained directory: same vocabulary required); read and encode the task's
data as ``plm finetune`` does (same FinetuneConfig steps); train the student with
:class:`DistillObjective` on the project's Trainer; score dev; save a normal fine-tuned checkpoint
(``plm evaluate --checkpoint OUT`` reads it) with ``task.json["distillation"]`` recording how.

Loss = alpha_ce * hard-label CE + alpha_kd * KD-CE(T) + alpha_cos * hidden cosine (DistilBERT)
     + alpha_emb / alpha_att / alpha_hid * TinyBERT's MSEs (projections when widths differ)
     + alpha_pkd * BERT-PKD patient loss + alpha_minilm * (MiniLM attention KL + value-relation KL).
``--method`` picks the weights' defaults (below); a weight flag given overrides its default.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmkit.checks import NON_NEGATIVE, POSITIVE, at_least, bound, check_fields
from plmkit.compression.losses import (AttentionTap, attention_mse, cosine_loss, kd_loss, minilm_loss, mse_loss,
                                       pkd_loss)
from plmkit.errors import UserError

METHODS: dict[str, dict[str, float]] = {
    # DistilBERT (Sanh et al. 2019): 5 * KD-CE + 2 * CE + 1 * cosine, T = 2 (the seeds' notes)
    "distilbert": {"alpha_kd": 5.0, "alpha_ce": 2.0, "alpha_cos": 1.0},
    # TinyBERT (Jiao et al. 2020): embedding + attention + hidden MSE, prediction-layer KD
    "tinybert": {"alpha_emb": 1.0, "alpha_att": 1.0, "alpha_hid": 1.0, "alpha_kd": 1.0},
    # BERT-PKD (Sun et al. 2019): (1 - a) CE + a KD + beta * patient loss, a = 0.5; beta = 10 here
    "pkd": {"alpha_ce": 0.5, "alpha_kd": 0.5, "alpha_pkd": 10.0},
    # MiniLM (Wang et al. 2020): last-layer attention distribution + value relation, plus KD on logits
    "minilm": {"alpha_minilm": 1.0, "alpha_kd": 1.0, "alpha_ce": 1.0},
    # no distillation: the student trained on the hard labels alone (the baseline)
    "none": {"alpha_ce": 1.0},
    # BERT-of-Theseus (Xu et al. 2020): module replacing, then successor fine-tuning, on the task loss alone
    # (plmkit.compression.theseus; the teacher is the predecessor)
    "theseus": {"alpha_ce": 1.0},
}
WEIGHTS = ("alpha_ce", "alpha_kd", "alpha_cos", "alpha_emb", "alpha_att", "alpha_hid", "alpha_pkd", "alpha_minilm")


def _log(msg: str) -> None:
    print(f"[distill] {msg}", flush=True)


@dataclass
class DistillConfig:
    """Options of one distillation run (``plm distill`` flags are generated from these fields)."""

    teacher: str = field(metadata={"path": True, "required": True})
    """fine-tuned teacher checkpoint (a plm finetune output directory)"""
    data: str = field(metadata={"path": True, "required": True})
    """data directory of the teacher's task (train/dev files)"""
    out: str = field(metadata={"path": True, "required": True})
    """output directory of the student checkpoint"""
    student_layers: int | None = field(default=None, metadata=bound(POSITIVE))
    """DistilBERT init: keep this many teacher layers, evenly spaced (every other one when halving)"""
    student: str | None = field(default=None, metadata={"path": True})
    """student preset (random init) or pretrained HF directory with the teacher's vocabulary"""
    method: str = field(default="distilbert", metadata={"choices": lambda: list(METHODS)})
    """which losses (their default weights; a weight flag given overrides)"""
    layer_map: tuple[int, ...] | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """teacher layer (1..L) whose output each student layer matches (default: uniform, (j+1)*L/S)"""
    temperature: float = field(default=2.0, metadata=bound(POSITIVE))
    """softmax temperature of the KD loss"""
    alpha_ce: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of the hard-label task loss"""
    alpha_kd: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of the soft-target KD loss (T^2 KL)"""
    alpha_cos: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of the last hidden state cosine loss (DistilBERT)"""
    alpha_emb: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of TinyBERT's embedding MSE"""
    alpha_att: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of TinyBERT's attention MSE (mapped layers)"""
    alpha_hid: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of TinyBERT's hidden-state MSE (mapped layers)"""
    alpha_pkd: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of BERT-PKD's patient loss (normalised [CLS] of mapped layers)"""
    alpha_minilm: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """weight of MiniLM's last-layer attention + value-relation KL"""
    epochs: float = field(default=1.0, metadata=bound(POSITIVE))
    """training epochs"""
    lr: float = field(default=1e-4, metadata=bound(POSITIVE))
    """peak learning rate"""
    batch_size: int = field(default=32, metadata=bound(POSITIVE))
    """examples per batch"""
    max_seq_len: int | None = field(default=None, metadata=bound(at_least(4)))
    """max tokens per input (default: the teacher's)"""
    max_train_examples: int | None = field(default=None, metadata=bound(POSITIVE))
    """random subset of N training examples"""
    max_eval_examples: int | None = field(default=None, metadata=bound(POSITIVE))
    """random subset of N dev examples"""
    seed: int = 1
    """random seed"""
    warmup: float = field(default=0.1, metadata=bound(NON_NEGATIVE))
    """fraction of steps of linear warm-up"""
    weight_decay: float = field(default=0.01, metadata=bound(NON_NEGATIVE))
    """AdamW weight decay"""
    progress: bool | None = None
    """show a progress bar (default: only when stderr is a terminal)"""
    encoding_errors: str = field(default="strict", metadata={"choices": lambda: ["strict", "replace"]})
    """non-UTF-8 bytes in the data files: stop at the first (file:line, byte offset) or read them as U+FFFD"""
    cache_teacher: bool = False
    """compute the teacher's outputs once per distinct training example and reuse them in later epochs
    (logit / hidden-state losses only; not with attention losses)"""
    theseus_replacing: float = field(default=0.5, metadata=bound(POSITIVE))
    """--method theseus: fraction of the training steps spent module replacing (the rest: successor alone)"""
    theseus_base: float = field(default=0.3, metadata=bound(NON_NEGATIVE))
    """--method theseus: replacement probability at step 0 (b in p = min(1, k t + b))"""
    theseus_slope: float | None = field(default=None, metadata=bound(NON_NEGATIVE))
    """--method theseus: k in p = min(1, k t + b) (default: p reaches 1 at the end of the replacing phase)"""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.student_layers is not None and self.student is not None:
            raise UserError("give --student-layers N (DistilBERT init from the teacher) or --student, not both")
        if self.method == "theseus" and self.student is not None:
            raise UserError("--method theseus builds its successor from the teacher's layers; give --student-layers N, "
                            "not --student")
        if not self.theseus_replacing < 1.0:
            raise UserError(f"--theseus-replacing {self.theseus_replacing}: expected a fraction in (0, 1) of the steps")
        w = self.weights()
        if self.cache_teacher and (w["alpha_att"] > 0 or w["alpha_minilm"] > 0):
            raise UserError("--cache-teacher keeps logits and hidden states, not attention maps; set --alpha-att 0 "
                            "and --alpha-minilm 0 or leave the cache off")

    def weights(self) -> dict[str, float]:
        """The loss weights: the method's defaults, overridden by the weights given."""
        w = {k: 0.0 for k in WEIGHTS} | METHODS[self.method]
        w.update({k: getattr(self, k) for k in WEIGHTS if getattr(self, k) is not None})
        return w


# ---------------------------------------------------------------------------- student
def distilbert_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers that initialise the student: evenly spaced, starting at 0 (0, 2, 4 of 6)."""
    if not 1 <= student_layers <= teacher_layers:
        raise UserError(f"--student-layers {student_layers}: expected 1..{teacher_layers} (the teacher's layers)")
    return [(j * teacher_layers) // student_layers for j in range(student_layers)]


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of ``teacher`` (task head included) keeping only ``layers`` (DistilBERT's init)."""
    if teacher.config.share_layers:
        raise UserError("DistilBERT init needs distinct layers; the teacher shares its layers (ALBERT)")
    student = copy.deepcopy(teacher)
    student.layers = nn.ModuleList(student.layers[i] for i in layers)
    student.config = student.config.replace(num_layers=len(layers))
    return student


def check_vocabularies(student_path: str, student: nn.Module, teacher: nn.Module, teacher_tok) -> None:
    """The student must read the teacher's token ids: same vocabulary size and, when it ships a tokenizer,
    the same tokens."""
    sv, tv = student.config.vocab_size, teacher.config.vocab_size
    if sv != tv:
        raise UserError(f"--student {student_path}: vocabulary of {sv} tokens, the teacher's has {tv}; "
                        "teacher and student must share one tokenizer")
    p = Path(student_path)
    if p.is_dir() and any((p / n).exists() for n in ("tokenizer.json", "vocab.txt", "vocab.json")):
        import plmkit

        tok = plmkit.load_tokenizer(str(p))
        n = min(len(tok), len(teacher_tok))
        ids = list(range(n))
        if len(tok) != len(teacher_tok) or tok.convert_ids_to_tokens(ids) != teacher_tok.convert_ids_to_tokens(ids):
            raise UserError(f"--student {student_path}: its tokenizer differs from the teacher's "
                            f"({len(tok)} vs {len(teacher_tok)} tokens); teacher and student must share one tokenizer")


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Uniform mapping: student layer j (1..S) matches teacher layer j * L / S (TinyBERT's g(m) = m * N / M)."""
    return [((j + 1) * teacher_layers) // student_layers for j in range(student_layers)]


def check_layer_map(layer_map, teacher_layers: int, student_layers: int) -> list[int]:
    if layer_map is None:
        return default_layer_map(teacher_layers, student_layers)
    lm = list(layer_map)
    if len(lm) != student_layers:
        raise UserError(f"--layer-map {','.join(map(str, lm))}: expected {student_layers} teacher layers "
                        f"(one per student layer), got {len(lm)}")
    bad = [t for t in lm if not 1 <= t <= teacher_layers]
    if bad:
        raise UserError(f"--layer-map: teacher layer {bad[0]} is out of range; expected 1..{teacher_layers}")
    return lm


# ---------------------------------------------------------------------------- objective
class DistillObjective:
    """The task objective's batches; loss = weighted distillation terms (module docstring)."""

    example_kind = "task"

    def __init__(self, task, teacher: nn.Module, weights: dict[str, float], temperature: float,
                 layer_map: list[int], projections: nn.ModuleDict | None = None, cache_teacher: bool = False):
        self.task, self.teacher, self.w, self.T, self.layer_map = task, teacher, weights, temperature, layer_map
        self.cache: dict | None = {} if cache_teacher else None
        self.cache_hits = self.cache_misses = 0
        self.projections = projections if projections is not None else nn.ModuleDict()
        self.kind = task.kind
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    def prepare(self, model) -> None:
        pass

    def make_batch(self, examples):
        return self.task.make_batch(examples)

    def forward(self, model, batch):
        return self.task.forward(model, batch)

    def _run(self, model, batch, hidden: bool, att_layers: list[int]):
        tap = AttentionTap(model, att_layers) if att_layers else None
        try:
            out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"], output_hidden_states=hidden)
            logits = model.heads["task"](out, batch["attention_mask"])
            att = {i: tap.internals(i) for i in att_layers} if tap else {}
        finally:
            if tap:
                tap.remove()
        return out, logits, att

    def terms(self, model, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The unweighted loss terms whose weight is > 0, and the student's logits."""
        w, lm = self.w, self.layer_map
        S = len(lm)
        hidden = any(w[k] > 0 for k in ("alpha_cos", "alpha_emb", "alpha_hid", "alpha_pkd"))
        s_att = ([j for j in range(S)] if w["alpha_att"] > 0 else []) + ([S - 1] if w["alpha_minilm"] > 0 else [])
        t_att = ([t - 1 for t in lm] if w["alpha_att"] > 0 else []) + \
            ([self.teacher.num_layers - 1] if w["alpha_minilm"] > 0 else [])
        s_out, s_logits, s_a = self._run(model, batch, hidden, s_att)
        with torch.no_grad():
            if not any(w[k] > 0 for k in WEIGHTS if k != "alpha_ce"):  # hard labels only: no teacher pass
                t_out, t_logits, t_a = None, None, {}
            elif self.cache is not None and not t_att:
                t_out, t_logits, t_a = self._cached_teacher(batch, hidden)
            else:
                t_out, t_logits, t_a = self._run(self.teacher, batch, hidden, t_att)
        mask = batch["attention_mask"]
        terms: dict[str, torch.Tensor] = {}
        if w["alpha_ce"] > 0:
            terms["ce"] = self.task.task_loss(s_logits, batch)
        if w["alpha_kd"] > 0:
            terms["kd"] = (kd_loss(s_logits, t_logits, self.T) if self.kind != "regression"
                           else torch.nn.functional.mse_loss(s_logits, t_logits))
        if w["alpha_cos"] > 0:
            terms["cos"] = cosine_loss(s_out.last_hidden_state, t_out.last_hidden_state, mask)
        proj = self.projections
        if w["alpha_emb"] > 0:
            terms["emb"] = mse_loss(s_out.hidden_states[0], t_out.hidden_states[0], mask, proj["0"] if "0" in proj else None)
        if w["alpha_hid"] > 0:
            terms["hid"] = torch.stack([
                mse_loss(s_out.hidden_states[j + 1], t_out.hidden_states[t], mask,
                         proj[str(j + 1)] if str(j + 1) in proj else None) for j, t in enumerate(lm)]).mean()
        if w["alpha_att"] > 0:
            terms["att"] = torch.stack([attention_mse(s_a[j][0], t_a[t - 1][0], mask)
                                        for j, t in enumerate(lm)]).mean()
        if w["alpha_pkd"] > 0:
            # intermediate layers only (the last one is covered by the KD loss), as BERT-PKD
            pairs = [(j + 1, t) for j, t in enumerate(lm[:-1])] or [(S, lm[-1])]
            terms["pkd"] = pkd_loss([s_out.hidden_states[j][:, 0] for j, _ in pairs],
                                    [t_out.hidden_states[t][:, 0] for _, t in pairs])
        if w["alpha_minilm"] > 0:
            att, vr = minilm_loss(s_a[S - 1], t_a[self.teacher.num_layers - 1], mask)
            terms["minilm"] = att + vr
        return terms, s_logits

    def _cache_keys(self, batch) -> list[tuple]:
        """One key per example: its token ids and token types (padding cut off), i.e. its content, so the
        cache is independent of the batch order and of the padding width."""
        ids, tt, lengths = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"].sum(-1).tolist()
        return [(tuple(ids[r, :n].tolist()), tuple(tt[r, :n].tolist())) for r, n in enumerate(lengths)]

    def _cached_states(self) -> set[int]:
        """Teacher hidden states (0 = embeddings) the losses read: the only ones the cache keeps."""
        lm, need = self.layer_map, set()
        if self.w["alpha_emb"] > 0:
            need.add(0)
        if self.w["alpha_hid"] > 0:
            need.update(lm)
        if self.w["alpha_pkd"] > 0:
            need.update(lm[:-1] or lm[-1:])
        return need

    def _cached_teacher(self, batch, hidden: bool):
        """The teacher's logits (and, when ``hidden``, last and hidden states) for ``batch``: from the cache
        where every example is in it, else computed now and stored per example (padding cut off)."""
        from types import SimpleNamespace

        keys = self._cache_keys(batch)
        if not all(k in self.cache for k in keys):
            self.cache_misses += 1
            out, logits, _ = self._run(self.teacher, batch, hidden, [])
            need = self._cached_states()
            for r, k in enumerate(keys):
                n = len(k[0])
                self.cache[k] = (logits[r].clone(),
                                 out.last_hidden_state[r, :n].clone() if self.w["alpha_cos"] > 0 else None,
                                 {i: out.hidden_states[i][r, :n].clone() for i in need})
            return out, logits, {}
        self.cache_hits += 1
        rows = [self.cache[k] for k in keys]
        logits = torch.stack([r[0] for r in rows])
        if not hidden:
            return SimpleNamespace(last_hidden_state=None, hidden_states=None), logits, {}
        T = batch["input_ids"].shape[1]

        def pad(ts):
            out = ts[0].new_zeros((len(ts), T) + tuple(ts[0].shape[1:]))
            for r, t in enumerate(ts):
                out[r, :t.shape[0]] = t
            return out

        last = pad([r[1] for r in rows]) if self.w["alpha_cos"] > 0 else None
        need = self._cached_states()
        states = tuple(pad([r[2][i] for r in rows]) if i in need else None
                       for i in range(self.teacher.num_layers + 1))
        return SimpleNamespace(last_hidden_state=last, hidden_states=states), logits, {}

    def loss(self, model, batch):
        terms, logits = self.terms(model, batch)
        names = {"ce": "alpha_ce", "kd": "alpha_kd", "cos": "alpha_cos", "emb": "alpha_emb", "att": "alpha_att",
                 "hid": "alpha_hid", "pkd": "alpha_pkd", "minilm": "alpha_minilm"}
        loss = sum(self.w[names[k]] * v for k, v in terms.items())
        metrics = {f"{k}_loss": float(v.detach()) for k, v in terms.items()}
        if self.kind == "classification" and "labels" in batch:
            metrics["accuracy"] = float((logits.argmax(-1) == batch["labels"]).float().mean())
        return loss, metrics


def check_compatible(weights: dict[str, float], student: nn.Module, teacher: nn.Module) -> None:
    """Losses that compare tensors need matching shapes (one line naming the flag when they do not)."""
    sc, tc = student.config, teacher.config
    if weights["alpha_cos"] > 0 and sc.hidden_size != tc.hidden_size:
        raise UserError(f"--alpha-cos: the cosine loss needs equal widths (student {sc.hidden_size}, teacher "
                        f"{tc.hidden_size}); use --alpha-hid (projected MSE) or --alpha-cos 0")
    if weights["alpha_pkd"] > 0 and sc.hidden_size != tc.hidden_size:
        raise UserError(f"--alpha-pkd: the patient loss needs equal widths (student {sc.hidden_size}, teacher "
                        f"{tc.hidden_size})")
    if weights["alpha_att"] > 0 or weights["alpha_minilm"] > 0:
        if sc.num_heads != tc.num_heads:
            raise UserError(f"attention transfer needs the teacher's number of heads (student {sc.num_heads}, "
                            f"teacher {tc.num_heads}); set the attention weights to 0")
    if weights["alpha_minilm"] > 0 and (sc.num_heads * sc.dim_per_head) % tc.num_heads:
        raise UserError(f"--alpha-minilm: the student's value width {sc.num_heads * sc.dim_per_head} is not "
                        f"divisible into the teacher's {tc.num_heads} relation heads")


def projections_for(weights: dict[str, float], student: nn.Module, teacher: nn.Module) -> nn.ModuleDict:
    """TinyBERT's learned W (student width -> teacher width) per matched state, only when the widths differ."""
    hs, ht = student.config.hidden_size, teacher.config.hidden_size
    proj = nn.ModuleDict()
    if hs == ht:
        return proj
    if weights["alpha_emb"] > 0:
        proj["0"] = nn.Linear(hs, ht)
    if weights["alpha_hid"] > 0:
        for j in range(student.num_layers):
            proj[str(j + 1)] = nn.Linear(hs, ht)
    return proj


# ---------------------------------------------------------------------------- BERT-of-Theseus
class _CurriculumObjective:
    """The task objective, setting the replacement probability from the curriculum before each step's loss."""

    def __init__(self, task, theseus):
        self.task, self.theseus, self.step, self.all_predecessor = task, theseus, 0, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def prepare(self, model) -> None:
        pass

    def loss(self, model, batch):
        p = self.theseus.set_step(self.step)
        self.step += 1
        loss, metrics = self.task.loss(model, batch)
        if not loss.requires_grad:
            # every module drew the (frozen) predecessor: nothing trainable ran, the step gets zero gradients
            loss = loss + 0.0 * sum(q.sum() for layer in self.theseus.successor_layers for q in layer.parameters())
            self.all_predecessor += 1
        return loss, {**metrics, "replace_p": p}


def _train_theseus(cfg: DistillConfig, fcfg, spec, theseus, task_obj, tok, data, feats, train_cfg, logs: Path):
    """Module replacing for ``theseus_replacing`` of the steps, then the successor alone for the rest."""
    import dataclasses

    from plmkit.tasks.finetuning import train

    total = train_cfg.max_steps
    n1 = max(1, round(cfg.theseus_replacing * total))
    n2 = total - n1
    if n2 < 1:
        raise UserError(f"--method theseus: {total} training step(s) leave none for successor fine-tuning; "
                        "train longer (--epochs) or lower --theseus-replacing")
    theseus.slope = cfg.theseus_slope if cfg.theseus_slope is not None else (1.0 - theseus.base) / n1
    replacing = theseus.attach()
    (logs / "replacing").mkdir(exist_ok=True)
    (logs / "successor").mkdir(exist_ok=True)
    _log(f"module replacing: {n1} steps, p = min(1, {theseus.slope:.6g} t + {theseus.base}); then {n2} steps of "
         "successor fine-tuning")
    curriculum = _CurriculumObjective(task_obj, theseus)
    s1, _, w1, c1 = train(fcfg, spec, replacing, curriculum, tok, data, feats,
                          dataclasses.replace(train_cfg, max_steps=n1, warmup_steps=int(cfg.warmup * n1)),
                          logs / "replacing")
    successor = theseus.detach()
    s2, _, w2, c2 = train(fcfg, spec, successor, task_obj, tok, data, feats,
                          dataclasses.replace(train_cfg, max_steps=n2, warmup_steps=int(cfg.warmup * n2)),
                          logs / "successor")
    extra = {"theseus": {"replacing_steps": s1["step"], "successor_steps": s2["step"], "base": theseus.base,
                         "slope": theseus.slope, "final_p": theseus.p, "draws": theseus.draws,
                         "replaced_fraction": theseus.replaced / max(1, theseus.draws),
                         "steps_all_predecessor": curriculum.all_predecessor}}
    return {**s2, "step": s1["step"] + s2["step"]}, w1 + w2, c1 + c2, extra


# ---------------------------------------------------------------------------- run
def distill(cfg: DistillConfig) -> dict[str, Any]:
    """One distillation run; returns the eval.json dict (also written to OUT/eval.json)."""
    import plmkit
    from plmkit.tasks.checkpoint import load_checkpoint, save_checkpoint, write_json_atomic
    from plmkit.tasks.config import FinetuneConfig
    from plmkit.tasks.data import task_spec
    from plmkit.tasks.finetuning import _seed_everything, encode_task_data, read_task_data, task_info, train, \
        training_config
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.modes import ModeConfig, count_parameters
    from plmkit.tasks.scoring import score

    if cfg.student_layers is None and cfg.student is None:
        raise UserError("give --student-layers N (DistilBERT init from the teacher) or --student PRESET_OR_DIR")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    teacher, t_obj, info, tok = load_checkpoint(cfg.teacher)
    if info["kind"] not in ("classification", "regression"):
        raise UserError(f"{cfg.teacher}: plm distill supports sequence classification and regression teachers, "
                        f"this one is {info['kind']!r}")
    if info.get("compression"):
        raise UserError(f"{cfg.teacher}: is already compressed ({info['compression']}); distil from the "
                        "uncompressed fine-tuned model")
    weights = cfg.weights()
    _seed_everything(cfg.seed)
    theseus = None
    if cfg.method == "theseus":
        from plmkit.compression.theseus import TheseusModel

        if info["mode"] != "full" or info.get("early_exit"):
            raise UserError(f"{cfg.teacher}: module replacing needs a fully fine-tuned predecessor (mode full, no "
                            f"early exit); this one is mode {info['mode']!r}")
        theseus = TheseusModel(teacher, cfg.student_layers, slope=0.0, base=cfg.theseus_base, seed=cfg.seed)
        student = theseus.successor_model
        init = f"BERT-of-Theseus successor: teacher layers {list(range(cfg.student_layers))}, each replacing " \
               f"{theseus.k} teacher layers"
    elif cfg.student is not None:
        student = plmkit.load(cfg.student)
        check_vocabularies(cfg.student, student, teacher, tok)
        t_obj.prepare(student)  # a fresh task head of the teacher's task
        init = f"{cfg.student} (its own weights)"
    else:
        if info["mode"] != "full" or info.get("early_exit"):
            raise UserError(f"{cfg.teacher}: DistilBERT init copies a fully fine-tuned teacher (mode full, no "
                            f"early exit); this one is mode {info['mode']!r}; use --student")
        layers = distilbert_layers(teacher.num_layers, cfg.student_layers)
        student = student_from_teacher(teacher, layers)
        init = f"teacher layers {layers}"
    layer_map = check_layer_map(cfg.layer_map, teacher.num_layers, student.num_layers)
    check_compatible(weights, student, teacher)
    for p in student.parameters():
        p.requires_grad_(True)

    fcfg = FinetuneConfig(**{**info["config"], "data": cfg.data, "out": cfg.out, "mode": "full", "epochs": cfg.epochs,
                             "lr": cfg.lr, "batch_size": cfg.batch_size,
                             "max_seq_len": cfg.max_seq_len or info["max_seq_len"],
                             "max_train_examples": cfg.max_train_examples, "max_eval_examples": cfg.max_eval_examples,
                             "seed": cfg.seed, "warmup": cfg.warmup, "weight_decay": cfg.weight_decay,
                             "progress": cfg.progress, "early_exit": False, "regularizer": None, "self_distill": 0.0,
                             "head_lr": None, "eval_each_epoch": False,
                             "encoding_errors": cfg.encoding_errors})
    spec = task_spec(fcfg)
    data = read_task_data(fcfg, spec)
    unknown = sorted(set(data.labels) - set(info["labels"]))
    if unknown:
        raise UserError(f"{cfg.data}: labels {unknown[:3]} are not among the teacher's {info['labels']}")
    data.labels = list(info["labels"])
    feats = encode_task_data(fcfg, spec, tok, data)
    projections = projections_for(weights, student, teacher)
    if len(projections):
        student.add_head("distill_projections", projections)
    obj = DistillObjective(t_obj, teacher, weights, cfg.temperature, layer_map, projections, cfg.cache_teacher)
    out.mkdir(parents=True, exist_ok=True)
    params = count_parameters(student)
    _log(f"student: {student.num_layers} layers, {params['total_params']:,} parameters ({init}); teacher "
         f"{teacher.num_layers} layers; losses {json.dumps({k: v for k, v in weights.items() if v})}; "
         f"layer map {layer_map}")
    train_cfg = training_config(fcfg, student, len(feats.train))
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    extra: dict[str, Any] = {}
    if theseus is not None:
        summary, train_time, train_cpu, extra = _train_theseus(cfg, fcfg, spec, theseus, t_obj, tok, data, feats,
                                                               train_cfg, logs)
    else:
        summary, _, train_time, train_cpu = train(fcfg, spec, student, obj, tok, data, feats, train_cfg, logs)
        if obj.cache is not None:
            extra["teacher_cache"] = {"examples": len(obj.cache), "batches_from_cache": obj.cache_hits,
                                      "batches_computed": obj.cache_misses}
    if len(projections):
        del student.heads["distill_projections"]
    t0 = time.perf_counter()
    metrics = score(spec, data.labels, data.dev, feats.dev, run_model(student, t_obj, feats.dev, 64))
    result: dict[str, Any] = {"task": spec.name, "method": cfg.method, "weights": weights,
                              "temperature": cfg.temperature, "layer_map": layer_map, "student_init": init,
                              "student_layers": student.num_layers, "teacher_layers": teacher.num_layers,
                              "student_params": count_parameters(student)["total_params"],
                              "teacher_params": count_parameters(teacher)["total_params"],
                              "train_examples": len(data.train), "dev_examples": len(data.dev),
                              "train_steps": summary["step"], "train_time_s": round(train_time, 1),
                              "train_cpu_s": round(train_cpu, 1), "eval_time_s": round(time.perf_counter() - t0, 2),
                              **extra, **metrics, "main_metric": spec.main_metric}
    tinfo = task_info(fcfg, spec, tok, data, ModeConfig("full"), t_obj.num_outputs, info.get("target_scale"))
    tinfo.update(pooling=info["pooling"], base_model=info["base_model"], spec=info["spec"],
                 distillation={"teacher": str(Path(cfg.teacher).resolve()), **asdict(cfg)})
    save_checkpoint(out, student, tok, tinfo)
    write_json_atomic(out / "eval.json", result)
    _log(f"dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out}")
    return result
