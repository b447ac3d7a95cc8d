"""Claim files: every shipped claim loads and names a real runner; a bad file is refused in one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from plmkit.errors import UserError
from plmkit.reproduce import registry

REPO = Path(__file__).resolve().parents[2]
CLAIMS = REPO / "recipes" / "claims"

GOOD = """id: {id}
claim: Something holds.
reference: {{source: a paper, figures: {{x: 1}}}}
runner: classic:ngram_order
requires: {{data: [wikitext-2/valid.txt]}}
budgets:
  small: {{train: a.txt, test: b.txt}}
"""


def _write(tmp_path: Path, text: str, name: str = "c") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_every_shipped_claim_loads_and_resolves():
    claims = registry.load_claims(CLAIMS)
    assert "ngram-order" in claims
    for c in claims.values():
        assert callable(c.function())
        assert c.params("small")
        assert c.reference, c.id


def test_default_claims_dir_is_the_checkout():
    assert registry.default_claims_dir() == CLAIMS


def test_missing_package_is_named(tmp_path):
    c = registry.load_claim(_write(tmp_path, GOOD.format(id="c").replace(
        "requires: {data: [wikitext-2/valid.txt]}", "requires: {packages: [json, no_such_package_xyz]}")))
    assert c.missing(tmp_path) == ["Python package no_such_package_xyz (pip install no-such-package-xyz)"]


def test_good_claim(tmp_path):
    c = registry.load_claim(_write(tmp_path, GOOD.format(id="c")))
    assert c.id == "c" and c.requires == {"data": ["wikitext-2/valid.txt"]}
    assert c.missing(tmp_path) == [f"data file {tmp_path / 'wikitext-2/valid.txt'} (set --data or $PLMKIT_DATA)"]
    with pytest.raises(UserError, match="no budget 'full'"):
        c.params("full")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("id: c", "id: other"), "key id is 'other', expected the file name 'c'"),
    (lambda t: t + "extra: 1\n", "unknown key 'extra'"),
    (lambda t: t.replace("claim: Something holds.\n", ""), "missing key 'claim'"),
    (lambda t: t.replace("  small:", "  tiny:"), "key budgets: expected a mapping with at least 'small'"),
    (lambda t: t.replace("requires: {data:", "requires: {models:"), "key requires"),
    (lambda t: t.replace("claim: Something holds.", "claim: a: b"), "c.yaml:2: invalid YAML"),
])
def test_bad_claim_files(tmp_path, edit, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        registry.load_claim(_write(tmp_path, edit(GOOD.format(id="c"))))
    assert str(tmp_path / "c.yaml") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec, message", [
    ("os:system", "no experiment module 'os'"),
    ("classic:read_sentences", "has no claim runner 'read_sentences'"),
    ("classic:stats", "has no claim runner 'stats'"),
    ("plmkit.cli:main", "expected MODULE:FUNCTION"),
    ("classic", "expected MODULE:FUNCTION"),
])
def test_runner_must_be_a_marked_experiment(spec, message):
    with pytest.raises(UserError, match=message):
        registry.resolve_runner(spec)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(UserError, match="no claim files"):
        registry.load_claims(tmp_path)
    with pytest.raises(UserError, match="no claims folder"):
        registry.load_claims(tmp_path / "nope")
