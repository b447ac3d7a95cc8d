"""Knowledge-graph pieces shared by the knowledge-enhanced objectives (ERNIE-THU, KEPLER).

* :func:`read_trex`: facts of the LAMA T-REx files (``{sub_uri, sub_label, predicate_id, obj_uri, obj_label,
  evidences}`` per line, e.g. ``shared/data/lama/TREx/*.jsonl``) as a :class:`KnowledgeGraph`: entity and
  relation vocabularies, (h, r, t) id triples, and per entity a **description** built from the available
  text: its label followed by the evidence sentences that mention it, the [MASK] of each evidence filled with
  the object's surface form (Wikidata descriptions are not shipped; KEPLER encodes those).
* :class:`TransE` and :func:`transe_loss` (Bordes et al. 2013): d(h, r, t) = ||h + r - t||_p, margin ranking
  sum(max(0, margin + d(pos) - d(neg))) over corrupted triples (:func:`corrupt`: the head or the tail replaced
  by a uniformly drawn entity, each with probability 1/2); entity vectors are renormalised to unit L2 norm
  before each step (``TransE.normalise_``), as in the paper.
* :func:`ke_loss`: KEPLER's knowledge-embedding loss (Wang et al. 2021, eq. 2-3, from RotatE's negative
  sampling): -log sigmoid(gamma - d(h, r, t)) - 1/n sum_i log sigmoid(d(h'_i, r, t'_i) - gamma) with
  d = ||h + r - t||_p.
* :class:`EntityMatcher`: entity mentions in token ids by longest exact match of each entity's tokenized
  label (a dictionary annotator standing in for ERNIE's TAGME linking), at word starts only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.mlm import MLMConfig


@dataclass(kw_only=True)
class TriplesMLMConfig(MLMConfig):
    """MLM options + the T-REx facts a knowledge objective reads (ERNIE, KEPLER)."""

    triples: list[str] | str | None = None
    """LAMA T-REx jsonl file(s) or folder(s) (required): the entity vocabulary and the triples."""
    masking: str = "whole_word"

    def validate(self, name: str) -> None:
        super().validate(name)
        if not self.triples:
            raise UserError(f"{name}: option triples is required (LAMA T-REx .jsonl files or their folder)")


@dataclass
class KnowledgeGraph:
    entities: list[str] = field(default_factory=list)  # Wikidata ids (Q...)
    labels: list[str] = field(default_factory=list)  # entity names
    relations: list[str] = field(default_factory=list)  # P...
    triples: list[tuple[int, int, int]] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    sentences: list[dict] = field(default_factory=list)  # {"text", "h", "r", "t"} evidence sentences

    def entity_id(self, uri: str, label: str) -> int:
        idx = self._index.get(uri)
        if idx is None:
            idx = self._index[uri] = len(self.entities)
            self.entities.append(uri)
            self.labels.append(label)
        return idx

    def __post_init__(self):
        self._index: dict[str, int] = {u: i for i, u in enumerate(self.entities)}


def read_trex(paths: Iterable[str | Path], max_sentences_per_entity: int = 3,
              max_facts: int | None = None) -> KnowledgeGraph:
    """The facts of LAMA T-REx jsonl files (module docstring); ``paths`` may name files or folders."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(p.glob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"triples {p}: no such file or directory")
    if not files:
        raise UserError("triples: no .jsonl files given")
    kg = KnowledgeGraph()
    rel_index: dict[str, int] = {}
    mentions: dict[int, list[str]] = {}
    seen: set[tuple[int, int, int]] = set()
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                h = kg.entity_id(d["sub_uri"], d["sub_label"])
                t = kg.entity_id(d["obj_uri"], d["obj_label"])
                rel = d["predicate_id"]
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{f}:{n}: not a LAMA T-REx fact ({e})") from None
            if rel not in rel_index:
                rel_index[rel] = len(kg.relations)
                kg.relations.append(rel)
            r = rel_index[rel]
            if (h, r, t) in seen:
                continue
            seen.add((h, r, t))
            kg.triples.append((h, r, t))
            for ev in d.get("evidences") or []:
                s = ev.get("masked_sentence")
                surf = ev.get("obj_surface") or d["obj_label"]
                if isinstance(s, str) and "[MASK]" in s:
                    text = s.replace("[MASK]", surf)
                    kg.sentences.append({"text": text, "h": h, "r": r, "t": t})
                    for e in (h, t):
                        m = mentions.setdefault(e, [])
                        if len(m) < max_sentences_per_entity and text not in m:
                            m.append(text)
            if max_facts is not None and len(kg.triples) >= max_facts:
                break
    kg.descriptions = [" ".join([kg.labels[e]] + mentions.get(e, [])) for e in range(len(kg.entities))]
    return kg


def corrupt(triples: torch.Tensor, num_entities: int, n: int = 1,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3) -> (B, n, 3): each copy has its head (prob 1/2) or its tail replaced by a random entity."""
    B = triples.shape[0]
    out = triples.unsqueeze(1).repeat(1, n, 1)
    ents = torch.randint(num_entities, (B, n), generator=generator)
    head = torch.rand(B, n, generator=generator) < 0.5
    out[..., 0] = torch.where(head, ents, out[..., 0])
    out[..., 2] = torch.where(head, out[..., 2], ents)
    return out


def distance(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, p: int = 1) -> torch.Tensor:
    """||h + r - t||_p over the last dimension."""
    return torch.linalg.vector_norm(h + r - t, ord=p, dim=-1)


class TransE(nn.Module):
    """Entity and relation embeddings (Bordes et al. 2013); init uniform(+-6/sqrt(dim)), relations normalised."""

    def __init__(self, num_entities: int, num_relations: int, dim: int = 100, p: int = 1):
        super().__init__()
        b = 6.0 / dim ** 0.5
        self.entity = nn.Embedding(num_entities, dim)
        self.relation = nn.Embedding(num_relations, dim)
        nn.init.uniform_(self.entity.weight, -b, b)
        nn.init.uniform_(self.relation.weight, -b, b)
        with torch.no_grad():
            self.relation.weight.div_(self.relation.weight.norm(dim=-1, keepdim=True))
        self.p = p

    @torch.no_grad()
    def normalise_(self) -> None:
        self.entity.weight.div_(self.entity.weight.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def forward(self, triples: torch.Tensor) -> torch.Tensor:
        """(..., 3) ids -> (...,) distances."""
        return distance(self.entity(triples[..., 0]), self.relation(triples[..., 1]), self.entity(triples[..., 2]),
                        self.p)


def transe_loss(model: TransE, pos: torch.Tensor, neg: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean over pairs of max(0, margin + d(pos) - d(neg)); pos (B, 3), neg (B, n, 3)."""
    return F.relu(margin + model(pos).unsqueeze(1) - model(neg)).mean()


def ke_loss(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor, h_neg: torch.Tensor, t_neg: torch.Tensor,
            gamma: float = 4.0, p: int = 1) -> torch.Tensor:
    """KEPLER's KE loss, mean over the batch: h, r, t (B, d); h_neg, t_neg (B, n, d)."""
    pos = F.logsigmoid(gamma - distance(h, r, t, p))  # (B,)
    neg = F.logsigmoid(distance(h_neg, r.unsqueeze(1), t_neg, p) - gamma).mean(1)  # (B,)
    return -(pos + neg).mean()


@torch.no_grad()
def link_prediction(ent: torch.Tensor, rel: torch.Tensor, triples: torch.Tensor, p: int = 1,
                    known: set[tuple[int, int, int]] | None = None) -> dict[str, float]:
    """Tail prediction: rank of the true tail among all entities by d(h, r, e) (filtered: other known true
    tails are skipped). Returns mean rank, MRR and hits@1/10."""
    ranks = []
    for h, r, t in triples.tolist():
        d = torch.linalg.vector_norm(ent[h] + rel[r] - ent, ord=p, dim=-1)  # (E,)
        better = d < d[t]
        if known:
            for e in torch.nonzero(better).flatten().tolist():
                if (h, r, e) in known:
                    better[e] = False
        ranks.append(int(better.sum()) + 1)
    rk = torch.tensor(ranks, dtype=torch.float64)
    return {"mean_rank": float(rk.mean()), "mrr": float((1 / rk).mean()),
            "hits@1": float((rk <= 1).double().mean()), "hits@10": float((rk <= 10).double().mean())}


class EntityMatcher:
    """Longest-match dictionary annotation of entity labels in token ids (module docstring)."""

    def __init__(self, labels: Sequence[str], tokenizer: Any, min_tokens: int = 1):
        self.trie: dict = {}
        for e, lab in enumerate(labels):
            ids = tokenizer.encode(lab, add_special_tokens=False)
            if len(ids) < min_tokens or not ids:
                continue
            node = self.trie
            for i in ids:
                node = node.setdefault(i, {})
            node.setdefault(None, e)  # the first entity with this label wins

    def find(self, ids: Sequence[int], word_start: Sequence[bool] | None = None) -> list[tuple[int, int, int]]:
        """Non-overlapping ``(start, end, entity)`` mentions, scanning left to right, longest first."""
        out = []
        i, n = 0, len(ids)
        while i < n:
            if word_start is not None and not word_start[i]:
                i += 1
                continue
            node, best = self.trie, None
            j = i
            while j < n and ids[j] in node:
                node = node[ids[j]]
                j += 1
                if None in node and (word_start is None or j == n or word_start[j]):
                    best = (i, j, node[None])
            if best:
                out.append(best)
                i = best[1]
            else:
                i += 1
        return out
