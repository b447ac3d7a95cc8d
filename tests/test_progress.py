"""plmkit.progress: plain progress lines outside a terminal, the interval setting, where a run stands."""

from __future__ import annotations

import time

import pytest

from plmkit import progress as P
from plmkit.errors import UserError


def test_heartbeat_lines_position_rate_eta(capsys, monkeypatch):
    monkeypatch.setattr(P, "_isatty", lambda: False)
    P.reset()
    P.set_program("plm pretrain")
    beat = P.Heartbeat("pretraining", 100, "step", start=20, every=1e-9)
    beat.t0 -= 10.0  # 10 s ago: 20 steps since then -> 2 step/s, 70 left -> 35 s
    beat.update(40, loss="2.5000")
    line = capsys.readouterr().err.strip()
    assert line.startswith("plm pretrain: pretraining: step 40/100 (40%), loss 2.5000, 2 step/s, elapsed 10s")
    assert line.endswith("ETA 30s")
    assert P.where() == "at step 40/100 (40%) of pretraining"


def test_heartbeat_is_silent_on_a_terminal_with_a_bar_or_when_off(capsys, monkeypatch):
    monkeypatch.setattr(P, "_isatty", lambda: True)
    P.Heartbeat("x", 10, every=1e-9).update(5)
    monkeypatch.setattr(P, "_isatty", lambda: False)
    P.Heartbeat("x", 10, every=1e-9, bar_shown=True).update(5)
    monkeypatch.setenv(P.ENV, "0")
    P.Heartbeat("x", 10).update(5)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("raw, ok", [("", P.DEFAULT_EVERY), ("2.5", 2.5), ("0", 0.0)])
def test_interval_setting(monkeypatch, raw, ok):
    monkeypatch.setenv(P.ENV, raw)
    assert P.interval() == ok


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf"])
def test_bad_interval_is_one_line(monkeypatch, raw):
    monkeypatch.setenv(P.ENV, raw)
    with pytest.raises(UserError, match=f"PLMKIT_PROGRESS_EVERY={raw!r}: expected a number of seconds >= 0"):
        P.interval()


def test_ticker_prints_while_the_block_runs(capsys):
    P.reset()
    with P.Ticker("training a tokenizer", enabled=True, every=0.05):
        assert P.where() == "while training a tokenizer"
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) >= 2 and all(e.startswith("plmkit: training a tokenizer: running, elapsed ") for e in err)
    time.sleep(0.15)
    assert capsys.readouterr().err == ""  # stopped with the block
