"""ERNIE 2.0: the stage schedule and mixing, task embeddings, and the three small tasks (capitalisation,
sentence reordering, sentence distance) against direct computations."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.ernie2_tasks import label_to_perm, num_reorder_classes, perm_to_label

from objective_fixtures import trained_tokenizer


@pytest.fixture(scope="module")
def cased():
    return trained_tokenizer("wordpiece", 2000, lowercase=False)


def doc_records(n_docs=6, sents=5, length=4, base=100):
    """Documents whose sentence k of document d is `length` copies of id base + 10 d + k."""
    out = []
    for d in range(n_docs):
        ids, starts = [], []
        for k in range(sents):
            starts.append(len(ids))
            ids += [base + 10 * d + k] * length
        out.append({"input_ids": ids, "sentence_starts": starts, "word_ids": list(range(len(ids)))})
    return out


# ------------------------------------------------------------------ sentence reordering
def test_permutation_labels_are_a_bijection():
    for M in (2, 3, 4):
        labels = [perm_to_label(list(p)) for m in range(1, M + 1) for p in itertools.permutations(range(m))]
        assert sorted(labels) == list(range(num_reorder_classes(M)))
        for m in range(1, M + 1):
            for p in itertools.permutations(range(m)):
                assert label_to_perm(perm_to_label(list(p)), M) == list(p)
    assert perm_to_label([0]) == 0 and perm_to_label([0, 1]) == 1 and perm_to_label([1, 0]) == 2
    assert perm_to_label([0, 1, 2]) == 3 and perm_to_label([2, 1, 0]) == 8
    with pytest.raises(ValueError):
        label_to_perm(9, 3)


def test_sentence_reordering_batch_inverts_to_the_original(tok):
    obj = build("sent_reorder", tokenizer=tok, max_segments=3)
    recs = doc_records()
    seen = Counter()
    for _ in range(30):
        batch = obj.make_batch(recs)
        for row, mask, y in zip(batch["input_ids"], batch["attention_mask"], batch["reorder_labels"]):
            ids = row[mask.bool()].tolist()
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            segs, cur = [], []
            for t in ids[1:]:
                if t == tok.sep_token_id:
                    segs.append(cur)
                    cur = []
                else:
                    cur.append(t)
            perm = label_to_perm(int(y), 3)
            assert len(perm) == len(segs)
            original = [None] * len(segs)
            for slot, k in enumerate(perm):
                original[k] = segs[slot]
            flat = [t for s in original for t in s]
            d = (flat[0] - 100) // 10
            assert flat == recs[d]["input_ids"]
            seen[len(segs)] += 1
    assert set(seen) == {1, 2, 3}


# ------------------------------------------------------------------ sentence distance
def test_sentence_distance_labels_mean_what_they_say(tok):
    obj = build("sent_distance", tokenizer=tok)
    recs = doc_records()
    counts = Counter()
    for _ in range(60):
        batch = obj.make_batch(recs)
        for row, types, y in zip(batch["input_ids"], batch["token_type_ids"], batch["distance_labels"]):
            a = [t for t, s in zip(row.tolist(), types.tolist()) if s == 0 and t >= 100]
            b = [t for t, s in zip(row.tolist(), types.tolist()) if s == 1 and t >= 100]
            (da, ka), (db, kb) = divmod(a[0] - 100, 10), divmod(b[0] - 100, 10)
            want = 2 if da != db else (0 if kb == ka + 1 else 1 if kb >= ka + 2 else -1)
            assert int(y) == want
            counts[int(y)] += 1
    n = sum(counts.values())
    assert all(abs(counts[c] / n - 1 / 3) < 0.06 for c in range(3))


# ------------------------------------------------------------------ capitalisation
def test_capitalisation_labels_and_lowercased_input(cased):
    obj = build("cap_pred", tokenizer=cased)
    text = "The old Tower of London stood while Mary walked home with John in May"
    batch = obj.make_batch([cased.encode(text)])
    y = batch["labels"][0]
    want = [int(w[0].isupper()) for w in text.split()]
    assert y[y != -100].tolist() == want
    orig = cased.convert_ids_to_tokens(cased.encode(text))
    got = cased.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    for o, g in zip(orig, got):
        assert g == o.lower() or (g == cased.unk_token and o.lower() not in cased.get_vocab()) or o in (
            cased.cls_token, cased.sep_token)
    assert not any(c.isupper() for g in got if g not in (cased.cls_token, cased.sep_token, cased.unk_token)
                   for c in g)


def test_capitalisation_refuses_a_lowercasing_tokenizer(tok):
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    with pytest.raises(UserError, match="lowercase"):
        build("cap_pred", tokenizer=tok).prepare(model)


# ------------------------------------------------------------------ the schedule
SPEC = dict(tasks=[{"name": "mlm", "masking": "whole_word"}, {"name": "sent_reorder", "weight": 3.0},
                   {"name": "sent_distance"}],
            stages=[{"batches": 5, "tasks": ["mlm"]}, {"batches": 7, "tasks": ["sent_reorder"]},
                    {"tasks": ["sent_distance"]}])


@pytest.mark.parametrize("keep", [True, False])
def test_stage_schedule_and_mixing_proportions(tok, keep):
    obj = build("ernie2", tokenizer=tok, keep_earlier=keep, **SPEC)
    assert [obj.stage_at(b) for b in (0, 4, 5, 11, 12, 10_000)] == [0, 0, 1, 1, 2, 2]
    if keep:
        assert obj.active(0) == ["mlm"] and obj.active(1) == ["mlm", "sent_reorder"]
        assert obj.active(2) == ["mlm", "sent_reorder", "sent_distance"]
        assert obj.mixing(2) == pytest.approx({"mlm": 0.2, "sent_reorder": 0.6, "sent_distance": 0.2})
    else:
        assert [obj.active(s) for s in range(3)] == [["mlm"], ["sent_reorder"], ["sent_distance"]]
    for stage in range(3):
        draws = Counter(obj.draw(stage) for _ in range(3000))
        for k, p in obj.mixing(stage).items():
            assert abs(draws[k] / 3000 - p) < 0.03, (stage, k, draws)
        assert set(draws) == set(obj.active(stage))


def test_training_follows_the_schedule_and_evaluates_every_task(tok):
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_dropout=0.0, attention_dropout=0.0)
    obj = build("ernie2", tokenizer=tok, **SPEC)
    obj.prepare(model)
    recs = doc_records(base=200)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    drawn = []
    model.train()
    for i in range(16):
        batch = obj.make_batch(recs)
        key = obj.keys[int(batch["task"])]
        drawn.append(key)
        loss, m = obj.loss(model, batch)
        assert f"{key}/loss" in m and m["stage"] == obj.stage_at(i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(model.heads["ernie2"].batches) == 16
    assert set(drawn[:5]) == {"mlm"}
    assert set(drawn[5:12]) <= {"mlm", "sent_reorder"} and "sent_reorder" in drawn[5:12]
    assert model.heads["ernie2"].task.weight.grad is not None
    loss, m = obj.loss(model.eval(), obj.make_batch(recs))
    for key in ("mlm", "sent_reorder", "sent_distance"):
        assert f"{key}/loss" in m
    assert "reorder_acc" in "".join(m) and "distance_acc" in "".join(m)


def test_task_embedding_is_added_to_the_word_embeddings(tok):
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build("ernie2", tokenizer=tok, **SPEC)
    obj.prepare(model)
    with torch.no_grad():
        model.heads["ernie2"].task.weight.normal_()
    batch = obj.make_batch(doc_records())
    sub = {k.split("/", 1)[1]: v for k, v in batch.items() if k.startswith("sent_reorder/")}
    with torch.no_grad():
        with_task, _ = obj._task_loss(model, "sent_reorder", batch)
        # reference: the task vector folded into every row of the word table, no hook
        emb = model.get_input_embeddings()
        saved = emb.weight.clone()
        emb.weight += model.heads["ernie2"].task.weight[obj.keys.index("sent_reorder")]
        ref, _ = obj.tasks["sent_reorder"].loss(model, sub)
        emb.weight.copy_(saved)
        plain, _ = obj.tasks["sent_reorder"].loss(model, sub)
    assert float(with_task) == pytest.approx(float(ref), rel=1e-5)
    assert abs(float(with_task) - float(plain)) > 1e-4


def test_bad_schedules(tok):
    with pytest.raises(UserError, match="unknown task 'nsp'"):
        build("ernie2", tokenizer=tok, tasks=[{"name": "mlm"}], stages=[{"batches": 2, "tasks": ["nsp"]}])
    with pytest.raises(UserError, match="appear in no stage"):
        build("ernie2", tokenizer=tok, tasks=[{"name": "mlm"}, {"name": "sent_reorder"}],
              stages=[{"batches": 2, "tasks": ["mlm"]}])
    with pytest.raises(UserError, match="batches"):
        build("ernie2", tokenizer=tok, tasks=[{"name": "mlm"}], stages=[{"batches": 0, "tasks": ["mlm"]},
                                                                       {"tasks": ["mlm"]}])
