"""ERNIE (THU; Zhang et al. 2019, arXiv:1905.07129): TransE entity embeddings fused into the token
representations at entity mentions, with MLM and the denoising entity auto-encoder (dEA).

Entities: the LAMA T-REx facts (``triples``) give the entity vocabulary and the triples on which
:class:`plmkit.objectives.kg.TransE` is trained when the objective is prepared (``transe_epochs`` passes of
margin ranking, Adam, entity vectors renormalised each step; the loss is logged once); the embeddings are then
frozen, as in ERNIE. Mentions: each window's token ids are annotated by :class:`EntityMatcher` (longest exact
match of an entity label at word starts; ERNIE used TAGME on Wikipedia); the entity is aligned with the
mention's first token.

Fusion (:class:`Aggregator`, ERNIE's "K-encoder" information fusion layer, eq. 4-5): the text encoder's
output w (B, T, H) is the token stream; the entity stream e (B, T, E) holds the aligned entity embedding at
mention starts. Each stream passes its own multi-head self-attention (the entity stream over the aligned
positions only), then

    h_j = GELU(W_t w_j + W_e e_j + b)    at tokens with an entity,   h_j = GELU(W_t w_j + b) elsewhere,
    w_j' = GELU(W_t' h_j + b_t'),         e_j' = GELU(W_e' h_j + b_e').

ERNIE interleaves M = 6 such layers inside the encoder; here the whole plmkit encoder is the T-encoder and
``fusion_layers`` (default 1) aggregators follow it, so any encoder preset composes without changing
the backbone. The MLM head reads w'; the HF export holds the text encoder alone (the aggregators and the
entity table live in ``model.heads``), which is what a LAMA probe of the checkpoint measures.

dEA (:func:`dea_corrupt`): of the token-entity alignments, 5% get a random entity, 15% are masked (the
entity input is dropped) and 80% are kept; at every alignment the model predicts the true entity from w'_j:
p(e | w_j) = softmax over the batch's entities of (W w'_j) . e (ERNIE also restricts the softmax to the
sequence's entities to save compute). loss = MLM + ``dea_weight`` * dEA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import IGNORE, check_positive, check_unit, hidden_only, word_ids_of
from plmkit.objectives.kg import EntityMatcher, TransE, TriplesMLMConfig, corrupt, read_trex, transe_loss
from plmkit.objectives.mlm import MLM

NO_ENTITY = -1


class Aggregator(nn.Module):
    """ERNIE's information fusion layer (module docstring)."""

    def __init__(self, hidden: int, entity_dim: int, heads: int = 4):
        super().__init__()
        self.token_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.entity_attn = nn.MultiheadAttention(entity_dim, _divisor(entity_dim, heads), batch_first=True)
        self.token_norm = nn.LayerNorm(hidden)
        self.entity_norm = nn.LayerNorm(entity_dim)
        self.w_t = nn.Linear(hidden, hidden)  # carries b
        self.w_e = nn.Linear(entity_dim, hidden, bias=False)
        self.out_t = nn.Linear(hidden, hidden)
        self.out_e = nn.Linear(hidden, entity_dim)

    def fuse(self, w: torch.Tensor, e: torch.Tensor, has: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fusion formula alone (after the attentions): w (B, T, H), e (B, T, E), has (B, T) bool."""
        h = F.gelu(self.w_t(w) + self.w_e(e) * has.unsqueeze(-1).to(w.dtype))
        return F.gelu(self.out_t(h)), F.gelu(self.out_e(h))

    def forward(self, w: torch.Tensor, attention_mask: torch.Tensor, e: torch.Tensor, has: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        pad = attention_mask == 0
        w = self.token_norm(w + self.token_attn(w, w, w, key_padding_mask=pad, need_weights=False)[0])
        no_ent = ~has
        rows = has.any(1)
        if bool(rows.any()):  # entity self-attention over the aligned positions of each sequence
            ea = self.entity_attn(e[rows], e[rows], e[rows], key_padding_mask=no_ent[rows], need_weights=False)[0]
            e = e.clone()
            e[rows] = self.entity_norm(e[rows] + ea)
        e = e * has.unsqueeze(-1).to(e.dtype)
        return self.fuse(w, e, has)


def _divisor(n: int, want: int) -> int:
    for h in range(min(want, n), 0, -1):
        if n % h == 0:
            return h
    return 1


def dea_corrupt(entities: torch.Tensor, num_entities: int, replace: float = 0.05, mask: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """(B, T) aligned entity ids (-1 = none) -> corrupted ids: of the alignments, ``replace`` get a random
    entity, ``mask`` become -1 (dropped), the rest are kept. Returns the ids and the counts of each."""
    has = entities != NO_ENTITY
    u = torch.rand(entities.shape, generator=generator)
    rep = has & (u < replace)
    drop = has & (u >= replace) & (u < replace + mask)
    out = entities.clone()
    out[rep] = torch.randint(num_entities, (int(rep.sum()),), generator=generator)
    out[drop] = NO_ENTITY
    return out, {"replaced": int(rep.sum()), "masked": int(drop.sum()), "kept": int((has & ~rep & ~drop).sum())}


def train_transe(triples: torch.Tensor, num_entities: int, num_relations: int, dim: int, epochs: int,
                 batch_size: int = 256, lr: float = 1e-2, margin: float = 1.0, p: int = 1) -> tuple[TransE, float]:
    """TransE trained by margin ranking with one corrupted triple per fact (Adam); returns the model and the
    last epoch's mean loss."""
    model = TransE(num_entities, num_relations, dim, p)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(triples))
        tot, n = 0.0, 0
        for s in range(0, len(perm), batch_size):
            pos = triples[perm[s: s + batch_size]]
            model.normalise_()
            loss = transe_loss(model, pos, corrupt(pos, num_entities, 1), margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, n = tot + float(loss.detach()) * len(pos), n + len(pos)
        last = tot / max(n, 1)
    model.normalise_()
    return model, last


@dataclass(kw_only=True)
class ERNIEConfig(TriplesMLMConfig):
    entity_dim: int = 64
    transe_epochs: int = 20
    fusion_layers: int = 1
    dea_weight: float = 1.0
    dea_replace: float = 0.05
    dea_mask: float = 0.15

    def validate(self, name: str) -> None:
        super().validate(name)
        for key in ("entity_dim", "transe_epochs", "fusion_layers"):
            check_positive(name, key, getattr(self, key), integer=True)
        check_unit(name, "dea_replace", self.dea_replace)
        check_unit(name, "dea_mask", self.dea_mask)
        if self.dea_replace + self.dea_mask > 1:
            raise UserError(f"{name}: dea_replace + dea_mask must be <= 1")


class ERNIE(MLM):
    """MLM + dEA with TransE entities fused after the text encoder (module docstring).

    Extra batch keys: ``entities`` (B, T) corrupted aligned entity ids (-1: none), ``entity_labels`` (B, T)
    the true entity at every alignment (-100 elsewhere)."""

    name = "ernie_thu"
    Config = ERNIEConfig
    config: ERNIEConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        c = self.config
        self.kg = read_trex([c.triples] if isinstance(c.triples, str) else c.triples)
        self.matcher = EntityMatcher(self.kg.labels, tokenizer)
        self.transe_loss: float | None = None

    def prepare(self, model: Any) -> None:
        super().prepare(model)
        c = self.config
        if "ernie_entities" not in model.heads:
            te, self.transe_loss = train_transe(torch.tensor(self.kg.triples), len(self.kg.entities),
                                                len(self.kg.relations), c.entity_dim, c.transe_epochs)
            emb = nn.Embedding.from_pretrained(te.entity.weight.detach().clone(), freeze=True)
            model.add_head("ernie_entities", emb, init=False)
            H = model.config.hidden_size
            model.add_head("ernie_fusion", nn.ModuleList(Aggregator(H, c.entity_dim) for _ in range(c.fusion_layers)))
            model.add_head("ernie_dea", nn.Linear(H, c.entity_dim))

    def align(self, ids: list[int], word_ids: list[int | None]) -> list[int]:
        """Aligned entity id per token (mention starts; -1 elsewhere)."""
        starts = [w is not None and (i == 0 or word_ids[i - 1] != w) for i, w in enumerate(word_ids)]
        out = [NO_ENTITY] * len(ids)
        for s, _, e in self.matcher.find(ids, starts):
            out[s] = e
        return out

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        from plmkit.objectives.base import as_example

        batch = super().make_batch(examples)
        B, T = batch["input_ids"].shape
        ents = torch.full((B, T), NO_ENTITY, dtype=torch.long)
        for b, x in enumerate(examples):
            ex = self.with_specials(as_example(x, self.name))
            a = self.align(ex.ids, word_ids_of(ex, self.vocab))
            ents[b, : len(a)] = torch.tensor(a[:T])
        labels = torch.where(ents != NO_ENTITY, ents, torch.full_like(ents, IGNORE))
        corrupted, _ = dea_corrupt(ents, len(self.kg.entities), self.config.dea_replace, self.config.dea_mask)
        batch.update({"entities": corrupted, "entity_labels": labels})
        return batch

    def encode(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token and entity streams after the fusion layers: (B, T, H), (B, T, E)."""
        kw = {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}
        w = hidden_only(model, batch["input_ids"], **kw).last_hidden_state
        ents = batch["entities"]
        has = ents != NO_ENTITY
        e = model.heads["ernie_entities"](ents.clamp_min(0)) * has.unsqueeze(-1)
        for layer in model.heads["ernie_fusion"]:
            w, e = layer(w, batch["attention_mask"], e, has)
        return w, e

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        from plmkit.objectives.base import token_metrics, top1_correct

        w, _ = self.encode(model, batch)
        labels = batch["labels"]
        sel = labels != IGNORE
        logits = model.head_logits(w[sel]).float()
        y = labels[sel]
        mlm = F.cross_entropy(logits, y) if y.numel() else logits.sum() * 0.0
        metrics = token_metrics("mlm", mlm, top1_correct(logits, y), int(y.numel()))
        el = batch["entity_labels"]
        at = el != IGNORE
        if bool(at.any()):
            cand = torch.unique(el[at])  # the batch's entities
            table = model.heads["ernie_entities"].weight[cand]  # (C, E)
            scores = model.heads["ernie_dea"](w[at]) @ table.T  # (N, C)
            target = torch.searchsorted(cand, el[at])
            dea = F.cross_entropy(scores.float(), target)
            metrics["dea_loss"] = float(dea.detach())
            metrics["dea_acc"] = float((scores.argmax(-1) == target).float().mean())
        else:
            dea = w.sum() * 0.0
        metrics["entity_mentions"] = float(at.sum())
        return mlm + self.config.dea_weight * dea, metrics
