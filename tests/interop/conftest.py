"""Interop tests: make the shared ``interop_cases`` helper importable from this folder.

Every test module here starts with ``pytest.importorskip("transformers")`` so that, without the
optional ``interop`` extra, the folder is skipped with that reason instead of failing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
