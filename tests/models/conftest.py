"""Fixtures shared by the model tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def objective_data():
    """The objectives' data helpers (``tests/objectives/objective_fixtures.py``: ``trained_tokenizer``,
    ``wikitext_lines``), for the backbone tests that train with an objective. Loaded from its file
    (the module already imported by the objective tests when they ran first)."""
    if "objective_fixtures" in sys.modules:
        return sys.modules["objective_fixtures"]
    path = Path(__file__).resolve().parents[1] / "objectives" / "objective_fixtures.py"
    spec = importlib.util.spec_from_file_location("objective_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
