"""Build a misspelled copy of a classification TSV (issue 22: CANINE vs WordPiece BERT under misspellings).

English (``--lang en``): each whitespace word with at least 2 letters is misspelled with probability ``--rate``
(default 0.2) by one edit, chosen uniformly: swap two adjacent characters, or delete one character.
Chinese (``--lang zh``): each CJK character (U+4E00..U+9FFF) is replaced with probability ``--rate`` (default 0.1)
by a different CJK character drawn uniformly from the CJK characters of ``--vocab-from`` (the pretraining text).
Only the text column changes; the header, the other columns and the row order are kept. Seeded (``--seed``).

    python scripts/misspell.py --lang en --rate 0.2 ../shared/data/glue/SST-2/dev.tsv OUT/sst2/dev.tsv
    python scripts/misspell.py --lang zh --rate 0.1 \
        --vocab-from ../shared/data/chinese/raw-text/zhwiki --vocab-from ../shared/data/chinese/raw-text/sanguo-yanyi \
        ../shared/data/chinese/chnsenticorp/dev.tsv OUT/chnsenticorp/dev.tsv
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def misspell_word(word: str, rng: random.Random) -> str:
    """One edit of ``word``: an adjacent swap of two different characters, or a deletion."""
    if rng.random() < 0.5:
        pairs = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1:]


def misspell_en(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    words = text.split(" ")
    changed = 0
    for k, w in enumerate(words):
        if sum(c.isalpha() for c in w) >= 2 and rng.random() < rate:
            words[k] = misspell_word(w, rng)
            changed += 1
    return " ".join(words), changed


def misspell_zh(text: str, rate: float, rng: random.Random, vocab: list[str]) -> tuple[str, int]:
    out = []
    changed = 0
    for ch in text:
        if is_cjk(ch) and rng.random() < rate:
            new = ch
            while new == ch:
                new = rng.choice(vocab)
            out.append(new)
            changed += 1
        else:
            out.append(ch)
    return "".join(out), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--lang", choices=["en", "zh"], required=True)
    ap.add_argument("--rate", type=float, default=None, help="per word (en, 0.2) / per CJK character (zh, 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-column", default=None, help="default: sentence (en) / text_a (zh)")
    ap.add_argument("--vocab-from", type=Path, action="append", default=None,
                    help="zh (repeatable): a file or folder (read recursively) whose CJK characters are the substitutes")
    a = ap.parse_args(argv)
    rate = a.rate if a.rate is not None else (0.2 if a.lang == "en" else 0.1)
    if not 0.0 <= rate <= 1.0:
        ap.error(f"--rate {rate}: expected a probability in [0, 1]")
    col_name = a.text_column or ("sentence" if a.lang == "en" else "text_a")
    rng = random.Random(a.seed)
    vocab: list[str] = []
    if a.lang == "zh":
        if a.vocab_from is None:
            ap.error("--lang zh needs --vocab-from (the training text)")
        files = [q for p in a.vocab_from for q in (sorted(p.rglob("*")) if p.is_dir() else [p]) if q.is_file()]
        vocab = sorted({c for q in files for c in q.read_text(encoding="utf-8") if is_cjk(c)})
        if len(vocab) < 2:
            ap.error(f"--vocab-from: fewer than 2 CJK characters in {len(files)} file(s)")
        print(f"{len(vocab)} CJK substitute characters from {len(files)} file(s)")
    lines = a.src.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if col_name not in header:
        ap.error(f"{a.src}:1: no column {col_name!r} in header {header}")
    col = header.index(col_name)
    out = [lines[0]]
    units = changed = 0
    for line in lines[1:]:
        cells = line.split("\t")
        if a.lang == "en":
            cells[col], n = misspell_en(cells[col], rate, rng)
            units += sum(1 for w in cells[col].split(" ") if w)
        else:
            units += sum(is_cjk(c) for c in cells[col])
            cells[col], n = misspell_zh(cells[col], rate, rng, vocab)
        changed += n
        out.append("\t".join(cells))
    a.dst.parent.mkdir(parents=True, exist_ok=True)
    a.dst.write_text("\n".join(out) + "\n", encoding="utf-8")
    unit = "words" if a.lang == "en" else "CJK characters"
    print(f"{a.dst}: {len(out) - 1} rows, {changed} of {units} {unit} changed ({changed / max(units, 1):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
