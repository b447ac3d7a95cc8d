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


import numpy as np
import torch
import torch.nn.functional as F

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
