"""The verdict rules: each can come out held, not held and inconclusive, and says which rule it applied."""

from __future__ import annotations

import math

import pytest

from plmkit.reproduce import stats


def test_summary_is_mean_and_sample_sd():
    s = stats.summary([1.0, 2.0, 3.0, 6.0])
    assert s["mean"] == 3.0 and s["n"] == 4
    assert math.isclose(s["sd"], math.sqrt((4 + 1 + 0 + 9) / 3))
    assert stats.summary([5.0])["sd"] == 0.0
    with pytest.raises(ValueError):
        stats.summary([])


def test_paired_held_not_held_inconclusive():
    held = stats.paired([0.80, 0.82, 0.81], [0.70, 0.71, 0.72])
    assert held.verdict == stats.HELD and held.effect == pytest.approx(0.1, abs=1e-9) and "SE" in held.rule
    reversed_ = stats.paired([0.70, 0.71, 0.72], [0.80, 0.82, 0.81])
    assert reversed_.verdict == stats.NOT_HELD
    noisy = stats.paired([0.80, 0.60, 0.75], [0.70, 0.72, 0.74])
    assert noisy.verdict == stats.INCONCLUSIVE


def test_paired_lower_is_better_flips_the_sign():
    v = stats.paired([100.0, 101.0, 99.0], [120.0, 119.0, 121.0], higher_is_better=False)
    assert v.verdict == stats.HELD and v.effect == pytest.approx(20.0)


def test_one_seed_is_inconclusive_unless_a_minimum_effect_is_stated():
    assert stats.paired([0.9], [0.5]).verdict == stats.INCONCLUSIVE
    assert stats.paired([0.9], [0.5], min_effect=0.1).verdict == stats.HELD
    assert stats.paired([0.5], [0.9], min_effect=0.1).verdict == stats.NOT_HELD


def test_identical_differences_have_zero_se():
    assert stats.paired([2.0, 3.0], [1.0, 2.0]).verdict == stats.HELD
    assert stats.paired([1.0, 2.0], [1.0, 2.0]).verdict == stats.INCONCLUSIVE


def test_paired_needs_equal_lists():
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0])


def test_deterministic_margin():
    assert stats.deterministic(90.0, 100.0, higher_is_better=False).verdict == stats.HELD
    assert stats.deterministic(100.0, 90.0, higher_is_better=False).verdict == stats.NOT_HELD
    assert stats.deterministic(99.5, 100.0, higher_is_better=False, margin=0.01).verdict == stats.INCONCLUSIVE


def test_ordered_names_the_broken_link():
    assert stats.ordered([900, 200, 150, 140]).verdict == stats.HELD
    v = stats.ordered([900, 200, 210, 140], labels=["1", "2", "3", "4"])
    assert v.verdict == stats.NOT_HELD and "2 -> 3" in v.rule
    assert stats.ordered([1, 2, 3], decreasing=False).verdict == stats.HELD


def test_combine():
    h, n, i = (stats.Verdict(x, x) for x in (stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE))
    assert stats.combine({"a": h, "b": h}).verdict == stats.HELD
    assert stats.combine({"a": h, "b": i}).verdict == stats.INCONCLUSIVE
    assert stats.combine({"a": i, "b": n}).verdict == stats.NOT_HELD
    assert "[a: held]" in stats.combine({"a": h}).rule
