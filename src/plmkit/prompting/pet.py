"""PET, Pattern-Exploiting Training (Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text
Classification and Natural Language Inference"), for a masked LM with its MLM head: ``plm finetune --mode pet``.

1. One model per pattern-verbalizer pair (``--verbalizer DIR``: every ``*.yaml`` pattern in it; the
   ``plmkit.prompting.verbalizer`` format, ``{mask}`` marks the answer position). Each is the whole MLM
   fine-tuned on the labelled examples with PET's loss

       L = (1 - alpha) * CE(verbalizer scores at the mask, label) + alpha * L_MLM(unlabelled text)

   where the verbalizer scores are the MLM head's log-probabilities of the label words at the mask and
   L_MLM is the usual masked-LM loss (15% of the tokens: 80% [MASK], 10% random, 10% kept) on a batch
   of unlabelled texts per step; alpha = 1e-4 as in the paper (``--pet-alpha``).
2. The ensemble: the pattern models' verbalizer scores on the unlabelled examples are averaged (uniform
   weights; the paper's "weighted" variant weights by each model's training accuracy before training)
   and turned into soft labels ``softmax(mean score / T)``, T = 2 (``--pet-temperature``) as in the paper.
3. Distillation (iPET's first generation, without the later generations): a fresh copy of the model
   with an ordinary classification head is trained on the unlabelled examples against the soft labels
   (cross-entropy with soft targets). It is the saved checkpoint (a ``full`` classification model that
   ``plm evaluate`` / ``plm predict`` read as any other); ``eval.json`` also records each pattern model's
   and the ensemble's dev metrics.

Unlabelled data (``--unlabelled FILE``): a file in the task's format (labels, if any, are ignored), e.g. the
full training split while ``--max-train-examples 32`` picks the labelled few; ``--max-unlabelled N`` caps it.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.prompting.verbalizer import VerbalizerObjective
from plmkit.tasks.objective import TaskObjective, _pad


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int, rate: float,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of (B, T) ids: (inputs, selected) with ``rate`` of the non-special tokens selected."""
    sel = (torch.rand(ids.shape, generator=g) < rate) & ~special
    for b in range(ids.shape[0]):  # at least one selected token per row with any candidate
        if not sel[b].any() and (~special[b]).any():
            cand = (~special[b]).nonzero().flatten()
            sel[b, cand[torch.randint(len(cand), (1,), generator=g)]] = True
    r = torch.rand(ids.shape, generator=g)
    inputs = ids.clone()
    inputs[sel & (r < 0.8)] = mask_id
    rand = sel & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(vocab_size, (int(rand.sum()),), generator=g)
    return inputs, sel


class PETObjective(VerbalizerObjective):
    """(1 - alpha) * CE over the verbalizer scores + alpha * MLM loss on a batch of unlabelled texts."""

    def __init__(self, template, tokenizer, labels, alpha: float, unlabelled_ids: list[list[int]],
                 batch_size: int, seed: int = 0) -> None:
        super().__init__(template, tokenizer, labels, masked=True)
        self.alpha, self.unl, self.bs = alpha, unlabelled_ids, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.special = {tokenizer.cls_token_id, tokenizer.sep_token_id, self.pad_id}

    def mlm_loss(self, model) -> torch.Tensor:
        idx = torch.randint(len(self.unl), (min(self.bs, len(self.unl)),), generator=self.g).tolist()
        rows = [self.unl[i] for i in idx]
        ids = _pad(rows, self.pad_id)
        att = _pad([[1] * len(r) for r in rows], 0)
        special = torch.zeros_like(ids, dtype=torch.bool)
        for s in self.special:
            if s is not None:
                special |= ids == s
        special |= att == 0
        inputs, sel = mask_tokens(ids, special, self.tok.mask_token_id, model.config.vocab_size, 0.15, self.g)
        dev = next(model.parameters()).device
        tt = torch.zeros_like(inputs) if getattr(model.config, "type_vocab_size", 0) else None
        out = model(inputs.to(dev), attention_mask=att.to(dev), token_type_ids=tt if tt is None else tt.to(dev),
                    labels_mask=sel.to(dev))
        return F.cross_entropy(out.logits.float(), ids[sel].to(dev))

    def loss(self, model, batch):
        _, scores = self.forward(model, batch)
        ce = F.cross_entropy(scores, batch["labels"])
        metrics = {"task_loss": float(ce.detach()),
                   "accuracy": float((scores.argmax(-1) == batch["labels"]).float().mean())}
        if self.alpha > 0 and self.unl:
            mlm = self.mlm_loss(model)
            metrics["mlm_loss"] = float(mlm.detach())
            return (1 - self.alpha) * ce + self.alpha * mlm, metrics
        return ce, metrics


class SoftTargetObjective(TaskObjective):
    """Classification head trained on soft labels (features carry ``soft``: a distribution over classes)."""

    def make_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().make_batch([{k: v for k, v in e.items() if k != "soft"} for e in examples])
        if "soft" in examples[0]:
            batch["soft"] = torch.tensor(np.array([e["soft"] for e in examples]), dtype=torch.float)
        return batch

    def loss(self, model, batch):
        if "soft" not in batch:
            return super().loss(model, batch)
        _, logits = self.forward(model, batch)
        loss = -(batch["soft"].to(logits.device) * F.log_softmax(logits.float(), -1)).sum(-1).mean()
        return loss, {"distill_loss": float(loss.detach())}


def soft_labels(scores: list[np.ndarray], temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean scores, softmax(mean / T)) over the pattern models: (N, C) each."""
    mean = np.mean(np.stack(scores), axis=0)
    z = mean / temperature
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return mean, p / p.sum(-1, keepdims=True)


def _log(msg: str) -> None:
    print(f"[finetune/pet] {msg}", flush=True)


def run_pet(cfg, spec, tok, data, out: Path) -> dict[str, Any]:
    """PET over every pattern in ``cfg.verbalizer``, ensemble soft labels, distillation; writes ``out``."""
    import plmkit
    from plmkit.prompting.templates import load_templates
    from plmkit.tasks.checkpoint import save_checkpoint, write_json_atomic
    from plmkit.tasks.data import encode, subsample
    from plmkit.tasks.finetuning import _cpu_fields, task_info, train, training_config, TaskFeatures, \
        _seed_everything
    from plmkit.tasks.inference import run_model
    from plmkit.tasks.modes import ModeConfig, count_parameters
    from plmkit.tasks.scoring import score
    from plmkit.tasks.specs import read_split

    if spec.kind != "classification":
        raise UserError(f"--mode pet classifies with label words: it needs a classification task, not {spec.kind}")
    if not cfg.verbalizer:
        raise UserError("--mode pet needs --verbalizer FILE.yaml or a directory of pattern-verbalizer pairs")
    if not cfg.unlabelled:
        raise UserError("--mode pet needs --unlabelled FILE (unlabelled examples in the task's format: the soft "
                        "labels of the pattern ensemble are computed on them and the final model learns from them)")
    pair = spec.text_pair_column is not None
    patterns = load_templates([cfg.verbalizer], labels=tuple(data.labels), pair=pair, allow_mask=True)
    base = plmkit.load(cfg.model)
    if getattr(base.config, "head", None) != "mlm" or getattr(base, "head", None) is None:
        raise UserError(f"{cfg.model}: --mode pet needs a masked LM with its MLM head (config.head 'mlm'), "
                        f"this model has {getattr(base.config, 'head', None)!r}")
    upath = Path(cfg.unlabelled)
    if not upath.is_file():
        raise UserError(f"--unlabelled {upath}: no such file")
    unl = subsample(read_split(spec, upath, "train", labelled=False), cfg.max_unlabelled, cfg.seed)
    if not unl:
        raise UserError(f"--unlabelled {upath}: no examples")
    unl_ids = [f["input_ids"] for f in encode(spec, tok, unl, None, cfg.max_seq_len, False, cfg.doc_stride)]
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    per_pattern, dev_scores, unl_scores = [], [], []
    for i, t in enumerate(patterns):
        _seed_everything(cfg.seed + i)
        model = copy.deepcopy(base)
        obj = PETObjective(t, tok, data.labels, cfg.pet_alpha, unl_ids, cfg.batch_size, cfg.seed + i)
        obj.prepare(model)
        for p in model.parameters():
            p.requires_grad_(True)
        tr = obj.encode_examples(tok, data.train, data.labels, cfg.max_seq_len)
        dv = obj.encode_examples(tok, data.dev, data.labels, cfg.max_seq_len)
        ul = obj.encode_examples(tok, unl, None, cfg.max_seq_len, labelled=False)
        (logs / t.name).mkdir(exist_ok=True)
        summary, _, train_s, cpu_s = train(cfg, spec, model, obj, tok, data, TaskFeatures(tr, dv),
                                           training_config(cfg, model, len(tr)), logs / t.name)
        dev_out = run_model(model, obj, dv, cfg.eval_batch_size)
        m = score(spec, data.labels, data.dev, dv, dev_out)
        dev_scores.append(np.stack(dev_out))
        unl_scores.append(np.stack(run_model(model, obj, ul, cfg.eval_batch_size)))
        per_pattern.append({"pattern": t.name, "source": t.source, "label_words": t.verbalizer, **m,
                            "train_steps": summary["step"], "train_time_s": round(train_s, 1)})
        _log(f"pattern {t.name}: dev {json.dumps({k: round(v, 4) for k, v in m.items()})}")
        del model
    ens_dev, _ = soft_labels(dev_scores, cfg.pet_temperature)
    ensemble = score(spec, data.labels, data.dev, dv, list(ens_dev))
    _, soft = soft_labels(unl_scores, cfg.pet_temperature)
    _log(f"ensemble of {len(patterns)} patterns: dev {json.dumps({k: round(v, 4) for k, v in ensemble.items()})}; "
         f"distilling on {len(unl)} unlabelled examples")

    # distillation into one classifier with an ordinary head
    _seed_everything(cfg.seed)
    from plmkit.tasks.pooling import resolve_pooling

    model = base
    pooling, why = resolve_pooling(cfg.pooling, cfg.model, model)
    obj = SoftTargetObjective("classification", len(data.labels), tok, pooling=pooling)
    obj.pooling_source = why
    obj.prepare(model)
    for p in model.parameters():
        p.requires_grad_(True)
    feats_u = encode(spec, tok, unl, None, cfg.max_seq_len, False, cfg.doc_stride)
    for f, q in zip(feats_u, soft):
        f["soft"] = q
    dev_feats = encode(spec, tok, data.dev, data.labels, cfg.max_seq_len, False, cfg.doc_stride)
    (logs / "distill").mkdir(exist_ok=True)
    summary, history, train_s, _ = train(cfg, spec, model, obj, tok, data, TaskFeatures(feats_u, dev_feats),
                                         training_config(cfg, model, len(feats_u)), logs / "distill")
    metrics = score(spec, data.labels, data.dev, dev_feats, run_model(model, obj, dev_feats, cfg.eval_batch_size))
    result = {"task": spec.name, "mode": "pet", **count_parameters(model), **metrics, "main_metric": spec.main_metric,
              "train_examples": len(data.train), "dev_examples": len(data.dev), "unlabelled_examples": len(unl),
              "pet": {"alpha": cfg.pet_alpha, "temperature": cfg.pet_temperature,
                      "loss": "(1 - alpha) * CE(verbalizer log-probabilities at the mask) + alpha * MLM loss on "
                              "unlabelled text (15% masked, 80/10/10)",
                      "ensemble": "uniform mean of the pattern models' verbalizer scores; soft labels "
                                  "softmax(mean / T) on the unlabelled examples",
                      "patterns": per_pattern, "ensemble_dev": ensemble,
                      "distilled": "classification head on the MLM, trained on the soft labels (soft-target CE)"},
              "train_steps": summary["step"], "train_time_s": round(time.perf_counter() - t_start, 1),
              **_cpu_fields(time.process_time() - c_start), "history": history,
              "skipped_bad_rows": data.bad.count}
    info = task_info(cfg, spec, tok, data, ModeConfig("full"), len(data.labels), None, obj.pooling)
    info["mode"] = "full"  # the distilled classifier is an ordinary fully fine-tuned checkpoint
    info["pet"] = {"patterns": [t.source for t in patterns], "alpha": cfg.pet_alpha}
    save_checkpoint(out, model, tok, info)
    write_json_atomic(out / "eval.json", result)
    _log(f"distilled model dev: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}; wrote {out / 'eval.json'}")
    return result
