"""Streaming corpus readers: text files / folders / JSONL / ``.gz`` -> documents.

``iter_documents(inputs, config, stats)`` yields one ``str`` per input document, reading each
file in 1 MiB blocks with an incremental UTF-8 decoder, so memory does not grow with corpus
size. Document boundaries (``CorpusConfig.doc_sep``):

* ``"line"``: every line is a document (a blank line is an *empty* document, counted);
* ``"blank"``: documents are runs of non-blank lines separated by blank lines (inner newlines kept);
* JSONL files (``.jsonl`` / ``.jsonl.gz``, or ``format="jsonl"``): one document per record, the
  string in ``text_field``.
* ``format="tsv"``: a header line naming tab-separated columns, then one document per row, the
  column named ``text_field`` (e.g. the ``sentence`` column of a GLUE file, labels left out).

Bad input raises ``UserError`` with one line: missing paths, binary files (a NUL byte in the
first 8 KiB), non-UTF-8 bytes (file, line and byte offset of the first bad byte, read by the one
text reader ``plmkit.textio``; offsets of ``.gz`` files are in the uncompressed stream) unless
``errors="replace"`` (``--encoding-errors replace``), which replaces each bad
sequence by U+FFFD and counts them. Empty files are skipped and counted. A UTF-8 BOM at the
start of a file is dropped. ``CorpusStats`` accounts for every file and document.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import plmkit.textio as textio
from plmkit.errors import UserError, suggest

_REPLACED = textio._REPLACED  # counter of replaced byte sequences (plmkit.textio)


@dataclass
class CorpusConfig:
    """How input files are split into documents."""

    doc_sep: Literal["line", "blank"] = "line"
    """``line``: one document per line; ``blank``: documents separated by blank lines."""
    text_field: str = "text"
    """JSONL field that holds the document text."""
    errors: Literal["strict", "replace"] = "strict"
    """Non-UTF-8 bytes: ``strict`` stops with file + byte offset; ``replace`` uses U+FFFD and counts."""
    format: Literal["auto", "text", "jsonl", "tsv"] = "auto"
    """``auto``: JSONL for ``.jsonl``/``.jsonl.gz`` names, plain text otherwise; ``tsv``: a headed TSV's column."""

    def __post_init__(self) -> None:
        if self.doc_sep not in ("line", "blank"):
            raise UserError(f"doc_sep must be 'line' or 'blank', got {self.doc_sep!r}")
        if self.errors not in ("strict", "replace"):
            raise UserError(f"errors must be 'strict' or 'replace', got {self.errors!r}")
        if self.format not in ("auto", "text", "jsonl", "tsv"):
            raise UserError(f"format must be 'auto', 'text', 'jsonl' or 'tsv', got {self.format!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CorpusStats:
    """What was read: every file and document is accounted for."""

    files: int = 0
    empty_files: int = 0
    bytes: int = 0
    documents: int = 0
    replaced: int = 0
    per_file: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by ``inputs`` (folders are walked recursively, sorted; hidden names skipped)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise UserError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*")
                if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)
            )
            if not found:
                raise UserError(f"{p}: folder contains no files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: not a regular file or folder")
    if not out:
        raise UserError("no input files given")
    return out


def is_jsonl(path: Path, config: CorpusConfig) -> bool:
    if config.format != "auto":
        return config.format == "jsonl"
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))


def iter_text_blocks(path: Path, errors: str = "strict", on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """Decoded text of ``path`` in blocks: :func:`plmkit.textio.iter_text_blocks`."""
    return textio.iter_text_blocks(path, errors, on_bytes)


_iter_lines = textio.split_lines


def iter_file_documents(path: Path, config: CorpusConfig, on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """Documents of one file (see the module docstring for the rules)."""
    lines = _iter_lines(iter_text_blocks(path, config.errors, on_bytes))
    if is_jsonl(path, config):
        key = config.text_field
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object with field {key!r}, got {type(rec).__name__}")
            if key not in rec:
                hint = suggest(key, rec.keys()) or f" (fields: {', '.join(map(str, list(rec)[:8])) or 'none'})"
                raise UserError(f"{path}:{lineno}: no field {key!r}{hint}; set --text-field")
            text = rec[key]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise UserError(f"{path}:{lineno}: field {key!r} must be a string, got {type(text).__name__}")
            yield text
    elif config.format == "tsv":
        header = next(lines, None)
        cols = header.split("\t") if header is not None else []
        if config.text_field not in cols:
            hint = suggest(config.text_field, cols) or f" (columns: {', '.join(cols[:8]) or 'none'})"
            raise UserError(f"{path}:1: no column {config.text_field!r} in the header{hint}; set the text field")
        k = cols.index(config.text_field)
        for lineno, line in enumerate(lines, 2):
            if not line.strip():
                continue
            row = line.split("\t")
            if len(row) <= k:
                raise UserError(f"{path}:{lineno}: {len(row)} columns, expected at least {k + 1}")
            yield row[k].strip()
    elif config.doc_sep == "line":
        yield from lines
    else:
        buf: list[str] = []
        for line in lines:
            if line.strip():
                buf.append(line)
            elif buf:
                yield "\n".join(buf)
                buf = []
        if buf:
            yield "\n".join(buf)


def iter_documents(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    config: CorpusConfig | None = None,
    stats: CorpusStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Stream the documents of all ``inputs`` in order; ``stats`` (if given) is filled in as we go."""
    config = config or CorpusConfig()
    stats = stats if stats is not None else CorpusStats()
    for path in expand_inputs(inputs):
        size = path.stat().st_size
        stats.files += 1
        entry = {"path": str(path), "bytes": size, "documents": 0}
        stats.per_file.append(entry)
        if size == 0:
            stats.empty_files += 1
            entry["empty"] = True
            continue
        before = _REPLACED[0]
        n = 0
        for doc in iter_file_documents(path, config, on_bytes):
            n += 1
            stats.documents += 1
            yield doc
        entry["documents"] = n
        replaced = _REPLACED[0] - before
        if replaced:
            entry["replaced"] = replaced
            stats.replaced += replaced
        stats.bytes += size
        if n == 0:
            entry["empty"] = True
            stats.empty_files += 1
