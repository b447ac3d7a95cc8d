"""Word-knowledge graphs for CoLAKE (Sun et al. 2020, arXiv:2010.00309) from the LAMA T-REx triples.

    kg = read_trex("../shared/data/lama/TREx", holdout=0.1)     # triples split by fact, entity / relation vocab
    sents = kg.sentences()                                       # evidence sentences of the training facts
    linked = link_mentions(tok, sents, kg)                       # [{"ids", "mentions": [(start, end, entity)]}]
    g = build_graph(linked[0], kg, [cls], [sep], neighbours=3)   # one WordKnowledgeGraph

The knowledge graph: every T-REx fact ``(subject, relation, object)`` is a triple over Wikidata ids; a fixed
fraction of the facts (``holdout``, chosen by a hash of the fact's uuid, so the split never depends on
file order) is held out: neither its triple nor its evidence sentences are used in training, and it is
what word-knowledge-graph completion is scored on. Entity ids: 0 is [MASK], then every entity of a
training triple; relation ids: 0 is [MASK], then each relation and its inverse (``P19`` and ``P19^-1``),
so a neighbour reached from the object side reads ``object --P19^-1--> subject``.

The graph of one sentence (CoLAKE, section 3.1): the sentence's tokens (word nodes, with [CLS]/[SEP]); for
each linked mention (a T-REx entity label found in the sentence as whole words, case-insensitively,
longest first) an anchor entity node; for each anchor up to ``neighbours`` of its knowledge-graph neighbours
as a relation node and an entity node. Edges: word nodes form a clique; an anchor is linked to its mention's
word nodes and to its relation nodes; a relation node is linked to its anchor and its entity node. Every
node also sees itself. Soft positions: word nodes count 0, 1, 2, ...; an anchor takes its mention's first
position p, its relation nodes p + 1 and their entity nodes p + 2 (a triple reads like a phrase continuing
from the mention, so positions repeat across triples, as in the paper).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from plmkit.errors import UserError

WORD, ENTITY, RELATION = 0, 1, 2
"""Node types (given to the model as token-type ids)."""
MASK_ID = 0
"""Entity and relation id 0: the [MASK] node of each vocabulary."""


@dataclass
class Fact:
    uuid: str
    subject: str
    relation: str
    object: str
    sentences: list[str] = field(default_factory=list)


@dataclass
class KnowledgeGraph:
    """Training triples (entity / relation ids), held-out facts and the two vocabularies."""

    entities: list[str]  # index -> Wikidata id ("[MASK]" at 0)
    labels: dict[str, str]  # Wikidata id -> label
    relations: list[str]  # index -> "P19" / "P19^-1" ("[MASK]" at 0)
    train: list[tuple[int, int, int]]  # (subject, relation, object) ids
    train_facts: list[Fact]
    heldout_facts: list[Fact]
    neighbours: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # entity -> [(relation, entity)]

    def __post_init__(self) -> None:
        self.entity_index = {e: i for i, e in enumerate(self.entities)}
        self.relation_index = {r: i for i, r in enumerate(self.relations)}
        if not self.neighbours:
            for s, r, o in self.train:
                self.neighbours.setdefault(s, []).append((r, o))
                self.neighbours.setdefault(o, []).append((self.inverse(r), s))

    def inverse(self, r: int) -> int:
        """The id of relation ``r``'s inverse (and back)."""
        name = self.relations[r]
        return self.relation_index[name[:-3] if name.endswith("^-1") else name + "^-1"]

    def sentences(self) -> list[str]:
        """Evidence sentences of the training facts ([MASK] filled with the object's surface form), deduplicated."""
        return list(dict.fromkeys(s for f in self.train_facts for s in f.sentences))

    def heldout_triples(self) -> list[tuple[int, int, int]]:
        """Held-out facts whose object occurs in a training triple (an answer that can be learnt), as id
        triples; their subjects may occur in no training triple (then only the name's words inform)."""
        seen = {o for _, _, o in self.train} | {s for s, _, _ in self.train}
        out = []
        for f in self.heldout_facts:
            s, o = self.entity_index[f.subject], self.entity_index[f.object]
            if o in seen:
                out.append((s, self.relation_index[f.relation], o))
        return out


def frequency_baseline(kg: KnowledgeGraph, triples: Sequence[tuple[int, int, int]]) -> dict[str, float]:
    """Accuracy and MRR of two priors from the training triples: the object ranked by how often it is the
    object of the query's relation, and the relation ranked by how often it links to the query's object
    (ties broken by id; an answer never seen in that role is a miss, reciprocal rank 0)."""
    from collections import Counter

    by_rel: dict[int, Counter] = {}
    by_obj: dict[int, Counter] = {}
    for s, r, o in kg.train:
        by_rel.setdefault(r, Counter())[o] += 1
        by_obj.setdefault(o, Counter())[r] += 1

    def rank(counter: Counter | None, gold: int) -> float:
        order = sorted((counter or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        ids = [k for k, _ in order]
        return ids.index(gold) + 1 if gold in ids else math.inf

    ro = [rank(by_rel.get(r), o) for s, r, o in triples]
    rr = [rank(by_obj.get(o), r) for s, r, o in triples]
    n = max(len(triples), 1)
    return {"object_acc": sum(x == 1 for x in ro) / n, "object_mrr": sum(1 / x for x in ro) / n,
            "relation_acc": sum(x == 1 for x in rr) / n, "relation_mrr": sum(1 / x for x in rr) / n,
            "triples": len(triples)}


def _held_out(uuid: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha1(uuid.encode("utf-8")).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def read_trex(path: str | Path, holdout: float = 0.1, max_facts: int | None = None) -> KnowledgeGraph:
    """The T-REx facts of ``path`` (a directory of ``P*.jsonl`` or one file) as a :class:`KnowledgeGraph`
    (``max_facts``: the first facts only, files in name order)."""
    p = Path(path)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise UserError(f"{path}: no T-REx .jsonl files (expected LAMA's TREx directory)")
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"holdout: expected a fraction in [0, 1), got {holdout!r}")
    facts: list[Fact] = []
    labels: dict[str, str] = {}
    for f in files:
        if max_facts is not None and len(facts) >= max_facts:
            break
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    fact = Fact(str(rec["uuid"]), rec["sub_uri"], rec["predicate_id"], rec["obj_uri"])
                    labels.setdefault(rec["sub_uri"], rec["sub_label"])
                    labels.setdefault(rec["obj_uri"], rec["obj_label"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise UserError(f"{f}:{lineno}: not a T-REx fact ({type(e).__name__}: {e}); expected uuid, "
                                    f"sub_uri, sub_label, predicate_id, obj_uri, obj_label") from None
                for ev in rec.get("evidences") or []:
                    sent = ev.get("masked_sentence")
                    if isinstance(sent, str) and sent.count("[MASK]") == 1:
                        fact.sentences.append(sent.replace("[MASK]", ev.get("obj_surface") or rec["obj_label"]))
                facts.append(fact)
                if max_facts is not None and len(facts) >= max_facts:
                    break
    train_facts = [f for f in facts if not _held_out(f.uuid, holdout)]
    held = [f for f in facts if _held_out(f.uuid, holdout)]
    ents = sorted({e for f in facts for e in (f.subject, f.object)})  # held-out-only ones never train
    rels = sorted({f.relation for f in facts}, key=lambda r: (len(r), r))
    relations = ["[MASK]"] + [x for r in rels for x in (r, r + "^-1")]
    entities = ["[MASK]"] + ents
    e_idx = {e: i for i, e in enumerate(entities)}
    r_idx = {r: i for i, r in enumerate(relations)}
    train = [(e_idx[f.subject], r_idx[f.relation], e_idx[f.object]) for f in train_facts]
    return KnowledgeGraph(entities, labels, relations, train, train_facts, held)


def link_mentions(tok: Any, sentences: Sequence[str], kg: KnowledgeGraph, max_len: int | None = None,
                  max_label_words: int = 6) -> list[dict]:
    """Tokenize ``sentences`` and link T-REx entity labels found in them as whole words (case-insensitive;
    scanning left to right, the longest label of up to ``max_label_words`` words starting at each word wins;
    no overlaps). Returns ``{"ids": [...], "mentions": [(start, end, entity id)]}`` per
    sentence (token offsets without special tokens; mentions cut by ``max_len`` are dropped)."""
    by_label: dict[str, int] = {}
    for i, e in enumerate(kg.entities[1:], 1):
        lab = kg.labels.get(e, "").strip().lower()
        if lab and len(lab.split()) <= max_label_words:
            by_label.setdefault(lab, i)
    if not by_label:
        return [{"ids": ids, "mentions": []} for ids in tok(list(sentences), add_special_tokens=False)["input_ids"]]
    enc = tok(list(sentences), add_special_tokens=False, return_offsets=True, return_token_type_ids=False,
              return_attention_mask=False)
    out = []
    for text, ids, offs in zip(sentences, enc["input_ids"], enc["offset_mapping"]):
        if max_len is not None:
            ids, offs = ids[:max_len], offs[:max_len]
        starts = {s: i for i, (s, t) in enumerate(offs) if t > s}
        ends = {t: i for i, (s, t) in enumerate(offs) if t > s}
        low = text.lower()
        spans = [m.span() for m in _WORD.finditer(low)]
        mentions = []
        i = 0
        while i < len(spans):  # longest label starting at word i, then continue after it
            hit = None
            for j in range(min(len(spans), i + max_label_words) - 1, i - 1, -1):
                cs, ce = spans[i][0], spans[j][1]
                ent = by_label.get(low[cs:ce])
                if ent is not None and cs in starts and ce in ends:  # whole tokens only
                    hit = (starts[cs], ends[ce] + 1, ent, j)
                    break
            if hit is None:
                i += 1
                continue
            mentions.append(hit[:3])
            i = hit[3] + 1
        out.append({"ids": list(ids), "mentions": mentions})
    return out


_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class WordKnowledgeGraph:
    """One sentence's graph (see the module docstring): per node its id in its own vocabulary, its type,
    its soft position, and the edge list (undirected, self-loops implied)."""

    ids: list[int]
    types: list[int]
    positions: list[int]
    edges: list[tuple[int, int]]
    num_words: int
    anchors: list[tuple[int, int, int]]  # (node, mention start node, mention end node)

    def __len__(self) -> int:
        return len(self.ids)


def build_graph(record: dict, kg: KnowledgeGraph | None, begin: list[int], end: list[int],
                neighbours: int = 3, max_anchors: int = 4, generator: Any = None,
                extra: Sequence[tuple[int, int, int]] = ()) -> WordKnowledgeGraph:
    """The word-knowledge graph of one linked sentence.

    ``begin`` / ``end``: the special tokens around the words ([CLS] / [SEP]); ``kg=None`` gives the words
    alone (the same backbone without knowledge). ``neighbours``: at most this many knowledge-graph
    neighbours per anchor (a random sample when it has more; ``generator``: a ``torch.Generator``).
    ``extra``: (anchor mention index, relation id, entity id) triples added to the given anchors as they are
    (word-knowledge-graph completion puts its query triple there).
    """
    import torch

    words = list(begin) + list(record["ids"]) + list(end)
    n_words = len(words)
    ids, types, pos = words[:], [WORD] * n_words, list(range(n_words))
    edges: list[tuple[int, int]] = []
    anchors: list[tuple[int, int, int]] = []
    if kg is None:
        return WordKnowledgeGraph(ids, types, pos, edges, n_words, anchors)
    shift = len(begin)
    mentions = record.get("mentions", [])[:max_anchors]
    for k, (s, e, ent) in enumerate(mentions):
        a = len(ids)
        p = s + shift
        ids.append(ent)
        types.append(ENTITY)
        pos.append(p)
        anchors.append((a, s + shift, e + shift))
        edges += [(a, w) for w in range(s + shift, e + shift)]
        nbrs = list(kg.neighbours.get(ent, []))
        if len(nbrs) > neighbours:
            pick = torch.randperm(len(nbrs), generator=generator)[:neighbours].tolist()
            nbrs = [nbrs[i] for i in sorted(pick)]
        nbrs += [(r, o) for (m, r, o) in extra if m == k]
        for r, o in nbrs:
            rn, on = len(ids), len(ids) + 1
            ids += [r, o]
            types += [RELATION, ENTITY]
            pos += [p + 1, p + 2]
            edges += [(a, rn), (rn, on)]
    return WordKnowledgeGraph(ids, types, pos, edges, n_words, anchors)
