"""Verdict rules for claims: each returns a :class:`Verdict` (``held`` / ``not held`` / ``inconclusive``) and the
rule in one sentence, so ``claim.json`` always says how its verdict was reached.

- :func:`summary`: mean, sample standard deviation and n of a list of figures.
- :func:`paired`: the claimed-better arm minus the other, per seed (paired by seed); held when the mean
  difference is in the claimed direction by more than ``z`` standard errors, not held when it is that far in the
  other direction, inconclusive otherwise (and always with fewer than two seeds, unless ``min_effect`` decides).
- :func:`paired_examples`: the same rule over per-example paired scores (one run per arm, many examples).
- :func:`deterministic`: a figure with no seed variance (an n-gram perplexity) compared with a relative margin.
- :func:`ordered`: a chain of comparisons (perplexity falls with order); held only if every link holds.
- :func:`combine`: all parts held -> held; any part not held -> not held; otherwise inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    rule: str
    effect: float | None = None  # the claimed-direction difference (positive = as claimed)
    se: float | None = None

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "rule": self.rule, "effect": self.effect, "se": self.se}


def summary(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "n", "values"}`` (sd is the sample standard deviation; 0.0 for one value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summary of no values")
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": n, "values": vals}


def fmt(stats: dict, digits: int = 3) -> str:
    """``12.3 ± 0.4 (n=3)`` (or the bare mean for one value)."""
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}g}"
    return f"{stats['mean']:.{digits}g} ± {stats['sd']:.2g} (n={stats['n']})"


def _decide(diffs: Sequence[float], z: float, min_effect: float, what: str) -> Verdict:
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        if min_effect > 0 and abs(mean) >= min_effect:
            verdict = HELD if mean > 0 else NOT_HELD
            return Verdict(verdict, f"{what}: one pair, so no standard error; the difference {mean:+.4g} is beyond the "
                                    f"stated minimum effect {min_effect:g}", mean, None)
        return Verdict(INCONCLUSIVE, f"{what}: one pair gives no standard error (difference {mean:+.4g}); "
                                     f"repeat over seeds", mean, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    rule = (f"{what}: mean paired difference {mean:+.4g} (positive = as claimed), standard error {se:.2g} over "
            f"n={n}; held if > {z:g} SE" + (f" and >= {min_effect:g}" if min_effect > 0 else "")
            + f", not held if < -{z:g} SE, else inconclusive")
    if se == 0.0:
        verdict = HELD if mean > 0 and mean >= min_effect else NOT_HELD if mean < 0 else INCONCLUSIVE
    elif mean > z * se and mean >= min_effect:
        verdict = HELD
    elif mean < -z * se:
        verdict = NOT_HELD
    else:
        verdict = INCONCLUSIVE
    return Verdict(verdict, rule, mean, se)


def paired(better: Sequence[float], other: Sequence[float], *, higher_is_better: bool = True, z: float = 2.0,
           min_effect: float = 0.0, what: str = "paired by seed") -> Verdict:
    """Claim: arm ``better`` beats arm ``other``; ``better[i]`` and ``other[i]`` share seed i."""
    if len(better) != len(other) or not better:
        raise ValueError(f"paired comparison needs equal, non-empty lists (got {len(better)} and {len(other)})")
    sign = 1.0 if higher_is_better else -1.0
    return _decide([sign * (float(a) - float(b)) for a, b in zip(better, other)], z, min_effect, what)


def paired_examples(better: Sequence[float], other: Sequence[float], *, higher_is_better: bool = True,
                    z: float = 2.0, what: str = "paired by example") -> Verdict:
    """The same rule over per-example scores of one run per arm (e.g. 0/1 correctness on a dev set)."""
    return paired(better, other, higher_is_better=higher_is_better, z=z, what=what)


def deterministic(better: float, other: float, *, higher_is_better: bool = True, margin: float = 0.01,
                  what: str = "deterministic figures") -> Verdict:
    """Figures without seed variance: held if ``better`` wins by more than ``margin`` (relative), not held if it
    loses by more than ``margin``, inconclusive within the margin."""
    b, o = float(better), float(other)
    effect = (b - o) if higher_is_better else (o - b)
    scale = max(abs(o), 1e-12)
    rel = effect / scale
    rule = (f"{what}: relative difference {rel:+.2%} (positive = as claimed); held beyond +{margin:.0%}, "
            f"not held below -{margin:.0%}, else inconclusive")
    verdict = HELD if rel > margin else NOT_HELD if rel < -margin else INCONCLUSIVE
    return Verdict(verdict, rule, effect, None)


def ordered(values: Sequence[float], *, decreasing: bool = True, margin: float = 0.0,
            labels: Sequence[str] | None = None) -> Verdict:
    """Claim: ``values`` fall (or rise) along the sequence; every consecutive link must hold."""
    labels = list(labels or [str(i) for i in range(len(values))])
    broken = []
    for i in range(len(values) - 1):
        a, b = float(values[i]), float(values[i + 1])
        ok = (b < a * (1 - margin)) if decreasing else (b > a * (1 + margin))
        if not ok:
            broken.append(f"{labels[i]} -> {labels[i + 1]} ({a:.4g} -> {b:.4g})")
    way = "falls" if decreasing else "rises"
    rule = f"ordering: the figure {way} at every step" + (f" by more than {margin:.0%}" if margin else "")
    if broken:
        return Verdict(NOT_HELD, rule + "; broken at " + ", ".join(broken))
    return Verdict(HELD, rule)


def combine(parts: dict[str, Verdict]) -> Verdict:
    """One verdict for a claim of several parts: all held -> held; any not held -> not held; else inconclusive."""
    verdicts = [v.verdict for v in parts.values()]
    if verdicts and all(v == HELD for v in verdicts):
        overall = HELD
    elif any(v == NOT_HELD for v in verdicts):
        overall = NOT_HELD
    else:
        overall = INCONCLUSIVE
    rule = "all parts must hold (any part not held -> not held): " + "; ".join(
        f"[{name}: {v.verdict}] {v.rule}" for name, v in parts.items())
    return Verdict(overall, rule)
