"""Attribution queries: a JSONL file, one fact per line.

Each line is an object with ``id`` (string or integer), ``prompt`` and ``target`` (non-empty strings)
and optionally ``proponents`` (a list of training example ids, 0-based: the gold proponents). For
scoring, a query is the text ``prompt + " " + target``; TracIn takes the loss on the target tokens only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from plmkit.errors import UserError


@dataclass
class Query:
    """One fact to attribute. ``proponents``: gold training example ids (None when unknown)."""

    id: str
    prompt: str
    target: str
    proponents: list[int] | None = None

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.target}"


def load_queries(path: str | os.PathLike) -> list[Query]:
    """Read a queries JSONL file; a malformed line -> UserError ``FILE:LINE: ...`` naming the key."""
    from plmkit.textio import iter_lines

    if not os.path.isfile(path):
        raise UserError(f"--queries {path}: no such file")
    out: list[Query] = []
    seen: set[str] = set()
    for n, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object with id, prompt, target")
        for key in ("id", "prompt", "target"):
            if key not in obj:
                raise UserError(f"{where}: missing key {key!r} (a query needs id, prompt, target and "
                                f"optionally proponents)")
        qid = obj["id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid) == "":
            raise UserError(f"{where}: key 'id': expected a non-empty string or an integer, got {qid!r}")
        for key in ("prompt", "target"):
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise UserError(f"{where}: key {key!r}: expected a non-empty string, got {obj[key]!r}")
        props = obj.get("proponents")
        if props is not None:
            if not isinstance(props, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                                      for p in props):
                raise UserError(f"{where}: key 'proponents': expected a list of example ids (integers >= 0)")
        if str(qid) in seen:
            raise UserError(f"{where}: key 'id': {qid!r} repeats an earlier query's id")
        seen.add(str(qid))
        out.append(Query(str(qid), obj["prompt"], obj["target"], list(props) if props is not None else None))
    if not out:
        raise UserError(f"--queries {path}: no queries")
    return out


def check_proponents(queries: list[Query], num_examples: int, path: str = "queries") -> None:
    """UserError when a gold proponent id is not an example id of the corpus."""
    for q in queries:
        for p in q.proponents or []:
            if p >= num_examples:
                raise UserError(f"{path}: query {q.id!r}: proponent {p} is not an example id "
                                f"(the corpus has {num_examples} examples, ids 0..{num_examples - 1})")
