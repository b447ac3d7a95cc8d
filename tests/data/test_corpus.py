"""Streaming corpus readers: document splitting, formats, and bad input (one clear line each)."""

from __future__ import annotations

import gzip
import json

import pytest

from plmkit.data.corpus import CorpusConfig, CorpusStats, expand_inputs, iter_documents
from plmkit.errors import UserError


def docs(paths, **kw):
    stats = CorpusStats()
    return list(iter_documents(paths, CorpusConfig(**kw), stats)), stats


def test_line_and_blank_modes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("\ufeffone\r\ntwo\n\n  \nthree\nfour\n".encode("utf-8"))
    d, s = docs(f, doc_sep="line")
    assert d == ["one", "two", "", "  ", "three", "four"] and s.documents == 6
    d, s = docs(f, doc_sep="blank")
    assert d == ["one\ntwo", "three\nfour"] and s.documents == 2


def test_jsonl_gz_and_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    with gzip.open(tmp_path / "sub" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": "x y"}) + "\n\n" + json.dumps({"body": "中文"}) + "\n")
    (tmp_path / "a.txt").write_text("first\nsecond\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("skip me\n")
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"zipped line\n"))
    d, s = docs([tmp_path], text_field="body")
    assert d == ["first", "second", "zipped line", "x y", "中文"]  # sorted paths: a.txt, c.txt.gz, sub/...
    assert s.files == 3 and [p["documents"] for p in s.per_file] == [2, 1, 2]
    assert [p["path"].split("/")[-1] for p in s.per_file] == ["a.txt", "c.txt.gz", "b.jsonl.gz"]
    with pytest.raises(UserError, match=r"b.jsonl.gz:1: no field 'text' \(fields: body\); set --text-field"):
        docs([tmp_path])
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: invalid JSON"):
        docs([tmp_path / "bad.jsonl"])


def test_non_utf8_offsets_and_replace(tmp_path, monkeypatch):
    from plmkit import textio

    monkeypatch.setattr(textio, "BLOCK", 7)  # force multi-byte characters across block boundaries
    good = "héllo wörld 中文 ok\n" * 3
    raw = good.encode("utf-8")
    k = len(good[:30].encode("utf-8"))  # a character boundary past the first blocks
    bad = raw[:k] + b"\xff" + raw[k:]
    (tmp_path / "good.txt").write_bytes(raw)
    assert docs(tmp_path / "good.txt")[0] == good.split("\n")[:3]
    (tmp_path / "bad.txt").write_bytes(bad)
    line = good[:30].count("\n") + 1
    with pytest.raises(UserError, match=rf"bad.txt:{line}: invalid UTF-8 at byte {k};.*--encoding-errors replace"):
        docs(tmp_path / "bad.txt")
    (tmp_path / "bad.txt.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(UserError, match=rf"bad.txt.gz:{line}: invalid UTF-8 at byte {k} \(uncompressed\)"):
        docs(tmp_path / "bad.txt.gz")
    (tmp_path / "cut.txt").write_bytes(raw[:15] + b"\xff" + raw[16:])  # 中 (bytes 14-16) broken
    with pytest.raises(UserError, match=r"cut.txt:1: invalid UTF-8 at byte 14;"):
        docs(tmp_path / "cut.txt")
    d, s = docs(tmp_path / "bad.txt", errors="replace")
    assert s.replaced == 1 and "".join(d).count("\ufffd") == 1
    assert "\n".join(d).replace("\ufffd", "") + "\n" == good


def test_empty_binary_missing(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "a.txt").write_text("x\n")
    d, s = docs([tmp_path / "empty.txt", tmp_path / "a.txt"])
    assert d == ["x"] and s.files == 2 and s.empty_files == 1
    (tmp_path / "img.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(UserError, match=r"img.bin: looks like a binary file \(NUL byte at offset 8\)"):
        docs(tmp_path / "img.bin")
    with pytest.raises(UserError, match=r"missing.txt: no such file or directory"):
        expand_inputs([tmp_path / "a.txt", tmp_path / "missing.txt"])
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError, match="folder contains no files"):
        expand_inputs(tmp_path / "dir")
    with pytest.raises(UserError, match="doc_sep"):
        CorpusConfig(doc_sep="para")


def test_read_json_one_line_errors(tmp_path):
    from plmkit.textio import read_json

    good = tmp_path / "good.json"
    good.write_text('[{"a": "é"}]', encoding="utf-8")
    assert read_json(good) == [{"a": "é"}]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'[1,\n2,\n\xff]')
    with pytest.raises(UserError, match=r"bad.json:3: invalid UTF-8 at byte 7$"):
        read_json(bad)
    (tmp_path / "broken.json").write_text("[1,", encoding="utf-8")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        read_json(tmp_path / "broken.json")
    with pytest.raises(UserError, match="missing.json: facts file not found"):
        read_json(tmp_path / "missing.json", "facts file")
