"""CoLAKE (Sun et al. 2020, arXiv:2010.00309): contextualized language and knowledge embedding.

Each training sentence becomes a word-knowledge graph (``plmkit.data.wkg``): its tokens, an anchor entity
node for each T-REx entity mentioned in it, and for each anchor a few of its knowledge-graph neighbours
(relation node + entity node). One Transformer runs over all nodes with

- a graph-structured attention mask: word nodes attend to each other fully; an anchor and its mention's
  word nodes see each other; entity and relation nodes see only their graph neighbours (and themselves);
- soft positions: words 0, 1, 2, ...; an anchor at its mention's position p, its relation nodes at p + 1,
  their entity nodes at p + 2;
- node types as token types (0 word, 1 entity, 2 relation; the model needs ``type_vocab_size >= 3``);
- three embedding tables: the model's word embeddings, and an entity and a relation table of this
  objective's head (``model.heads["colake"]``, id 0 = [MASK]), whose output layers are tied to them.

Masking (section 3.3): ``word_rate`` of the word nodes (specials excluded), ``entity_rate`` of the entity
nodes (anchors and neighbours) and ``relation_rate`` of the relation nodes are selected (a stochastically
rounded count per sentence and type); a selected node becomes [MASK] with ``mask_prob``, a random id of its
own vocabulary with ``random_prob``, else stays, and is predicted from its own vocabulary. A selected anchor
also has its mention's tokens replaced by [MASK] (predicted as words), so it must be inferred from the
context and its neighbours, not read off its name. Loss = word CE + entity CE + relation CE (means).

Data: the objective reads its own files (the recipe entry's ``data``: LAMA's ``TREx`` directory or its
``P*.jsonl`` files); ``read_examples`` splits the facts (``holdout``), links the entities mentioned in the
training facts' evidence sentences, and returns those sentences as training examples. Held-out examples:
``knowledge: true``: word-knowledge-graph completion queries on held-out triples -- the subject's name as
the sentence, its anchor with its training neighbours, and the query triple with the object entity node
masked (``kgc_object_acc`` / ``_mrr`` over all entities) or, in a second copy, the relation node masked
(``kgc_relation_acc`` / ``_mrr``); ``knowledge: false`` (the same backbone without knowledge: words only,
same sentences, same word masking): the held-out facts' sentences, scored by word MLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.data.wkg import ENTITY, MASK_ID, RELATION, WORD, KnowledgeGraph, build_graph, link_mentions, read_trex
from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    check_open_unit,
    check_positive,
    check_unit,
    require_encoder,
    require_head,
    require_vocab,
    stochastic_round,
)


@dataclass(kw_only=True)
class CoLAKEConfig(ObjectiveConfig):
    knowledge: bool = True
    """Build word-knowledge graphs (False: the words alone, i.e. MLM on the same sentences)."""
    holdout: float = 0.1
    """Fraction of T-REx facts held out (triples and evidence sentences) for completion / evaluation."""
    neighbours: int = 3
    """Knowledge-graph neighbours (relation + entity) per anchor; sampled anew each time when there are more."""
    max_anchors: int = 4
    """Linked mentions per sentence that get an anchor node (the first ones)."""
    word_rate: float = 0.15
    entity_rate: float = 0.15
    relation_rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    max_facts: int | None = None
    """Read at most this many facts per file set (tests); None: all."""
    eval_examples: int = 1000
    """Held-out examples (completion queries or sentences) used for evaluation."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_unit(name, "holdout", self.holdout)
        for k in ("word_rate", "entity_rate", "relation_rate"):
            check_open_unit(name, k, getattr(self, k))
        check_unit(name, "mask_prob", self.mask_prob)
        check_unit(name, "random_prob", self.random_prob)
        if self.mask_prob + self.random_prob > 1.0 + 1e-9:
            raise UserError(f"{name}: mask_prob + random_prob must be <= 1")
        check_positive(name, "neighbours", self.neighbours, integer=True)
        check_positive(name, "max_anchors", self.max_anchors, integer=True)
        check_positive(name, "eval_examples", self.eval_examples, integer=True)


class CoLAKEHead(nn.Module):
    """Entity and relation embeddings (E wide, id 0 = [MASK]) and their tied output layers."""

    def __init__(self, hidden_size: int, embed_dim: int, num_entities: int, num_relations: int,
                 eps: float = 1e-12) -> None:
        super().__init__()
        self.entity = nn.Embedding(num_entities, embed_dim)
        self.relation = nn.Embedding(num_relations, embed_dim)
        self.entity_transform = nn.Sequential(nn.Linear(hidden_size, embed_dim), nn.GELU(),
                                              nn.LayerNorm(embed_dim, eps=eps))
        self.relation_transform = nn.Sequential(nn.Linear(hidden_size, embed_dim), nn.GELU(),
                                                nn.LayerNorm(embed_dim, eps=eps))
        self.entity_bias = nn.Parameter(torch.zeros(num_entities))
        self.relation_bias = nn.Parameter(torch.zeros(num_relations))

    def entity_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.entity_transform(h) @ self.entity.weight.T + self.entity_bias  # (N, num_entities)

    def relation_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.relation_transform(h) @ self.relation.weight.T + self.relation_bias  # (N, num_relations)


def graph_mask(types: Sequence[int], edges: Sequence[tuple[int, int]], num_words: int, T: int) -> torch.Tensor:
    """(T, T) bool attention mask of one graph padded to T nodes (pads attend to themselves only)."""
    m = torch.eye(T, dtype=torch.bool)
    m[:num_words, :num_words] = True
    if edges:
        e = torch.tensor(edges, dtype=torch.long)
        m[e[:, 0], e[:, 1]] = True
        m[e[:, 1], e[:, 0]] = True
    return m


class CoLAKE(Objective):
    """CoLAKE's masked word / entity / relation prediction over word-knowledge graphs (module docstring)."""

    name = "colake"
    example_kind = "colake"
    Config = CoLAKEConfig
    config: CoLAKEConfig
    token_nll = False

    def __init__(self, tokenizer: Any = None, kg: KnowledgeGraph | None = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")
        self.begin, self.end = self.vocab.begin, self.vocab.end
        if self.begin is None or self.end is None:
            raise UserError(f"{self.name}: the tokenizer needs [CLS]/[SEP] (or <s>/</s>) tokens")
        self.kg = kg

    # ------------------------------------------------------------------ data
    def read_examples(self, files: Sequence[str], max_len: int) -> tuple[list[dict], list[dict]]:
        """(training sentences, held-out examples) from LAMA T-REx files (see the module docstring)."""
        if len(files) != 1:
            raise UserError(f"{self.name}: data: give one T-REx directory or .jsonl file, got {len(files)}")
        c = self.config
        self.kg = read_trex(files[0], c.holdout, c.max_facts)
        train = link_mentions(self.tokenizer, self.kg.sentences(), self.kg, max_len)
        train = [r for r in train if r["ids"]]
        if c.knowledge:
            g = torch.Generator().manual_seed(0)
            triples = self.kg.heldout_triples()
            order = torch.randperm(len(triples), generator=g).tolist()[: c.eval_examples]
            valid = [self.query(*triples[i]) for i in order]
        else:
            held = list(dict.fromkeys(s for f in self.kg.heldout_facts for s in f.sentences))[: c.eval_examples]
            valid = [r for r in link_mentions(self.tokenizer, held, self.kg, max_len) if r["ids"]]
        return train, valid

    def query(self, s: int, r: int, o: int) -> dict:
        """A completion query: the subject's name as the sentence, linked to its entity, plus (r, o)."""
        assert self.kg is not None
        ids = self.tokenizer.encode(self.kg.labels[self.kg.entities[s]], add_special_tokens=False)
        return {"ids": ids, "mentions": [(0, len(ids), s)], "query": (r, o)}

    # ------------------------------------------------------------------ masking
    def _pick(self, nodes: list[int], rate: float, generator: torch.Generator | None) -> list[int]:
        k = min(len(nodes), stochastic_round(rate * len(nodes), generator))
        if k == 0:
            return []
        return sorted(nodes[i] for i in torch.randperm(len(nodes), generator=generator)[:k].tolist())

    def _replace(self, cur: int, vocab_lo: int, vocab_hi: int, mask: int, generator) -> int:
        u = float(torch.rand((), generator=generator))
        c = self.config
        if u < c.mask_prob:
            return mask
        if u < c.mask_prob + c.random_prob:
            return int(torch.randint(vocab_lo, vocab_hi, (), generator=generator))
        return cur

    def mask_graph(self, g, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Inputs and labels of one graph: ``ids`` (each node in its own vocabulary), ``word_labels``,
        ``entity_labels``, ``relation_labels`` (IGNORE where not predicted) and the ``selected`` nodes per type."""
        c = self.config
        ids = list(g.ids)
        n = len(ids)
        labels = {WORD: [IGNORE] * n, ENTITY: [IGNORE] * n, RELATION: [IGNORE] * n}
        special = self.vocab.special
        words = [i for i in range(g.num_words) if ids[i] not in special]
        ents = [i for i in range(n) if g.types[i] == ENTITY]
        rels = [i for i in range(n) if g.types[i] == RELATION]
        query = getattr(g, "query_node", None)
        if query is not None:  # completion: only the query node is predicted, always as [MASK]
            t = g.types[query]
            labels[t][query] = ids[query]
            ids[query] = MASK_ID
            return {"ids": ids, "word_labels": labels[WORD], "entity_labels": labels[ENTITY],
                    "relation_labels": labels[RELATION], "selected": {t: [query]}}
        sel = {WORD: self._pick(words, c.word_rate, generator),
               ENTITY: self._pick(ents, c.entity_rate, generator),
               RELATION: self._pick(rels, c.relation_rate, generator)}
        normal = self.vocab.normal_ids()
        n_ent = len(self.kg.entities) if self.kg is not None else 1
        n_rel = len(self.kg.relations) if self.kg is not None else 1
        for i in sel[WORD]:
            labels[WORD][i] = ids[i]
            u = float(torch.rand((), generator=generator))
            if u < c.mask_prob:
                ids[i] = self.mask_id
            elif u < c.mask_prob + c.random_prob:
                ids[i] = int(normal[int(torch.randint(len(normal), (), generator=generator))])
        for i in sel[ENTITY]:
            labels[ENTITY][i] = ids[i]
            ids[i] = self._replace(ids[i], 1, n_ent, MASK_ID, generator)
        for i in sel[RELATION]:
            labels[RELATION][i] = ids[i]
            ids[i] = self._replace(ids[i], 1, n_rel, MASK_ID, generator)
        masked_anchors = set(sel[ENTITY])
        for a, s, e in g.anchors:  # a masked anchor hides its mention too
            if a in masked_anchors:
                for w in range(s, e):
                    if labels[WORD][w] == IGNORE:
                        labels[WORD][w] = g.ids[w]
                    ids[w] = self.mask_id
        return {"ids": ids, "word_labels": labels[WORD], "entity_labels": labels[ENTITY],
                "relation_labels": labels[RELATION], "selected": sel}

    # ------------------------------------------------------------------ contract
    def graphs(self, record: dict, generator: torch.Generator | None = None) -> list:
        """The graph(s) of one example: a sentence gives one; a completion query two (object / relation masked)."""
        c = self.config
        kg = self.kg if c.knowledge else None
        if c.knowledge and self.kg is None:
            raise UserError(f"{self.name}: no knowledge graph loaded (read_examples, or pass kg=...)")
        m = c.max_length
        rec = record if m is None else {**record, "ids": record["ids"][: max(0, m - 2)],
                                        "mentions": [x for x in record.get("mentions", []) if x[1] <= m - 2]}
        if "query" not in rec:
            return [build_graph(rec, kg, [self.begin], [self.end], c.neighbours, c.max_anchors, generator)]
        r, o = rec["query"]
        s = rec["mentions"][0][2]
        seed = s * 7919 + r * 104729 + o  # the same neighbours in both copies and at every evaluation
        out = []
        for masked in (ENTITY, RELATION):
            graph = build_graph(rec, kg, [self.begin], [self.end], c.neighbours, c.max_anchors,
                                torch.Generator().manual_seed(seed), extra=[(0, r, o)])
            graph.query_node = len(graph) - 1 if masked == ENTITY else len(graph) - 2
            out.append(graph)
        return out

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        graphs, masked = [], []
        queries = 0
        for x in examples:
            if not isinstance(x, dict) or "ids" not in x:
                raise UserError(f"{self.name}: expected linked sentence records {{'ids', 'mentions'}}")
            queries += "query" in x
            for g in self.graphs(x):
                graphs.append(g)
                masked.append(self.mask_graph(g))
        if queries and queries != len(examples):
            raise UserError(f"{self.name}: a batch mixes completion queries and sentences")
        T = max(len(g) for g in graphs)
        B = len(graphs)
        out = {
            "ids": torch.full((B, T), self.vocab.pad_id, dtype=torch.long),
            "token_type_ids": torch.zeros((B, T), dtype=torch.long),
            "position_ids": torch.zeros((B, T), dtype=torch.long),
            "attention_mask": torch.zeros((B, T, T), dtype=torch.bool),
            "word_labels": torch.full((B, T), IGNORE, dtype=torch.long),
            "entity_labels": torch.full((B, T), IGNORE, dtype=torch.long),
            "relation_labels": torch.full((B, T), IGNORE, dtype=torch.long),
        }
        for b, (g, m) in enumerate(zip(graphs, masked)):
            n = len(g)
            out["ids"][b, :n] = torch.tensor(m["ids"])
            out["token_type_ids"][b, :n] = torch.tensor(g.types)
            out["position_ids"][b, :n] = torch.tensor(g.positions)
            out["attention_mask"][b] = graph_mask(g.types, g.edges, g.num_words, T)
            out["word_labels"][b, :n] = torch.tensor(m["word_labels"])
            out["entity_labels"][b, :n] = torch.tensor(m["entity_labels"])
            out["relation_labels"][b, :n] = torch.tensor(m["relation_labels"])
        # "labels": what the trainer counts to weight held-out batches: the word targets of sentences, or one
        # entry per completion query (its object id)
        if queries:
            out["labels"] = torch.tensor([x["query"][1] for x in examples], dtype=torch.long)
            out["query"] = torch.ones((), dtype=torch.bool)
        else:
            out["labels"] = out["word_labels"]
        return out

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model)
        require_head(self.name, model, ("mlm", "lm"))
        require_vocab(self.name, model, self.vocab.size)
        cfg = model.config
        if self.config.knowledge:
            if getattr(cfg, "type_vocab_size", 0) < 3:
                raise UserError(f"{self.name} needs 3 token types (word, entity, relation nodes); the "
                                f"{cfg.family!r} model has type_vocab_size={getattr(cfg, 'type_vocab_size', 0)} "
                                "(model.overrides.type_vocab_size: 3)")
            if self.kg is None:
                raise UserError(f"{self.name}: the knowledge graph is read with the data; call read_examples first")
            if "colake" not in model.heads:
                model.add_head("colake", CoLAKEHead(cfg.hidden_size, cfg.embed_dim, len(self.kg.entities),
                                                    len(self.kg.relations), getattr(cfg, "layer_norm_eps", 1e-12)))

    def forward(self, model: Any, batch: dict[str, torch.Tensor]):
        """Run the model over the batch's graphs: (word logits at word targets, last hidden state)."""
        ids, types = batch["ids"], batch["token_type_ids"]
        word = model.get_input_embeddings()
        x = word(torch.where(types == WORD, ids, torch.zeros_like(ids)))
        if self.config.knowledge:
            head = model.heads["colake"]
            x = torch.where((types == ENTITY)[..., None], head.entity(torch.where(types == ENTITY, ids, 0)), x)
            x = torch.where((types == RELATION)[..., None], head.relation(torch.where(types == RELATION, ids, 0)), x)
        sel = batch["word_labels"] != IGNORE
        out = model(None, attention_mask=batch["attention_mask"], token_type_ids=types,
                    position_ids=batch["position_ids"], inputs_embeds=x, labels_mask=sel)
        return out.logits, out.last_hidden_state

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        word_logits, hidden = self.forward(model, batch)
        metrics: dict[str, float] = {}
        total = hidden.sum() * 0.0
        wsel = batch["word_labels"] != IGNORE
        y = batch["word_labels"][wsel]
        if y.numel():
            if word_logits is not None and word_logits.dim() == 3:
                word_logits = word_logits[wsel]
            lw = F.cross_entropy(word_logits.float(), y)
            total = total + lw
            metrics["word_loss"] = float(lw.detach())
            metrics["word_acc"] = float((word_logits.argmax(-1) == y).float().mean())
        if not self.config.knowledge:
            return total, metrics
        head = model.heads["colake"]
        query = "query" in batch
        for kind, key, fn in (("entity", "entity_labels", head.entity_logits),
                              ("relation", "relation_labels", head.relation_logits)):
            sel = batch[key] != IGNORE
            if not sel.any():
                continue
            logits = fn(hidden[sel]).float()
            yk = batch[key][sel]
            lk = F.cross_entropy(logits, yk)
            total = total + lk
            metrics[f"{kind}_loss"] = float(lk.detach())
            if query:  # completion: rank of the gold id among all ids but [MASK]
                logits = logits.detach().clone()
                logits[:, MASK_ID] = -math.inf
                gold = logits.gather(1, yk[:, None])
                rank = (logits > gold).sum(1) + 1
                name = "object" if kind == "entity" else "relation"
                metrics[f"kgc_{name}_acc"] = float((rank == 1).float().mean())
                metrics[f"kgc_{name}_mrr"] = float((1.0 / rank.float()).mean())
            else:
                metrics[f"{kind}_acc"] = float((logits.argmax(-1) == yk).float().mean())
        return total, metrics
