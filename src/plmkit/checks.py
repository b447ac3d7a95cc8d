"""The one place where numeric options are checked: positive, finite, in range.

A :class:`Bound` says which numbers an option accepts. The same bound serves

- a config dataclass field, as metadata: ``batch_size: int = field(default=16, metadata=bound(POSITIVE))``;
  :func:`check_fields` (called from the dataclass's ``__post_init__``) checks every field, the recipe
  loaders (``plmkit.config``, ``plm finetune --recipe``) report a violation at the recipe's file:line, and
  ``plmkit.cli.fields`` turns the bound into the flag's argparse type;
- a hand-written argparse option: ``p.add_argument("--batch-size", type=arg(int, POSITIVE), ...)``.

Every float must be finite (``nan`` / ``inf`` are refused whatever the bound). The messages read
``expected a positive integer, got -1``; callers prefix the key or flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from plmkit.errors import UserError


@dataclass(frozen=True)
class Bound:
    """Numbers in ``[lo, hi]`` (``lo_open`` / ``hi_open`` exclude the ends; None = unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    what: str = ""
    """How the accepted range reads in a message, e.g. "a positive number" (derived when empty)."""

    def describe(self, integer: bool) -> str:
        if self.what:
            return self.what
        kind = "an integer" if integer else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{kind} in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            if self.lo == 0 and self.lo_open:
                return f"a positive {'integer' if integer else 'number'}"
            return f"{kind} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return f"a finite {'integer' if integer else 'number'}"

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is accepted, else ``"expected ..., got ..."``."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # types are checked elsewhere; None means "off" where a field allows it
        integer = isinstance(value, int)
        if not math.isfinite(value):
            return f"expected {self.describe(integer)}, got {value} (not a finite number)"
        ok = True
        if self.lo is not None:
            ok &= value > self.lo if self.lo_open else value >= self.lo
        if self.hi is not None:
            ok &= value < self.hi if self.hi_open else value <= self.hi
        return None if ok else f"expected {self.describe(integer)}, got {value}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


FINITE = Bound()
POSITIVE = Bound(lo=0, lo_open=True)
NON_NEGATIVE = Bound(lo=0)
FRACTION = Bound(lo=0, hi=1, hi_open=True)           # [0, 1)
OPEN_UNIT = Bound(lo=0, hi=1, lo_open=True, hi_open=True)  # (0, 1)
UNIT = Bound(lo=0, hi=1)                               # [0, 1]
PROBABILITY_MASS = Bound(lo=0, hi=1, lo_open=True)     # (0, 1]


def at_least(n: float) -> Bound:
    return Bound(lo=n)


def bound(b: Bound, **metadata) -> dict:
    """Field metadata holding the bound ``b`` (plus any other metadata)."""
    return {"bound": b, **metadata}


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``f``: its bound, or (always) a non-finite float."""
    b = f.metadata.get("bound", FINITE)
    if isinstance(value, (list, tuple)):
        for v in value:
            msg = b.problem(v)
            if msg:
                return msg
        return None
    return b.problem(value)


def check_fields(obj: Any, prefix: str = "") -> None:
    """UserError ``{prefix}{field}: expected ..., got ...`` for the first field of ``obj`` out of bounds."""
    for f in dataclasses.fields(obj):
        msg = field_problem(f, getattr(obj, f.name))
        if msg:
            raise UserError(f"{prefix}{f.name}: {msg}")


def non_finite(value: Any, path: tuple = ()) -> tuple[tuple, float] | None:
    """The key path and value of the first nan / inf anywhere in a nested dict / list (None if none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        for k, v in value.items():
            hit = non_finite(v, path + (k,))
            if hit:
                return hit
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            hit = non_finite(v, path + (i,))
            if hit:
                return hit
    return None


def arg(tp: Callable[[str], Any], b: Bound = FINITE) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``tp`` and enforces ``b`` (and finiteness)."""

    def parse(text: str):
        try:
            value = tp(text)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(tp, tp.__name__)
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        msg = b.problem(value)
        if msg:
            raise argparse.ArgumentTypeError(msg)
        return value

    parse.__name__ = getattr(tp, "__name__", "value")
    return parse
