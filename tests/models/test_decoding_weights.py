"""Decoding with cached transposed weights (``plmkit.models.kernels.decoding_weights``): the same numbers
as the plain path, the copy follows every change of the weight, nothing changes outside decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.models import kernels, load, presets
from plmkit.models.kernels import decoding_weights, linear, release_decoding_weights, transposed_weight


@pytest.fixture(autouse=True)
def _empty_cache():
    release_decoding_weights()
    yield
    release_decoding_weights()


def test_packed_linear_equals_f_linear_and_follows_weight_changes():
    torch.manual_seed(0)
    lin = nn.Linear(16, 24)
    x = torch.randn(3, 2, 16)  # 6 rows, within PACK_MIN_ROWS..PACK_MAX_ROWS
    with torch.no_grad(), decoding_weights(enabled=True):
        y = linear(x, lin, "relu")
        wt = transposed_weight(lin.weight)
        assert wt.is_contiguous() and wt.shape == (16, 24)
        assert transposed_weight(lin.weight) is wt  # cached
        torch.testing.assert_close(y, F.relu(F.linear(x, lin.weight, lin.bias)), rtol=1e-6, atol=1e-6)
        lin.weight.mul_(-2.0)  # in place (an optimizer step): the version counter moves
        torch.testing.assert_close(linear(x, lin), F.linear(x, lin.weight, lin.bias), rtol=1e-6, atol=1e-6)
        assert transposed_weight(lin.weight) is not wt
        lin.weight = nn.Parameter(torch.randn(24, 16))  # replaced: new storage
        torch.testing.assert_close(linear(x, lin), F.linear(x, lin.weight, lin.bias), rtol=1e-6, atol=1e-6)


def test_no_packing_outside_decoding_with_grad_or_many_rows():
    lin = nn.Linear(8, 8)
    with torch.no_grad():
        linear(torch.randn(2, 8), lin)  # not inside decoding_weights
    with decoding_weights(enabled=True):
        linear(torch.randn(2, 8), lin).sum().backward()  # grad enabled: autograd path
        with torch.no_grad():
            linear(torch.randn(kernels.PACK_MAX_ROWS + 1, 8), lin)  # too many rows
    assert release_decoding_weights() == 0
    assert lin.weight.grad is not None


def test_auto_mode_follows_the_size_limit(monkeypatch):
    m = nn.Linear(4, 4)
    with decoding_weights(m) as on:
        assert on
    monkeypatch.setattr(kernels, "PACK_AUTO_MAX_BYTES", 0)
    with decoding_weights(m) as on:
        assert not on
    with decoding_weights(m, enabled=True) as on:
        assert on


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_wide_output_layer_uses_the_transposed_product(monkeypatch, rows, bias):
    """The LM-head path (``weight @ x.T`` for 2..WIDE_MAX_ROWS rows of a wide fp32 layer) = F.linear, and
    it makes no cached copy (the weight is read in place)."""
    monkeypatch.setattr(kernels, "WIDE_MIN_OUT", 100)
    torch.manual_seed(0)
    lin = nn.Linear(16, 300, bias=bias)
    x = torch.randn(rows, 1, 16)
    with torch.no_grad(), decoding_weights(enabled=True):
        y = linear(x, lin)
    assert y.shape == (rows, 1, 300)
    torch.testing.assert_close(y, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    wide = 2 <= rows <= kernels.WIDE_MAX_ROWS
    assert (release_decoding_weights() == 0) == wide  # the plain packed path caches a copy


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_decoder_only_generate_same_tokens_with_and_without_packing(name):
    torch.manual_seed(0)
    m = load(name, vocab_size=64).eval()
    ids = torch.randint(3, 64, (2, 5))
    plain = m.generate(ids, max_new_tokens=8, pack_weights=False)
    assert release_decoding_weights() == 0
    packed = m.generate(ids, max_new_tokens=8, pack_weights=True)
    assert torch.equal(plain, packed)
    assert release_decoding_weights(m) > 0


def test_seq2seq_generate_same_tokens_packed_after_training_steps():
    torch.manual_seed(0)
    m = presets.build("t5-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    src = torch.randint(5, 1000, (3, 7))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(2):  # the cached copies must follow the optimizer's in-place updates
        packed = m.generate(src, max_new_tokens=6, eos_token_id=[], pack_weights=True)
        plain = m.generate(src, max_new_tokens=6, eos_token_id=[], pack_weights=False)
        assert torch.equal(packed, plain)
        m.train()
        labels = torch.randint(5, 1000, (3, 4))
        loss = F.cross_entropy(m(src, None, m.shift_right(labels)).logits.flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    beams_packed = m.generate(src, max_new_tokens=5, num_beams=2, eos_token_id=[], pack_weights=True)
    beams_plain = m.generate(src, max_new_tokens=5, num_beams=2, eos_token_id=[], pack_weights=False)
    assert torch.equal(beams_packed, beams_plain)
    assert release_decoding_weights(m) > 0  # the packed path did run


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_training_linear_matches_autograd_of_f_linear(activation):
    """The oneDNN training path (ReLU fused into the GEMM, its backward masked by the output) gives
    F.linear's values and gradients; x has exact zeros of the pre-activation's sign boundary nearby."""
    torch.manual_seed(0)
    lin = nn.Linear(32, 48)
    x = torch.randn(4, 10, 32, requires_grad=True)
    act = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu}[activation]
    y = linear(x, lin, activation)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    y_ref = act(F.linear(x, lin.weight, lin.bias))
    ref = torch.autograd.grad(y_ref, (x, lin.weight, lin.bias), g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    if activation == "relu":
        assert (y == 0).any() and (y > 0).any()


def test_generate_through_the_wide_head_path_same_tokens(monkeypatch):
    monkeypatch.setattr(kernels, "WIDE_MIN_OUT", 32)  # the tiny model's 64-word head takes the wide path
    torch.manual_seed(0)
    m = load("gpt2-tiny", vocab_size=64).eval()
    ids = torch.randint(3, 64, (4, 5))
    plain = m.generate(ids, max_new_tokens=8, pack_weights=False)
    packed = m.generate(ids, max_new_tokens=8, pack_weights=True)
    assert torch.equal(plain, packed)
