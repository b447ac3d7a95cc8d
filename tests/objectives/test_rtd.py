"""rtd (ELECTRA): generator sizing and sharing, parameters reachable by the optimizer, loss recomputed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build

from objective_fixtures import windows


def test_generator_is_smaller_shares_embeddings_and_is_in_model(tok):
    model = plmkit.load("electra-tiny", vocab_size=len(tok))
    obj = build("rtd", tokenizer=tok)
    obj.prepare(model)
    gen = obj.generator
    assert gen is model.heads["rtd_generator"]
    assert gen.config.hidden_size == model.config.hidden_size // 4
    assert gen.config.num_layers == model.config.num_layers
    assert gen.get_input_embeddings() is model.get_input_embeddings()
    assert gen.embeddings.position is model.embeddings.position
    assert gen.head.decoder.weight is model.get_input_embeddings().weight  # generator head tied to shared table
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in gen.parameters())  # the trainer's optimizer sees the generator
    n_before = len(list(model.parameters()))
    obj.prepare(model)  # idempotent
    assert len(list(model.parameters())) == n_before


def test_generator_preset(tok):
    model = plmkit.load("electra-tiny", vocab_size=len(tok))
    obj = build("rtd", tokenizer=tok, generator="electra-tiny-generator")
    obj.prepare(model)
    assert obj.generator.config.hidden_size == 32


def test_loss_matches_manual_computation(tok, wiki_ids):
    model = plmkit.load("electra-tiny", vocab_size=len(tok)).eval()
    obj = build("rtd", tokenizer=tok)
    obj.prepare(model)
    batch = obj.make_batch(windows(wiki_ids, tok, T=30, n=4))
    sel = batch["labels"] != -100
    # ELECTRA masking: selected tokens are [MASK] or kept, never random
    orig = torch.where(sel, batch["labels"], batch["input_ids"])
    changed = batch["input_ids"] != orig
    assert (batch["input_ids"][changed] == tok.mask_token_id).all()
    torch.manual_seed(11)
    loss, m = obj.loss(model, batch)
    torch.manual_seed(11)
    gen = model.heads["rtd_generator"]
    g = gen(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[sel]
    gen_loss = F.cross_entropy(g, batch["labels"][sel])
    sampled = torch.multinomial(torch.softmax(g, -1), 1).squeeze(-1)
    corrupted = orig.clone()
    corrupted[sel] = sampled
    h = model(corrupted, attention_mask=batch["attention_mask"]).last_hidden_state
    d = model.heads["rtd"](h)
    valid = batch["attention_mask"].bool()
    disc = F.binary_cross_entropy_with_logits(d[valid], (corrupted != orig)[valid].float())
    assert torch.allclose(loss, gen_loss + 50 * disc, atol=1e-4)
    assert abs(m["disc_loss"] - disc.item()) < 1e-5


def test_rtd_trains(tok, wiki_ids):
    torch.manual_seed(0)
    model = plmkit.load("electra-tiny", vocab_size=len(tok))
    obj = build("rtd", tokenizer=tok)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    data = windows(wiki_ids, tok, T=30, n=64)
    hist = []
    for step in range(20):
        loss, m = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append((loss.item(), m["gen_loss"]))
    assert sum(h[0] for h in hist[-5:]) < sum(h[0] for h in hist[:5])
    assert sum(h[1] for h in hist[-5:]) < sum(h[1] for h in hist[:5])


def test_discriminator_learns_to_flag_replacements(tok, wiki_ids):
    """The discriminator sees the corrupted text and its targets: with the generator's samples made uniform
    (temperature 1000) replaced tokens are rare pieces in odd places, and within 40 steps it rates them far
    likelier replaced than the originals. (At temperature 1 a generator near the unigram distribution leaves
    only context to go on, which a tiny model learns much later.)"""
    torch.manual_seed(0)
    model = plmkit.load("electra-tiny", vocab_size=len(tok))
    obj = build("rtd", tokenizer=tok, temperature=1000.0)
    obj.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    data = windows(wiki_ids, tok, T=30, n=64)
    for step in range(40):
        loss, m = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["disc_p_replaced"] - m["disc_p_original"] > 0.2, m


def test_incompatible(tok):
    with pytest.raises(UserError, match=r"rtd needs a bidirectional encoder.*gpt2.*decoder"):
        build("rtd", tokenizer=tok).prepare(plmkit.load("gpt2-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="generator_ratio"):
        build("rtd", tokenizer=tok, generator_ratio=0)
    with pytest.raises(UserError, match="rate"):
        build("rtd", tokenizer=tok, rate=1.5)
