"""t5_span, bart_denoise, mass, plm, glm: corruption statistics on real text, exact invertibility,
the batch layouts, losses + training on plmkit's encoder-decoder, refusal of backbones that cannot serve them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build

from objective_fixtures import windows


def _runs(mask):
    runs, n = [], 0
    for m in list(mask) + [False]:
        if m:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


# ------------------------------------------------------------------ t5_span
def test_t5_statistics_and_invertibility(tok, wiki_ids):
    obj = build("t5_span", tokenizer=tok)
    exs = windows(wiki_ids, tok, T=126)
    noise = total = 0
    spans = []
    for x in exs:
        inp, tgt, mask = obj.corrupt(x)
        assert obj.reconstruct(inp, tgt) == x["input_ids"] + [tok.sep_token_id]  # + EOS (sep here)
        noise += sum(mask)
        total += len(mask)
        spans += _runs(mask)
        n_sent = sum(1 for t in inp if t in obj._sentinel_index)
        assert n_sent == len(_runs(mask))
    assert total >= 100_000
    assert abs(noise / total - 0.15) / 0.15 < 0.05
    assert abs(sum(spans) / len(spans) - 3.0) / 3.0 < 0.05


def test_t5_sentinels_and_specials(tok):
    obj = build("t5_span", tokenizer=tok, noise_density=0.5)
    assert obj.sentinels[0] == len(tok) and obj.required_vocab_size == len(tok) + 100
    ids = tok.encode("the quick brown fox jumps over the lazy dog again and again")
    for _ in range(20):
        inp, tgt, mask = obj.corrupt(ids)
        assert not mask[0] and not mask[-1]  # [CLS] / [SEP] are never noise
        assert obj.reconstruct(inp, tgt) == ids
    b = obj.make_batch([ids, ids[:6]])
    nxt = b["labels"][:, 1:] != -100  # decoder input at t + 1 is the label at t
    assert torch.equal(b["decoder_input_ids"][:, 1:][nxt], b["labels"][:, :-1][nxt])
    assert (b["decoder_input_ids"][:, 0] == tok.pad_token_id).all()


def test_t5_with_own_sentinels():
    from plmkit.tokenization.train import train_tokenizer_from_iterator
    from objective_fixtures import wikitext_lines

    tok = train_tokenizer_from_iterator(wikitext_lines()[:300], kind="unigram", vocab_size=600, sentinels=10)
    obj = build("t5_span", tokenizer=tok)
    assert obj.sentinels == tok.sentinel_token_ids and obj.required_vocab_size == len(tok)
    ids = tok.encode(wikitext_lines()[3])
    inp, tgt, _ = obj.corrupt(ids)
    assert tgt[0] == tok.convert_tokens_to_ids("<extra_id_0>")
    assert obj.reconstruct(inp, tgt)[: len(ids)] == ids


# ------------------------------------------------------------------ bart_denoise
def test_bart_infilling_statistics_and_alignment(tok, wiki_ids):
    obj = build("bart_denoise", tokenizer=tok, permute_sentences=False)
    exs = windows(wiki_ids, tok, T=126)
    covered = total = 0
    lengths = []
    for x in exs:
        src, tgt, info = obj.corrupt(x)
        ids = x["input_ids"]
        cls, sep = tok.cls_token_id, tok.sep_token_id
        assert tgt == [cls] + ids + [sep]  # the target is the original document (<s> ... </s>)
        # rebuild the source from the original and the recorded spans: one mask per span
        rebuilt, pos = [], 0
        for s, e in info.spans:
            rebuilt += ids[pos:s] + [tok.mask_token_id]
            pos = e
        rebuilt += ids[pos:]
        assert src == [cls] + rebuilt + [sep]
        covered += sum(e - s for s, e in info.spans)
        total += len(ids)
        lengths += [e - s for s, e in info.spans]
    assert total >= 100_000
    assert abs(covered / total - 0.30) < 0.01
    # full Poisson(3) draws (the last span per document may be cut to the budget)
    zero = sum(1 for n in lengths if n == 0) / len(lengths)
    assert abs(zero - 0.0498) < 0.015  # P(0) = e^-3: 0-length spans insert a mask
    assert abs(sum(lengths) / len(lengths) - 3.0) / 3.0 < 0.1


def test_bart_other_noises(tok, wiki_ids):
    rec = {"input_ids": [t for t in wiki_ids[5] if t not in tok.all_special_ids][:60],
           "sentence_starts": [0, 20, 41]}
    ids = rec["input_ids"]
    perm = build("bart_denoise", tokenizer=tok, infill=0.0, permute_sentences=True)
    seen = set()
    for _ in range(20):
        src, tgt, info = perm.corrupt(rec)
        body = src[1:-1]
        assert sorted(body) == sorted(ids)
        assert body in ([*ids[a:b], *ids[c:d], *ids[e:f]] for (a, b), (c, d), (e, f) in
                        __import__("itertools").permutations([(0, 20), (20, 41), (41, 60)]))
        seen.add(tuple(body))
    assert len(seen) > 1
    rot = build("bart_denoise", tokenizer=tok, infill=0.0, permute_sentences=False, rotate=True)
    src, _, info = rot.corrupt(rec)
    k = info.rotation
    assert src[1:-1] == ids[k:] + ids[:k]
    dele = build("bart_denoise", tokenizer=tok, infill=0.0, permute_sentences=False, token_delete=0.2)
    kept = sum(len(dele.corrupt(rec)[0]) - 2 for _ in range(200)) / (200 * len(ids))
    assert abs(kept - 0.8) < 0.02
    msk = build("bart_denoise", tokenizer=tok, infill=0.0, permute_sentences=False, token_mask=0.25)
    frac = sum(msk.corrupt(rec)[0].count(tok.mask_token_id) for _ in range(200)) / (200 * len(ids))
    assert abs(frac - 0.25) < 0.02
    combo = build("bart_denoise", tokenizer=tok, infill=0.3, token_mask=0.1, token_delete=0.1, rotate=True)
    src, tgt, _ = combo.corrupt(rec)
    assert tgt == [tok.cls_token_id] + ids + [tok.sep_token_id] and len(src) < len(ids)


# ------------------------------------------------------------------ mass
def test_mass_fragment_and_invertibility(tok, wiki_ids):
    obj = build("mass", tokenizer=tok)
    exs = windows(wiki_ids, tok, T=62, n=300)
    b = obj.make_batch(exs)
    for k, x in enumerate(exs):
        full = [tok.cls_token_id] + x["input_ids"] + [tok.sep_token_id]
        lab = b["labels"][k][b["labels"][k] != -100].tolist()
        assert len(lab) == 31  # 50% of the 62 text tokens
        start = int(b["decoder_position_ids"][k, 0])
        inp = b["input_ids"][k].tolist()
        assert inp[:start] + lab + inp[start + len(lab):] == full
        assert b["decoder_input_ids"][k, :len(lab)].tolist() == [tok.mask_token_id] + lab[:-1]
        assert b["decoder_position_ids"][k, :len(lab)].tolist() == list(range(start, start + len(lab)))
    frag = b["labels"] != -100
    enc = b["input_ids"].gather(1, b["decoder_position_ids"])[frag]
    assert abs((enc == tok.mask_token_id).float().mean().item() - 0.8) < 0.03


# ------------------------------------------------------------------ plm
def test_plm_partial_prediction_and_perm_mask(tok, wiki_ids):
    obj = build("plm", tokenizer=tok)
    exs = windows(wiki_ids, tok, T=60, n=200)
    b = obj.make_batch(exs)
    n_pred = (b["labels"] != -100).sum().item()
    assert abs(n_pred / (60 * 200) - 1 / 6) < 0.01
    for k in range(20):
        perm = b["perm_mask"][k].bool()  # (T, T): True = may not attend
        tm = b["target_mapping"][k]
        tgt = [int(tm[p].argmax()) for p in range(tm.shape[0]) if tm[p].sum() > 0]
        assert b["labels"][k, :len(tgt)].tolist() == [b["input_ids"][k, p].item() for p in tgt]
        T = perm.shape[0]
        non = [p for p in range(T) if p not in tgt]
        for r, p in enumerate(tgt):  # the r-th target sees exactly the non-targets and earlier targets
            visible = set(torch.nonzero(~perm[p]).flatten().tolist())
            assert visible == set(non) | set(tgt[:r])
        for p in non:
            assert set(torch.nonzero(~perm[p]).flatten().tolist()) == set(non)
    with pytest.raises(UserError, match="K must be >= 2"):
        build("plm", tokenizer=tok, K=1)


# ------------------------------------------------------------------ glm
@pytest.mark.parametrize("mode", ["short", "long", "mixed"])
def test_glm_invertibility_and_layout(tok, wiki_ids, mode):
    obj = build("glm", tokenizer=tok, mode=mode)
    exs = windows(wiki_ids, tok, T=100, n=300)
    b = obj.make_batch(exs)
    cover = []
    for k, x in enumerate(exs):
        a = int(b["part_a_len"][k])
        ids, pos, lab = b["input_ids"][k].tolist(), b["position_ids"][k].tolist(), b["labels"][k].tolist()
        assert obj.reconstruct(ids, pos, lab, a) == x["input_ids"]
        cover.append(sum(1 for t in lab if t != -100) - sum(1 for t in ids[a:] if t == obj.start_id))
        att = b["attention_mask"][k]
        assert att[:a, :a].all() and not att[:a, a:].any()  # Part A: bidirectional, blind to Part B
        n = sum(1 for t in lab if t != -100) + a
        assert torch.equal(att[a:n, a:n], torch.ones(n - a, n - a, dtype=torch.bool).tril())
        assert all(p == 0 for p in pos[1][:a])
    frac = sum(cover) / (100 * len(exs))
    if mode == "short":
        assert 0.15 <= frac < 0.2
    elif mode == "long":
        assert 0.70 < frac < 0.80  # uniform over 50%-100%: mean 75%


# ------------------------------------------------------------------ losses on plmkit's encoder-decoder
FAMILIES = {
    "t5_span": dict(family="t5", norm="rms", norm_position="pre", embedding_norm=False, position="none",
                    relative_attention_num_buckets=32, attention_bias=False, mlp_bias=False, activation="relu"),
    "bart_denoise": dict(family="bart", position="learned", max_position_embeddings=256),
    "mass": dict(family="mass", position="learned", max_position_embeddings=256),
}


def tiny_seq2seq(name, vocab, pad):
    from plmkit.models.seq2seq import EncoderDecoder, Seq2SeqConfig

    return EncoderDecoder(Seq2SeqConfig(vocab_size=vocab, hidden_size=64, num_layers=2, num_decoder_layers=2,
                                        num_heads=4, intermediate_size=128, type_vocab_size=0, head="lm",
                                        pad_token_id=pad, hidden_dropout=0.0, attention_dropout=0.0,
                                        **FAMILIES[name]))


@pytest.mark.parametrize("name", ["t5_span", "bart_denoise", "mass"])
def test_seq2seq_loss_and_training_end_to_end(tok, wiki_ids, name):
    torch.manual_seed(0)
    obj = build(name, tokenizer=tok)
    model = tiny_seq2seq(name, len(tok) + 100, tok.pad_token_id)
    obj.prepare(model)
    data = windows(wiki_ids, tok, T=30, n=64)
    batch = obj.make_batch(data[:4])
    loss, m = obj.loss(model.eval(), batch)
    kw = {k: batch[k] for k in ("attention_mask", "decoder_input_ids", "decoder_attention_mask",
                                "decoder_position_ids") if k in batch}
    full = model(batch["input_ids"], **kw).logits  # (B, U, V)
    want = F.cross_entropy(full.reshape(-1, full.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, want, atol=1e-5)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, _ = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_t5_needs_room_for_sentinels(tok):
    with pytest.raises(UserError, match=r"vocab_size=.*uses 2100 ids"):
        build("t5_span", tokenizer=tok).prepare(tiny_seq2seq("t5_span", len(tok), tok.pad_token_id))


@pytest.mark.parametrize("name, pattern", [
    ("t5_span", r"t5_span needs an encoder-decoder backbone.*'bert' is an encoder"),
    ("bart_denoise", r"bart_denoise needs an encoder-decoder backbone.*'gpt2' is a decoder"),
    ("mass", r"mass needs an encoder-decoder backbone"),
    ("plm", r"plm needs an XLNet backbone.*'bert'"),
    ("glm", r"glm needs a GLM backbone.*'bert'"),
])
def test_current_backbones_refused(tok, name, pattern):
    model = plmkit.load("gpt2-tiny" if name == "bart_denoise" else "bert-tiny", vocab_size=len(tok) + 100)
    with pytest.raises(UserError, match=pattern):
        build(name, tokenizer=tok).prepare(model)


@pytest.mark.parametrize("name, opts, match", [
    ("t5_span", {"noise_density": 0.0}, "noise_density"), ("t5_span", {"noise_density": 1.0}, "noise_density"),
    ("t5_span", {"mean_span": 0}, "mean_span"), ("bart_denoise", {"poisson_lambda": 0}, "poisson_lambda"),
    ("bart_denoise", {"poisson_lambda": -1.0}, "poisson_lambda"), ("bart_denoise", {"infill": 1.0}, "infill"),
    ("bart_denoise", {"infill": 0.0, "permute_sentences": False}, "switched off"),
    ("mass", {"fragment_ratio": 1.0}, "fragment_ratio"), ("glm", {"poisson_lambda": 0.0}, "poisson_lambda"),
    ("glm", {"rate": 0.0}, "rate"), ("glm", {"mode": "medium"}, "mode"),
])
def test_bad_options(tok, name, opts, match):
    with pytest.raises(UserError, match=match):
        build(name, tokenizer=tok, **opts)


def test_glm_loss_and_training_on_glm_backbone(tok, wiki_ids):
    torch.manual_seed(0)
    model = plmkit.load("glm-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                        hidden_dropout=0.0, attention_dropout=0.0)
    obj = build("glm", tokenizer=tok)
    obj.prepare(model)
    data = windows(wiki_ids, tok, T=30, n=64)
    batch = obj.make_batch(data[:4])
    loss, _ = obj.loss(model, batch)
    full = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"]).logits  # (B, T, V)
    want = F.cross_entropy(full.reshape(-1, full.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, want, atol=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, _ = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_plm_batches_train_transformers_xlnet_without_leaks(tok, wiki_ids):
    """No plmkit backbone has two-stream attention: check the batches against transformers' XLNet."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.XLNetConfig(vocab_size=len(tok), d_model=64, n_layer=2, n_head=4, d_inner=128, dropout=0.0,
                                   pad_token_id=tok.pad_token_id)
    model = transformers.XLNetLMHeadModel(cfg).eval()
    obj = build("plm", tokenizer=tok)
    obj.prepare(model)
    data = windows(wiki_ids, tok, T=30, n=64)
    batch = obj.make_batch(data[:2])
    loss, _ = obj.loss(model, batch)
    kw = {k: batch[k] for k in ("attention_mask", "perm_mask", "target_mapping")}
    logits = model(batch["input_ids"], **kw).logits  # (B, P, V)
    want = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss, want, atol=1e-5)
    # a target's prediction must not see its own token, nor targets later in the factorisation order
    tm = batch["target_mapping"][0]
    first, last = int(tm[0].argmax()), int(tm[-1].argmax())
    changed = batch["input_ids"].clone()
    changed[0, first] = (changed[0, first] + 1) % len(tok)
    changed[0, last] = (changed[0, last] + 1) % len(tok)
    logits2 = model(changed, **kw).logits
    assert torch.allclose(logits[0, 0], logits2[0, 0], atol=1e-5)
    assert not torch.allclose(logits[0, -1], logits2[0, -1], atol=1e-5)  # the last target sees the first
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, _ = obj.loss(model, obj.make_batch(data[(step * 8) % 64:(step * 8) % 64 + 8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
