"""XLM pieces (Lample & Conneau 2019): TLM batches align the two languages (language ids and positions restart
per side, masks fall in both halves at the MLM rate), MLM's ``language`` option, and the language embeddings
reaching the model's input (checked against the embedding sum computed from the weights)."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build


def _pairs(n, seed=0):
    """Synthetic pairs: source ids 20..99, target ids 100..199 (no special tokens), lengths 3..20."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ls, lt = torch.randint(3, 21, (2,), generator=g).tolist()
        out.append({"src": torch.randint(20, 100, (ls,), generator=g).tolist(),
                    "tgt": torch.randint(100, 200, (lt,), generator=g).tolist(), "src_lang": 0, "tgt_lang": 1})
    return out


def test_tlm_batches_align_both_languages_and_mask_both_halves(tok):
    obj = build("tlm", tokenizer=tok)
    data = _pairs(400)
    masked = {0: 0, 1: 0}
    tokens = {0: 0, 1: 0}
    for i in range(0, len(data), 50):
        b = obj.make_batch(data[i:i + 50])
        for k, r in enumerate(data[i:i + 50]):
            ls, lt = len(r["src"]) + 2, len(r["tgt"]) + 2
            # explicit expectation, built token by token
            want_lang = [0] * ls + [1] * lt
            want_pos = [p for p in range(ls)] + [p for p in range(lt)]
            assert b["token_type_ids"][k, :ls + lt].tolist() == want_lang
            assert b["position_ids"][k, :ls + lt].tolist() == want_pos
            assert b["attention_mask"][k, :ls + lt].all() and not b["attention_mask"][k, ls + lt:].any()
            lab = b["labels"][k]
            orig = torch.where(lab != -100, lab, b["input_ids"][k])[:ls + lt].tolist()
            assert orig == [tok.cls_token_id] + r["src"] + [tok.sep_token_id, tok.cls_token_id] + r["tgt"] + [
                tok.sep_token_id]
            for side, (s, e) in enumerate(((1, ls - 1), (ls + 1, ls + lt - 1))):  # inside each side's specials
                masked[side] += int((lab[s:e] != -100).sum())
                tokens[side] += e - s
            for p in (0, ls - 1, ls, ls + lt - 1):  # specials are never selected
                assert lab[p] == -100
    for side in (0, 1):  # ~15% of each side's tokens selected (4,600 tokens per side: sd of the rate ~0.5%)
        assert 0.12 < masked[side] / tokens[side] < 0.18, (side, masked[side], tokens[side])


def test_mlm_language_option_sets_language_ids_and_needs_the_embeddings(tok, wiki_ids):
    obj = build("mlm", tokenizer=tok, language=1)
    b = obj.make_batch(wiki_ids[:4])
    assert b["token_type_ids"].shape == b["input_ids"].shape and b["token_type_ids"].eq(1).all()
    assert "token_type_ids" not in build("mlm", tokenizer=tok).make_batch(wiki_ids[:4])
    obj.prepare(plmkit.load("bert-tiny", vocab_size=len(tok), type_vocab_size=2))
    with pytest.raises(UserError, match=r"language 1 needs 2 language embeddings.*type_vocab_size=1"):
        obj.prepare(plmkit.load("roberta-tiny", vocab_size=len(tok)))
    with pytest.raises(UserError, match="language must be a non-negative integer"):
        build("mlm", tokenizer=tok, language=-1)


def test_language_embeddings_are_applied():
    """The embedding output for language id L equals LayerNorm(word + position + language[L]) computed from the
    weights, and the two languages give different encoder outputs for the same ids."""
    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", vocab_size=300, type_vocab_size=2).eval()
    ids = torch.tensor([[2, 17, 45, 99, 3]])
    captured = []
    emb = model.embeddings if hasattr(model, "embeddings") else next(
        m for m in model.modules() if type(m).__name__ == "Embeddings")
    h = emb.register_forward_hook(lambda m, a, out: captured.append(out.detach()))
    outs = []
    with torch.no_grad():
        for lang in (0, 1):
            outs.append(model(ids, token_type_ids=torch.full_like(ids, lang), output_hidden_states=True)
                        .hidden_states[-1])
    h.remove()
    for lang in (0, 1):
        x = emb.word.weight[ids[0]] + emb.position.weight[:5] + emb.token_type.weight[lang]
        x = torch.nn.functional.layer_norm(x, x.shape[-1:], emb.norm.weight, emb.norm.bias, emb.norm.eps)
        torch.testing.assert_close(captured[lang][0], x, atol=1e-5, rtol=1e-5)
    assert (outs[0] - outs[1]).abs().max() > 1e-3
