"""Plain progress lines for long work when stderr is not a terminal, and where that work stands.

Progress bars (tqdm) only make sense on a terminal. Under ``nohup``, in CI logs and notebooks a long loop
would otherwise be silent for minutes, so every long loop (the trainer, ``prepare``, word2vec) reports
through a :class:`Heartbeat`: with stderr not a TTY and no bar shown, it prints one line every
``PLMKIT_PROGRESS_EVERY`` seconds (default 20; ``0`` = never)::

    plm pretrain: step 120/1000 (12%), loss 4.2101, 3.1 step/s, 850 tok/s, elapsed 40s, ETA 4m44s

The newest position of any heartbeat (and a stage set with :func:`stage`) is kept here, so the CLI can say
in one line where a run stood when a signal stopped it (:func:`where`), followed by the command's
:func:`set_hint` (how to resume or restart).
"""

from __future__ import annotations

import math
import os
import sys
import time

ENV = "PLMKIT_PROGRESS_EVERY"
DEFAULT_EVERY = 20.0

_state: dict[str, str | None] = {"program": None, "where": None, "hint": None}


def set_program(name: str | None) -> None:
    """The prefix of progress lines (the CLI sets ``plm <command>``)."""
    _state["program"] = name


def stage(text: str | None) -> None:
    """Describe what runs now, e.g. ``"while training the tokenizer"`` (shown by :func:`where`)."""
    _state["where"] = text


def set_hint(text: str | None) -> None:
    """How to continue after a stop, e.g. ``"continue with --resume"`` (shown after :func:`where`)."""
    _state["hint"] = text


def where() -> str | None:
    return _state["where"]


def hint() -> str | None:
    return _state["hint"]


def reset() -> None:
    _state.update(program=None, where=None, hint=None)


def interval() -> float:
    """Seconds between progress lines (``PLMKIT_PROGRESS_EVERY``; 0 = off)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_EVERY
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not (math.isfinite(v) and v >= 0):
        from plmkit.errors import UserError

        raise UserError(f"{ENV}={raw!r}: expected a number of seconds >= 0 (0 = no progress lines)")
    return v


def fmt_seconds(s: float) -> str:
    s = int(round(max(s, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Heartbeat:
    """Position of one long loop: ``update(done, **fields)``; prints a plain line every ``every`` seconds.

    ``enabled=None``: print only when stderr is not a terminal (``bar_shown=True`` also silences it: a
    tqdm bar already reports). ``what`` names the loop in :func:`where` ("pretraining", "prepare").
    """

    def __init__(self, what: str, total: int | float | None = None, unit: str = "step", *, start: float = 0,
                 enabled: bool | None = None, bar_shown: bool = False, every: float | None = None,
                 scale: float = 1.0, unit_label: str | None = None):
        self.what, self.total, self.unit, self.scale = what, total, unit, scale
        self.unit_label = unit_label
        self.every = interval() if every is None else every
        if enabled is None:
            enabled = not bar_shown and not _isatty()
        self.enabled = bool(enabled) and self.every > 0
        self.t0 = self.last = time.monotonic()
        self.start = self.done = start
        self.fields: dict[str, str] = {}

    def _position(self) -> str:
        u = self.unit
        if self.scale != 1.0:
            d = self.done / self.scale
            if self.total:
                t = self.total / self.scale
                return f"{d:.1f}/{t:.1f} {self.unit_label} ({100 * self.done / self.total:.0f}%)"
            return f"{d:.1f} {self.unit_label}"
        if self.total:
            return f"{u} {int(self.done)}/{int(self.total)} ({100 * self.done / self.total:.0f}%)"
        return f"{u} {int(self.done)}"

    def update(self, done: int | float, **fields) -> None:
        self.done = done
        for k, v in fields.items():
            self.fields[k] = v
        _state["where"] = f"at {self._position()} of {self.what}"
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.emit(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        parts = [self._position()]
        parts += [f"{k} {v}" for k, v in self.fields.items() if v is not None]
        if rate > 0:
            label = self.unit_label or self.unit
            r = rate / self.scale
            parts.append(f"{r:.3g} {label}/s")
        parts.append(f"elapsed {fmt_seconds(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"ETA {fmt_seconds((self.total - self.done) / rate)}")
        prefix = _state["program"] or "plmkit"
        return f"{prefix}: {self.what}: " + ", ".join(parts)

    def emit(self, now: float | None = None) -> None:
        print(self.line(now), file=sys.stderr, flush=True)


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Ticker:
    """For work that reports no position (a library call such as tokenizer training): with stderr not a
    terminal, a line ``PREFIX: WHAT: running, elapsed 1m20s`` every ``PLMKIT_PROGRESS_EVERY`` seconds from a
    background thread, until the ``with`` block ends. Also sets :func:`stage` to ``while WHAT``."""

    def __init__(self, what: str, *, enabled: bool | None = None, every: float | None = None):
        import threading

        self.what = what
        self.every = interval() if every is None else every
        self.enabled = (not _isatty() if enabled is None else bool(enabled)) and self.every > 0
        self._stop = threading.Event()
        self._thread = None

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every):
            prefix = _state["program"] or "plmkit"
            print(f"{prefix}: {self.what}: running, elapsed {fmt_seconds(time.monotonic() - t0)}",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "Ticker":
        import threading

        stage(f"while {self.what}")
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="plmkit-ticker", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
