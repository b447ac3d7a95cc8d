"""``capture()``: the software and machine a result came from, as a flat JSON-able dict.

Versions are read from the installed distributions (``importlib.metadata``), so capturing does not import
torch; the torch thread count is included only when torch is already imported by the caller.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision(path: str | os.PathLike | None = None) -> str:
    """``<commit>`` (``+ uncommitted changes`` when the work tree differs) of the git checkout holding
    ``path`` (default: this source tree), or ``unknown`` outside one / without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def capture() -> dict:
    """python / torch / plmkit versions, threads, git revision, host, platform and time (UTC)."""
    from plmkit import __version__

    env = {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "plmkit": __version__,
        "git_revision": git_revision(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
    env["time_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    return env
