"""Shared test fixtures: where the real datasets are, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The shared datasets: $PLMKIT_DATA, else ``shared/data`` beside the repository."""
    return Path(os.environ.get("PLMKIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared datasets not found at {d} (set PLMKIT_DATA)")
    return d


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared machine: one intra-op thread is faster than contending for its cores.
    Module scope, so that module-scoped fixtures (models trained once per file) run single-threaded too."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
