"""Tests for plmkit.models.transformer / layers / heads / config / presets (tiny configs only)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.models import PRESETS, ConfigError, ModelConfig, from_config, load
from plmkit.models.heads import DiscriminatorHead, SentencePairHead, linear_cross_entropy

V = 50


def tiny(**kw) -> ModelConfig:
    base = dict(family="test", vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                max_position_embeddings=32, type_vocab_size=2, hidden_dropout=0.0, attention_dropout=0.0,
                pad_token_id=0)
    base.update(kw)
    return ModelConfig(**base)


FLAGS = dict(
    norm_position=["pre", "post"], norm=["layer", "rms"], activation=["gelu", "gelu_new", "relu", "swiglu"],
    position=["learned", "sinusoidal", "rotary"], causal=[False, True],
)
# a covering subset of the full product: every value of every flag, and every pair of flags of the first 3
COMBOS = [dict(zip(FLAGS, vals)) for vals in itertools.product(*FLAGS.values())][::5]
EXTRA = [
    dict(share_layers=True, embedding_size=16),  # ALBERT
    dict(embedding_size=16, head=None),  # ELECTRA discriminator
    dict(num_kv_heads=2, norm="rms", position="rotary", activation="swiglu", causal=True, head="lm",
         attention_bias=False, mlp_bias=False, type_vocab_size=0, embedding_norm=False),  # LLaMA / GQA
    dict(num_kv_heads=1, head_dim=16, position="rotary", causal=True, head="lm", tie_word_embeddings=False),
    dict(pooler=True, hidden_dropout=0.1, attention_dropout=0.1),
    dict(scale_embeddings=True, position="sinusoidal", embedding_norm=False, head="lm"),
]


@pytest.mark.parametrize("flags", COMBOS + EXTRA, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_forward_backward(flags):
    torch.manual_seed(0)
    cfg = tiny(**flags)
    model = from_config(cfg)
    model.train()
    ids = torch.randint(1, V, (2, 7))
    tt = torch.randint(0, 2, (2, 7)) if cfg.type_vocab_size else None
    out = model(ids, token_type_ids=tt, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 7, 32)
    assert len(out.hidden_states) == cfg.num_layers + 1
    loss = out.last_hidden_state.pow(2).mean()
    if out.logits is not None:
        assert out.logits.shape == (2, 7, V)
        loss = loss + out.logits.logsumexp(-1).mean()
    if out.pooled is not None:
        loss = loss + out.pooled.sum()
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("embeddings.position") or name.startswith("embeddings.token_type") and tt is None:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if "word" not in name and "position" not in name:  # every used weight gets a gradient
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", sorted(k for k, p in PRESETS.items()
                                         if p.kind == "transformer" and (k.endswith("-tiny") or "tiny-" in k)))
def test_tiny_presets_run(name):
    torch.manual_seed(0)
    model = load(name).eval()
    cfg = model.config
    assert cfg.hidden_size <= 64 and cfg.num_layers == 2 and cfg.vocab_size == 1000
    out = model(torch.randint(5, 1000, (2, 9)))
    assert torch.isfinite(out.last_hidden_state).all()
    assert (out.logits is None) == (cfg.head is None)


def test_real_size_presets_configs():
    # building the real sizes would be slow; check the configs and one real parameter count instead
    for name in ("bert-base", "bert-large", "roberta-base", "albert-base-v2", "electra-small",
                 "electra-small-generator", "electra-base", "gpt", "gpt2", "gpt2-medium", "smollm2-135m"):
        assert ModelConfig.from_dict(PRESETS[name].fields).vocab_size > 1000
    with torch.device("meta"):
        m = load("bert-base")
    # BertForPreTraining-style: 110M in the encoder + pooler (the tied decoder adds only its bias)
    assert 109_000_000 < m.num_parameters() < 111_000_000
    with torch.device("meta"):
        m = load("gpt2")
    assert 124_000_000 < m.num_parameters() < 125_000_000  # GPT-2 small: 124M
    with torch.device("meta"):
        m = load("albert-base-v2")
    assert 11_000_000 < m.num_parameters() < 12_500_000  # ALBERT base: 12M


def test_state_dict_keys_follow_the_contract():
    bert = set(load("bert-tiny").state_dict())
    for k in ("embeddings.word.weight", "embeddings.position.weight", "embeddings.token_type.weight",
              "embeddings.norm.weight", "layers.0.attn.qkv.weight", "layers.1.attn.o.bias", "layers.0.attn_norm.weight",
              "layers.0.mlp.up.weight", "layers.0.mlp.down.weight", "layers.0.mlp_norm.bias", "pooler.dense.weight",
              "head.transform.dense.weight", "head.transform.norm.weight", "head.decoder.weight", "head.decoder.bias"):
        assert k in bert, k
    llama = load("llama-tiny")
    keys = set(llama.state_dict())
    assert "layers.0.mlp.gate.weight" in keys and "final_norm.weight" in keys
    assert not any(k.endswith(".bias") for k in keys)  # no biases in LLaMA (RMSNorm has weight only)
    qkv = llama.layers[0].attn.qkv.weight
    assert qkv.shape == ((4 + 2 * 2) * 16, 64)
    albert = set(load("albert-tiny").state_dict())
    assert "embeddings.project.weight" in albert and not any(k.startswith("layers.1.") for k in albert)
    assert "final_norm.weight" in set(load("gpt2-tiny").state_dict())
    assert "final_norm.weight" not in bert


def test_tied_and_untied_embeddings():
    m = load("gpt2-tiny")
    assert m.head.decoder.weight is m.embeddings.word.weight
    m = load("llama-tiny")
    assert m.head.decoder.weight is not m.embeddings.word.weight
    m = load("bert-tiny")
    new = torch.nn.Embedding(1000, 64)
    m.set_input_embeddings(new)
    assert m.head.decoder.weight is new.weight


def test_albert_sharing_applies_one_layer_num_layers_times():
    torch.manual_seed(0)
    m = load("albert-tiny", num_layers=5).eval()
    assert len(m.layers) == 1 and m.num_layers == 5
    ids = torch.randint(5, 1000, (1, 6))
    out = m(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 6
    # recompute by hand: the same block five times
    from plmkit.models.layers import AttentionContext

    x = out.hidden_states[0]
    for i in range(5):
        x = m.layers[0](x, AttentionContext(), i)
        torch.testing.assert_close(x, out.hidden_states[i + 1])
    groups = m.layer_groups()
    assert len(groups) == 3


def test_layer_groups_cover_each_parameter_once():
    for name in ("bert-tiny", "gpt2-tiny", "llama-tiny"):
        m = load(name)
        m.add_head("rtd", DiscriminatorHead(m.config))
        groups = m.layer_groups()
        assert len(groups) == m.num_layers + 2
        ids = [id(p) for g in groups for p in g]
        assert len(ids) == len(set(ids)) == len({id(p) for p in m.parameters()})


def test_causal_mask_blocks_the_future():
    torch.manual_seed(0)
    for name in ("gpt2-tiny", "gpt-tiny", "llama-tiny"):
        m = load(name).eval()
        a = torch.randint(5, 1000, (1, 10))
        b = a.clone()
        b[0, 6:] = torch.randint(5, 1000, (4,))
        ha, hb = m(a).last_hidden_state, m(b).last_hidden_state
        torch.testing.assert_close(ha[:, :6], hb[:, :6])
        assert not torch.allclose(ha[:, 6:], hb[:, 6:])
    enc = load("bert-tiny").eval()
    assert not torch.allclose(enc(a).last_hidden_state[:, :6], enc(b).last_hidden_state[:, :6])


@pytest.mark.parametrize("name", ["bert-tiny", "gpt2-tiny", "llama-tiny", "roberta-tiny"])
def test_padding_does_not_change_real_positions(name):
    torch.manual_seed(0)
    m = load(name).eval()
    pad = m.config.pad_token_id if m.config.pad_token_id is not None else 0
    ids = torch.randint(5, 1000, (1, 6))
    alone = m(ids).last_hidden_state
    padded = torch.cat([ids, torch.full((1, 3), pad)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    out = m(padded, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out[:, :6], alone, atol=1e-5, rtol=1e-4)


def test_custom_block_diagonal_mask_equals_separate_segments():
    torch.manual_seed(0)
    m = load("bert-tiny").eval()
    a, b = torch.randint(5, 1000, (1, 4)), torch.randint(5, 1000, (1, 5))
    ids = torch.cat([a, b], 1)
    seg = torch.tensor([0] * 4 + [1] * 5)
    mask = (seg[:, None] == seg[None, :])[None]  # (1, 9, 9)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    out = m(ids, attention_mask=mask, position_ids=pos).last_hidden_state
    torch.testing.assert_close(out[:, :4], m(a).last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 4:], m(b).last_hidden_state, atol=1e-5, rtol=1e-4)
    # 4-D form and causal combination: a causal model with a full mask stays causal
    g = load("gpt2-tiny").eval()
    full = torch.ones(1, 1, 9, 9, dtype=torch.bool)
    torch.testing.assert_close(g(ids, attention_mask=full).last_hidden_state, g(ids).last_hidden_state)


def test_labels_mask_logits_equal_gathered_full_logits():
    torch.manual_seed(0)
    for name in ("bert-tiny", "albert-tiny", "gpt2-tiny"):
        m = load(name).eval()
        ids = torch.randint(5, 1000, (3, 8))
        sel = torch.rand(3, 8) < 0.3
        sel[0, 0] = True
        full = m(ids).logits
        part = m(ids, labels_mask=sel).logits
        assert part.shape == (int(sel.sum()), 1000)
        torch.testing.assert_close(part, full[sel])
        torch.testing.assert_close(m.head_logits(m(ids).last_hidden_state), full)


@pytest.mark.parametrize("name", ["gpt2-tiny", "gpt-tiny", "llama-tiny"])
def test_incremental_cache_equals_full_forward(name):
    torch.manual_seed(0)
    m = load(name).eval()
    ids = torch.randint(5, 1000, (2, 12))
    full = m(ids).logits
    out = m(ids[:, :5], use_cache=True)
    cache = out.past_key_values
    logits = [out.logits]
    out = m(ids[:, 5:8], past_key_values=cache, use_cache=True)  # a chunk of 3 (causal within it)
    logits.append(out.logits)
    for t in range(8, 12):
        out = m(ids[:, t: t + 1], past_key_values=cache, use_cache=True)
        logits.append(out.logits)
    assert len(cache) == 12
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-4)


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = from_config(tiny(num_kv_heads=2, causal=True, position="rotary", head="lm")).eval()
    mha = from_config(tiny(num_kv_heads=4, causal=True, position="rotary", head="lm")).eval()
    sd = gqa.state_dict()
    D = 8
    for i in range(2):
        w, b = sd[f"layers.{i}.attn.qkv.weight"], sd[f"layers.{i}.attn.qkv.bias"]

        def expand(t):
            q, k, v = t.split([32, 16, 16])
            rep = lambda x: x.view(2, D, *x.shape[1:]).repeat_interleave(2, 0).reshape(32, *x.shape[1:])  # noqa: E731
            return torch.cat([q, rep(k), rep(v)])

        sd[f"layers.{i}.attn.qkv.weight"], sd[f"layers.{i}.attn.qkv.bias"] = expand(w), expand(b)
    mha.load_state_dict(sd)
    ids = torch.randint(1, V, (2, 9))
    torch.testing.assert_close(gqa(ids).logits, mha(ids).logits, atol=1e-5, rtol=1e-4)


def test_roberta_positions_skip_padding():
    m = load("roberta-tiny").eval()
    ids = torch.tensor([[1, 1, 7, 8, 9]])  # pad id 1
    pos = m.default_position_ids(ids, 5, 0, "cpu")
    assert pos.tolist() == [[1, 1, 2, 3, 4]]  # pads -> padding_idx, real tokens from offset 2


def test_inputs_embeds_equals_ids():
    torch.manual_seed(0)
    m = load("bert-tiny").eval()
    ids = torch.randint(5, 1000, (2, 6))
    a = m(ids).last_hidden_state
    b = m(inputs_embeds=m.get_input_embeddings()(ids)).last_hidden_state
    torch.testing.assert_close(a, b)


def test_extra_heads():
    torch.manual_seed(0)
    m = load("electra-tiny")
    rtd = m.add_head("rtd", DiscriminatorHead(m.config))
    nsp = m.add_head("nsp", SentencePairHead(m.config.hidden_size))
    h = m(torch.randint(5, 1000, (2, 6))).last_hidden_state
    assert rtd(h).shape == (2, 6) and nsp(h[:, 0]).shape == (2, 2)
    with pytest.raises(ValueError, match="already has a head"):
        m.add_head("rtd", DiscriminatorHead(m.config))
    assert "heads.rtd.prediction.weight" in m.state_dict()


def test_bf16_autocast_forward():
    torch.manual_seed(0)
    for name in ("bert-tiny", "llama-tiny"):
        m = load(name).eval()
        ids = torch.randint(5, 1000, (2, 6))
        ref = m(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(ids).logits
        assert torch.isfinite(out).all()
        assert (out.float().argmax(-1) == ref.argmax(-1)).float().mean() > 0.5


def test_linear_cross_entropy_matches_cross_entropy():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 40)
    h = torch.randn(37, 16, requires_grad=True)
    y = torch.randint(0, 40, (37,))
    y[[3, 9]] = -100
    loss = linear_cross_entropy(h, lin, y, chunk_size=8)
    loss.backward()
    grads = h.grad.clone(), lin.weight.grad.clone(), lin.bias.grad.clone()
    h.grad = None
    lin.zero_grad()
    ref = F.cross_entropy(lin(h), y)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, (h.grad, lin.weight.grad, lin.bias.grad)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_linear_cross_entropy_bf16_and_no_bias():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 300, bias=False)
    h = torch.randn(50, 32, requires_grad=True)
    y = torch.randint(0, 300, (50,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, lin, y, chunk_size=16)
    loss.backward()
    grads = h.grad.clone(), lin.weight.grad.clone()
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    h.grad = None
    lin.zero_grad()
    ref = F.cross_entropy(lin(h), y)
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=2e-2, rtol=1e-2)  # bf16 products, fp32 softmax and sums
    for a, b in zip(grads, (h.grad, lin.weight.grad)):
        assert (a - b).abs().max() <= 0.02 * b.abs().max()


# ----------------------------------------------------------------------------- config and errors
def test_config_round_trip_and_overrides():
    cfg = load("albert-tiny").config
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(d) == cfg
    m = load("bert-tiny", vocab_size=123, num_layers=3)
    assert m.config.vocab_size == 123 and len(m.layers) == 3
    assert m.embeddings.word.weight.shape == (123, 64)


@pytest.mark.parametrize("kw, field", [
    (dict(num_heads=5), "num_heads"), (dict(num_kv_heads=3), "num_kv_heads"), (dict(norm="batch"), "norm"),
    (dict(activation="tanh"), "activation"), (dict(position="alibi"), "position"), (dict(hidden_dropout=1.5),
                                                                                   "hidden_dropout"),
    (dict(pad_token_id=50), "pad_token_id"), (dict(hidden_size=0), "hidden_size"), (dict(head="cls"), "head"),
])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        tiny(**kw)


def test_unknown_names():
    with pytest.raises(UserError, match="did you mean 'bert-tiny'"):
        load("bert-tyni")
    with pytest.raises(UserError, match="hiden_size.*did you mean 'hidden_size'"):
        load("bert-tiny", hiden_size=3)
    with pytest.raises(UserError, match="does not exist"):
        load("./no/such/dir")


def test_bad_inputs_raise_clear_errors():
    m = load("bert-tiny", max_position_embeddings=16)
    with pytest.raises(UserError, match="max_position_embeddings=16"):
        m(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(UserError, match="vocab_size=1000"):
        m(torch.tensor([[5, 1000]]))
    with pytest.raises(UserError, match="vocab_size=1000"):
        m(torch.tensor([[5, -1]]))
    with pytest.raises(UserError, match="type_vocab_size=2"):
        m(torch.tensor([[5, 6]]), token_type_ids=torch.tensor([[0, 2]]))
    with pytest.raises(UserError, match="attention_mask shape"):
        m(torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(UserError, match="input_ids must be"):
        m(torch.ones(4, dtype=torch.long))
    with pytest.raises(UserError, match="no LM/MLM head"):
        load("electra-tiny").head_logits(torch.zeros(1, 64))
    g = load("gpt2-tiny", max_position_embeddings=8)
    cache = g(torch.ones(1, 6, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(UserError, match="sequence length 9 exceeds"):
        g(torch.ones(1, 3, dtype=torch.long), past_key_values=cache, use_cache=True)


def test_wrapped_or_hooked_projections_are_called_as_modules():
    """``layers.linear`` must not bypass a wrapper module or a forward hook on a projection."""
    import plmkit
    from torch import nn

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny").eval()
    ids = torch.randint(5, 100, (2, 7))
    ref = model(ids).last_hidden_state
    calls = []
    handle = model.layers[0].attn.o.register_forward_hook(lambda m, i, o: calls.append(1))
    torch.testing.assert_close(model(ids).last_hidden_state, ref)
    assert calls, "forward hook on attn.o was skipped"
    handle.remove()

    class Doubled(nn.Linear):  # a subclass whose forward differs
        def forward(self, x):
            return 2 * super().forward(x)

    old = model.layers[0].attn.o
    new = Doubled(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    model.layers[0].attn.o = new
    assert not torch.allclose(model(ids).last_hidden_state, ref)
