"""InfoWord: contrastive (InfoNCE) n-gram / sentence objective (Kong et al. 2020, "A Mutual
Information Maximization Perspective of Language Representation Learning", arXiv:1910.08350).

For each sequence a contiguous n-gram of 1..``max_ngram`` whole words is masked; the encoder reads
the masked sequence (its summary vector is the *global* representation) and, separately, the
n-gram alone as ``[CLS] n-gram [SEP]`` (its summary vector is the *local* representation).
Two projection heads (``model.heads["infoword_ctx"]`` / ``["infoword_ngram"]``, bias-free linear
H -> ``dim``, both initialised to the same orthogonal matrix so that the first scores are the plain
dot products of the summaries) map them to a shared space; with the scores
``s_ij = <g(x_i), h(y_j)> / temperature``, the loss is InfoNCE with the other n-grams of the batch
as negatives: ``mean_i -log softmax_j(s_i)_i``. ``normalize=True`` (with e.g. ``temperature=0.1``)
uses cosine scores instead (SimCLR / CLIP practice).
Batch entries whose n-grams are identical are not used as each other's negatives.

Summary vector (``pooling``): "mean" (default) averages the final hidden states over the real
tokens; "cls" takes the pooler / first-token vector. Measured on bert-tiny, WikiText-2, batch 16,
200 Trainer steps with ``mlm_weight=1`` (bench/results/objectives.json): "cls" stays at chance
(InfoNCE 2.77 = ln 16, acc ~0.05), because a freshly initialised [CLS] / tanh-pooler vector barely
differs between inputs (across-batch std 0.05 against a shared component of 0.12) and dropout
noise swamps that difference; "mean" starts from a bag-of-words summary that already differs
between inputs and falls from 3.04 to 1.68 (acc 0.08 -> 0.33) in the same run (its MLM term ends at
7.19 instead of 6.56: the two terms share the small model). "cls" is kept for large models and
long runs. The old heads (N(0, 0.02) init with bias) made matters worse: scores and
their gradients started as a product of two 0.02-scaled maps, and with ``normalize=True`` the
biases let all vectors collapse onto one direction, so even a fixed batch of 16 stayed at ln 16.

Combine with MLM either through ``build_many([{"name": "mlm"}, {"name": "infoword"}])`` (two
forwards) or with ``mlm_weight > 0``, which adds the MLM loss on the masked n-gram tokens of the
same forward pass (the paper's ``L = L_MLM + lambda * L_DIM``; our labels cover only the
n-gram). Batch keys: input_ids, attention_mask, ngram_ids, ngram_attention_mask, labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.errors import UserError
from plmkit.models.heads import masked_mean
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    attention_from_lengths,
    check_choice,
    check_positive,
    hidden_only,
    pad_2d,
    require_encoder,
    require_head,
    require_vocab,
    token_metrics,
    top1_correct,
    word_ids_of,
    word_spans,
)


@dataclass(kw_only=True)
class InfoWordConfig(ObjectiveConfig):
    max_ngram: int = 5
    """Longest masked n-gram, in words (length drawn uniformly from 1..max_ngram)."""
    dim: int = 128
    """Width of the shared projection space."""
    normalize: bool = False
    """L2-normalise both representations (cosine scores); False = the paper's raw dot products."""
    temperature: float = 1.0
    pooling: str = "mean"
    """Summary vector of each sequence: "mean" of the final hidden states over its real tokens, or
    "cls" (the pooler / first-token vector)."""
    mlm_weight: float = 0.0
    """> 0: add this times the MLM loss on the masked n-gram tokens."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_positive(name, "max_ngram", self.max_ngram, integer=True)
        check_positive(name, "dim", self.dim, integer=True)
        check_positive(name, "temperature", self.temperature)
        check_choice(name, "pooling", self.pooling, ("mean", "cls"))
        if not isinstance(self.mlm_weight, (int, float)) or self.mlm_weight < 0:
            raise UserError(f"{name}: option mlm_weight must be >= 0, got {self.mlm_weight!r}")


class InfoWord(Objective):
    """InfoNCE between masked sentences and their n-grams (see the module docstring)."""

    name = "infoword"
    token_nll = False
    example_kind = "window"
    Config = InfoWordConfig
    config: InfoWordConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")

    def _prepared(self, x: Any) -> tuple[list[int], list[int | None]]:
        ex = as_example(x, self.name)
        ids, wid = ex.ids, word_ids_of(ex, self.vocab)
        if not ex.has_specials:
            b, e = self.vocab.begin, self.vocab.end
            m = self.config.max_length
            keep = len(ids) if m is None else m - 2
            ids = [b] + ids[:keep] + [e]
            wid = [None] + wid[:keep] + [None]
        elif self.config.max_length is not None:
            ids, wid = ids[: self.config.max_length], wid[: self.config.max_length]
        return ids, wid

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        if len(examples) < 2:
            raise UserError(f"{self.name}: InfoNCE takes its negatives from the batch; use a batch size >= 2")
        rows, labels, grams = [], [], []
        for x in examples:
            ids, wid = self._prepared(x)
            words = word_spans(wid)
            if not words:
                raise UserError(f"{self.name}: an example has no (non-special) tokens")
            n = min(int(torch.randint(1, self.config.max_ngram + 1, ())), len(words))
            start = int(torch.randint(len(words) - n + 1, ()))
            s, e = words[start][0], words[start + n - 1][1]
            gram = ids[s:e]
            masked = ids[:s] + [self.mask_id] * (e - s) + ids[e:]
            lab = [IGNORE] * len(ids)
            lab[s:e] = gram
            rows.append(masked)
            labels.append(lab)
            grams.append([self.vocab.begin] + gram + [self.vocab.end])
        T = max(len(r) for r in rows)
        G = max(len(g) for g in grams)
        return {
            "input_ids": pad_2d(rows, self.vocab.pad_id, T),
            "attention_mask": attention_from_lengths([len(r) for r in rows], T),
            "labels": pad_2d(labels, IGNORE, T),
            "ngram_ids": pad_2d(grams, self.vocab.pad_id, G),
            "ngram_attention_mask": attention_from_lengths([len(g) for g in grams], G),
        }

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model)
        require_vocab(self.name, model, self.vocab.size)
        if self.config.mlm_weight > 0:
            require_head(self.name + " with mlm_weight > 0", model, ("mlm",))
        H = model.config.hidden_size
        if "infoword_ctx" in model.heads and "infoword_ngram" in model.heads:
            return  # already attached (a second prepare, or a resumed model): keep the trained heads
        # One orthogonal matrix for both heads, no bias: the scores start as the plain dot products
        # <summary(x), summary(y)> (W^T W = I when dim >= H) instead of the product of two
        # N(0, 0.02) maps, whose scores and gradients start near zero; and without a bias the
        # vectors cannot all collapse onto one shared direction (which made every cosine score equal).
        ctx = nn.Linear(H, self.config.dim, bias=False)
        nn.init.orthogonal_(ctx.weight)
        gram = nn.Linear(H, self.config.dim, bias=False)
        with torch.no_grad():
            gram.weight.copy_(ctx.weight)
        model.add_head("infoword_ctx", ctx, init=False, replace=True)
        model.add_head("infoword_ngram", gram, init=False, replace=True)

    def _summary(self, out: Any, mask: torch.Tensor) -> torch.Tensor:
        """(B, H): mean of the final hidden states over the real tokens ("mean"), or the pooled
        / first-token vector ("cls")."""
        h = out.last_hidden_state
        if self.config.pooling == "cls":
            return out.pooled if out.pooled is not None else h[:, 0]
        return masked_mean(h, mask)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        sel = batch["labels"] != IGNORE
        use_mlm = self.config.mlm_weight > 0
        if use_mlm:
            out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels_mask=sel)
        else:
            out = hidden_only(model, batch["input_ids"], attention_mask=batch["attention_mask"])
        g_out = hidden_only(model, batch["ngram_ids"], attention_mask=batch["ngram_attention_mask"])
        ctx = model.heads["infoword_ctx"](self._summary(out, batch["attention_mask"]))  # (B, D)
        gram = model.heads["infoword_ngram"](self._summary(g_out, batch["ngram_attention_mask"]))  # (B, D)
        if self.config.normalize:
            ctx, gram = F.normalize(ctx.float(), dim=-1), F.normalize(gram.float(), dim=-1)
        scores = (ctx @ gram.t()).float() / self.config.temperature  # (B, B)
        ng = batch["ngram_ids"]
        same = (ng[:, None, :] == ng[None, :, :]).all(-1)  # identical n-grams: not negatives
        same.fill_diagonal_(False)
        scores = scores.masked_fill(same, float("-inf"))
        target = torch.arange(scores.shape[0], device=scores.device)
        nce = F.cross_entropy(scores, target)
        metrics = {"infonce_loss": float(nce.detach()),
                   "infonce_acc": float((scores.detach().argmax(-1) == target).float().mean())}
        loss = nce
        if use_mlm:
            y = batch["labels"][sel]
            mlm = F.cross_entropy(out.logits.float(), y)
            loss = loss + self.config.mlm_weight * mlm
            metrics.update(token_metrics("mlm", mlm, top1_correct(out.logits, y), int(y.numel())))
        return loss, metrics
