"""Parallel sentence pairs in a token store (for XLM's translation LM, ``plmkit.objectives.tlm``).

    from plmkit.data.parallel import prepare_parallel, ParallelPairs
    prepare_parallel(["cmn-eng.tsv"], tok, "store/")          # TSV: source<TAB>target per line
    prepare_parallel(["train.en", "train.zh"], tok, "store/")  # or two line-aligned files
    pairs = ParallelPairs(TokenStore("store/"), max_len=128)
    pairs[0]   # {"src": ids, "tgt": ids, "src_lang": 0, "tgt_lang": 1}

Layout: each pair is one document of the ordinary store (``plmkit.data.store``) holding two
sentences, the source then the target (the target's first token carries the sentence-start flag),
so the store's other views (windows, documents) still read it. The manifest adds
``"example_kind": "parallel"`` and the ``"languages"`` (names of the two sides, when given). Pairs
with an empty side are skipped and counted. Language ids: 0 for the first column / file, 1 for
the second. Inputs: one or more ``.tsv`` files (exactly two tab-separated columns per line), or
exactly two plain text files with the same number of lines.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any, Callable

import numpy as np

from plmkit.data.corpus import expand_inputs
from plmkit.data.store import (
    DOC,
    FORMAT,
    SENT,
    VERSION,
    View,
    install_store,
    _input_fingerprint,
    _read_manifest,
    _ShardWriter,
    choose_dtype,
    encode_documents,
)
from plmkit.errors import UserError

EXAMPLE_KIND = "parallel"


def read_pairs(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[str, str]]:
    """(source, target) lines of ``.tsv`` files, or of two line-aligned files (see the module docstring)."""
    files = expand_inputs(paths)
    if not files:
        raise UserError("parallel data: no input files")
    if all(p.suffix.lower() == ".tsv" for p in files):
        for p in files:
            with open(p, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    line = line.rstrip("\r\n")
                    if not line.strip():
                        continue
                    cols = line.split("\t")
                    if len(cols) != 2:
                        raise UserError(f"{p}:{lineno}: expected 2 tab-separated columns (source, target), "
                                        f"got {len(cols)}")
                    yield cols[0].strip(), cols[1].strip()
        return
    if len(files) != 2 or any(p.suffix.lower() == ".tsv" for p in files):
        raise UserError(f"parallel data: give .tsv files (source<TAB>target) or exactly two line-aligned text "
                        f"files, got {', '.join(str(p) for p in files)}")
    a, b = files
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        for lineno, (la, lb) in enumerate(zip_longest(fa, fb), 1):
            if la is None or lb is None:
                raise UserError(f"{a if lb is None else b}:{lineno}: the two parallel files have different "
                                f"numbers of lines")
            yield la.strip(), lb.strip()


def prepare_parallel(inputs: str | os.PathLike | Sequence[str | os.PathLike], tokenizer: Any,
                     out_dir: str | os.PathLike, *, languages: Sequence[str] | None = None,
                     dtype: str | None = None, batch_pairs: int = 4096, overwrite: bool = False,
                     log: Callable[[str], None] | None = None) -> dict:
    """Tokenize parallel pairs into a token store at ``out_dir``; returns its manifest (see the module docstring)."""
    from plmkit.tokenization import Tokenizer, load_tokenizer

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = expand_inputs(inputs)
    if languages is not None and len(languages) != 2:
        raise UserError(f"parallel data: expected two language names, got {list(languages)}")
    dt = choose_dtype(len(tok), dtype)
    options = {"parallel": True, "dtype": dt, "tokenizer": tok.fingerprint, "chinese_words": tok.chinese_words,
               "languages": list(languages) if languages else None, "order": [str(p) for p in paths]}
    fp = _input_fingerprint(paths, options)
    out = Path(out_dir)
    say = log or (lambda msg: None)
    if out.exists():
        if (out / "manifest.json").is_file() and not overwrite:
            old = _read_manifest(out)
            if old.get("inputs_fingerprint") == fp:
                say(f"{out}: up to date ({old['num_tokens']} tokens); nothing to do")
                return old
            raise UserError(f"{out}: a token store built from other inputs, options or tokenizer; "
                            f"pass --overwrite or choose another --out")
        if out.is_dir() and any(out.iterdir()) and not overwrite and not (out / "manifest.json").is_file():
            raise UserError(f"{out}: directory exists and is not empty (and is not a token store)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    t0 = time.time()
    n_pairs = skipped = 0
    try:
        writer = _ShardWriter(tmp, dt, 1 << 27)

        def flush(batch: list[tuple[str, str]]) -> None:
            nonlocal n_pairs, skipped
            texts = [t for pair in batch for t in pair]  # src0, tgt0, src1, tgt1, ...
            ids, flags, lengths = encode_documents(tok, texts, dt, words=True, sentences=False)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            keep_ids, keep_flags, keep_len = [], [], []
            for k in range(len(batch)):
                ls, lt = int(lengths[2 * k]), int(lengths[2 * k + 1])
                if ls == 0 or lt == 0:
                    skipped += 1
                    continue
                s = int(starts[2 * k])
                f = flags[s: s + ls + lt].copy()
                f[ls] = (int(f[ls]) & ~DOC & 0xFF) | SENT  # the target starts a sentence, not a document
                keep_ids.append(ids[s: s + ls + lt])
                keep_flags.append(f)
                keep_len.append(ls + lt)
            if keep_len:
                writer.add(np.concatenate(keep_ids), np.concatenate(keep_flags), np.asarray(keep_len, np.int64))
                n_pairs += len(keep_len)

        batch: list[tuple[str, str]] = []
        for pair in read_pairs(paths):
            batch.append(pair)
            if len(batch) >= batch_pairs:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        shards = writer.finish()
        if n_pairs == 0:
            raise UserError(f"parallel data: no pair with two non-empty sides in {', '.join(map(str, paths))}")
        manifest = {
            "format": FORMAT, "version": VERSION, "dtype": dt, "example_kind": EXAMPLE_KIND,
            "languages": list(languages) if languages else None,
            "num_tokens": writer.n_tokens, "num_documents": writer.n_docs, "num_sentences": writer.n_sent,
            "input": {"files": [str(p) for p in paths], "pairs": n_pairs, "skipped_pairs": skipped},
            "tokenizer": {"fingerprint": tok.fingerprint, "kind": tok.kind, "vocab_size": len(tok)},
            "word_ids": "pre-tokenizer words; CJK grouped by jieba", "sentence_splitter": "one sentence per side",
            "shards": shards, "inputs_fingerprint": fp, "options": options,
            "seconds": round(time.time() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        install_store(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{out}: {n_pairs} pairs ({skipped} skipped with an empty side), {manifest['num_tokens']} tokens")
    return manifest


class ParallelPairs(View):
    """One ``{"src", "tgt", "src_lang", "tgt_lang"}`` record per stored pair (ids without special tokens).

    ``max_len``: cap on ``len(src) + len(tgt)``; the longer side is trimmed first (as ``TLM`` does).
    """

    def __init__(self, store: Any, max_len: int | None = None) -> None:
        if store.manifest.get("example_kind") != EXAMPLE_KIND:
            raise UserError(f"{store.path}: not a parallel token store (build it with plm prepare --parallel)")
        self.store, self.max_len = store, max_len

    def __len__(self) -> int:
        return self.store.num_documents

    def _get(self, i: int) -> dict:
        s, e = self.store.document_span(i)
        ids, flags = self.store.tokens(s, e)
        sent = np.flatnonzero(flags & SENT)
        cut = int(sent[1]) if len(sent) > 1 else len(ids)
        src, tgt = ids[:cut].astype(np.int64).tolist(), ids[cut:].astype(np.int64).tolist()
        if self.max_len is not None:
            while len(src) + len(tgt) > self.max_len and max(len(src), len(tgt)) > 1:
                if len(src) >= len(tgt):
                    src.pop()
                else:
                    tgt.pop()
        return {"src": src, "tgt": tgt, "src_lang": 0, "tgt_lang": 1}
