"""The tied word-table gradient path of plmkit.models.seq2seq (``_TiedHead`` / ``_TiedLookup`` and the
reused gradient memory) gives the same gradients as the plain ``nn.Embedding`` + ``nn.Linear`` path, and
the decoder's cached position-bias table equals the bias built per step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from plmkit.models import presets
from plmkit.models.cache import Seq2SeqCache



def _pair(name: str):
    """(model on the tied path, identical copy forced onto the plain module path)."""
    torch.manual_seed(0)
    m = presets.build(name, hidden_dropout=0.0, attention_dropout=0.0).train()
    ref = copy.deepcopy(m)
    ref._tied_state = lambda: None  # the nn.Embedding / LMHead modules, as before the fast path
    return m, ref


def _batch(pad_id: int | None):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (3, 9), generator=g)
    dec = torch.randint(5, 1000, (3, 5), generator=g)
    if pad_id is not None:  # padding tokens in both inputs: their rows must get no gradient
        ids[2, -3:] = pad_id
        dec[1, 0] = pad_id
    labels = torch.randint(5, 1000, (3, 5), generator=g)
    return ids, dec, labels


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a, b):
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("name", ["t5-tiny", "bart-tiny"])
def test_tied_path_gradients_equal_plain_path(name):
    m, ref = _pair(name)
    assert m._tied_state() is not None  # the fast path is really taken
    ids, dec, labels = _batch(m.config.pad_token_id if name == "bart-tiny" else None)
    sel = labels > 500
    for model in (m, ref):
        model.zero_grad(set_to_none=True)
        out = model(ids, torch.ones_like(ids), dec)
        loss = F.cross_entropy(out.logits.reshape(-1, 1000), labels.reshape(-1))
        # a second forward whose logits are taken at some positions only (labels_mask)
        loss = loss + model(ids, decoder_input_ids=dec, labels_mask=sel).logits.logsumexp(-1).mean()
        loss.backward()
    g = m.shared.weight.grad
    assert g.layout == torch.strided and g.is_contiguous() and g.abs().sum() > 0
    _assert_same_grads(m, ref)
    if name == "bart-tiny":
        assert m.shared.weight.grad[m.config.pad_token_id].abs().max() > 0  # the head still reaches the pad row
        m.zero_grad(set_to_none=True)
        m(ids, decoder_input_ids=dec).last_hidden_state.sum().backward()  # lookups only: pad row untouched
        assert m.shared.weight.grad[m.config.pad_token_id].abs().max() == 0


def test_tied_path_hidden_only_loss_and_encoder_outputs():
    m, ref = _pair("t5-tiny")
    ids, dec, labels = _batch(None)
    for model in (m, ref):  # the loss never uses the logits: the lookups return dense gradients themselves
        model.zero_grad(set_to_none=True)
        model(ids, decoder_input_ids=dec).last_hidden_state.pow(2).mean().backward()
    _assert_same_grads(m, ref)
    for model in (m, ref):  # encoder outputs given: one tied lookup (decoder) + the head
        model.zero_grad(set_to_none=True)
        enc = model.encode(ids)[0]
        F.cross_entropy(model(None, decoder_input_ids=dec, encoder_outputs=enc).logits.reshape(-1, 1000),
                        labels.reshape(-1)).backward()
    _assert_same_grads(m, ref)


def test_reused_gradient_memory_is_safe():
    m, ref = _pair("t5-tiny")
    ids, dec, labels = _batch(None)

    def step(model, scale, zero=True):
        if zero:
            model.zero_grad(set_to_none=True)
        logits = model(ids, decoder_input_ids=dec).logits
        (scale * F.cross_entropy(logits.reshape(-1, 1000), labels.reshape(-1))).backward()

    for model in (m, ref):
        step(model, 1.0)
    first_ptr = m.shared.weight.grad.data_ptr()
    kept = m.shared.weight.grad  # a caller keeps the first gradient: it must not be overwritten
    kept_value = kept.clone()
    for model in (m, ref):
        step(model, 2.0)
    assert torch.equal(kept, kept_value)
    _assert_same_grads(m, ref)
    del kept
    for model in (m, ref):
        step(model, 3.0)
    second_ptr = m.shared.weight.grad.data_ptr()
    for model in (m, ref):  # released by set_to_none: the next step writes into the same memory
        step(model, 4.0)
    assert m.shared.weight.grad.data_ptr() == second_ptr
    _assert_same_grads(m, ref)
    for model in (m, ref):  # accumulation over two backward passes without zero_grad
        step(model, 0.5, zero=False)
    _assert_same_grads(m, ref)
    assert first_ptr != 0


def test_no_tied_path_without_grad_or_under_autocast():
    m, _ = _pair("t5-tiny")
    with torch.no_grad():
        assert m._tied_state() is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m._tied_state() is None
    m.shared.weight.requires_grad_(False)
    assert m._tied_state() is None


def test_cached_position_bias_equals_per_step_bias():
    torch.manual_seed(0)
    m = presets.build("t5-tiny").eval()
    dec = m.decoder
    cache = Seq2SeqCache(m.config, batch_size=2, max_length=6)
    with torch.no_grad():
        for past, T in ((0, 1), (3, 1), (5, 1), (0, 4), (2, 3), (6, 2)):  # the last one outgrows the table
            S = past + T
            torch.testing.assert_close(dec._position_bias(T, S, past, cache), dec.relative_bias(T, S, past),
                                       atol=0, rtol=0)
    assert cache.position_bias is not None and cache.position_bias.shape[-1] >= 8
