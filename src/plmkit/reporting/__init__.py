"""One self-contained HTML report of reproduced claims and training runs (the body of ``plm report``).

    from plmkit.reporting import build_report
    found = build_report(["runs/claims", "runs/bert"], "report.html")

- ``sources.py``: finds claim directories (``claim.json`` from ``plm reproduce``) and run directories
  (``metrics.jsonl`` from ``plm pretrain`` / ``plm finetune``), recursively, and reads them with one-line errors;
- ``html.py``: renders the page (claims table, curves, per-claim and per-run sections, environment);
  the stylesheet and plotting script are ``plmkit/assets/report.css`` / ``report.js``, inlined;
- ``environment.py``: ``capture()``, the versions / threads / git revision / host a result came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from plmkit.errors import UserError
from plmkit.reporting.environment import capture
from plmkit.reporting.sources import Claim, Found, Run, describe, discover

__all__ = ["build_report", "capture", "check_output_path", "describe", "discover", "Claim", "Found", "Run"]


def check_output_path(out: str | os.PathLike) -> Path:
    """The report's path: it must end in ``.html`` / ``.htm`` and, if it exists, be a file (then replaced)."""
    p = Path(out)
    if p.suffix.lower() not in (".html", ".htm"):
        what = "is a directory" if p.is_dir() else ("is an existing file" if p.exists() else "does not end in .html")
        if p.exists():
            what += " not ending in .html"
        raise UserError(f"--out {p}: {what}; expected the path of the .html file to write")
    if p.exists() and not p.is_file():
        raise UserError(f"--out {p}: exists and is not a file; expected the path of the .html file to write")
    return p


def build_report(paths: list[str | os.PathLike], out: str | os.PathLike, title: str = "plmkit report") -> Found:
    """Find the claims and runs under ``paths`` and write the report to ``out`` (atomically)."""
    from plmkit.reporting.html import render

    target = check_output_path(out)
    found = discover(paths)
    page = render(found, capture(), title)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return found
