"""plmkit.models.kernels (dropout): the cheaper CPU dropout mask keeps the statistics of F.dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import plmkit
from plmkit.models.kernels import MIN_NUMEL, Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_expectation_over_many_samples(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last 64-bit word is only partly used
    keep = keep_mask((n,), p)
    q = round(p * 65536) / 65536  # the drop probability actually used
    sd = (q * (1 - q) / n) ** 0.5
    assert abs((1 - keep.float().mean().item()) - q) < 5 * sd
    assert abs(q - p) <= 2 ** -17
    x = torch.full((1000, 1000), 2.0)
    y = dropout(x, p)
    vals = torch.unique(y)
    assert len(vals) == 2 and vals[0] == 0 and torch.isclose(vals[1], torch.tensor(2.0 / (1 - p)))
    assert abs(y.mean().item() - 2.0) < 5 * 2.0 * (q / (1 - q) / x.numel()) ** 0.5  # E[y] = x


def test_neighbouring_elements_are_independent():
    """Four elements share one 64-bit draw: their keep indicators must still be uncorrelated."""
    torch.manual_seed(1)
    k = keep_mask((250_000, 4), 0.5).float()  # each row = the four lanes of one word
    c = torch.corrcoef(k.T)
    off = c[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().max().item() < 0.01  # 5 sd of a correlation over 250k pairs is 0.01
    runs = keep_mask((1_000_000,), 0.5).float()
    assert abs(torch.corrcoef(torch.stack([runs[:-1], runs[1:]]))[0, 1].item()) < 0.005


def test_backward_uses_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 128, requires_grad=True)
    y = dropout(x, 0.25)
    y.sum().backward()
    kept = y != 0
    assert torch.allclose(x.grad, kept.float() / 0.75)
    assert torch.allclose(y[kept], x.detach()[kept] / 0.75)


def test_seeded_identity_and_fallbacks():
    x = torch.randn(32, 256)
    torch.manual_seed(5)
    a = dropout(x, 0.1)
    torch.manual_seed(5)
    b = dropout(x, 0.1)
    assert torch.equal(a, b)  # reproducible under torch.manual_seed
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    small = torch.randn(MIN_NUMEL - 1)
    torch.manual_seed(7)
    s1 = dropout(small, 0.2)
    torch.manual_seed(7)
    assert torch.equal(s1, F.dropout(small, 0.2, True))  # small tensors: exactly F.dropout
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    h = dropout(x.bfloat16(), 0.1)
    assert h.dtype == torch.bfloat16 and ((h == 0) | (h != 0)).all()
    m = Dropout(0.1)
    assert isinstance(m, nn.Dropout) and repr(m) == repr(nn.Dropout(0.1)) and not m.state_dict()
    m.eval()
    assert m(x) is x


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny", "t5-tiny", "deberta-tiny", "xlnet-tiny", "lstm-tiny"])
def test_models_use_the_fast_dropout(preset):
    model = plmkit.load(preset)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is Dropout for m in drops), [type(m) for m in drops]
