"""CoLAKE: the graph attention mask equals its definition built by explicit loops, soft positions and node
types, masking rates per node type over many samples, a masked anchor hides its mention, completion metrics
against ranks computed by hand, and a tiny model learning on real T-REx graphs."""

from __future__ import annotations

import math

import pytest
import torch

import plmkit
from plmkit.data.wkg import ENTITY, RELATION, WORD, Fact, KnowledgeGraph, build_graph
from plmkit.errors import UserError
from plmkit.objectives import build
from tests.conftest import data_dir


def toy_kg() -> KnowledgeGraph:
    """Entities 1..6, relations P1 / P1^-1 / P2 / P2^-1 (ids 1..4); triples below."""
    ents = ["[MASK]", "Q1", "Q2", "Q3", "Q4", "Q5", "Q6"]
    labels = {"Q1": "paris", "Q2": "france", "Q3": "victor hugo", "Q4": "french", "Q5": "london", "Q6": "england"}
    rels = ["[MASK]", "P1", "P1^-1", "P2", "P2^-1"]
    train = [(3, 1, 1), (1, 3, 2), (3, 3, 4), (5, 3, 6)]  # hugo P1 paris; paris P2 france; hugo P2 french; ...
    return KnowledgeGraph(ents, labels, rels, train, [], [Fact("u", "Q3", "P1", "Q5")])


RECORD = {"ids": [40, 41, 42, 43, 44, 45, 46, 47], "mentions": [(1, 3, 3), (5, 6, 1)]}  # "victor hugo", "paris"


def expected_nodes(kg, record, n_special_before=1):
    """Node list (kind, mention index, neighbour) in the documented order, without calling build_graph."""
    nodes = [("word", None, None)] * (len(record["ids"]) + 2)
    for k, (s, e, ent) in enumerate(record["mentions"]):
        nodes.append(("anchor", k, ent))
        for r, o in kg.neighbours[ent]:
            nodes += [("relation", k, r), ("entity", k, o)]
    return nodes


def test_graph_mask_positions_and_types_match_their_definition(tok):
    kg = toy_kg()
    obj = build("colake", tokenizer=tok, word_rate=0.01, entity_rate=0.01, relation_rate=0.01)
    obj.kg = kg
    g = build_graph(RECORD, kg, [tok.cls_token_id], [tok.sep_token_id], neighbours=10, max_anchors=4)
    nodes = expected_nodes(kg, RECORD)
    assert len(g) == len(nodes) == 10 + 1 + 2 * 2 + 1 + 2 * 2  # hugo: 2 neighbours, paris: 2 neighbours
    n_words = len(RECORD["ids"]) + 2
    # node types and soft positions, one by one
    anchor_pos = {}
    for i, (kind, k, x) in enumerate(nodes):
        if kind == "word":
            assert (g.types[i], g.positions[i]) == (WORD, i)
            continue
        s = RECORD["mentions"][k][0] + 1  # [CLS] shifts the words by one
        if kind == "anchor":
            anchor_pos[k] = i
            assert (g.types[i], g.ids[i], g.positions[i]) == (ENTITY, x, s)
        elif kind == "relation":
            assert (g.types[i], g.ids[i], g.positions[i]) == (RELATION, x, s + 1)
        else:
            assert (g.types[i], g.ids[i], g.positions[i]) == (ENTITY, x, s + 2)
    # the attention mask, by explicit loops over the definition
    T = len(g) + 3  # with padding
    want = [[False] * T for _ in range(T)]
    for i in range(T):
        want[i][i] = True
    for i in range(n_words):
        for j in range(n_words):
            want[i][j] = True
    for i, (kind, k, x) in enumerate(nodes):
        if kind == "anchor":
            s, e, _ = RECORD["mentions"][k]
            for w in range(s + 1, e + 1):
                want[i][w] = want[w][i] = True
        if kind == "relation":
            a = anchor_pos[k]
            want[i][a] = want[a][i] = True
            want[i][i + 1] = want[i + 1][i] = True  # its entity node follows it
    batch = obj.make_batch([RECORD])
    from plmkit.objectives.colake import graph_mask

    got = graph_mask(g.types, g.edges, g.num_words, T)
    assert got.tolist() == want
    assert batch["attention_mask"][0].tolist() == [row[:len(g)] for row in want[:len(g)]]
    assert batch["position_ids"][0].tolist() == g.positions and batch["token_type_ids"][0].tolist() == g.types


def test_knowledge_off_gives_the_words_alone(tok):
    obj = build("colake", tokenizer=tok, knowledge=False)
    b = obj.make_batch([RECORD])
    assert b["ids"].shape == (1, 10) and b["attention_mask"].all() and b["token_type_ids"].eq(WORD).all()
    assert b["position_ids"][0].tolist() == list(range(10))


@pytest.mark.parametrize("rates", [(0.15, 0.15, 0.15), (0.1, 0.3, 0.5)])
def test_masking_picks_each_node_type_at_its_rate(tok, rates):
    kg = toy_kg()
    # a long sentence with many linked mentions: 40 words, 8 anchors, each with 2 neighbours
    record = {"ids": list(range(100, 140)), "mentions": [(4 * k, 4 * k + 1, [1, 3][k % 2]) for k in range(8)]}
    obj = build("colake", tokenizer=tok, word_rate=rates[0], entity_rate=rates[1], relation_rate=rates[2],
                max_anchors=8, neighbours=2)
    obj.kg = kg
    g = build_graph(record, kg, [tok.cls_token_id], [tok.sep_token_id], neighbours=2, max_anchors=8)
    counts = {WORD: 0, ENTITY: 0, RELATION: 0}
    totals = {WORD: 40, ENTITY: sum(t == ENTITY for t in g.types), RELATION: sum(t == RELATION for t in g.types)}
    n = 400
    gen = torch.Generator().manual_seed(0)
    hidden_ok = 0
    for _ in range(n):
        m = obj.mask_graph(g, gen)
        for t in counts:
            assert all(g.types[i] == t for i in m["selected"][t])
            counts[t] += len(m["selected"][t])
        for a, s, e in g.anchors:  # a selected anchor's mention words are [MASK] and predicted
            if a in m["selected"][ENTITY]:
                hidden_ok += all(m["ids"][w] == tok.mask_token_id and m["word_labels"][w] == g.ids[w]
                                 for w in range(s, e))
                hidden_ok -= 1
        labelled = {t: [i for i, y in enumerate(m[key]) if y != -100]
                    for t, key in ((ENTITY, "entity_labels"), (RELATION, "relation_labels"))}
        assert labelled[ENTITY] == m["selected"][ENTITY] and labelled[RELATION] == m["selected"][RELATION]
    assert hidden_ok == 0
    for t, rate in zip((WORD, ENTITY, RELATION), rates):
        got = counts[t] / (n * totals[t])
        sd = math.sqrt(rate * (1 - rate) / (n * totals[t]))
        assert abs(got - rate) < 4 * sd + 0.005, (t, got, rate)


def test_completion_metrics_match_ranks_by_hand(tok):
    kg = toy_kg()
    obj = build("colake", tokenizer=tok)
    obj.kg = kg
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), type_vocab_size=3)
    obj.prepare(model)
    queries = [{"ids": [40, 41], "mentions": [(0, 2, 3)], "query": (1, 5)},
               {"ids": [42], "mentions": [(0, 1, 5)], "query": (3, 6)}]
    batch = obj.make_batch(queries)
    assert batch["labels"].tolist() == [5, 6] and batch["entity_labels"].ne(-100).sum() == 2
    model.eval()
    with torch.no_grad():
        _, m = obj.loss(model, batch)
        _, hidden = obj.forward(model, batch)
    head = model.heads["colake"]
    ranks = {"object": [], "relation": []}
    for b in range(4):  # graphs: q0 object, q0 relation, q1 object, q1 relation
        for key, fn, name in (("entity_labels", head.entity_logits, "object"),
                              ("relation_labels", head.relation_logits, "relation")):
            for t in range(batch["ids"].shape[1]):
                y = int(batch[key][b, t])
                if y == -100:
                    continue
                scores = fn(hidden[b, t][None])[0].tolist()
                ranks[name].append(1 + sum(1 for i, v in enumerate(scores) if i != 0 and v > scores[y]))
    for name in ("object", "relation"):
        assert len(ranks[name]) == 2
        assert m[f"kgc_{name}_acc"] == pytest.approx(sum(r == 1 for r in ranks[name]) / 2)
        assert m[f"kgc_{name}_mrr"] == pytest.approx(sum(1 / r for r in ranks[name]) / 2, rel=1e-5)


def test_colake_learns_on_real_trex_graphs(tok):
    trex = data_dir() / "lama" / "TREx"
    if not trex.is_dir():
        pytest.skip(f"{trex} not found (set PLMKIT_DATA)")
    obj = build("colake", tokenizer=tok, max_facts=300, eval_examples=16)
    train, valid = obj.read_examples([str(trex)], 48)
    assert sum(bool(r["mentions"]) for r in train) > 0.5 * len(train)  # most evidence sentences link an entity
    assert valid and all("query" in q for q in valid)
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), type_vocab_size=3)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    fixed = train[:8]
    losses = []
    for _ in range(25):
        torch.manual_seed(1)  # the same masks every step: the loss must fall
        loss, m = obj.loss(model, obj.make_batch(fixed))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert {"word_loss", "entity_loss"} <= set(m)
    with pytest.raises(UserError, match="needs 3 token types"):
        obj.prepare(plmkit.load("bert-tiny", vocab_size=len(tok)))
