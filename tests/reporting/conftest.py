"""Fixtures of the report tests (the fake files: ``fakes.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reporting.fakes import INJECT, fake_claim


@pytest.fixture
def reproduce_out(tmp_path) -> Path:
    """``out/`` of a fake ``plm reproduce``: two claims (held, not held; one with an HTML-injection claim text)."""
    out = tmp_path / "claims"
    fake_claim(out, "ngram-order", "held")
    fake_claim(out, "pretrain-vs-scratch", "not held", claim_text="Pretraining beats scratch " + INJECT, runs=1)
    return out
