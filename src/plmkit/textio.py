"""The one reader of text files: UTF-8, with one-line errors that say where a bad byte is.

Every text input of plmkit goes through here (corpora and tokenizer training via ``plmkit.data.corpus``,
task TSV / CSV / JSONL / CoNLL / SQuAD files, ``plm predict`` inputs, n-gram and word2vec corpora, ARPA
files, YAML recipes):

- :func:`read_text`: a whole (small) file as one string;
- :func:`iter_lines`: the lines of a file of any size, streamed (``.gz`` is detected by its magic bytes);
- :func:`iter_text_blocks`: the decoded text in 1 MiB blocks (what the two above are built on);
- :func:`read_stdin`: standard input (``plm generate`` / ``fill-mask`` / ``tokenizer encode``).

A non-UTF-8 byte stops the read with ``FILE:LINE: invalid UTF-8 at byte OFFSET; fix the file or pass
--encoding-errors replace`` (offsets of ``.gz`` files are in the uncompressed stream), unless
``errors="replace"``: then each bad sequence reads as U+FFFD and is counted (:func:`replaced_count`).
Every command that reads text files takes ``--encoding-errors strict|replace`` (``plm pretrain`` also
the recipe key ``data.encoding_errors``). A NUL byte in the first 8 KiB means a binary file; a UTF-8
BOM at the start of a file is dropped.
"""

from __future__ import annotations

import codecs
import gzip
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from plmkit.errors import UserError

BLOCK = 1 << 20
ENCODING_ERRORS = ("strict", "replace")
HINT = "fix the file or pass --encoding-errors replace"
ENCODING_ERRORS_HELP = ("non-UTF-8 bytes in the input files: stop at the first (file:line and byte offset), "
                        "or replace each by U+FFFD (counted)")
_REPLACED = [0]


def _count_replace(e: UnicodeError) -> tuple[str, int]:
    _REPLACED[0] += 1
    return "\ufffd", e.end  # type: ignore[attr-defined]


codecs.register_error("plmkit_count_replace", _count_replace)


def replaced_count() -> int:
    """Bad byte sequences replaced so far in this process (differences of it count one read)."""
    return _REPLACED[0]


def check_errors(errors: str) -> str:
    if errors not in ENCODING_ERRORS:
        raise UserError(f"encoding errors must be 'strict' or 'replace', got {errors!r}")
    return errors


def _open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb"), True
    return open(path, "rb"), False


def iter_text_blocks(path: str | os.PathLike, errors: str = "strict",
                     on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """Decoded text of ``path`` in blocks (incremental UTF-8; ``.gz`` is detected by its magic bytes)."""
    path = Path(path)
    handler = "strict" if check_errors(errors) == "strict" else "plmkit_count_replace"
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    try:
        f, gz = _open_binary(path)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    decoder = codecs.getincrementaldecoder("utf-8")(errors=handler)
    pos = 0  # bytes of the (uncompressed) stream consumed so far
    newlines = 0  # b"\n" in those bytes
    first = True
    last_raw = 0
    with f:
        while True:
            try:
                block = f.read(BLOCK)
            except (OSError, EOFError, zlib.error) as e:
                raise UserError(f"{path}: cannot read ({'corrupt gzip stream: ' if gz else ''}{e})") from None
            if first and block:
                nul = block.find(b"\x00", 0, 8192)
                if nul >= 0:
                    raise UserError(f"{path}: looks like a binary file (NUL byte at offset {nul}); expected UTF-8 text")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                offset = pos - pending + e.start
                line = newlines + block[: max(0, e.start - pending)].count(b"\n") + 1
                raise UserError(f"{path}:{line}: invalid UTF-8 at byte {offset}{' (uncompressed)' if gz else ''}; "
                                f"{HINT}") from None
            if first:
                if text.startswith("\ufeff"):
                    text = text[1:]
                first = False
            pos += len(block)
            newlines += block.count(b"\n")
            if on_bytes is not None:
                raw = f.fileobj.tell() if gz else pos  # type: ignore[attr-defined]
                on_bytes(raw - last_raw)
                last_raw = raw
            if text:
                yield text
            if not block:
                return


def split_lines(blocks: Iterator[str]) -> Iterator[str]:
    """Lines of a stream of text blocks, without their ``\\n`` / ``\\r\\n``."""
    rest = ""
    for text in blocks:
        if rest:
            text = rest + text
        parts = text.split("\n")
        rest = parts.pop()
        for line in parts:
            yield line[:-1] if line.endswith("\r") else line
    if rest:
        yield rest[:-1] if rest.endswith("\r") else rest


def iter_lines(path: str | os.PathLike, errors: str = "strict") -> Iterator[str]:
    """The lines of a text file (``.gz`` too), streamed, without line ends."""
    return split_lines(iter_text_blocks(path, errors))


def read_text(path: str | os.PathLike, errors: str = "strict") -> str:
    """A whole text file as one string (``.gz`` too; line ends kept as they are)."""
    return "".join(iter_text_blocks(path, errors))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """A whole JSON file: one-line ``UserError`` when it is missing (``{path}: {what} not found``), not UTF-8
    (file:line, byte offset) or not valid JSON."""
    import json

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {what} not found")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:  # JSON is UTF-8 by definition (RFC 8259): no --encoding-errors here
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{p}:{line}: invalid UTF-8 at byte {e.start}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UserError(f"{p}: not valid JSON ({e})") from None


def read_stdin() -> str:
    """Standard input as text: UTF-8, with the same one-line error as a file (``<stdin>:LINE: ...``)."""
    buf = getattr(sys.stdin, "buffer", None)
    if buf is None:  # a text stream put in place of stdin (tests, embedding): already decoded
        return sys.stdin.read()
    data = buf.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"<stdin>:{line}: invalid UTF-8 at byte {e.start}; the input must be UTF-8 text") from None
    return text[1:] if text.startswith("\ufeff") else text
