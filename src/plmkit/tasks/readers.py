"""Task dataset readers: GLUE TSV layouts, generic CSV/TSV/JSONL, CoNLL/BIO files, SQuAD JSON.

Every reader returns plain dataclass records that remember where they came from
(``source = "file:line"`` or ``"file:id"``), so later errors can name the row.
Bad rows raise :class:`plmkit.errors.UserError` with one line naming file and line;
when a :class:`BadRows` collector with ``skip=True`` is passed, the row is counted and
skipped instead, and ``BadRows.summary()`` reports what was dropped.

Formats:
- GLUE (Wang et al. 2018, https://gluebenchmark.com): tab-separated, no quoting;
  CoLA has no header (``source, label, judgement, sentence``); MRPC has a BOM header.
- CoNLL-2003 (Tjong Kim Sang & De Meulder 2003): ``token ... tag`` per line, blank line
  between sentences, ``-DOCSTART-`` lines ignored; tags in BIO2 (IOB2).
- SQuAD v1.1 (Rajpurkar et al. 2016): ``{"data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plmkit.errors import UserError
from plmkit.textio import read_text

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class BadRows:
    """Collects bad rows. ``skip=False``: the first bad row raises; ``skip=True``: count and go on."""

    skip: bool = False
    messages: list[str] = field(default_factory=list)
    encoding_errors: str = "strict"
    """How the readers decode the files (``plmkit.textio``): "strict" stops at a non-UTF-8 byte with
    file:line and byte offset, "replace" reads it as U+FFFD. Not a bad row: ``skip`` does not apply."""

    def bad(self, message: str) -> None:
        if not self.skip:
            raise UserError(message)
        self.messages.append(message)

    @property
    def count(self) -> int:
        return len(self.messages)

    def summary(self, limit: int = 5) -> str:
        if not self.messages:
            return "skipped 0 bad rows"
        shown = "; ".join(self.messages[:limit])
        more = f"; ... and {self.count - limit} more" if self.count > limit else ""
        return f"skipped {self.count} bad row(s): {shown}{more}"


def _collector(bad: BadRows | None) -> BadRows:
    return bad if bad is not None else BadRows(skip=False)


def _open(path: Path, bad: BadRows | None, table: bool = False) -> io.StringIO:
    """The decoded text of ``path`` as a file object (``plmkit.textio``: one-line errors at file:line for
    non-UTF-8 bytes; BOM dropped). ``table``: line ends untranslated, as the csv module wants."""
    text = read_text(path, bad.encoding_errors if bad is not None else "strict")
    return io.StringIO(text, newline="" if table else None)


# ----------------------------------------------------------------------------------------------
# Sentence / sentence-pair classification and regression
# ----------------------------------------------------------------------------------------------


@dataclass
class TextExample:
    """One classification / regression / multi-label row."""

    text: str
    text_pair: str | None
    label: Any  # str for classes, float for regression, list[str] for multi-label, None if unlabelled
    source: str  # "file:line"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (expected a header and data rows)")


def _column_index(path: Path, header: list[str], name: str | int, what: str) -> int:
    from plmkit.errors import suggest

    if isinstance(name, int):
        if not -len(header) <= name < len(header):
            raise UserError(f"{path}:1: {what} column {name} out of range (the file has {len(header)} columns)")
        return name % len(header)
    if name in header:
        return header.index(name)
    if name.isdigit():
        return _column_index(path, header, int(name), what)
    raise UserError(f"{path}:1: no {what} column {name!r}; columns are {header}{suggest(name, header)}")


def read_table(
    path: str | Path,
    text_column: str | int | tuple[str | int, ...] = ("sentence", "text", "text_a", "sentence1"),
    text_pair_column: str | int | None = None,
    label_column: str | int | None = "label",
    header: bool = True,
    label_type: str = "class",
    label_separator: str = ",",
    bad: BadRows | None = None,
) -> list[TextExample]:
    """Read a TSV / CSV / JSONL file with named (or, without a header, numbered) columns.

    Args:
        path: ``.tsv`` (tab-separated, no quoting, as GLUE), ``.csv`` (RFC 4180) or ``.jsonl``.
        text_column: column name or index; a tuple means "the first of these that exists".
        text_pair_column: second segment for pair tasks, or None.
        label_column: column with the label, or None (unlabelled inputs, e.g. for predict).
        header: whether the first line names the columns (TSV/CSV only).
        label_type: "class" (string labels), "float" (regression) or "multi" (``label_separator``-joined).
        bad: collector for bad rows (see :class:`BadRows`).

    Returns:
        a list of :class:`TextExample`, one per data row.
    """
    path = Path(path)
    bad = _collector(bad)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or suffix == ".json":
        return _read_jsonl(path, text_column, text_pair_column, label_column, label_type, label_separator, bad)
    delimiter = "," if suffix == ".csv" else "\t"
    with _open(path, bad, table=True) as f:
        if delimiter == "\t":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(f)
        # reader.line_num: the (1-based) physical line where the row ends.
        numbered = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if not numbered:
        raise UserError(f"{path}: empty file (no rows)")
    if header:
        names = [c.strip() for c in numbered[0][1]]
        numbered = numbered[1:]
    else:
        names = [str(i) for i in range(len(numbered[0][1]))]
    if not numbered:
        raise UserError(f"{path}: empty file (a header but no data rows)")
    ncols = len(names)
    if isinstance(text_column, (tuple, list)):
        present = [c for c in text_column if (c in names if isinstance(c, str) else c < ncols)]
        if not present:
            raise UserError(f"{path}:1: none of the text columns {list(text_column)} found; columns are {names}")
        text_column = present[0]
    ti = _column_index(path, names, text_column, "text")
    pi = _column_index(path, names, text_pair_column, "text pair") if text_pair_column is not None else None
    li = _column_index(path, names, label_column, "label") if label_column is not None else None
    sep = "tab-separated" if delimiter == "\t" else "comma-separated"
    out: list[TextExample] = []
    for lineno, row in numbered:
        where = f"{path}:{lineno}"
        if len(row) != ncols:
            bad.bad(f"{where}: expected {ncols} {sep} columns, got {len(row)}")
            continue
        label = None
        if li is not None:
            try:
                label = _parse_label(row[li], label_type, label_separator)
            except ValueError as e:
                bad.bad(f"{where}: {e}")
                continue
        out.append(TextExample(row[ti].strip(), row[pi].strip() if pi is not None else None, label, where))
    if not out:
        raise UserError(f"{path}: no usable data rows")
    return out


def _parse_label(raw: Any, label_type: str, sep: str) -> Any:
    if label_type == "float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number in the label column, got {raw!r}") from None
    if label_type == "multi":
        if isinstance(raw, list):
            return [str(x) for x in raw]
        return [x.strip() for x in str(raw).split(sep) if x.strip()]
    s = str(raw).strip()
    if not s:
        raise ValueError("empty label")
    return s


def _read_jsonl(path, text_column, text_pair_column, label_column, label_type, label_separator, bad):
    out = []
    with _open(path, bad) as f:
        lines = f.readlines()
    if not any(line.strip() for line in lines):
        raise UserError(f"{path}: empty file (no JSON lines)")
    cands = tuple(text_column) if isinstance(text_column, (tuple, list)) else (text_column,)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.bad(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            bad.bad(f"{where}: expected a JSON object per line")
            continue
        key = next((c for c in cands if c in obj), None)
        if key is None:
            bad.bad(f"{where}: missing text key (one of {list(cands)}); keys are {sorted(obj)}")
            continue
        if text_pair_column is not None and text_pair_column not in obj:
            bad.bad(f"{where}: missing key {text_pair_column!r}")
            continue
        label = None
        if label_column is not None:
            if label_column not in obj:
                bad.bad(f"{where}: missing key {label_column!r}")
                continue
            try:
                label = _parse_label(obj[label_column], label_type, label_separator)
            except ValueError as e:
                bad.bad(f"{where}: {e}")
                continue
        pair = str(obj[text_pair_column]) if text_pair_column is not None else None
        out.append(TextExample(str(obj[key]), pair, label, where))
    if not out:
        raise UserError(f"{path}: no usable data rows")
    return out


def check_labels(dev: list[TextExample], labels: list[str], bad: BadRows | None = None) -> list[TextExample]:
    """Drop (or raise on) evaluation rows whose label never occurs in training."""
    bad = _collector(bad)
    known = set(labels)
    out = []
    for ex in dev:
        labs = ex.label if isinstance(ex.label, list) else [ex.label]
        unseen = [lab for lab in labs if lab is not None and lab not in known]
        if unseen:
            bad.bad(f"{ex.source}: label {unseen[0]!r} not seen in training (known: {sorted(known)})")
            continue
        out.append(ex)
    return out


def read_mrpc_train(data_dir: str | Path, bad: BadRows | None = None) -> list[TextExample]:
    """GLUE MRPC train = ``msr_paraphrase_train.txt`` minus the pairs listed in ``dev_ids.tsv``."""
    data_dir = Path(data_dir)
    ids_path = data_dir / "dev_ids.tsv"
    _check_file(ids_path)
    with _open(ids_path, bad) as f:
        dev_ids = {tuple(line.split()[:2]) for line in f if line.strip()}
    rows = read_table(data_dir / "msr_paraphrase_train.txt", "#1 String", "#2 String", "Quality", bad=bad)
    path = data_dir / "msr_paraphrase_train.txt"
    # Recover the ids of each row (same columns) to filter out dev pairs.
    with _open(path, bad, table=True) as f:
        raw = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    keep = []
    for ex in rows:
        lineno = int(ex.source.rsplit(":", 1)[1])
        r = raw[lineno - 1]
        if (r[1], r[2]) not in dev_ids:
            keep.append(ex)
    return keep


# ----------------------------------------------------------------------------------------------
# Token classification (CoNLL / BIO)
# ----------------------------------------------------------------------------------------------


@dataclass
class TokenExample:
    """One sentence of a token-classification file."""

    tokens: list[str]
    tags: list[str] | None
    source: str  # "file:line" of the first token


def check_bio(tags: list[str]) -> tuple[int, str] | None:
    """Return ``(position, message)`` of the first BIO2 violation, or None if the sequence is valid."""
    prev = "O"
    for i, tag in enumerate(tags):
        if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
            return i, f"tag {tag!r} is not O, B-X or I-X"
        if tag.startswith("I-"):
            typ = tag[2:]
            if prev == "O":
                return i, f"tag {tag} follows O (BIO2 requires B-{typ} to start an entity)"
            if prev[2:] != typ:
                return i, f"tag {tag} follows {prev} (an entity cannot change type inside)"
        prev = tag
    return None


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int = -1,
    strip_digit_suffix: bool = False,
    labelled: bool = True,
    validate_bio: bool = True,
    bad: BadRows | None = None,
) -> list[TokenExample]:
    """Read a CoNLL-style file: whitespace-separated columns, blank lines between sentences.

    ``-DOCSTART-`` lines are skipped. ``strip_digit_suffix`` drops the trailing word-segment
    digit of the Weibo NER format (``我0``). BIO2 validity is checked per sentence; the
    message names the line of the offending tag.
    """
    path = Path(path)
    bad = _collector(bad)
    _check_file(path)
    out: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines_of: list[int] = []
    ncols: int | None = None
    skip_sentence = False

    def flush():
        nonlocal tokens, tags, lines_of, skip_sentence
        if tokens and not skip_sentence:
            err = check_bio(tags) if (labelled and validate_bio) else None
            if err is not None:
                bad.bad(f"{path}:{lines_of[err[0]]}: {err[1]}")
            else:
                out.append(TokenExample(tokens, tags if labelled else None, f"{path}:{lines_of[0]}"))
        tokens, tags, lines_of, skip_sentence = [], [], [], False

    with _open(path, bad) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                flush()
                continue
            cols = line.split()
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            if ncols is None:
                ncols = len(cols)
                if labelled and ncols < 2:
                    raise UserError(f"{path}:{lineno}: expected at least 2 columns (token and tag), got 1")
            if len(cols) != ncols:
                bad.bad(f"{path}:{lineno}: expected {ncols} columns, got {len(cols)}")
                skip_sentence = True
                continue
            tok = cols[token_column]
            if strip_digit_suffix and len(tok) > 1 and tok[-1].isdigit():
                # the segment position can have two digits ("e12"); a digit character keeps itself ("312" -> "3")
                tok = tok.rstrip("0123456789") or tok[0]
            tokens.append(tok)
            tags.append(cols[tag_column] if labelled else "O")
            lines_of.append(lineno)
        flush()
    if not out:
        raise UserError(f"{path}: no sentences (empty file or all sentences bad)")
    return out


# ----------------------------------------------------------------------------------------------
# Extractive QA (SQuAD)
# ----------------------------------------------------------------------------------------------


@dataclass
class QAExample:
    """One SQuAD question with its context and (for training/eval) gold answers."""

    id: str
    question: str
    context: str
    answers: list[dict]  # [{"text": str, "answer_start": int}]
    title: str = ""
    source: str = ""


def read_squad(
    path: str | Path,
    articles: slice | None = None,
    check_offsets: bool = True,
    bad: BadRows | None = None,
) -> list[QAExample]:
    """Read SQuAD v1.1-format JSON; ``articles`` selects a slice of ``data`` (e.g. ``slice(0, 36)``).

    Each answer's ``answer_start`` must point at its ``text`` inside the context;
    a mismatch is reported by question id.
    """
    path = Path(path)
    bad = _collector(bad)
    _check_file(path)
    try:
        with _open(path, bad) as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{path}: expected a SQuAD JSON object with a 'data' list")
    data = obj["data"] if articles is None else obj["data"][articles]
    out: list[QAExample] = []
    for art in data:
        title = art.get("title", "")
        for para in art.get("paragraphs", []):
            ctx = para.get("context")
            if not isinstance(ctx, str):
                bad.bad(f"{path}: article {title!r}: paragraph without a 'context' string")
                continue
            for qa in para.get("qas", []):
                qid = str(qa.get("id", "?"))
                where = f"{path}:{qid}"
                if "question" not in qa:
                    bad.bad(f"{where}: question without 'question' text")
                    continue
                answers = qa.get("answers", [])
                ok = True
                for a in answers:
                    start, text = a.get("answer_start"), a.get("text")
                    if not isinstance(start, int) or not isinstance(text, str):
                        bad.bad(f"{where}: answer needs 'text' (string) and 'answer_start' (int)")
                        ok = False
                        break
                    if check_offsets and ctx[start : start + len(text)] != text:
                        found = ctx[start : start + len(text)]
                        bad.bad(f"{where}: answer {text!r} does not match the context at offset {start} ({found!r})")
                        ok = False
                        break
                if ok:
                    out.append(QAExample(qid, qa["question"], ctx, answers, title, where))
    if not out:
        raise UserError(f"{path}: no questions")
    return out


# ----------------------------------------------------------------------------------------------
# Multiple choice (JSONL)
# ----------------------------------------------------------------------------------------------


@dataclass
class ChoiceExample:
    """A context (or question) with C candidate continuations; ``label`` indexes the right one."""

    context: str
    choices: list[str]
    label: int | None
    source: str


def read_choices(path: str | Path, labelled: bool = True, bad: BadRows | None = None) -> list[ChoiceExample]:
    """JSONL with ``context`` (or ``question``), ``choices`` (list of strings) and ``label`` (int index)."""
    path = Path(path)
    bad = _collector(bad)
    _check_file(path)
    out: list[ChoiceExample] = []
    n_choices = None
    with _open(path, bad) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad.bad(f"{where}: not valid JSON ({e.msg})")
                continue
            ctx = obj.get("context", obj.get("question")) if isinstance(obj, dict) else None
            choices = obj.get("choices") if isinstance(obj, dict) else None
            if not isinstance(ctx, str) or not isinstance(choices, list) or len(choices) < 2:
                bad.bad(f"{where}: expected 'context' (string) and 'choices' (a list of 2 or more strings)")
                continue
            if n_choices is None:
                n_choices = len(choices)
            if len(choices) != n_choices:
                bad.bad(f"{where}: expected {n_choices} choices like the first row, got {len(choices)}")
                continue
            label = obj.get("label") if labelled else None
            if labelled and (not isinstance(label, int) or not 0 <= label < len(choices)):
                bad.bad(f"{where}: 'label' must be an integer index into choices, got {label!r}")
                continue
            out.append(ChoiceExample(ctx, [str(c) for c in choices], label, where))
    if not out:
        raise UserError(f"{path}: empty file (no examples)")
    return out
