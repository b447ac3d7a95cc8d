"""LAMA probing (Petroni et al. 2019) of MLMs, causal LMs and encoder-decoders (T5, BART; their
conventions in ``plmkit.knowledge.lama_seq2seq``), LAMA-UHN, and the per-layer readout.

Conventions (stated here and in the README; ``metrics.json`` records the mode counts):

*MLM* (``config.head == "mlm"``): ``[X]`` is filled with the subject, ``[Y]`` with the mask token,
and the object is ranked at the mask position among the **candidate vocabulary**: every non-special
token that is a whole word in that position, i.e. whose text re-tokenises to exactly itself after
the template's leading space (so WordPiece ``##`` pieces and BPE tokens without the word-start mark
are excluded). LAMA ranked over the intersection of several models' vocabularies; with one model
this is its own whole-word vocabulary. A fact whose object is not a single token of that vocabulary
is **skipped** (counted in ``n_skipped`` and written to predictions.jsonl with the reason).

*Causal LM* (``config.head == "lm"``), two modes, chosen per fact:

- ``next_token``: the template has nothing but punctuation after ``[Y]`` and the object is a single
  whole-word token: the prompt is the text before ``[Y]`` and the object is ranked in the next-token
  distribution over the candidate vocabulary (as for MLMs).
- ``candidates``: every other fact (``[Y]`` inside the sentence, or a multi-token object). Each
  distinct object of the relation (over the whole relation file) is written into the template and
  scored by the **mean log-probability per token of everything from the object to the end of the
  sentence** (object tokens + the template's rest, given the prefix). The prefix is the same for
  every candidate, so this is the full-sentence log-probability, length-normalised by the number of
  scored tokens. The object is ranked among the relation's objects. The prefix is run once per fact
  and its KV cache copied to the batch of candidate continuations (``_rank_candidates_shared``; the
  same scores as one full forward per sentence, ``share_prefix=False``).

Nothing is skipped for causal LMs except a fact with an empty prefix and no BOS token to condition on.

Scores in predictions.jsonl are log-probabilities over the whole vocabulary (``mask`` and
``next_token``) or the length-normalised log-probability (``candidates``). Ranks count the
candidates with a strictly higher score, plus one.

Metrics: ``p_at_1``, ``p_at_10``, ``mrr`` per relation; per source and overall they are the mean over
relations (LAMA reports the mean precision over relations), with the fact-level means under
``micro``. ``n_facts`` counts probed facts, ``n_skipped`` skipped ones.

LAMA-UHN (Poerner et al. 2020, "E-BERT"): (1) drop facts whose object string occurs
(case-insensitively) in the subject string; (2) person-name filter for relations whose subject is a
person: ask the model "[name part] is a common name in the following {language|city|country}: [Y]."
for each whitespace-separated part of the subject, and drop the fact when the object is among the
top-3 predictions for any part. Poerner et al. used BERT-base-cased for (2); here the probed model
itself answers (no BERT MLM weights are assumed), over the same candidate vocabulary; for a
multi-token object its first token is compared.

``layers``: the same probe read out at every layer: the model's own final norm + LM/MLM head applied
to the embedding output and to each block's output (``ModelStructure.readout``), giving one P@1 per
state. The curve covers the facts ranked over the vocabulary (``mask`` and ``next_token``;
``metrics["layers_n_facts"]`` counts them): a ``candidates`` fact would need the vocabulary
projection of every token of every candidate object at every layer (31x the head cost of a
SmolLM2 forward), which made the curve impractical on a CPU. Over those facts the last entry equals
their ordinary P@1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge import lama_seq2seq
from plmkit.knowledge.lama_data import Fact, Relation, causal_ids, front_specials  # noqa: F401 (re-exported)
from plmkit.knowledge.structure import ModelStructure, hidden_states
from plmkit.models.cache import KVCache

# UHN person-name filter: relation -> what the name is "common" for (Poerner et al. 2020, Sec. 3)
NAME_FILTER = {"P19": "city", "P20": "city", "P27": "country", "P103": "language", "P1412": "language",
               "place_of_birth": "city", "place_of_death": "city"}
NAME_TEMPLATE = "[X] is a common name in the following {what}: [Y] ."

_END = re.compile(r"^[\s.,;:!?)\]\"'»]*$")


@dataclass
class Query:
    """A prepared fact: what to feed the model and how to score it."""

    fact: Fact
    mode: str | None = None  # "mask" | "next_token" | "candidates"; None when skipped
    prompt: str = ""
    ids: list[int] = field(default_factory=list)
    pos: int = -1  # the position whose distribution is read (mask / next_token)
    gold: int | None = None  # gold token (mask / next_token) or gold candidate index
    candidates: list[str] | None = None
    dec_ids: list[int] | None = None  # encoder-decoders: the decoder input of a mask query
    lead: str | None = None  # text before the object when tokenised alone (None: the template's)
    cand_ids: list[list[int]] | None = None
    cand_start: list[int] | None = None
    skip_reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


class CandidateVocab:
    """Whole-word candidate tokens of a tokenizer, for the object position after ``lead`` ("" or " ")."""

    def __init__(self, tok: Any, vocab_size: int) -> None:
        self.tok, self.vocab_size = tok, vocab_size
        self._masks: dict[str, Tensor] = {}
        self.special = set(int(i) for i in getattr(tok, "all_special_ids", []) or [])

    def mask(self, lead: str) -> Tensor:
        """(V,) bool: token v is a candidate iff ``encode(lead + text(v).strip()) == [v]``."""
        if lead not in self._masks:
            n = min(self.vocab_size, len(self.tok))
            texts = [self.tok.decode([v]) for v in range(n)]
            m = torch.zeros(self.vocab_size, dtype=torch.bool)
            keep = [v for v in range(n) if v not in self.special and texts[v].strip()]
            enc = self.tok.encode_batch([lead + texts[v].strip() for v in keep], add_special_tokens=False)
            for v, ids in zip(keep, enc):
                if len(ids) == 1 and ids[0] == v:
                    m[v] = True
            self._masks[lead] = m
        return self._masks[lead]


def _lead(template: str) -> str:
    i = template.index("[Y]")
    return " " if i > 0 and template[i - 1] == " " else ""


def _object_ids(tok: Any, obj: str, lead: str) -> list[int]:
    return list(tok.encode(lead + obj, add_special_tokens=False))


def prepare(struct: ModelStructure, tok: Any, rel: Relation, vocab: CandidateVocab,
            facts: Iterable[Fact] | None = None) -> list[Query]:
    """Turn the relation's facts into queries (mode, token ids, gold) or skipped entries."""
    out = []
    for fact in (rel.facts if facts is None else facts):
        q = Query(fact)
        lead = _lead(fact.template)
        q.lead = lama_seq2seq.object_lead(struct, fact.template, lead) if struct.kind == "seq2seq" else lead
        gold = _object_ids(tok, fact.obj, q.lead)
        single = len(gold) == 1 and bool(vocab.mask(q.lead)[gold[0]])
        if struct.kind == "seq2seq":
            lama_seq2seq.prepare_query(q, struct, tok, rel, lead, gold, single)
        elif struct.kind == "mlm":
            mask_id = getattr(tok, "mask_token_id", None)
            if mask_id is None:
                raise UserError("the tokenizer has no mask token; an MLM probe needs one")
            q.prompt = fact.template.replace("[X]", fact.subject).replace("[Y]", tok.convert_ids_to_tokens(mask_id))
            if not single:
                q.skip_reason = f"object is {len(gold)} tokens" if len(gold) != 1 else \
                    "object is not in the candidate vocabulary"
            else:
                q.ids = list(tok.encode(q.prompt, add_special_tokens=True))
                if q.ids.count(mask_id) != 1:
                    q.skip_reason = "the mask token does not survive tokenisation once"
                else:
                    q.mode, q.gold, q.pos = "mask", gold[0], q.ids.index(mask_id)
        else:
            _prepare_causal(q, tok, rel, lead, gold, single)
        out.append(q)
    return out


def _with_bos(tok: Any, ids: list[int]) -> list[int] | None:
    if ids:
        return ids
    bos = getattr(tok, "bos_token_id", None)
    bos = bos if bos is not None else getattr(tok, "eos_token_id", None)
    return [bos] if bos is not None else None


def _prepare_causal(q: Query, tok: Any, rel: Relation, lead: str, gold: list[int], single: bool) -> None:
    fact = q.fact
    i = fact.template.index("[Y]")
    prefix = fact.template[:i].replace("[X]", fact.subject)
    suffix = fact.template[i + 3:].replace("[X]", fact.subject)
    prefix = prefix[: len(prefix) - len(lead)] if lead else prefix
    q.prompt = prefix
    prefix_ids = _with_bos(tok, causal_ids(tok, prefix))
    if prefix_ids is None:
        q.skip_reason = "empty prompt before [Y] and no BOS token"
        return
    if single and _END.match(suffix):
        q.mode, q.ids, q.gold, q.pos = "next_token", prefix_ids, gold[0], len(prefix_ids) - 1
        return
    q.mode, q.candidates, q.cand_ids, q.cand_start = "candidates", list(rel.objects), [], []
    q.prompt = fact.template.replace("[X]", fact.subject)
    q.gold = rel.objects.index(fact.obj)
    bos = prefix_ids if not causal_ids(tok, prefix) else []
    for cand in rel.objects:
        ids = bos + causal_ids(tok, prefix + lead + cand + suffix)
        start = 0  # the first token that differs from the prefix's tokens (at least 1: keep a context)
        while start < min(len(ids), len(prefix_ids)) and ids[start] == prefix_ids[start]:
            start += 1
        q.cand_ids.append(ids)
        q.cand_start.append(max(start, 1))


# ------------------------------------------------------------------------------------------ scoring
def _pad(seqs: list[list[int]]) -> tuple[Tensor, Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    am = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        am[b, : len(s)] = 1
    return ids, am


def position_logprobs(struct: ModelStructure, ids: Tensor, am: Tensor, sel: Tensor,
                      all_layers: bool) -> Iterable[Tensor]:
    """Log-softmax (N, V) at the ``sel`` (B, T) positions: the model's output, or with ``all_layers``
    one readout per state (embeddings, block 0, ..., block L-1), the last being the model's output."""
    full = None if bool(am.all()) else am
    if not all_layers:
        yield struct.model(ids, attention_mask=full, labels_mask=sel).logits.float().log_softmax(-1)
        return
    states, _ = hidden_states(struct, ids, full)
    for h in states:
        yield struct.readout(h[sel]).float().log_softmax(-1)


def _rank_vocab(struct, queries: list[Query], vocab: CandidateVocab, all_layers: bool, batch_size: int) -> None:
    """mask / next_token queries: rank the gold token among the candidate vocabulary."""
    for b0 in range(0, len(queries), batch_size):
        batch = queries[b0: b0 + batch_size]
        masks = torch.stack([vocab.mask(_lead(q.fact.template) if q.lead is None else q.lead)
                             for q in batch])  # (B, V)
        if struct.kind == "seq2seq":
            states = list(lama_seq2seq.vocab_logprobs(struct, batch, all_layers))
        else:
            ids, am = _pad([q.ids for q in batch])
            sel = torch.zeros_like(ids, dtype=torch.bool)
            for b, q in enumerate(batch):
                sel[b, q.pos] = True
            states = list(position_logprobs(struct, ids, am, sel, all_layers))
        for k, lp in enumerate(states):
            lp = lp.masked_fill(~masks[:, : lp.shape[-1]], -math.inf)
            gold = torch.tensor([q.gold for q in batch])
            g = lp.gather(1, gold[:, None])  # (B, 1)
            ranks = (lp > g).sum(1) + 1
            last = k == len(states) - 1
            for b, q in enumerate(batch):
                q.result.setdefault("layer_ranks", []).append(int(ranks[b]))
                if last:
                    top = lp[b].topk(10)
                    q.result.update(rank=int(ranks[b]), gold_score=float(g[b]), top10=[
                        (int(i), float(s)) for s, i in zip(top.values, top.indices) if s > -math.inf])


def _repeat_cache(cache: KVCache, batch: int, capacity: int) -> KVCache:
    """A fresh ``KVCache`` of ``batch`` rows holding row 0 of ``cache`` (its ``length`` positions)."""
    n = cache.length
    out = KVCache(cache.num_layers, batch, cache.num_kv_heads, cache.head_dim, capacity, cache.device)
    shape = (cache.num_layers, batch, cache.num_kv_heads, max(capacity, n), cache.head_dim)
    out.k, out.v = cache.k.new_empty(shape), cache.v.new_empty(shape)
    out.k[:, :, :, :n] = cache.k[:, :1, :, :n]
    out.v[:, :, :, :n] = cache.v[:, :1, :, :n]
    out.capacity, out.length = shape[3], n
    return out


def _rank_candidates_shared(struct, q: Query, batch_size: int) -> bool:
    """``_rank_candidates`` with the template prefix run once: one forward of the tokens every candidate
    shares (``min(cand_start)`` of them, all identical by construction), then the candidates'
    continuations batched against copies of its KV cache (right padding needs no mask in a causal
    model). The first continuation token is scored from the prefix's last position, and a
    sentence's last token is not fed (it predicts no scored token). Returns False
    (nothing done) when the model gives no KV cache."""
    P = min(q.cand_start)
    prefix = q.cand_ids[0][:P]
    if any(ids[:P] != prefix for ids in q.cand_ids):
        return False
    sel = torch.zeros(1, P, dtype=torch.bool)
    sel[0, -1] = True
    out = struct.model(torch.tensor([prefix]), labels_mask=sel, use_cache=True)
    cache = getattr(out, "past_key_values", None)
    if not isinstance(cache, KVCache) or cache.k is None:
        return False
    first = out.logits.float().log_softmax(-1)[0]  # (V,): distribution of position P
    scores = torch.empty(len(q.cand_ids))
    order = sorted(range(len(q.cand_ids)), key=lambda c: len(q.cand_ids[c]))  # batches of similar length
    for c0 in range(0, len(order), batch_size):
        idx = order[c0: c0 + batch_size]
        seqs, starts = [q.cand_ids[c] for c in idx], [q.cand_start[c] for c in idx]
        conts = [s[P:-1] for s in seqs]  # the last token predicts nothing that is scored
        ids, _ = _pad([c or [0] for c in conts])
        sel = torch.zeros_like(ids, dtype=torch.bool)
        tgt, owner, from_first = [], [], []
        for b, (s, st) in enumerate(zip(seqs, starts)):
            for t in range(st, len(s)):
                if t == P:
                    from_first.append((b, s[t]))
                else:
                    sel[b, t - 1 - P] = True  # row-major order of sel == this loop's order
                    tgt.append(s[t])
                    owner.append(b)
        total = torch.zeros(len(seqs))
        count = torch.zeros(len(seqs))
        for b, t in from_first:
            total[b] += first[t]
            count[b] += 1
        if tgt:
            rep = _repeat_cache(cache, len(seqs), P + ids.shape[1])
            lp = struct.model(ids, past_key_values=rep, labels_mask=sel).logits.float().log_softmax(-1)
            tok_lp = lp.gather(1, torch.tensor(tgt)[:, None]).squeeze(1)  # (N,)
            owner_t = torch.tensor(owner)
            total.index_add_(0, owner_t, tok_lp)
            count.index_add_(0, owner_t, torch.ones_like(tok_lp))
        scores[idx] = total / count
    _candidate_result(q, scores[None])
    return True


def _candidate_result(q: Query, scores: Tensor) -> None:
    ranks = (scores > scores[:, q.gold: q.gold + 1]).sum(1) + 1
    q.result["layer_ranks"] = [int(r) for r in ranks]
    top = scores[-1].topk(min(10, scores.shape[1]))
    q.result.update(rank=int(ranks[-1]), gold_score=float(scores[-1, q.gold]),
                    top10=[(int(i), float(s)) for s, i in zip(top.values, top.indices)])


def _rank_candidates(struct, q: Query, all_layers: bool, batch_size: int) -> None:
    """candidates query: mean log-prob of object + rest of sentence for each candidate object, one
    full forward per candidate sentence (the reference for ``_rank_candidates_shared``)."""
    scores = torch.empty(1, len(q.cand_ids))
    for c0 in range(0, len(q.cand_ids), batch_size):
        seqs, starts = q.cand_ids[c0: c0 + batch_size], q.cand_start[c0: c0 + batch_size]
        ids, am = _pad(seqs)
        sel = torch.zeros_like(ids, dtype=torch.bool)
        tgt, owner = [], []
        for b, (s, st) in enumerate(zip(seqs, starts)):
            for t in range(st, len(s)):
                sel[b, t - 1] = True  # row-major order of sel == this loop's order
                tgt.append(s[t])
                owner.append(b)
        tgt_t, owner_t = torch.tensor(tgt), torch.tensor(owner)
        for k, lp in enumerate(position_logprobs(struct, ids, am, sel, False)):
            tok_lp = lp.gather(1, tgt_t[:, None]).squeeze(1)  # (N,)
            total = torch.zeros(len(seqs)).index_add_(0, owner_t, tok_lp)
            count = torch.zeros(len(seqs)).index_add_(0, owner_t, torch.ones_like(tok_lp))
            scores[k, c0: c0 + len(seqs)] = total / count
    _candidate_result(q, scores)


@torch.no_grad()
def score(struct: ModelStructure, tok: Any, queries: list[Query], vocab: CandidateVocab,
          all_layers: bool = False, batch_size: int = 32, progress: Callable[[int], None] | None = None,
          share_prefix: bool = True) -> None:
    """Fill ``q.result`` (rank, gold_score, top10, layer_ranks) for every non-skipped query.

    ``share_prefix``: score a causal LM's candidate sentences with one forward of their shared
    prefix + the continuations against its KV cache (same scores as one full forward per sentence).
    """
    flat = [q for q in queries if q.mode in ("mask", "next_token")]
    for b0 in range(0, len(flat), batch_size):
        _rank_vocab(struct, flat[b0: b0 + batch_size], vocab, all_layers, batch_size)
        if progress:
            progress(len(flat[b0: b0 + batch_size]))
    for q in queries:
        if q.mode == "candidates" and struct.kind == "seq2seq":
            _candidate_result(q, lama_seq2seq.candidate_scores(struct, q, batch_size)[None])
            if progress:
                progress(1)
        elif q.mode == "candidates":
            if not (share_prefix and _rank_candidates_shared(struct, q, batch_size)):
                _rank_candidates(struct, q, all_layers, batch_size)
            if progress:
                progress(1)


# ------------------------------------------------------------------------------------------ UHN
def uhn_string_filter(fact: Fact) -> bool:
    """True when the fact survives LAMA-UHN's string-match filter (object not inside the subject)."""
    return fact.obj.lower() not in fact.subject.lower()


@torch.no_grad()
def uhn_name_filter(struct: ModelStructure, tok: Any, queries: list[Query], vocab: CandidateVocab,
                    batch_size: int = 32) -> list[bool]:
    """True per query when it survives the person-name filter (see the module docstring)."""
    keep = [True] * len(queries)
    probes: list[tuple[int, Query]] = []
    for k, q in enumerate(queries):
        what = NAME_FILTER.get(q.fact.relation)
        if what is None or q.mode is None:
            continue
        tmpl0 = NAME_TEMPLATE.format(what=what)
        lead = _lead(tmpl0)
        olead = lama_seq2seq.object_lead(struct, tmpl0, lead) if struct.kind == "seq2seq" else lead
        gold = _object_ids(tok, q.fact.obj, olead)[:1]
        for part in q.fact.subject.split():
            tmpl = tmpl0.replace("[X]", part)
            fake = Fact(q.fact.source, q.fact.relation, part, q.fact.obj, tmpl, q.fact.uuid)
            p = Query(fake, lead=olead)
            if struct.kind == "seq2seq":
                lama_seq2seq.prepare_query(p, struct, tok, None, lead, gold, True)
                if p.mode is None:
                    continue
            elif struct.kind == "mlm":
                mask_id = tok.mask_token_id
                p.ids = list(tok.encode(tmpl.replace("[X]", part).replace("[Y]", tok.convert_ids_to_tokens(mask_id)),
                                        add_special_tokens=True))
                if p.ids.count(mask_id) != 1:
                    continue
                p.mode, p.pos = "mask", p.ids.index(mask_id)
            else:
                prefix = tmpl[: tmpl.index("[Y]")].rstrip(" ")
                p.ids, p.mode = causal_ids(tok, prefix), "next_token"
                p.pos = len(p.ids) - 1
            p.gold = gold[0]
            probes.append((k, p))
    # the same name part and object recur across facts (first names): rank each distinct probe once
    unique: dict[tuple, Query] = {}
    for _, p in probes:
        unique.setdefault((tuple(p.ids), tuple(p.dec_ids or ()), p.pos, p.gold, p.lead), p)
    todo = list(unique.values())
    for b0 in range(0, len(todo), batch_size):
        _rank_vocab(struct, todo[b0: b0 + batch_size], vocab, False, batch_size)
    for k, p in probes:
        if unique[(tuple(p.ids), tuple(p.dec_ids or ()), p.pos, p.gold, p.lead)].result["rank"] <= 3:
            keep[k] = False
    return keep


# ------------------------------------------------------------------------------------------ metrics
def _group(results: list[dict], n_skipped: int) -> dict:
    n = len(results)
    if n == 0:
        return {"p_at_1": None, "p_at_10": None, "mrr": None, "n_facts": 0, "n_skipped": n_skipped}
    return {"p_at_1": sum(r["rank"] == 1 for r in results) / n, "p_at_10": sum(r["rank"] <= 10 for r in results) / n,
            "mrr": sum(1.0 / r["rank"] for r in results) / n, "n_facts": n, "n_skipped": n_skipped}


def _macro(rel_metrics: list[dict], micro: dict) -> dict:
    used = [m for m in rel_metrics if m["n_facts"]]
    out = {k: (sum(m[k] for m in used) / len(used) if used else None) for k in ("p_at_1", "p_at_10", "mrr")}
    out.update(n_facts=sum(m["n_facts"] for m in rel_metrics), n_skipped=sum(m["n_skipped"] for m in rel_metrics),
               n_relations=len(used), micro={k: micro[k] for k in ("p_at_1", "p_at_10", "mrr")})
    return out


def metrics(queries: list[Query], keep: list[bool] | None = None, num_states: int | None = None) -> dict:
    """``{"sources": {...}, "relations": {...}, "overall": {...}}`` (+ ``"layers"`` when ``num_states``)."""
    keep = keep or [True] * len(queries)
    by_rel: dict[tuple[str, str], list[Query]] = {}
    for q, k in zip(queries, keep):
        if k:
            by_rel.setdefault((q.fact.source, q.fact.relation), []).append(q)
    rels, srcs = {}, {}
    rel_by_src: dict[str, list[str]] = {}
    for (src, rel), qs in by_rel.items():
        done = [q.result for q in qs if q.mode]
        m = _group(done, sum(q.mode is None for q in qs))
        m["n_next_token"] = sum(q.mode == "next_token" for q in qs)
        m["n_candidates"] = sum(q.mode == "candidates" for q in qs)
        m["n_mask"] = sum(q.mode == "mask" for q in qs)
        rels[rel] = m
        rel_by_src.setdefault(src, []).append(rel)
    all_done = []
    for src, names in rel_by_src.items():
        done = [q.result for (s, _), qs in by_rel.items() if s == src for q in qs if q.mode]
        all_done += done
        srcs[src] = _macro([rels[r] for r in names], _group(done, 0))
    out = {"sources": srcs, "relations": rels, "overall": _macro(list(rels.values()), _group(all_done, 0))}
    if num_states:
        out["layers"] = layer_curve(queries, keep, num_states)
        out["layers_n_facts"] = sum(k and q.mode in ("mask", "next_token") for q, k in zip(queries, keep))
        out["layers_same_facts_p_at_1"] = _layer_facts_p_at_1(queries, keep)
    return out


def layer_curve(queries: list[Query], keep: list[bool], num_states: int) -> list[float | None]:
    """P@1 per state (embeddings, block 0, ..., block L-1) over the mask / next_token facts, mean over
    relations like ``overall``."""
    by_rel: dict[tuple[str, str], list[list[int]]] = {}
    for q, k in zip(queries, keep):
        if k and q.mode in ("mask", "next_token"):
            by_rel.setdefault((q.fact.source, q.fact.relation), []).append(q.result["layer_ranks"])
    curve = []
    for s in range(num_states):
        per_rel = [sum(r[s] == 1 for r in rs) / len(rs) for rs in by_rel.values()]
        curve.append(sum(per_rel) / len(per_rel) if per_rel else None)
    return curve


def _layer_facts_p_at_1(queries: list[Query], keep: list[bool]) -> float | None:
    """The ordinary P@1 (mean over relations) of the facts the layer curve covers."""
    by_rel: dict[tuple[str, str], list[int]] = {}
    for q, k in zip(queries, keep):
        if k and q.mode in ("mask", "next_token"):
            by_rel.setdefault((q.fact.source, q.fact.relation), []).append(q.result["rank"])
    per = [sum(r == 1 for r in rs) / len(rs) for rs in by_rel.values()]
    return sum(per) / len(per) if per else None


def prediction_record(q: Query, tok: Any, uhn_kept: bool | None = None) -> dict:
    """One predictions.jsonl line: prompt, gold, top-10 with scores, rank (or the skip reason)."""
    f = q.fact
    rec: dict[str, Any] = {"source": f.source, "relation": f.relation, "uuid": f.uuid, "subject": f.subject,
                           "gold": f.obj, "prompt": q.prompt, "mode": q.mode}
    if q.mode is None:
        rec["skipped"] = q.skip_reason
    else:
        def name(i: int) -> str:
            return q.candidates[i] if q.mode == "candidates" else tok.decode([i]).strip()

        rec.update(rank=q.result["rank"], gold_score=round(q.result["gold_score"], 6),
                   top10=[{"token": name(i), "score": round(s, 6)} for i, s in q.result["top10"]])
        if "layer_ranks" in q.result and len(q.result["layer_ranks"]) > 1:
            rec["layer_ranks"] = q.result["layer_ranks"]
    if uhn_kept is not None:
        rec["uhn_kept"] = uhn_kept
    return rec


# ------------------------------------------------------------------------------------------ driver
def probe_lama(struct: ModelStructure, tok: Any, relations: list[Relation], uhn: bool = False,
               layers: bool = False, batch_size: int = 32,
               progress: Callable[[int], None] | None = None) -> tuple[dict, list[dict]]:
    """Probe every fact of ``relations``; returns (metrics, prediction records).

    ``metrics`` = ``{"sources", "relations", "overall"}`` (+ ``"layers"`` with ``layers``, + ``"uhn"``:
    the same over the facts kept by LAMA-UHN, with ``n_removed``, when ``uhn``).
    """
    vocab = CandidateVocab(tok, struct.model.config.vocab_size)
    queries = [q for rel in relations for q in prepare(struct, tok, rel, vocab)]
    score(struct, tok, queries, vocab, all_layers=layers, batch_size=batch_size, progress=progress)
    num_states = struct.num_layers + 1 if layers else None
    out = metrics(queries, num_states=num_states)
    kept: list[bool] | None = None
    if uhn:
        names = uhn_name_filter(struct, tok, queries, vocab, batch_size)
        kept = [uhn_string_filter(q.fact) and n for q, n in zip(queries, names)]
        out["uhn"] = metrics(queries, kept, num_states)
        out["uhn"]["n_removed"] = sum(not k for k in kept)
    records = [prediction_record(q, tok, None if kept is None else kept[i]) for i, q in enumerate(queries)]
    return out, records
