"""What a report is made of: claim directories and run directories, found and read with one-line errors.

- A **claim directory** holds ``claim.json`` (written by ``plm reproduce``): the claim, the reference figures,
  ours (mean / sd / n per figure), the verdict and its rule, optional per-arm ``table`` and ``runs`` (directories
  relative to the claim directory).
- A **run directory** holds ``metrics.jsonl`` (``plm pretrain``; one JSON object per logged step) and usually
  ``eval.jsonl`` and the resolved ``recipe.yaml``; a ``plm finetune`` output holds ``logs/metrics.jsonl`` with
  ``eval.json`` and ``task.json`` beside it.
- Any other directory is searched recursively for both; a run directory is not searched further (its
  checkpoints hold no runs of their own), a claim directory is (its training runs usually live inside it).

:func:`discover` returns every claim and run found (each once), or raises :class:`UserError` naming the path
and what was expected. Nothing is skipped silently: :func:`describe` lists what was found, and a torn last
line of a ``metrics.jsonl`` (a run killed mid-write) is reported as a note on that run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.textio import read_json, read_text

CLAIM_FILE = "claim.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
RECIPE_FILES = ("recipe.yaml", "config.yaml", "task.json")  # plm pretrain, plm quickstart, plm finetune
SUMMARY_FILES = ("final/train_summary.json", "eval.json", "summary.json")
VERDICTS = ("held", "not held", "inconclusive")
# Directories never searched for runs or claims (virtual environments, VCS data, caches).
_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".pytest_cache", "tensorboard"}


@dataclass
class Run:
    """A training run: its logged steps (``metrics``), evaluations (``evals``) and what describes it."""

    path: Path
    metrics_file: Path
    metrics: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    recipe: tuple[str, str] | None = None  # (file name, text)
    summary: tuple[str, dict] | None = None  # (file name, flat dict of figures)
    notes: list[str] = field(default_factory=list)
    label: str = ""
    anchor: str = ""
    claims: list[str] = field(default_factory=list)  # anchors of the claims that list this run


@dataclass
class Claim:
    """One reproduced claim (``claim.json``) and the runs it lists."""

    path: Path
    data: dict
    runs: list[Path] = field(default_factory=list)
    label: str = ""
    anchor: str = ""
    run_anchors: list[str] = field(default_factory=list)


@dataclass
class Found:
    claims: list[Claim] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)  # folders given or directly inside one, holding neither


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (strict JSON for the page)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_jsonl(path: Path, what: str) -> tuple[list[dict], list[str]]:
    """The records of a JSONL log: each line a JSON object with a numeric ``step``. A malformed line is a
    ``UserError`` naming ``file:line``, except a torn last line (no newline at the end: a run killed while
    writing), which is left out and reported in the returned notes."""
    text = read_text(path)  # not UTF-8: one line naming file:line and the byte
    lines = text.split("\n")
    torn_possible = not text.endswith("\n")
    records, notes = [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            if torn_possible and i == len(lines):
                notes.append(f"{path}:{i}: torn last line left out (the run was stopped while writing it)")
                continue
            raise UserError(f"{path}:{i}: not valid JSON ({e.msg}); expected one JSON object per line "
                            f"of {what}") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path}:{i}: expected a JSON object per line of {what}, got {type(rec).__name__}")
        if not _number(rec.get("step")):
            raise UserError(f"{path}:{i}: expected a numeric \"step\" in every line of {what}, "
                            f"got {json.dumps(rec.get('step'))}")
        records.append(finite(rec))
    return records, notes


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_run(path: Path) -> Run:
    """A run directory (``metrics.jsonl`` in it, or ``logs/metrics.jsonl`` for a ``plm finetune`` output)."""
    metrics_file = path / METRICS_FILE
    if not metrics_file.is_file():
        metrics_file = path / "logs" / METRICS_FILE
    if not metrics_file.is_file():
        raise UserError(f"{path}: no {METRICS_FILE} in it (expected a run directory from plm pretrain / "
                        f"plm finetune)")
    run = Run(path=path, metrics_file=metrics_file)
    run.metrics, run.notes = read_jsonl(metrics_file, "a training log")
    eval_file = metrics_file.parent / EVAL_FILE
    if eval_file.is_file():
        run.evals, notes = read_jsonl(eval_file, "an evaluation log")
        run.notes += notes
    for name in RECIPE_FILES:
        p = path / name
        if p.is_file():
            try:
                run.recipe = (name, p.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise UserError(f"{p}: not UTF-8 text (expected the run's recipe)") from None
            break
    for name in SUMMARY_FILES:
        p = path / name
        if p.is_file():
            data = read_json(p, "run summary")
            if not isinstance(data, dict):
                raise UserError(f"{p}: expected a JSON object, got {type(data).__name__}")
            run.summary = (name, finite(_flat(data)))
            break
    if not run.metrics:
        run.notes.append(f"{metrics_file}: no logged steps yet")
    return run


def _check_claim(path: Path, data: Any) -> None:
    """The fields of ``claim.json`` a report needs, each checked with a one-line error naming the key."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in ("id", "claim", "verdict"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise UserError(f"{path}: key {key!r}: expected a non-empty string, got {json.dumps(data.get(key))}")
    if data["verdict"] not in VERDICTS:
        raise UserError(f"{path}: key 'verdict': expected one of {', '.join(VERDICTS)}, got {data['verdict']!r}")
    ref = data.get("reference")
    if ref is not None and not isinstance(ref, (str, dict)):
        raise UserError(f"{path}: key 'reference': expected a string or an object, got {type(ref).__name__}")
    if isinstance(ref, dict) and not isinstance(ref.get("figures", {}), dict):
        raise UserError(f"{path}: key 'reference.figures': expected an object of figure name -> value")
    ours = data.get("ours", {})
    if not isinstance(ours, dict):
        raise UserError(f"{path}: key 'ours': expected an object of figure name -> {{mean, sd, n}}")
    for name, fig in ours.items():
        if _number(fig) or fig is None:
            continue
        if not isinstance(fig, dict):
            raise UserError(f"{path}: key 'ours.{name}': expected a number or an object with mean, sd, n")
        for k in ("mean", "sd", "n"):
            if k in fig and fig[k] is not None and not _number(fig[k]):
                raise UserError(f"{path}: key 'ours.{name}.{k}': expected a number, got {json.dumps(fig[k])}")
        values = fig.get("values", [])
        if not (isinstance(values, list) and all(v is None or _number(v) for v in values)):
            raise UserError(f"{path}: key 'ours.{name}.values': expected a list of numbers (one per seed)")
    table = data.get("table")
    if table is not None:
        if not (isinstance(table, dict) and isinstance(table.get("columns"), list)
                and isinstance(table.get("rows"), list) and all(isinstance(r, list) for r in table["rows"])):
            raise UserError(f"{path}: key 'table': expected {{\"columns\": [...], \"rows\": [[...], ...]}}")
    runs = data.get("runs", [])
    if not (isinstance(runs, list) and all(isinstance(r, str) for r in runs)):
        raise UserError(f"{path}: key 'runs': expected a list of run directories relative to the claim")
    for key in ("environment",):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise UserError(f"{path}: key {key!r}: expected an object")


def read_claim(path: Path) -> Claim:
    """A claim directory (``claim.json`` in it); its listed runs must exist."""
    file = path / CLAIM_FILE
    data = read_json(file, "claim file")
    _check_claim(file, data)
    claim = Claim(path=path, data=finite(data))
    for i, rel in enumerate(data.get("runs", [])):
        p = (path / rel)
        if not ((p / METRICS_FILE).is_file() or (p / "logs" / METRICS_FILE).is_file()):
            raise UserError(f"{file}: key 'runs[{i}]': {p} holds no {METRICS_FILE} (expected a run directory "
                            f"relative to the claim directory)")
        claim.runs.append(p)
    return claim


def _kind(path: Path) -> str | None:
    if (path / CLAIM_FILE).is_file():
        return "claim"
    if (path / METRICS_FILE).is_file() or ((path / "logs" / METRICS_FILE).is_file()
                                          and any((path / n).is_file() for n in ("eval.json", "task.json"))):
        return "run"
    return None


def _walk(root: Path, claims: list[Path], runs: list[Path]) -> None:
    kind = _kind(root)
    if kind == "run":
        runs.append(root)
        return
    if kind == "claim":
        claims.append(root)
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
    except PermissionError:
        raise UserError(f"{root}: permission denied while searching it for {CLAIM_FILE} / {METRICS_FILE}") from None
    for child in children:
        _walk(child, claims, runs)


def _key(p: Path) -> str:
    return os.path.realpath(p)


def discover(paths: list[str | os.PathLike]) -> Found:
    """Claims and runs under ``paths`` (each a claim directory, a run directory, a folder of them, or a
    ``claim.json`` / ``metrics.jsonl`` file), each once, in the order given (then by path)."""
    if not paths:
        raise UserError("no directories given (expected claim or run directories, or folders of them)")
    claim_dirs: list[Path] = []
    run_dirs: list[Path] = []
    empty: list[Path] = []
    roots: dict[str, Path] = {}  # item -> the argument it was found under (the first one)
    for arg in paths:
        p = Path(arg)
        if not p.exists():
            raise UserError(f"{p}: no such file or directory (expected a claim or run directory)")
        if p.is_file():
            if p.name not in (CLAIM_FILE, METRICS_FILE):
                raise UserError(f"{p}: is a file; expected a directory holding {CLAIM_FILE} or {METRICS_FILE} "
                                f"(or one of those files)")
            p = p.parent
            if p.name == "logs" and _kind(p.parent) == "run":  # plm finetune's OUT/logs/metrics.jsonl
                p = p.parent
        before, before_claims, before_runs = len(claim_dirs) + len(run_dirs), len(claim_dirs), len(run_dirs)
        if _kind(p) is None and p.name not in _SKIP_DIRS:  # a folder of runs / claims: say which parts held none
            for child in sorted(c for c in p.iterdir() if c.is_dir() and c.name not in _SKIP_DIRS):
                n = len(claim_dirs) + len(run_dirs)
                _walk(child, claim_dirs, run_dirs)
                if len(claim_dirs) + len(run_dirs) == n:
                    empty.append(child)
        else:
            _walk(p, claim_dirs, run_dirs)
        for d in claim_dirs[before_claims:] + run_dirs[before_runs:]:
            roots.setdefault(_key(d), p)
        if len(claim_dirs) + len(run_dirs) == before:
            raise UserError(f"{p}: no {CLAIM_FILE} or {METRICS_FILE} in it or below it (expected a claim directory "
                            f"from plm reproduce, a run directory from plm pretrain / plm finetune, or a folder "
                            f"of them)")
    found = Found(empty=empty)
    seen_claims: set[str] = set()
    for d in claim_dirs:
        if _key(d) not in seen_claims:
            seen_claims.add(_key(d))
            found.claims.append(read_claim(d))
    # The runs the claims list come first (in the claims' order), then the other runs found.
    seen_runs: dict[str, Run] = {}
    for d in [r for c in found.claims for r in c.runs] + run_dirs:
        if _key(d) not in seen_runs:
            seen_runs[_key(d)] = read_run(d)
            found.runs.append(seen_runs[_key(d)])
    _name(found, seen_runs, roots)
    return found


def _slug(text: str) -> str:
    s = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in s:
        s = s.replace("--", "-")
    return s or "x"


def _name(found: Found, runs_by_key: dict[str, Run], roots: dict[str, Path]) -> None:
    """Labels and unique anchors. A label is the item's path below the argument it was found under, with that
    argument's own name in front when there were several arguments (``seed1``, ``claims/ngram-order``)."""
    several = len(set(roots.values())) > 1

    def label(p: Path) -> str:
        root = roots.get(_key(p))
        if root is None:  # a run a claim lists from outside the folder given
            return os.path.relpath(_key(p))
        rel = os.path.relpath(_key(p), _key(root.parent) if several else _key(root))
        return Path(_key(root)).name if rel == "." else rel

    used: set[str] = set()

    def anchor(prefix: str, text: str) -> str:
        a, i = f"{prefix}-{_slug(text)}", 2
        while a in used:
            a, i = f"{prefix}-{_slug(text)}-{i}", i + 1
        used.add(a)
        return a

    for run in found.runs:
        run.label = label(run.path)
        run.anchor = anchor("run", run.label)
    for claim in found.claims:
        claim.label = label(claim.path)
        claim.anchor = anchor("claim", claim.data["id"])
        for p in claim.runs:
            run = runs_by_key[_key(p)]
            claim.run_anchors.append(run.anchor)
            run.claims.append(claim.anchor)


def describe(found: Found) -> list[str]:
    """One line per item found, for the command's output."""
    lines = [f"found {len(found.claims)} claim(s) and {len(found.runs)} run(s)"]
    for c in found.claims:
        lines.append(f"  claim {c.data['id']} ({c.data['verdict']}): {c.path}")
    for r in found.runs:
        ev = f", {len(r.evals)} evaluations" if r.evals else ""
        lines.append(f"  run {r.label}: {len(r.metrics)} logged steps{ev}: {r.path}")
    for r in found.runs:
        lines += [f"  note: {n}" for n in r.notes]
    if found.empty:
        lines.append(f"  no {CLAIM_FILE} or {METRICS_FILE} in or below: " + ", ".join(str(p) for p in found.empty))
    return lines
