"""clm: packed windows with separators, document blocking, chunked loss == full cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build


def test_separator_and_labels(tok):
    obj = build("clm", tokenizer=tok)
    rec = {"input_ids": [10, 11, 12, 20, 21], "doc_boundaries": [3]}
    b = obj.make_batch([rec, [30, 31]])
    sep = tok.sep_token_id  # the wordpiece tokenizer has no eos: sep separates documents
    assert b["input_ids"][0].tolist() == [10, 11, 12, sep, 20, 21]
    assert b["labels"][0].tolist() == [11, 12, sep, 20, 21, -100]
    assert b["labels"][1].tolist() == [31, -100, -100, -100, -100, -100]
    assert b["attention_mask"][1].tolist() == [1, 1, 0, 0, 0, 0]


def test_block_documents_equals_separate_documents(bpe_tok):
    tok = bpe_tok
    torch.manual_seed(0)
    model = plmkit.load("gpt2-tiny", vocab_size=len(tok)).eval()
    d1 = tok.encode("The cat sat on the mat.", add_special_tokens=False)
    d2 = tok.encode("Rain fell over the hills all night.", add_special_tokens=False)
    obj = build("clm", tokenizer=tok, block_documents=True)
    packed = obj.make_batch([{"input_ids": d1 + d2, "doc_boundaries": [len(d1)]}])
    alone = build("clm", tokenizer=tok).make_batch([d2])
    with torch.no_grad():
        a = model(packed["input_ids"], attention_mask=packed["attention_mask"],
                  position_ids=packed["position_ids"]).logits[0, len(d1) + 1:]
        b = model(alone["input_ids"]).logits[0]
    assert torch.allclose(a, b, atol=1e-5)
    assert packed["position_ids"][0, len(d1) + 1] == 0


def test_chunked_loss_matches_full_cross_entropy(bpe_tok):
    tok = bpe_tok
    torch.manual_seed(0)
    model = plmkit.load("gpt2-tiny", vocab_size=len(tok), hidden_dropout=0.0, attention_dropout=0.0,
                        embedding_dropout=0.0)
    ids = [torch.randint(10, len(tok), (n,)).tolist() for n in (17, 12, 9)]
    obj = build("clm", tokenizer=tok, chunk_size=5)  # several chunks, recomputed in backward
    b = obj.make_batch(ids)
    loss, metrics = obj.loss(model, b)
    loss.backward()
    g_chunked = model.get_input_embeddings().weight.grad.clone()
    model.zero_grad()
    logits = model(b["input_ids"], attention_mask=b["attention_mask"]).logits
    want = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), ignore_index=-100)
    want.backward()
    assert torch.allclose(loss, want, atol=1e-5)
    assert torch.allclose(g_chunked, model.get_input_embeddings().weight.grad, atol=1e-6)
    assert metrics["clm_tokens"] == 16 + 11 + 8
    assert abs(metrics["clm_ppl"] - torch.exp(want).item()) < 1e-2


def test_loss_falls(bpe_tok, wiki_ids):
    from objective_fixtures import windows

    tok = bpe_tok
    data = windows([tok.encode(line) for line in _lines()[:300]], tok, T=32, n=64)
    model = plmkit.load("gpt2-tiny", vocab_size=len(tok))
    obj = build("clm", tokenizer=tok)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, _ = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def _lines():
    from objective_fixtures import wikitext_lines

    return wikitext_lines()


def test_incompatible_backbone_and_options(tok):
    with pytest.raises(UserError, match=r"clm needs a causal decoder.*bert.*encoder"):
        build("clm", tokenizer=tok).prepare(plmkit.load("bert-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="chunk_size"):
        build("clm", tokenizer=tok, chunk_size=0)


def test_top1_correct_counts_what_argmax_counts():
    from plmkit.objectives.base import top1_correct

    g = torch.Generator().manual_seed(0)
    for n, v in ((1, 5), (37, 100), (300, 8000)):
        logits = torch.randn(n, v, generator=g)
        y = torch.randint(0, v, (n,), generator=g)
        y[: n // 2] = logits[: n // 2].argmax(-1)  # half the rows right, the rest mostly wrong
        assert int(top1_correct(logits, y)) == int((logits.argmax(-1) == y).sum())
    assert int(top1_correct(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))) == 0


def test_fused_head_path_equals_the_generic_chunked_path(bpe_tok, monkeypatch):
    import plmkit.objectives.clm as clm

    tok = bpe_tok
    torch.manual_seed(0)
    model = plmkit.load("llama-tiny", vocab_size=len(tok), hidden_dropout=0.0, attention_dropout=0.0)
    assert clm.fused_lm_head(model) is model.head.decoder
    ids = [torch.randint(10, len(tok), (n,)).tolist() for n in (17, 12, 9)]
    obj = build("clm", tokenizer=tok, chunk_size=5)
    b = obj.make_batch(ids)
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(clm, "fused_lm_head", lambda m: None)
        model.zero_grad()
        loss, metrics = obj.loss(model, b)
        loss.backward()
        runs.append((loss.detach(), metrics, [p.grad.clone() for p in model.parameters()]))
    (l1, m1, g1), (l2, m2, g2) = runs
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    assert m1["clm_acc"] == m2["clm_acc"] and m1["clm_tokens"] == m2["clm_tokens"] == 35
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-4)
    model.head.register_forward_hook(lambda *a: None)  # a hooked head keeps the module call
    assert clm.fused_lm_head(model) is None
