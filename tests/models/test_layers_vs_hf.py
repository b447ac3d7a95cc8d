"""Layer-level parity with ``transformers`` on identical (hand-copied) weights.

Full checkpoint interop is ``plmkit.interop``'s job (and its tests); here a tiny HF model of
each distinct block wiring (BERT post-LN, GPT-2 pre-LN + Conv1D, LLaMA RMSNorm/SwiGLU/rotary/GQA)
gets its weights copied by hand into our module tree, and hidden states / logits must agree.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit.models import load  # noqa: E402


def _copy(model, sd: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"head.decoder.weight"} if model.config.tie_word_embeddings else set()
    assert not unexpected, unexpected
    assert set(missing) <= tied, missing


def _bert_sd(hf, L: int) -> dict[str, torch.Tensor]:
    s = hf.state_dict()
    out = {
        "embeddings.word.weight": s["bert.embeddings.word_embeddings.weight"],
        "embeddings.position.weight": s["bert.embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": s["bert.embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": s["bert.embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": s["bert.embeddings.LayerNorm.bias"],
        "head.transform.dense.weight": s["cls.predictions.transform.dense.weight"],
        "head.transform.dense.bias": s["cls.predictions.transform.dense.bias"],
        "head.transform.norm.weight": s["cls.predictions.transform.LayerNorm.weight"],
        "head.transform.norm.bias": s["cls.predictions.transform.LayerNorm.bias"],
        "head.decoder.bias": s["cls.predictions.bias"] if "cls.predictions.bias" in s
        else s["cls.predictions.decoder.bias"],
    }
    for i in range(L):
        p = f"bert.encoder.layer.{i}."
        for t in ("weight", "bias"):
            out[f"layers.{i}.attn.qkv.{t}"] = torch.cat(
                [s[p + f"attention.self.{n}.{t}"] for n in ("query", "key", "value")])
            out[f"layers.{i}.attn.o.{t}"] = s[p + f"attention.output.dense.{t}"]
            out[f"layers.{i}.attn_norm.{t}"] = s[p + f"attention.output.LayerNorm.{t}"]
            out[f"layers.{i}.mlp.up.{t}"] = s[p + f"intermediate.dense.{t}"]
            out[f"layers.{i}.mlp.down.{t}"] = s[p + f"output.dense.{t}"]
            out[f"layers.{i}.mlp_norm.{t}"] = s[p + f"output.LayerNorm.{t}"]
    return out


def _gpt2_sd(hf, L: int) -> dict[str, torch.Tensor]:
    s = hf.state_dict()
    out = {"embeddings.word.weight": s["transformer.wte.weight"],
           "embeddings.position.weight": s["transformer.wpe.weight"],
           "final_norm.weight": s["transformer.ln_f.weight"], "final_norm.bias": s["transformer.ln_f.bias"]}
    for i in range(L):
        p = f"transformer.h.{i}."
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.o", "attn.c_proj"),
                             ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
            out[f"layers.{i}.{ours}.weight"] = s[p + theirs + ".weight"].t()  # Conv1D stores (in, out)
            out[f"layers.{i}.{ours}.bias"] = s[p + theirs + ".bias"]
        for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            out[f"layers.{i}.{ours}.weight"] = s[p + theirs + ".weight"]
            out[f"layers.{i}.{ours}.bias"] = s[p + theirs + ".bias"]
    return out


def _llama_sd(hf, L: int) -> dict[str, torch.Tensor]:
    s = hf.state_dict()
    out = {"embeddings.word.weight": s["model.embed_tokens.weight"], "final_norm.weight": s["model.norm.weight"],
           "head.decoder.weight": s["lm_head.weight"]}
    for i in range(L):
        p = f"model.layers.{i}."
        out[f"layers.{i}.attn.qkv.weight"] = torch.cat(
            [s[p + f"self_attn.{n}_proj.weight"] for n in ("q", "k", "v")])
        out[f"layers.{i}.attn.o.weight"] = s[p + "self_attn.o_proj.weight"]
        for n in ("gate", "up", "down"):
            out[f"layers.{i}.mlp.{n}.weight"] = s[p + f"mlp.{n}_proj.weight"]
        out[f"layers.{i}.attn_norm.weight"] = s[p + "input_layernorm.weight"]
        out[f"layers.{i}.mlp_norm.weight"] = s[p + "post_attention_layernorm.weight"]
    return out


def _inputs(vocab: int, pad_left: bool = False):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    if pad_left:
        mask[1, :4] = 0
    else:
        mask[1, 7:] = 0
    return ids, mask


def test_bert_matches_hf():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    hf = transformers.BertForMaskedLM(cfg).eval()
    ours = load("bert-tiny", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                max_position_embeddings=64, mask_token_id=None, pooler=False).eval()
    _copy(ours, _bert_sd(hf, 2))
    ids, mask = _inputs(99)
    tt = torch.zeros_like(ids)
    tt[:, 5:] = 1
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True)
        out = ours(ids, attention_mask=mask, token_type_ids=tt, output_hidden_states=True)
    keep = mask.bool()
    torch.testing.assert_close(out.last_hidden_state[keep], ref.hidden_states[-1][keep], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.logits[keep], ref.logits[keep], atol=1e-4, rtol=1e-4)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-4)


def test_gpt2_matches_hf_and_greedy():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=98, eos_token_id=98)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = load("gpt2-tiny", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
                max_position_embeddings=64, bos_token_id=98, eos_token_id=98).eval()
    _copy(ours, _gpt2_sd(hf, 2))
    ids, mask = _inputs(99)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        out = ours(ids, attention_mask=mask, output_hidden_states=True)
    keep = mask.bool()
    torch.testing.assert_close(out.logits[keep], ref.logits[keep], atol=1e-4, rtol=1e-4)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-4)
    # batched greedy generation with left padding: same tokens as transformers' generate
    ids, mask = _inputs(99, pad_left=True)
    ids = ids.masked_fill(mask == 0, 98)
    with torch.no_grad():
        ref_gen = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                              pad_token_id=98, eos_token_id=None)
    gen = ours.generate(ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(gen, ref_gen)


def test_llama_gqa_matches_hf():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=40, max_position_embeddings=64,
                                   rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = load("llama-tiny", vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                intermediate_size=40, max_position_embeddings=64, layer_norm_eps=1e-6, rope_theta=500.0,
                bos_token_id=1, eos_token_id=2).eval()
    _copy(ours, _llama_sd(hf, 2))
    ids, mask = _inputs(99, pad_left=True)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, position_ids=pos)
        out = ours(ids, attention_mask=mask, position_ids=pos)
    keep = mask.bool()
    torch.testing.assert_close(out.logits[keep], ref.logits[keep], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        ref_gen = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                              pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=10), ref_gen)


def test_gpt2_beam_search_and_eos_match_hf():
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=39, eos_token_id=39)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    ours = load("gpt2-tiny", vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
                max_position_embeddings=64, bos_token_id=39, eos_token_id=39).eval()
    _copy(ours, _gpt2_sd(hf, 2))
    ids = torch.randint(3, 39, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, num_beams=3,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(ids, max_new_tokens=8, num_beams=3), ref)
    # greedy with an eos that actually occurs: same stopping and padding as transformers
    free = ours.generate(ids, max_new_tokens=10)
    eos = int(free[0, 8])
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                          pad_token_id=0, eos_token_id=eos)
    assert torch.equal(ours.generate(ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=0), ref)
