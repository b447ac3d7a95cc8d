"""The task head's ELMo scalar mix with per-layer standardisation (issue #9).

Unnormalised backbone layers (ELMo's char-CNN and LSTM states) share large constant offsets per
dimension; mean-pooled features then differ between sentences by a small fraction of their norm
and the head stays at chance. ``ScalarMix.standardize`` shifts and scales every dimension of every
layer (initialised from the first training batch, then trained), which lets the head learn.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from plmkit.tasks.heads import ScalarMix, SequenceHead

H, T = 16, 6


def _offset_states(n: int, g: torch.Generator):
    """Three (n, T, H) layers: offsets of -30..30 per dimension, noise 0.5, label signal 0.3 along one direction."""
    y = torch.randint(0, 2, (n,), generator=g)
    offset = torch.linspace(-30, 30, H)
    direction = torch.randn(H, generator=g)
    sign = (2 * y - 1).float()[:, None, None]
    states = [offset + 0.5 * torch.randn(n, T, H, generator=g) + 0.3 * sign * direction for _ in range(3)]
    mask = torch.ones(n, T)
    mask[::2, 4:] = 0  # right padding in every other row
    return states, mask, y


def _train_head(standardize: bool, steps: int = 150) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = SequenceHead(H, 2, pooling="mean", num_states=3)
    if standardize:
        head.scalar_mix.standardize(H)
    opt = torch.optim.Adam(head.parameters(), lr=2e-3)
    for _ in range(steps):
        states, mask, y = _offset_states(32, g)
        loss = F.cross_entropy(head(SimpleNamespace(hidden_states=states), mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    states, mask, y = _offset_states(200, g)
    with torch.no_grad():
        return float((head(SimpleNamespace(hidden_states=states), mask).argmax(-1) == y).float().mean())


def test_head_learns_from_offset_layers_only_when_standardised():
    # Without standardisation this head scores 0.475 here (chance), like ELMo on SST-2 before the fix.
    assert _train_head(standardize=True) >= 0.9
    assert _train_head(standardize=False) < 0.7  # the failure the option exists for


def test_first_training_batch_initialises_zero_mean_unit_variance_over_real_tokens():
    g = torch.Generator().manual_seed(1)
    states, mask, _ = _offset_states(8, g)
    states = [s.clone() for s in states]
    for s in states:
        s[mask == 0] = 1e4  # padding must not enter the statistics
    mix = ScalarMix(3).standardize(H)
    assert not mix.initialized
    mix.eval()
    mix(states, mask)
    assert not mix.initialized  # evaluation never initialises
    mix.train()
    mix(states, mask)
    assert mix.initialized
    real = mask.bool()
    for j, h in enumerate(states):
        z = ((h - mix.shift[j]) * torch.exp(mix.log_scale[j]))[real]  # (N, H)
        assert torch.allclose(z.mean(0), torch.zeros(H), atol=1e-3)
        assert torch.allclose(z.var(0), torch.ones(H), atol=1e-3)
    first = [p.detach().clone() for p in mix.shift]
    mix(states[::-1], mask)  # later batches do not re-initialise
    assert all(torch.equal(a, b) for a, b in zip(first, mix.shift))


def test_state_dict_keys_and_reload_without_reinitialising():
    plain = ScalarMix(3)
    assert set(plain.state_dict()) == {"weights", "gamma"}
    mix = ScalarMix(3).standardize(H)
    assert set(mix.state_dict()) == {"weights", "gamma"} | {f"{k}.{j}" for k in ("shift", "log_scale") for j in range(3)}
    with torch.no_grad():
        for p in mix.shift:
            p.fill_(2.0)
    fresh = ScalarMix(3).standardize(H)
    fresh.load_state_dict(mix.state_dict())
    fresh.train()
    states = [torch.randn(2, T, H) * 5 for _ in range(3)]
    fresh(states)
    assert all(torch.equal(p, torch.full((H,), 2.0)) for p in fresh.shift)  # loaded statistics are kept
    # identity until initialised: an un-initialised standardised mix mixes exactly like the plain one
    a, b = ScalarMix(3), ScalarMix(3).standardize(H)
    a.eval(), b.eval()
    assert torch.allclose(a(states), b(states))
