"""T-REx relation classification data for ``plm finetune --task pair`` (a knowledge probe by fine-tuning).

Each example is one LAMA T-REx evidence sentence (its [MASK] filled with the object's surface form) as
``sentence1``, ``"SUBJECT ; OBJECT"`` (the two entity labels) as ``sentence2``, and the fact's relation
(P19, P20, ... 10 classes) as ``label``. Split **by subject entity**: subjects are ordered by their Wikidata id
and every 5th one goes to dev, so no subject appears in both files. At most ``--per-fact`` sentences per fact,
then at most ``--max-train`` / ``--max-dev`` examples, taken as an even spread over the file order.

    python scripts/trex_relations.py --lama ../shared/data/lama --out runs/trex-rc
    plm finetune --task pair --data runs/trex-rc --model runs/kepler/final --out runs/kepler-rc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def build(lama: Path, per_fact: int = 1) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    facts = []
    for f in sorted((lama / "TREx").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                facts.append(json.loads(line))
    subjects = sorted({d["sub_uri"] for d in facts}, key=lambda u: (len(u), u))
    dev_subjects = set(subjects[4::5])
    train, dev = [], []
    for d in facts:
        rows = []
        for ev in d.get("evidences") or []:
            s = ev.get("masked_sentence", "")
            if "[MASK]" in s:
                text = " ".join(s.replace("[MASK]", ev.get("obj_surface") or d["obj_label"]).split())
                row = (text, f"{d['sub_label']} ; {d['obj_label']}", d["predicate_id"])
                if row not in rows:
                    rows.append(row)
            if len(rows) >= per_fact:
                break
        (dev if d["sub_uri"] in dev_subjects else train).extend(rows)
    return train, dev


def spread(rows: list, n: int | None) -> list:
    if n is None or len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def write(path: Path, rows: list) -> None:
    """GLUE-style TSV: a header, tab-separated fields, no quoting (tabs and newlines in a field become spaces)."""
    clean = lambda c: " ".join(c.split())  # noqa: E731
    lines = ["sentence1\tsentence2\tlabel"] + ["\t".join(clean(c) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lama", required=True, help="LAMA folder (with TREx/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-fact", type=int, default=1)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-dev", type=int, default=None)
    a = ap.parse_args()
    train, dev = build(Path(a.lama), a.per_fact)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, dev = spread(train, a.max_train), spread(dev, a.max_dev)
    write(out / "train.tsv", train)
    write(out / "dev.tsv", dev)
    print(json.dumps({"train": len(train), "dev": len(dev),
                      "labels": sorted({r[2] for r in train}), "out": str(out)}))


if __name__ == "__main__":
    main()
