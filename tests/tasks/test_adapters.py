"""LoRA / Houlsby adapters / PALs / scalar mix / early exit on a tiny BERT: exact identities and what trains."""

from __future__ import annotations

import pytest
import torch

import plmkit
from plmkit.tasks import adapters as A
from plmkit.tasks.heads import ScalarMix
from plmkit.tasks.modes import ModeConfig, apply_mode, average_state_dicts, count_parameters, early_exit_predict
from plmkit.tasks.objective import TaskObjective


class _Tok:
    pad_token_id, cls_token_id, sep_token_id, bos_token_id, eos_token_id = 0, 1, 2, None, None


def tiny(seed=0):
    torch.manual_seed(seed)
    return plmkit.load("bert-tiny").eval()


def inputs(B=3, T=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 6:] = 0
    return ids, mask


def test_block_linears_found():
    m = tiny()
    blocks = A.find_blocks(m)
    assert len(blocks) == m.num_layers
    names = A.block_linears(blocks[0], m.config.hidden_size)
    assert names.attn_out != names.ffn_out and names.query == names.value  # fused qkv in plmkit


def test_lora_starts_equal_merges_exactly_and_leaves_keys_alone():
    m = tiny()
    ids, mask = inputs()
    ref = m(ids, attention_mask=mask).last_hidden_state
    new = A.add_lora(m, m.config.hidden_size, r=4, alpha=8)
    assert len(new) == 4 * m.num_layers  # (A, B) for q and for v per layer
    assert torch.allclose(m(ids, attention_mask=mask).last_hidden_state, ref, atol=1e-6)
    with torch.no_grad():
        for p in new:
            p.normal_(0, 0.1)
    lora = [x for x in m.modules() if isinstance(x, A.LoRALinear)][0]
    q, k, v = A.find_blocks(m)[0].attn.split
    delta = lora.delta_weight()
    assert delta[:q].abs().sum() > 0 and delta[q + k :].abs().sum() > 0 and delta[q : q + k].abs().sum() == 0
    out = m(ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(out, ref, atol=1e-4)
    assert A.merge_lora(m) == m.num_layers
    assert not any(isinstance(x, A.LoRALinear) for x in m.modules())
    assert torch.allclose(m(ids, attention_mask=mask).last_hidden_state, out, atol=1e-5)


def test_adapters_near_identity_and_trainable_set():
    m = tiny()
    ids, mask = inputs()
    ref = m(ids, attention_mask=mask).last_hidden_state
    obj = TaskObjective("classification", 2, _Tok())
    obj.prepare(m)
    trainable = apply_mode(m, ModeConfig("adapter", adapter_size=8))
    out = m(ids, attention_mask=mask).last_hidden_state
    assert (out - ref).abs().max() < 1e-2  # near-identity init (std 1e-3)
    n_adapters = sum(isinstance(x, A.Adapter) for x in m.modules())
    assert n_adapters == 2 * m.num_layers
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert all(("adapter" in n) or ("norm" in n) or n.startswith("heads.") for n in names)
    assert not any("qkv" in n or "word" in n for n in names)
    counts = count_parameters(m)
    assert counts["trainable_params"] == sum(p.numel() for p in trainable) < counts["total_params"]
    with torch.no_grad():  # the adapters are really in the forward pass
        for ad in (x for x in m.modules() if isinstance(x, A.Adapter)):
            ad.up.weight.normal_(0, 0.5)
            ad.down.weight.normal_(0, 0.5)
    assert (m(ids, attention_mask=mask).last_hidden_state - ref).abs().max() > 1e-2


def test_pals_start_exact_and_respect_padding():
    m = tiny()
    ids, mask = inputs()
    ref = m(ids, attention_mask=mask).last_hidden_state
    A.add_pals(m, m.config.hidden_size, size=16, num_heads=2)
    assert torch.allclose(m(ids, attention_mask=mask).last_hidden_state, ref, atol=1e-6)  # V_D = 0
    with torch.no_grad():
        m.pals.decode.weight.normal_(0, 0.5)
    out = m(ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(out, ref, atol=1e-3)
    ids2 = ids.clone()
    ids2[0, 6:] = 7  # change only padded positions of example 0
    out2 = m(ids2, attention_mask=mask).last_hidden_state
    assert torch.allclose(out[0, :6], out2[0, :6], atol=1e-5)
    assert len(m.pals.pals) == m.num_layers and m.pals.pals[0].encode is m.pals.pals[1].encode  # shared V_E


def test_scalar_mix_is_a_softmax_weighted_sum():
    mix = ScalarMix(3)
    hs = [torch.full((1, 2, 4), float(i)) for i in range(3)]
    assert torch.allclose(mix(hs), torch.full((1, 2, 4), 1.0))  # uniform weights: mean of 0, 1, 2
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 100.0]))
        mix.gamma.fill_(2.0)
    assert torch.allclose(mix(hs), torch.full((1, 2, 4), 4.0), atol=1e-4)


def test_features_mode_freezes_backbone():
    m = tiny()
    obj = TaskObjective("classification", 3, _Tok(), scalar_mix=True)
    obj.prepare(m)
    apply_mode(m, ModeConfig("features"))
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("heads.") for n in names)
    ids, mask = inputs()
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 1, 2])}
    loss, _ = obj.loss(m, batch)
    loss.backward()
    assert m.heads["task"].scalar_mix.weights.grad is not None


def test_early_exit_threshold_zero_is_the_full_model_and_large_exits_first():
    m = tiny()
    obj = TaskObjective("classification", 2, _Tok(), early_exit=True)
    obj.prepare(m)
    m.eval()  # heads are added in training mode (dropout)
    ids, mask = inputs(B=1)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    full = obj.forward(m, batch)[1]
    logits, used = early_exit_predict(m, obj, batch, threshold=0.0)
    assert used == m.num_layers and torch.allclose(logits, full)
    logits, used = early_exit_predict(m, obj, batch, threshold=10.0)
    out = m(ids, output_hidden_states=True)
    assert used == 1 and torch.allclose(logits, m.heads["off_ramps"].forward_layer(0, out.hidden_states[1]), atol=1e-6)


def test_average_state_dicts():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor([1])}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor([1])}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and torch.equal(avg["n"], a["n"])
    with pytest.raises(ValueError):
        average_state_dicts([a, {"w": a["w"]}])


def test_features_mode_backbone_runs_without_dropout_while_the_head_trains():
    m = plmkit.load("bert-tiny", hidden_dropout=0.5, attention_dropout=0.5)
    obj = TaskObjective("classification", 2, _Tok(), scalar_mix=True, dropout=0.5)
    obj.prepare(m)
    apply_mode(m, ModeConfig("features"))
    m.train()  # what the Trainer does every epoch
    ids, mask = inputs()
    kw = dict(attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_hidden_states=True)
    a, b = m(ids, **kw).hidden_states, m(ids, **kw).hidden_states
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # frozen features: no dropout noise
    assert m.heads.training and m.heads["task"].training  # the head's own dropout still trains
    torch.manual_seed(0)
    full = plmkit.load("bert-tiny", hidden_dropout=0.5, attention_dropout=0.5).train()
    assert not torch.equal(full(ids, **kw).last_hidden_state, full(ids, **kw).last_hidden_state)


def test_lora_on_grouped_query_attention_fused_qkv():
    """Llama with grouped-query attention: the fused qkv is H + 2 * kv_dim wide (not 3H); LoRA finds it and
    updates the W_q and W_v rows only, as a hand-built W + (alpha / r) B A on those rows computes."""
    torch.manual_seed(0)
    m = plmkit.load("llama-tiny").eval()
    blk = A.find_blocks(m)[0]
    q, k, v = blk.attn.split
    assert k < q  # grouped-query attention: fewer key/value heads
    names = A.block_linears(blk, m.config.hidden_size)
    assert (names.query, names.value, names.attn_out, names.ffn_out) == ("attn.qkv", "attn.qkv", "attn.o", "mlp.down")
    ids = torch.randint(5, m.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    ref = m(ids).logits
    W = blk.attn.qkv.weight.detach().clone()
    new = A.add_lora(m, m.config.hidden_size, r=4, alpha=8)
    assert len(new) == 4 * m.num_layers
    assert torch.allclose(m(ids).logits, ref, atol=1e-6)
    with torch.no_grad():
        for p in new:
            p.normal_(0, 0.1)
    lora = blk.attn.qkv
    (a_q, a_v), (b_q, b_v) = list(lora.lora_a), list(lora.lora_b)
    want = W.clone()
    want[:q] += 2.0 * b_q @ a_q
    want[q + k:] += 2.0 * b_v @ a_v
    assert torch.allclose(lora.weight, want, atol=1e-6)
    out = m(ids).logits
    assert not torch.allclose(out, ref, atol=1e-4)
    assert A.merge_lora(m) == m.num_layers
    assert torch.allclose(m(ids).logits, out, atol=1e-5)
