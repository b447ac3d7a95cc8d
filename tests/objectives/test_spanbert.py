"""spanbert: span-length distribution vs the clipped geometric, budget, whole-word contiguous spans,
and the SBO head / SBO logits against an explicit hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build
from plmkit.objectives.base import as_example, word_ids_of, word_spans

from objective_fixtures import windows


def _geometric_clipped(p=0.2, k=10):
    w = [p * (1 - p) ** (i - 1) for i in range(1, k + 1)]
    z = sum(w)
    return [x / z for x in w]


def test_span_lengths_budget_and_whole_words(tok, wiki_ids):
    obj = build("spanbert", tokenizer=tok)
    exs = windows(wiki_ids, tok, T=254)
    sampled, realised = [], []
    sel = tot = 0
    n_multi = 0
    for x in exs:
        m = obj.mask_example(x)
        ex = obj.with_specials(as_example(x, "spanbert"))
        words = word_spans(word_ids_of(ex, obj.vocab))
        starts = {s for s, _ in words}
        ends = {e for _, e in words}
        tot += sum(1 for t in ex.ids if t not in obj.vocab.special)
        sel += sum(lab != -100 for lab in m.labels)
        sampled += m.sampled_lengths
        realised += m.realised_words
        for (s, e) in m.units:
            # contiguous, made of complete words, every token labelled
            assert s in starts and e in ends
            assert all(m.labels[p] == ex.ids[p] for p in range(s, e))
            n_words = sum(1 for ws, we in words if s <= ws and we <= e)
            n_multi += n_words > 1
        assert len(m.units) == len(m.realised_words)
    assert tot > 100_000
    assert abs(sel / tot - 0.15) < 0.005, sel / tot
    # sampled lengths follow Geometric(0.2) clipped at 10 (renormalised): mean 3.797 (the paper: 3.8)
    probs = _geometric_clipped()
    mean = sum((i + 1) * q for i, q in enumerate(probs))
    assert abs(mean - 3.797) < 0.001
    n = len(sampled)
    assert n > 5000
    assert abs(sum(sampled) / n - mean) < 4 * math.sqrt(sum((i + 1 - mean) ** 2 * q for i, q in enumerate(probs)) / n)
    for L in range(1, 11):
        f = sampled.count(L) / n
        assert abs(f - probs[L - 1]) < 4 * math.sqrt(probs[L - 1] * (1 - probs[L - 1]) / n) + 1e-3, (L, f)
    assert max(sampled) == 10 and max(realised) <= 10 and n_multi > 1000


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def test_sbo_head_matches_hand_computation(tok):
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build("spanbert", tokenizer=tok)
    obj.prepare(model)
    head = model.heads["sbo"]
    with torch.no_grad():  # non-trivial norms
        for ln in (head.norm1, head.norm2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    H = model.config.hidden_size
    left, right = torch.randn(5, H), torch.randn(5, H)
    rel = torch.tensor([1, 2, 3, 1, 7])
    got = head(left, right, rel)
    eps = model.config.layer_norm_eps
    for i in range(5):
        p = head.position.weight[rel[i]]
        h0 = torch.cat([left[i], right[i], p])
        h1 = _layer_norm(_gelu(head.dense1.weight @ h0 + head.dense1.bias), head.norm1.weight, head.norm1.bias, eps)
        y = _layer_norm(_gelu(head.dense2.weight @ h1 + head.dense2.bias), head.norm2.weight, head.norm2.bias, eps)
        torch.testing.assert_close(got[i], y, atol=1e-5, rtol=1e-5)


def test_sbo_loss_uses_span_boundaries(tok, wiki_ids):
    model = plmkit.load("bert-tiny", vocab_size=len(tok)).eval()
    obj = build("spanbert", tokenizer=tok)
    obj.prepare(model)
    xs = windows(wiki_ids, tok, T=60, n=3)  # records: [CLS] ... [SEP] added
    torch.manual_seed(7)
    masked = [obj.mask_example(x) for x in xs]
    torch.manual_seed(7)
    batch = obj.make_batch(xs)
    assert batch["input_ids"].tolist()[0][: len(masked[0].input_ids)] == masked[0].input_ids
    loss, metrics = obj.loss(model, batch)
    with torch.no_grad():
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        hid = out.last_hidden_state
        mlm_terms, sbo_terms = [], []
        for b, m in enumerate(masked):
            for s, e in m.units:  # token ranges [s, e): boundaries s-1 and e
                for p in range(s, e):
                    y = m.labels[p]
                    mlm_terms.append(-F.log_softmax(out.logits[b, p], -1)[y])
                    z = model.heads["sbo"](hid[b, s - 1][None], hid[b, e][None], torch.tensor([p - s + 1]))
                    sbo_terms.append(-F.log_softmax(model.head.decoder(z)[0], -1)[y])
    assert len(sbo_terms) == int(metrics["sbo_tokens"]) > 0
    mlm, sbo = torch.stack(mlm_terms).mean(), torch.stack(sbo_terms).mean()
    assert abs(metrics["mlm_loss"] - float(mlm)) < 1e-4
    assert abs(metrics["sbo_loss"] - float(sbo)) < 1e-4
    assert abs(float(loss.detach()) - float(mlm + sbo)) < 1e-4


def test_spanbert_trains_and_checks_backbone(tok, wiki_ids):
    model = plmkit.load("bert-tiny", vocab_size=len(tok))
    obj = build("spanbert", tokenizer=tok, max_length=64)
    obj.prepare(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = [x for x in wiki_ids if len(x) > 20][:8]
    torch.manual_seed(0)
    batch = obj.make_batch(data)
    first = None
    for _ in range(15):
        loss, _ = obj.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
    assert float(loss) < first - 1.0
    with pytest.raises(UserError, match="encoder"):
        build("spanbert", tokenizer=tok).prepare(plmkit.load("gpt2-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="sbo_weight"):
        build("spanbert", tokenizer=tok, sbo_weight=-1)
