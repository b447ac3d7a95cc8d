"""nsp / sop: pair construction, label balance, heads on the pooled output, hand-computed loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build


def _store_like_records(wiki_ids, tok, n=200):
    special = set(tok.all_special_ids)
    docs = [[t for t in ids if t not in special] for ids in wiki_ids if len(ids) > 30][: n + 1]
    recs = []
    for k in range(n):
        d, other = docs[k], docs[k + 1]
        a, b = d[:10], d[10:20]
        recs.append({"segment_a": a, "segment_b": b, "random_b": other[:10], "input_ids": a + b})
    return recs


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_labels_balanced_and_segments(tok, wiki_ids, name):
    obj = build(name, tokenizer=tok)
    recs = _store_like_records(wiki_ids, tok)
    torch.manual_seed(0)
    batch = obj.make_batch(recs)
    y = batch[f"{name}_labels"]
    assert abs(y.float().mean().item() - 0.5) < 0.1
    cls, sep = tok.cls_token_id, tok.sep_token_id
    for r, ids, tt, lab in zip(recs, batch["input_ids"].tolist(), batch["token_type_ids"].tolist(), y.tolist()):
        assert ids[0] == cls and ids[11] == sep and ids[22] == sep
        a, b = ids[1:11], ids[12:22]
        assert tt[:12] == [0] * 12 and tt[12:23] == [1] * 11
        if name == "nsp":
            assert a == r["segment_a"] and b == (r["random_b"] if lab else r["segment_b"])
        else:
            assert (a, b) == ((r["segment_b"], r["segment_a"]) if lab else (r["segment_a"], r["segment_b"]))


def test_nsp_random_b_from_batch_for_plain_lists(tok):
    ids = [tok.encode(f"sentence number {k} is here.", f"and then comes part {k}.") for k in range(6)]
    obj = build("nsp", tokenizer=tok, random_prob=0.99)
    b = obj.make_batch(ids)
    assert b["nsp_labels"].sum() >= 4
    second = [tok.encode(f"and then comes part {k}.", add_special_tokens=False) for k in range(6)]
    for row, lab in zip(b["input_ids"].tolist(), b["nsp_labels"].tolist()):
        seg_b = row[row.index(tok.sep_token_id) + 1:]
        seg_b = seg_b[:seg_b.index(tok.sep_token_id)]
        assert seg_b in second
    with pytest.raises(UserError, match="batch size"):
        obj.make_batch([ids[0]])


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_head_and_hand_computed_loss(tok, wiki_ids, name):
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build(name, tokenizer=tok, classifier_dropout=0.0)
    obj.prepare(model)
    assert name in model.heads
    obj.prepare(model)  # idempotent
    batch = obj.make_batch(_store_like_records(wiki_ids, tok, 8))
    loss, m = obj.loss(model, batch)
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"])
    want_logits = model.heads[name](out.pooled)
    want = F.cross_entropy(want_logits, batch[f"{name}_labels"])
    assert torch.allclose(loss, want, atol=1e-6)
    assert m[f"{name}_acc"] == pytest.approx(float((want_logits.argmax(-1) == batch[f"{name}_labels"]).float().mean()))


def test_joint_mlm_sop_single_forward(tok, wiki_ids):
    model = plmkit.load("albert-tiny", vocab_size=len(tok)).eval()
    obj = build("sop", tokenizer=tok, mlm_weight=1.0, classifier_dropout=0.0)
    obj.prepare(model)
    batch = obj.make_batch(_store_like_records(wiki_ids, tok, 8))
    sel = batch["labels"] != -100
    assert sel.any() and not (batch["input_ids"][sel] == -100).any()
    loss, m = obj.loss(model, batch)
    assert abs(loss.item() - (m["sop_loss"] + m["mlm_loss"])) < 1e-4


@pytest.mark.parametrize("name", ["nsp", "sop"])
def test_pair_objectives_train(tok, wiki_ids, name):
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    obj = build(name, tokenizer=tok)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    recs = _store_like_records(wiki_ids, tok, 16)  # a fixed small set: the pairs can be memorised
    losses = []
    for step in range(80):
        loss, _ = obj.loss(model, obj.make_batch(recs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5  # well below chance (0.69)


def test_incompatible(tok):
    with pytest.raises(UserError, match=r"nsp needs a bidirectional encoder.*gpt2"):
        build("nsp", tokenizer=tok).prepare(plmkit.load("gpt2-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match=r"sop needs segment.*type_vocab_size=1"):
        build("sop", tokenizer=tok).prepare(plmkit.load("roberta-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="random_prob"):
        build("nsp", tokenizer=tok, random_prob=1.0)
