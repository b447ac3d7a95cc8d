"""Optimizers and schedules: LAMB against its formula, schedule shapes (ULMFiT STLR eq. 3), param groups."""

from __future__ import annotations

import math

import pytest
import torch

from plmkit.config import TrainConfig
from plmkit.training.optim import Lamb, build_optimizer, build_scheduler, lr_multiplier, param_groups


def _cfg(**kw):
    return TrainConfig(**{"max_steps": 100, **kw})


def test_lamb_matches_reference_formula():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, 3))
    p0 = p.detach().clone()
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    grads = [torch.randn(5, 3) for _ in range(3)]
    m = torch.zeros_like(p0)
    v = torch.zeros_like(p0)
    ref = p0.clone()
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        r = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.99 ** t)).sqrt() + 1e-6) + 0.01 * ref
        ref = ref - 0.1 * (ref.norm() / r.norm()) * r
    torch.testing.assert_close(p.detach(), ref, rtol=1e-5, atol=1e-6)


def test_lamb_trust_ratio_makes_update_scale_free():
    """The step length is lr * ||w||, whatever the gradient scale (the point of layer-wise adaptation)."""
    for scale in (1e-3, 1.0, 1e3):
        p = torch.nn.Parameter(torch.ones(4, 4))
        opt = Lamb([p], lr=0.01)
        p.grad = torch.full((4, 4), scale)
        opt.step()
        assert (p.detach() - 1).norm() == pytest.approx(0.01 * 4.0, rel=1e-4)


def test_lamb_trains_a_regression():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)
    model = torch.nn.Linear(8, 1)
    opt = build_optimizer(model, _cfg(optimizer="lamb", lr=0.05, weight_decay=0.0))
    assert isinstance(opt, Lamb)
    first = None
    for _ in range(200):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first * 0.01


def test_schedules():
    lin = _cfg(schedule="linear", warmup_steps=10)
    assert lr_multiplier(0, lin) == pytest.approx(0.1)
    assert lr_multiplier(9, lin) == pytest.approx(1.0)
    assert lr_multiplier(10, lin) == pytest.approx(1.0)
    assert lr_multiplier(55, lin) == pytest.approx(0.5)
    assert lr_multiplier(100, lin) == pytest.approx(0.0)
    cos = _cfg(schedule="cosine", warmup_steps=0, min_lr_ratio=0.1)
    assert lr_multiplier(50, cos) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(100, cos) == pytest.approx(0.1)
    assert lr_multiplier(77, _cfg(schedule="constant", warmup_steps=5)) == 1.0
    inv = _cfg(schedule="inverse_sqrt", warmup_steps=16)
    assert lr_multiplier(15, inv) == pytest.approx(1.0)
    assert lr_multiplier(63, inv) == pytest.approx(0.5)


def test_slanted_triangular_follows_ulmfit_eq3():
    T, cut_frac, ratio = 1000, 0.1, 32
    cfg = _cfg(schedule="slanted_triangular", max_steps=T, stlr_cut_frac=cut_frac, stlr_ratio=ratio)
    cut = math.floor(T * cut_frac)
    for t in (0, 50, 99, 100, 101, 500, 999):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert lr_multiplier(t, cfg) == pytest.approx((1 + p * (ratio - 1)) / ratio), t
    assert lr_multiplier(cut, cfg) == pytest.approx(1.0)
    assert lr_multiplier(0, cfg) == pytest.approx(1 / ratio)


def test_scheduler_applies_to_layerwise_base_lrs():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model.layer_groups = lambda: [list(model[0].parameters()), list(model[1].parameters())]
    cfg = _cfg(lr=1.0, layer_lr_decay=0.5, warmup_steps=4, schedule="constant", weight_decay=0.1)
    opt = build_optimizer(model, cfg)
    groups = {(g["layer"], g["weight_decay"]): g for g in opt.param_groups}
    assert set(groups) == {(0, 0.1), (0, 0.0), (1, 0.1), (1, 0.0)}  # matrices decay, biases do not
    sched = build_scheduler(opt, cfg)
    assert groups[(0, 0.1)]["lr"] == pytest.approx(0.5 * 0.25) and groups[(1, 0.1)]["lr"] == pytest.approx(0.25)
    for _ in range(5):
        opt.step()
        sched.step()
    assert groups[(0, 0.0)]["lr"] == pytest.approx(0.5) and groups[(1, 0.0)]["lr"] == pytest.approx(1.0)
    # The schedule state is plain data and restores exactly.
    sched2 = build_scheduler(build_optimizer(model, cfg), cfg)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == sched.last_epoch


def test_param_groups_put_unlisted_params_on_top_and_dedupe_tied():
    model = torch.nn.Module()
    model.emb = torch.nn.Embedding(5, 3)
    model.head = torch.nn.Linear(3, 5, bias=False)
    model.head.weight = model.emb.weight  # tied
    model.extra = torch.nn.Linear(3, 3)  # e.g. a head an objective added later
    model.layer_groups = lambda: [[model.emb.weight], [model.head.weight]]
    groups = param_groups(model, _cfg(layer_lr_decay=0.5, lr=1.0))
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == 3
    top = [g for g in groups if g["lr"] == 1.0]
    assert {id(p) for g in top for p in g["params"]} == {id(model.extra.weight), id(model.extra.bias)}


def test_head_lr_is_the_top_groups_scheduled_peak():
    """``head_lr`` builds the top group with its own peak LR (no patching of the optimizer afterwards); the
    schedule scales it like every other group's, and the groups below keep ``lr`` (times the layer decay)."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model.layer_groups = lambda: [list(m.parameters()) for m in model]
    cfg = _cfg(lr=1.0, head_lr=3.0, layer_lr_decay=0.5, warmup_steps=4, schedule="linear", max_steps=20)
    opt = build_optimizer(model, cfg)
    peaks = {g["layer"]: g["lr"] for g in opt.param_groups}
    assert peaks == {0: pytest.approx(0.25), 1: pytest.approx(0.5), 2: pytest.approx(3.0)}
    sched = build_scheduler(opt, cfg)
    for step in range(10):
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(peaks[g["layer"]] * lr_multiplier(step, cfg))
        opt.step()
        sched.step()
    with pytest.raises(Exception, match="train.head_lr"):
        _cfg(head_lr=0.0)
