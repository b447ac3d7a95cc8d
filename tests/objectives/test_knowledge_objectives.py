"""ERNIE-THU and KEPLER (plmkit.objectives.ernie_thu / kepler / kg): TransE and KE losses against hand
computations, the aggregator against its formula, dEA corruption rates, and runs on the LAMA T-REx facts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import plmkit
from plmkit.objectives import build
from plmkit.objectives.ernie_thu import NO_ENTITY, Aggregator, dea_corrupt
from plmkit.objectives.kg import EntityMatcher, TransE, corrupt, ke_loss, link_prediction, read_trex, transe_loss

from objective_fixtures import data_dir


def _trex() -> Path:
    p = data_dir() / "lama" / "TREx"
    if not p.is_dir():
        pytest.skip(f"LAMA T-REx not found at {p}")
    return p


def test_transe_loss_by_hand():
    torch.manual_seed(0)
    m = TransE(5, 2, dim=3, p=1)
    pos = torch.tensor([[0, 1, 2], [3, 0, 4]])
    neg = torch.tensor([[[0, 1, 3], [4, 1, 2]], [[1, 0, 4], [3, 0, 0]]])
    E, R = m.entity.weight.detach().tolist(), m.relation.weight.detach().tolist()

    def d(h, r, t):
        return sum(abs(E[h][i] + R[r][i] - E[t][i]) for i in range(3))

    want = 0.0
    for b in range(2):
        for j in range(2):
            want += max(0.0, 0.5 + d(*pos[b].tolist()) - d(*neg[b, j].tolist()))
    assert float(transe_loss(m, pos, neg, margin=0.5)) == pytest.approx(want / 4, rel=1e-5)


def test_corrupt_replaces_exactly_one_side():
    torch.manual_seed(0)
    pos = torch.tensor([[1, 0, 2]] * 4000)
    neg = corrupt(pos, 50, 2)
    same_h = neg[..., 0] == 1
    same_t = neg[..., 2] == 2
    assert bool((same_h | same_t).all()) and bool((neg[..., 1] == 0).all())
    head_frac = float((~same_h).float().mean())
    assert 0.46 < head_frac < 0.52  # half the corruptions change the head (minus the 1/50 self-draws)


def test_ke_loss_by_hand():
    torch.manual_seed(0)
    h, r, t = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    hn, tn = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    l1 = lambda v: sum(abs(x) for x in v)  # noqa: E731
    want = 0.0
    for b in range(2):
        want -= math.log(sig(4.0 - l1((h[b] + r[b] - t[b]).tolist())))
        want -= sum(math.log(sig(l1((hn[b, i] + r[b] - tn[b, i]).tolist()) - 4.0)) for i in range(3)) / 3
    assert float(ke_loss(h, r, t, hn, tn, gamma=4.0, p=1)) == pytest.approx(want / 2, rel=1e-5)


def test_aggregator_equals_formula():
    torch.manual_seed(0)
    agg = Aggregator(8, 6, heads=2)
    w, e = torch.randn(2, 5, 8), torch.randn(2, 5, 6)
    has = torch.tensor([[True, False, False, True, False], [False] * 5])
    wo, eo = agg.fuse(w, e, has)
    g = torch.nn.functional.gelu
    for b in range(2):
        for j in range(5):
            pre = agg.w_t.weight @ w[b, j] + agg.w_t.bias
            if has[b, j]:
                pre = pre + agg.w_e.weight @ e[b, j]
            h = g(pre)
            assert torch.allclose(wo[b, j], g(agg.out_t.weight @ h + agg.out_t.bias), atol=1e-6)
            assert torch.allclose(eo[b, j], g(agg.out_e.weight @ h + agg.out_e.bias), atol=1e-6)


def test_dea_corruption_rates():
    g = torch.Generator().manual_seed(0)
    ents = torch.full((200, 100), NO_ENTITY)
    ents[:, ::2] = 7  # 10,000 alignments
    out, n = dea_corrupt(ents, 1000, 0.05, 0.15, generator=g)
    total = 10000
    assert n["replaced"] + n["masked"] + n["kept"] == total
    for key, p in (("replaced", 0.05), ("masked", 0.15), ("kept", 0.80)):
        sd = math.sqrt(p * (1 - p) / total)
        assert abs(n[key] / total - p) < 4 * sd, (key, n)
    assert bool((out[:, 1::2] == NO_ENTITY).all())  # no alignment is created
    assert int(((out != 7) & (out != NO_ENTITY)).sum()) <= n["replaced"]


def test_entity_matcher_longest_match():
    tok = plmkit.train_tokenizer_from_iterator(["Alexandra Victoria lives in New York City and York ."] * 5,
                                               kind="wordpiece", vocab_size=80, lowercase=False) \
        if hasattr(plmkit, "train_tokenizer_from_iterator") else None
    if tok is None:
        from plmkit.tokenization.train import train_tokenizer_from_iterator

        tok = train_tokenizer_from_iterator(["Alexandra Victoria lives in New York City and York ."] * 5,
                                            kind="wordpiece", vocab_size=80, lowercase=False)
    m = EntityMatcher(["York", "New York City", "Victoria"], tok)
    ids = tok.encode("Alexandra Victoria lives in New York City and York .", add_special_tokens=False)
    found = [(tok.decode(ids[s:e]).replace(" ##", ""), ent) for s, e, ent in m.find(ids)]
    assert found == [("Victoria", 2), ("New York City", 1), ("York", 0)]


def test_trex_graph_and_transe_learns():
    kg = read_trex([_trex() / "P19.jsonl", _trex() / "P20.jsonl"])
    assert kg.relations == ["P19", "P20"] and len(kg.triples) > 1000
    h, r, t = kg.triples[0]
    assert kg.labels[h] in kg.descriptions[h] and len(kg.sentences) > len(kg.triples)
    from plmkit.objectives.ernie_thu import train_transe

    torch.manual_seed(0)
    trip = torch.tensor(kg.triples)
    m, loss = train_transe(trip, len(kg.entities), len(kg.relations), 32, epochs=15)
    lp = link_prediction(m.entity.weight, m.relation.weight, trip[:200], p=1)
    assert loss < 0.5 and lp["hits@10"] > 0.3  # training triples are ranked well above random (10/E ~ 0.002)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from objective_fixtures import trained_tokenizer

    tok = trained_tokenizer("wordpiece", 2000, lowercase=False)
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64, hidden_dropout=0.0, attention_dropout=0.0,
                        mask_token_id=tok.mask_token_id)
    return tok, model


def test_kepler_ke_part_equals_independent_computation(tiny):
    tok, model = tiny
    obj = build("kepler", tokenizer=tok, triples=str(_trex() / "P19.jsonl"), ke_batch=3, negatives=2)
    obj.prepare(model)
    model.eval()
    torch.manual_seed(1)
    text = "Allan Peiper was born in Alexandra , Australia and raced in France ."
    batch = obj.make_batch([tok.encode(text)])
    with torch.no_grad():
        got = float(obj.ke(model, batch))
        ids, mask = batch["ke_desc_ids"], batch["ke_desc_mask"]

        def emb(row):
            n = int(mask[row].sum())
            return model(ids[row: row + 1, :n]).last_hidden_state[0, 0].double()

        rel = model.heads["kepler_relation"].weight.double()
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        want = 0.0
        pos, neg = batch["ke_pos"], batch["ke_neg"]
        for b in range(3):
            d = float((emb(pos[b, 0]) + rel[pos[b, 1]] - emb(pos[b, 2])).abs().sum())
            want -= math.log(sig(4.0 - d))
            want -= sum(math.log(sig(float((emb(neg[b, i, 0]) + rel[pos[b, 1]] - emb(neg[b, i, 2])).abs().sum())
                                     - 4.0)) for i in range(2)) / 2
    assert got == pytest.approx(want / 3, rel=1e-4)
    # the descriptions are the entities' own text
    ent = sorted(set(pos[:, [0, 2]].flatten().tolist()))
    assert all(int(mask[e].sum()) > 2 for e in ent)


def test_ernie_batch_aligns_mentions_and_trains(tiny):
    tok, model = tiny
    import copy

    model = copy.deepcopy(model)
    obj = build("ernie_thu", tokenizer=tok, triples=str(_trex() / "P19.jsonl"), transe_epochs=2, entity_dim=16,
                dea_replace=0.0, dea_mask=0.0)
    obj.prepare(model)
    text = "Allan Peiper was born in Alexandra in Australia ."
    batch = obj.make_batch([tok.encode(text)] * 2)
    labels = batch["entity_labels"][0]
    names = {obj.kg.labels[int(e)] for e in labels[labels != -100]}
    assert {"Allan Peiper", "Alexandra"} <= names
    assert torch.equal(batch["entities"][batch["entity_labels"] != -100], labels.repeat(2)[labels.repeat(2) != -100])
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(15):
        loss, m = obj.loss(model, batch)
        first = first if first is not None else m["dea_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["dea_loss"] < first and obj.transe_loss is not None
    assert not model.heads["ernie_entities"].weight.requires_grad
