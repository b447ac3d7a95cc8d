"""LAMA data (Petroni et al. 2019): relations, templates and facts of T-REx, Google-RE and SQuAD.

Layout read (``facebookresearch/LAMA``'s release, as staged in ``shared/data/lama``)::

    DIR/relations.jsonl          {"relation": "P19", "template": "[X] was born in [Y] .", ...} per line
    DIR/TREx/<relation>.jsonl    {"sub_label", "obj_label", "uuid", ...} per fact
    DIR/Google_RE/<name>_test.jsonl   {"sub_label", "obj_label", "uuid", ...}; templates below (LAMA's)
    DIR/Squad/test.jsonl         {"masked_sentences": ["... [MASK] ..."], "obj_label", "id"}: one
                                 hand-written cloze sentence per fact, no subject slot

``Fact.template`` always holds the sentence with ``[Y]`` for the object (and ``[X]`` for the subject
where there is one). LAMA-UHN (Poerner et al. 2020) filters are in ``plmkit.knowledge.lama``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.errors import UserError, suggest

SOURCES = ("trex", "google-re", "squad")
SOURCE_DIRS = {"trex": "TREx", "google-re": "Google_RE", "squad": "Squad"}

# LAMA's own templates for Google-RE (run_experiments.py in facebookresearch/LAMA)
GOOGLE_RE_TEMPLATES = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}


@dataclass
class Fact:
    """One (subject, relation, object) triple with the cloze sentence that asks for the object."""

    source: str
    relation: str
    subject: str
    obj: str
    template: str
    uuid: str


@dataclass
class Relation:
    """The facts of one relation; ``objects`` are the distinct objects of the whole relation file."""

    source: str
    relation: str
    template: str | None
    facts: list[Fact] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    n_file: int = 0


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line; UserError naming the line on bad JSON."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{n}: expected a JSON object")
            rows.append((n, obj))
    return rows


def check_template(template: object, where: str, need_subject: bool = True) -> str:
    """The template if it has exactly one [Y] (and one [X] when ``need_subject``); else UserError."""
    if not isinstance(template, str):
        raise UserError(f"{where}: template must be a string, got {template!r}")
    if template.count("[Y]") != 1 or (need_subject and template.count("[X]") != 1):
        want = "one [X] and one [Y]" if need_subject else "one [Y]"
        raise UserError(f"{where}: template {template!r} must contain exactly {want}")
    return template


def _field(row: dict, key: str, where: str) -> str:
    v = row.get(key)
    if not isinstance(v, str) or not v.strip():
        raise UserError(f"{where}: missing or empty {key!r}")
    return v


def read_templates(data_dir: Path) -> dict[str, tuple[str, str]]:
    """relation id -> (template, where) from ``relations.jsonl`` (the first line of a repeated id wins)."""
    path = data_dir / "relations.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found (expected LAMA's relations.jsonl in the --data folder)")
    out: dict[str, tuple[str, str]] = {}
    for n, row in read_jsonl(path):
        rel = _field(row, "relation", f"{path}:{n}")
        out.setdefault(rel, (row.get("template"), f"{path}:{n}"))
    return out


def available_relations(data_dir: Path, source: str) -> list[str]:
    folder = data_dir / SOURCE_DIRS[source]
    if not folder.is_dir():
        return []
    if source == "squad":
        return ["squad"] if (folder / "test.jsonl").is_file() else []
    names = sorted(p.name[: -len(".jsonl")] for p in folder.glob("*.jsonl"))
    if source == "google-re":
        return [n[: -len("_test")] for n in names if n.endswith("_test")]
    return sorted(names, key=lambda r: (len(r), r))


def load_lama(data_dir: str | Path, sources: list[str] | None = None, relations: list[str] | None = None,
              max_facts: int | None = None) -> list[Relation]:
    """Read the selected sources and relations.

    Args:
        data_dir: the LAMA folder (``relations.jsonl``, ``TREx/``, ``Google_RE/``, ``Squad/``).
        sources: subset of ``SOURCES`` (default: all).
        relations: relation ids to keep (T-REx "P19", Google-RE "place_of_birth", "squad"); an id
            found in no selected source raises UserError.
        max_facts: keep the first N facts of each relation (file order); candidate objects are still
            taken from the whole file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: LAMA data folder not found")
    sources = list(sources or SOURCES)
    for s in sources:
        if s not in SOURCES:
            raise UserError(f"unknown LAMA source {s!r}{suggest(s, SOURCES)}: expected one of {', '.join(SOURCES)}")
    avail = {s: available_relations(data_dir, s) for s in sources}
    if relations:
        known = [r for s in sources for r in avail[s]]
        for r in relations:
            if r not in known:
                raise UserError(f"unknown relation {r!r}{suggest(r, known)} in sources {', '.join(sources)} "
                                f"of {data_dir} (available: {', '.join(known)})")
    templates = read_templates(data_dir) if "trex" in sources and avail["trex"] else {}
    out = []
    for s in sources:
        if not avail[s]:
            raise UserError(f"{data_dir / SOURCE_DIRS[s]}: no LAMA {s} files found")
        for rel in avail[s]:
            if relations and rel not in relations:
                continue
            out.append(_read_relation(data_dir, s, rel, templates, max_facts))
    return out


def _read_relation(data_dir: Path, source: str, rel: str, templates: dict, max_facts: int | None) -> Relation:
    if source == "trex":
        path = data_dir / "TREx" / f"{rel}.jsonl"
        if rel not in templates:
            raise UserError(f"{data_dir / 'relations.jsonl'}: no template for relation {rel!r} (needed by {path})")
        template = check_template(*templates[rel])
    elif source == "google-re":
        path = data_dir / "Google_RE" / f"{rel}_test.jsonl"
        if rel not in GOOGLE_RE_TEMPLATES:
            raise UserError(f"{path}: no LAMA template for Google-RE relation {rel!r} "
                            f"(known: {', '.join(GOOGLE_RE_TEMPLATES)})")
        template = GOOGLE_RE_TEMPLATES[rel]
    else:
        path, template = data_dir / "Squad" / "test.jsonl", None
    r = Relation(source, rel, template)
    seen: set[str] = set()
    for n, row in read_jsonl(path):
        where = f"{path}:{n}"
        obj = _field(row, "obj_label", where).strip()
        if obj not in seen:
            seen.add(obj)
            r.objects.append(obj)
        r.n_file += 1
        if max_facts is not None and len(r.facts) >= max_facts:
            continue
        if source == "squad":
            sents = row.get("masked_sentences")
            if not isinstance(sents, list) or not sents or not isinstance(sents[0], str):
                raise UserError(f"{where}: expected 'masked_sentences' with one sentence")
            tmpl = check_template(sents[0].replace("[MASK]", "[Y]"), where, need_subject=False)
            subject, uid = str(row.get("sub_label", "")), str(row.get("id", n))
        else:
            tmpl, subject, uid = template, _field(row, "sub_label", where).strip(), str(row.get("uuid", n))
        r.facts.append(Fact(source, rel, subject, obj, tmpl, uid))
    return r


# ------------------------------------------------------------------ token ids of prompts
def front_specials(tok: Any) -> list[int]:
    """The special tokens the tokenizer puts before a text (e.g. BOS); trailing ones (EOS, [SEP])
    are not used for causal LMs, whose prompt must end with its last word."""
    plain = list(tok.encode("a", add_special_tokens=False))
    full = list(tok.encode("a", add_special_tokens=True))
    for i in range(len(full) - len(plain) + 1):
        if full[i: i + len(plain)] == plain:
            return full[:i]
    return []


def causal_ids(tok: Any, text: str) -> list[int]:
    """Token ids of ``text`` for a causal LM: leading special tokens + the text's tokens."""
    return front_specials(tok) + list(tok.encode(text, add_special_tokens=False))
