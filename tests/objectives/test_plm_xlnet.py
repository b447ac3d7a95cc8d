"""The permutation-LM objective trains plmkit's own XLNet (two-stream attention) on real text."""

from __future__ import annotations

import torch

import plmkit
from plmkit.objectives import build


def test_plm_trains_plmkit_xlnet_on_wikitext(tok, wiki_ids):
    model = plmkit.load("xlnet-tiny", vocab_size=len(tok))
    obj = build("plm", tokenizer=tok)
    obj.prepare(model)
    examples = [ids[:64] for ids in wiki_ids if len(ids) >= 24][:256]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for step in range(40):
        batch = obj.make_batch(examples[(step * 16) % 240:(step * 16) % 240 + 16])
        loss, metrics = obj.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)


def test_plm_refuses_a_backbone_without_two_stream_attention(tok):
    import pytest

    from plmkit.errors import UserError

    obj = build("plm", tokenizer=tok)
    with pytest.raises(UserError, match="plm"):
        obj.prepare(plmkit.load("bert-tiny", vocab_size=len(tok)))
