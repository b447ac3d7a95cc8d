"""Interop tests. The shared ``interop_cases`` helper sits next to the tests: pytest's default
(prepend) import mode puts this folder on ``sys.path``, so they import it by name.

Every test module here starts with ``pytest.importorskip("transformers")`` so that, without the
optional ``interop`` extra, the folder is skipped with that reason instead of failing.
"""

from __future__ import annotations

