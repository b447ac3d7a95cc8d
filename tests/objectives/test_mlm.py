"""mlm: corruption statistics on real text, whole-word / span / entity units, static masks, loss values."""

from __future__ import annotations


import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.base import word_ids_of, word_spans, as_example
from plmkit.objectives.masking import truncated_geometric

from objective_fixtures import data_dir, windows


def _run(obj, exs):
    sel = tot = 0
    dec = [0, 0, 0]
    results = []
    for x in exs:
        m = obj.mask_example(x)
        results.append(m)
        special = obj.vocab.special
        ids = obj.with_specials(as_example(x, "mlm")).ids
        tot += sum(1 for t in ids if t not in special)
        for (s, e), d in zip(m.units, m.decisions):
            sel += e - s
            dec[d] += e - s
        for p, lab in enumerate(m.labels):
            if lab != -100:
                assert ids[p] not in special, "a special token was selected"
    return sel, tot, dec, results


@pytest.mark.parametrize("masking", ["token", "whole_word"])
def test_rates_on_wikitext(tok, wiki_ids, masking):
    obj = build("mlm", tokenizer=tok, masking=masking)
    exs = windows(wiki_ids, tok, T=126)
    sel, tot, dec, results = _run(obj, exs)
    assert tot >= 100_000
    assert abs(sel / tot - 0.15) < 0.005, sel / tot
    for frac, want in zip(dec, (0.8, 0.1, 0.1)):
        assert abs(frac / sel - want) < 0.01, (dec, sel)
    if masking == "whole_word":
        # no word partially selected
        for x, m in zip(exs[:400], results[:400]):
            ex = obj.with_specials(as_example(x, "mlm"))
            for s, e in word_spans(word_ids_of(ex, obj.vocab)):
                picked = {m.labels[p] != -100 for p in range(s, e)}
                assert len(picked) == 1, "word partially selected"
        # and multi-token words do get selected whole
        assert any(e - s > 1 for m in results for s, e in m.units)


def test_random_replacements_are_normal_tokens(tok, wiki_ids):
    obj = build("mlm", tokenizer=tok, mask_prob=0.0, random_prob=1.0)
    m = obj.mask_example(wiki_ids[3])
    for p, lab in enumerate(m.labels):
        if lab != -100:
            assert m.input_ids[p] not in obj.vocab.special


def test_span_masking_statistics(tok, wiki_ids):
    obj = build("mlm", tokenizer=tok, masking="span")
    exs = windows(wiki_ids, tok, T=254)
    sel, tot, dec, results = _run(obj, exs)
    assert tot >= 100_000
    assert abs(sel / tot - 0.15) < 0.005, sel / tot
    sampled = [L for m in results for L in m.sampled_lengths]
    probs = truncated_geometric(0.2, 10)
    mean = float((torch.arange(1, 11) * probs).sum())  # 3.78 for p=0.2, max 10
    assert abs(sum(sampled) / len(sampled) - mean) / mean < 0.05
    realised = [k for m in results for k in m.realised_words]
    assert max(realised) <= 10 and min(realised) >= 1
    # spans are made of whole words
    for x, m in zip(exs[:200], results[:200]):
        ex = obj.with_specials(as_example(x, "mlm"))
        for s, e in word_spans(word_ids_of(ex, obj.vocab)):
            assert len({m.labels[p] != -100 for p in range(s, e)}) == 1
    # a span gets one replacement decision: all [MASK], or no [MASK] at all
    mask_id = tok.mask_token_id
    for m in results[:200]:
        for (s, e), d in zip(m.units, m.decisions):
            n_mask = sum(m.input_ids[p] == mask_id for p in range(s, e))
            assert (n_mask == e - s) if d == 0 else (d == 1 or n_mask == 0)


def test_entity_spans_masked_as_wholes(tok):
    ids = tok.encode("the new york times reported that barack obama visited new york city", add_special_tokens=False)
    rec = {"input_ids": ids, "spans": [[1, 4], [6, 8], [9, 12]]}
    obj = build("mlm", tokenizer=tok, masking="entity", rate=0.5)
    for _ in range(50):
        m = obj.mask_example(rec)
        for s, e in rec["spans"]:  # +1: the [CLS] the objective adds
            assert len({m.labels[p + 1] != -100 for p in range(s, e)}) == 1
    with pytest.raises(UserError, match="spans"):
        obj.mask_example(ids)


def test_chinese_word_groups(shared_chinese_tok):
    tok, text = shared_chinese_tok
    wid = tok.word_ids(text, add_special_tokens=False)
    ids = tok.encode(text, add_special_tokens=False)
    assert len(wid) == len(ids)
    groups = word_spans(wid)
    assert any(e - s >= 2 for s, e in groups), "jieba should group characters into words"
    obj = build("mlm", tokenizer=tok, masking="whole_word")
    for _ in range(30):
        m = obj.mask_example({"input_ids": ids, "word_ids": wid})
        for s, e in groups:
            assert len({m.labels[p + 1] != -100 for p in range(s, e)}) == 1


@pytest.fixture(scope="module")
def shared_chinese_tok():
    p = data_dir() / "chinese" / "raw-text" / "zhwiki" / "wiki_00"
    if not p.is_file():
        pytest.skip(f"Chinese raw text not found at {p}")
    from plmkit.tokenization.train import train_tokenizer_from_iterator

    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if len(ln) > 20][:300]
    tok = train_tokenizer_from_iterator(lines, kind="wordpiece", vocab_size=3000)
    return tok, lines[5][:120]


def test_static_masks_are_fixed_per_copy(tok, wiki_ids):
    obj = build("mlm", tokenizer=tok, mode="static", dup_factor=3)
    data = wiki_ids[:5]
    view = obj.static_view(data)
    assert len(view) == 15
    torch.manual_seed(1)
    a = view[7]
    torch.manual_seed(2)
    assert view[7] == a  # independent of the global RNG: the mask is part of the data
    copies = [view[2 + 5 * k]["mlm_labels"] for k in range(3)]
    assert copies[0] != copies[1] or copies[1] != copies[2]
    batch = obj.make_batch([view[0], view[1]])
    assert batch["labels"].shape == batch["input_ids"].shape
    with pytest.raises(UserError, match="static_view"):
        obj.make_batch(data[:2])


def test_dynamic_masks_follow_global_rng(tok, wiki_ids):
    obj = build("mlm", tokenizer=tok)
    torch.manual_seed(5)
    a = obj.make_batch(wiki_ids[:4])
    torch.manual_seed(5)
    b = obj.make_batch(wiki_ids[:4])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loss_equals_hand_computed(tok):
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build("mlm", tokenizer=tok)
    obj.prepare(model)
    ids = torch.randint(5, len(tok), (2, 10))
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[0, 5], labels[1, 7] = 11, 12, 13
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    loss, metrics = obj.loss(model, batch)
    full = model(ids).logits  # (B, T, V)
    logp = full.log_softmax(-1)
    want = -(logp[0, 2, 11] + logp[0, 5, 12] + logp[1, 7, 13]) / 3
    assert torch.allclose(loss, want, atol=1e-5)
    assert metrics["mlm_tokens"] == 3
    loss_full, _ = build("mlm", tokenizer=tok, labels_only=False).loss(model, batch)
    assert torch.allclose(loss_full, want, atol=1e-5)


def test_loss_trains(tok, wiki_ids):
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    obj = build("mlm", tokenizer=tok)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = windows(wiki_ids, tok, T=30, n=64)
    losses = []
    for step in range(20):
        batch = obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8])
        loss, _ = obj.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


@pytest.mark.parametrize("opts, match", [
    ({"rate": 0.0}, "rate"), ({"rate": 1.0}, "rate"), ({"rate": -0.2}, "rate"),
    ({"mask_prob": 0.8, "random_prob": 0.3}, "mask_prob"), ({"masking": "words"}, "masking"),
    ({"span_max": 0}, "span_max"), ({"ratee": 0.1}, "did you mean"),
])
def test_bad_options(tok, opts, match):
    with pytest.raises(UserError, match=match):
        build("mlm", tokenizer=tok, **opts)


def test_incompatible_backbones(tok):
    with pytest.raises(UserError, match=r"mlm needs a bidirectional encoder.*gpt2.*decoder"):
        build("mlm", tokenizer=tok).prepare(plmkit.load("gpt2-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match=r"mlm needs .*head.*electra"):
        build("mlm", tokenizer=tok).prepare(plmkit.load("electra-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="unknown objective"):
        build("mlmm", tokenizer=tok)
