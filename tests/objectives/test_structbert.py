"""structbert_wso / structbert_sso: the trigram shuffle is invertible and never a no-op, shuffle
rate, the joint MLM+WSO loss by hand; SSO label proportions and where each pair comes from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.base import as_example
from plmkit.objectives.structbert import shuffle_trigrams

from objective_fixtures import windows


def test_trigram_shuffle_is_invertible_and_changes_order(tok, wiki_ids):
    obj = build("structbert_wso", tokenizer=tok)
    exs = windows(wiki_ids, tok, T=126, n=400)
    special = obj.vocab.special
    n_shuf = n_tok = 0
    for x in exs:
        s = obj.shuffle_example(x)
        orig = obj.with_specials(as_example(x, "w")).ids
        assert s.original == orig
        restored = list(s.input_ids)
        for start, perm in zip(s.trigrams, s.perms):
            tri = s.input_ids[start:start + 3]
            assert tri != orig[start:start + 3], "no-op shuffle"
            assert sorted(tri) == sorted(orig[start:start + 3])
            inv = [perm.index(j) for j in range(3)]  # original j sits at new position perm^-1(j)
            assert [tri[inv[j]] for j in range(3)] == orig[start:start + 3]
            # the labels restore the original ids
            for p in range(start, start + 3):
                assert s.wso_mask[p] and s.labels[p] == orig[p]
                restored[p] = s.labels[p]
                assert orig[p] not in special
        for p, (a, b) in enumerate(zip(restored, orig)):
            if s.labels[p] != -100 and not s.wso_mask[p]:
                restored[p] = s.labels[p]  # MLM targets undo the masking
        assert restored == orig
        # shuffled positions were not masked: nothing else changed there
        n_shuf += sum(s.wso_mask)
        n_tok += sum(1 for t in orig if t not in special)
        assert len(s.trigrams) >= 1
    assert abs(n_shuf / n_tok - 0.05) < 0.01, n_shuf / n_tok


def test_shuffle_avoids_noop_permutations():
    torch.manual_seed(0)
    # only trigram: three equal tokens -> cannot be shuffled visibly -> no shuffle
    ids, starts, _ = shuffle_trigrams([5, 5, 5], [True] * 3, 1, 1)
    assert starts == [] and ids == [5, 5, 5]
    # two equal tokens: every drawn permutation still changes the sequence
    seen = set()
    for _ in range(200):
        ids, starts, perms = shuffle_trigrams([5, 5, 7], [True] * 3, 1, 1)
        assert starts == [0] and ids != [5, 5, 7] and sorted(ids) == [5, 5, 7]
        seen.add(tuple(ids))
    assert seen == {(5, 7, 5), (7, 5, 5)}
    # distinct tokens: all 5 non-identity permutations occur
    seen = {tuple(shuffle_trigrams([1, 2, 3], [True] * 3, 1, 1)[0]) for _ in range(400)}
    assert len(seen) == 5 and (1, 2, 3) not in seen
    # disallowed positions (masked / special) are never part of a trigram
    ids, starts, _ = shuffle_trigrams([1, 2, 3, 4], [True, True, False, True], 1, 1)
    assert starts == [] and ids == [1, 2, 3, 4]


def test_wso_loss_by_hand(tok, wiki_ids):
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build("structbert_wso", tokenizer=tok, wso_rate=0.1)
    obj.prepare(model)
    batch = obj.make_batch(windows(wiki_ids, tok, T=60, n=3))
    loss, m = obj.loss(model, batch)
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    parts = {"mlm": [], "wso": []}
    for b in range(logits.shape[0]):
        for p in range(logits.shape[1]):
            y = int(batch["labels"][b, p])
            if y != -100:
                key = "wso" if batch["wso_mask"][b, p] else "mlm"
                parts[key].append(float(-F.log_softmax(logits[b, p], -1)[y]))
    assert parts["wso"] and parts["mlm"]
    want = {k: sum(v) / len(v) for k, v in parts.items()}
    assert abs(m["mlm_loss"] - want["mlm"]) < 1e-4 and abs(m["wso_loss"] - want["wso"]) < 1e-4
    assert abs(float(loss.detach()) - want["mlm"] - want["wso"]) < 1e-4


def _records(wiki_ids, tok, n=300):
    special = set(tok.all_special_ids)
    docs = [[t for t in ids if t not in special] for ids in wiki_ids if len(ids) > 30][: n + 1]
    return [{"segment_a": d[:10], "segment_b": d[10:20], "random_b": o[:10], "input_ids": d[:20]}
            for d, o in zip(docs, docs[1:])]


def test_sso_labels_and_pairs(tok, wiki_ids):
    obj = build("structbert_sso", tokenizer=tok)
    recs = _records(wiki_ids, tok)
    counts = [0, 0, 0]
    for _ in range(10):
        batch = obj.make_batch(recs)
        for r, ids, y in zip(recs, batch["input_ids"].tolist(), batch["sso_labels"].tolist()):
            counts[y] += 1
            s1, s2 = ids[1:11], ids[12:22]
            want = {0: (r["segment_a"], r["segment_b"]), 1: (r["segment_b"], r["segment_a"]),
                    2: (r["segment_a"], r["random_b"])}[y]
            assert (s1, s2) == want
    n = sum(counts)
    for c in counts:
        assert abs(c / n - 1 / 3) < 0.03, counts
    # plain [CLS] A [SEP] B [SEP] lists: the random B is another example's B
    cls, sep = tok.cls_token_id, tok.sep_token_id
    plain = [[cls] + r["segment_a"] + [sep] + r["segment_b"] + [sep] for r in recs[:20]]
    bs = {tuple(r["segment_b"]) for r in recs[:20]}
    torch.manual_seed(1)
    batch = obj.make_batch(plain)
    for r, ids, y in zip(recs, batch["input_ids"].tolist(), batch["sso_labels"].tolist()):
        if y == 2:
            assert tuple(ids[12:22]) in bs and ids[12:22] != r["segment_b"]


def test_sso_head_is_three_way_and_trains(tok, wiki_ids):
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    obj = build("structbert_sso", tokenizer=tok, mlm_weight=1.0)
    obj.prepare(model)
    assert model.heads["sso"](torch.zeros(2, model.config.hidden_size)).shape == (2, 3)
    batch = obj.make_batch(_records(wiki_ids, tok, 16))
    loss, m = obj.loss(model, batch)
    assert {"sso_loss", "sso_acc", "mlm_loss"} <= set(m)
    loss.backward()
    with pytest.raises(UserError, match="previous_prob"):
        build("structbert_sso", tokenizer=tok, random_prob=0.5, previous_prob=0.5)
