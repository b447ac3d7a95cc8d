"""The token store: a corpus tokenized once into sharded memory-mapped arrays, and its readers.

Layout of a store directory ``DIR``::

    DIR/manifest.json          counts, checksums, tokenizer fingerprint, input accounting
    DIR/shards/NNNNN.ids       token ids, raw little-endian uint16 (vocab <= 65536) or uint32
    DIR/shards/NNNNN.flags     uint8 per token: bit 0 = a word starts here, bit 1 = a sentence
                               starts here, bit 2 = a document starts here
    DIR/shards/NNNNN.docs      int64 document start offsets inside the shard (+ the end offset)

Documents never span shards. Stored ids carry no special tokens (objectives add [CLS]/[SEP]/...).
Empty documents (no tokens) are not stored but counted: ``manifest["input"]["documents"] ==
num_documents + manifest["input"]["empty_documents"]``.

Word starts come from the tokenizer's pre-tokenizer words, with CJK characters grouped into
jieba words (``plmkit.tokenization.words.word_ids_for``). Sentence starts come from a rule-based
splitter (``plmkit.tokenization.words.sentence_starts``: ``.!?…`` + whitespace, ``。！？；``,
line breaks) mapped to the first token of each sentence.

``prepare`` streams documents (``plmkit.data.corpus``), encodes them in batches with the Rust
tokenizer's own threads (``num_workers=0``, the default and the fastest on our machines) or with
a pool of single-threaded worker processes (``num_workers=N``), and writes the shards with a
running sha256. It writes into ``DIR.tmp-XXXX`` and renames at the end. Re-running with the
same inputs (paths, sizes, mtimes), options and tokenizer is a no-op; a different tokenizer or
inputs need ``overwrite=True``.

Readers (``TokenStore``) are map-style ``Sequence`` views (``__len__`` / ``__getitem__``), so the
trainer can shuffle, shard and resume by index; ``view.shuffled(seed)`` gives a deterministic
permutation. Every record is a ``dict`` (CONTRACTS.md "Token store"):

* ``store.windows(seq_len, stride=None, drop_last=True)``: packed fixed-length windows over the
  concatenated token stream (across documents and shards): ``input_ids``, ``word_ids`` (word index
  per token, 0 = the first word in the window), ``sentence_starts`` and ``doc_boundaries``
  (offsets in the window where a sentence / document starts; 0 is included when one starts there).
* ``store.documents(max_len=None)``: one record per document (truncated to ``max_len`` if given):
  ``input_ids``, ``word_ids``, ``sentence_starts``.
* ``store.sentence_pairs(max_len, seed=0)``: records for NSP / SOP. Each document is cut into
  chunks of whole sentences of at most ``max_len`` tokens (BERT's ``create_instances_from_document``
  without its short-sequence sampling; a sentence longer than ``max_len`` is cut); each chunk with
  at least 2 tokens gives one record, split at a sentence boundary drawn with ``seed`` (at the
  middle when the chunk holds a single sentence). A record holds ``segment_a`` and ``segment_b``
  (B really follows A in the document), ``random_b`` (a span of the same length as B starting at
  a sentence start of a *different* document, drawn with ``seed``; from the same document only
  when the store has one document), ``word_ids_a`` / ``word_ids_b`` / ``word_ids_random_b`` (each
  from 0), and ``input_ids`` = A + B with ``word_ids`` (B's words after A's) and
  ``sentence_starts``. NSP picks B or ``random_b`` (label "is next"), SOP keeps or swaps A and B,
  with torch's RNG in ``make_batch``. ``len(A) + len(B) <= max_len`` (so pass
  ``seq_len - 3`` for ``[CLS] A [SEP] B [SEP]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from plmkit.data.corpus import CorpusConfig, CorpusStats, expand_inputs, iter_documents
from plmkit.errors import UserError

FORMAT = "plmkit-token-store"
VERSION = 1
WORD, SENT, DOC = 1, 2, 4
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
SPLITTER = "rule-based: .!?… + closing quotes + whitespace, 。！？； and line breaks (plmkit.tokenization.words.sentence_starts)"


def choose_dtype(vocab_size: int, dtype: str | None = None) -> str:
    """``uint16`` when every id fits, else ``uint32``; a forced dtype that is too small is a UserError."""
    if dtype is None:
        return "uint16" if vocab_size <= 1 << 16 else "uint32"
    if dtype not in DTYPES:
        raise UserError(f"store dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    limit = int(np.iinfo(DTYPES[dtype]).max) + 1
    if vocab_size > limit:
        raise UserError(f"vocabulary of {vocab_size} ids does not fit the store dtype {dtype} (at most {limit}); use uint32")
    return dtype


# ---------------------------------------------------------------------- encoding
def encode_documents(tok: Any, docs: list[str], dtype: str, words: bool = True, sentences: bool = True,
                     encs: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode ``docs`` (no special tokens) -> (ids, flags, lengths) for one batch.

    ``lengths[i] == 0`` marks an empty document (nothing stored). ``encs``: the batch's
    ``tokenizers.Encoding`` objects when already computed (the pipelined path of ``prepare``).
    """
    from plmkit.tokenization.words import has_cjk, sentence_starts, word_ids_for

    if encs is None:
        encs = tok.backend.encode_batch(docs, add_special_tokens=False)
    lengths = np.zeros(len(docs), dtype=np.int64)
    all_ids: list[int] = []
    all_wids: list[int] = []
    sent_pos: list[int] = []
    base = 0
    chinese = getattr(tok, "chinese_words", True)
    for i, (doc, enc) in enumerate(zip(docs, encs)):
        ids = enc.ids
        n = len(ids)
        if n == 0:
            continue
        lengths[i] = n
        all_ids += ids
        if words:
            if chinese and not doc.isascii() and has_cjk(doc):
                all_wids += word_ids_for(doc, enc.offsets, enc.word_ids, True)  # type: ignore[arg-type]
            else:
                all_wids += enc.word_ids
        if sentences:
            starts = sentence_starts(doc)
            if len(starts) > 1:
                for c in starts[1:]:
                    t = enc.char_to_token(c)
                    if t is not None:
                        sent_pos.append(base + t)
        base += n
    total = base
    ids_arr = np.array(all_ids, dtype=DTYPES[dtype])
    flags = np.zeros(total, dtype=np.uint8)
    if total:
        nz = lengths[lengths > 0]
        starts_arr = np.cumsum(nz) - nz
        if words:
            w = np.array(all_wids, dtype=np.int64)
            ws = np.empty(total, dtype=bool)
            ws[0] = True
            np.not_equal(w[1:], w[:-1], out=ws[1:])
            flags[ws] = WORD
        flags[starts_arr] |= DOC | SENT | WORD
        if sent_pos:
            flags[np.asarray(sent_pos, dtype=np.int64)] |= SENT
    return ids_arr, flags, lengths


_WORKER_TOK = None


def _worker_init(tok_state: Any) -> None:
    global _WORKER_TOK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _WORKER_TOK = tok_state


def _worker_encode(args: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    docs, dtype, words, sentences = args
    return encode_documents(_WORKER_TOK, docs, dtype, words, sentences)


def _batches(docs: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    buf: list[str] = []
    chars = 0
    for d in docs:
        buf.append(d)
        chars += len(d)
        if len(buf) >= max_docs or chars >= max_chars:
            yield buf
            buf, chars = [], 0
    if buf:
        yield buf


class _ShardWriter:
    """Appends (ids, flags, doc starts) to the shards of a store directory, hashing as it goes."""

    def __init__(self, root: Path, dtype: str, shard_tokens: int) -> None:
        self.root = root
        (root / "shards").mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self.files: dict[str, Any] = {}
        self.hashes: dict[str, Any] = {}
        self.n_tokens = 0
        self.n_docs = 0
        self.n_sent = 0

    def _open(self) -> None:
        name = f"{len(self.shards):05d}"
        for ext in ("ids", "flags", "docs"):
            self.files[ext] = open(self.root / "shards" / f"{name}.{ext}", "wb")
            self.hashes[ext] = hashlib.sha256()
        self.shards.append({"name": name, "num_tokens": 0, "num_documents": 0, "num_sentences": 0})

    def _write(self, ext: str, arr: np.ndarray) -> None:
        b = arr.tobytes()
        self.files[ext].write(b)
        self.hashes[ext].update(b)

    def _close(self) -> None:
        if not self.files:
            return
        cur = self.shards[-1]
        self._write("docs", np.asarray([cur["num_tokens"]], dtype="<i8"))
        cur["sha256"] = {ext: h.hexdigest() for ext, h in self.hashes.items()}
        for f in self.files.values():
            f.close()
        self.files = {}

    def add(self, ids: np.ndarray, flags: np.ndarray, lengths: np.ndarray) -> None:
        lengths = lengths[lengths > 0]
        pos = 0
        while len(lengths):
            if not self.files or self.shards[-1]["num_tokens"] >= self.shard_tokens:
                self._close()
                self._open()
            cur = self.shards[-1]
            room = self.shard_tokens - cur["num_tokens"]
            # as many whole documents as fit (at least one, so a huge document gets its own shard)
            k = max(1, int(np.searchsorted(np.cumsum(lengths), room, side="right")))
            take = int(lengths[:k].sum())
            starts = cur["num_tokens"] + np.concatenate([[0], np.cumsum(lengths[: k - 1])])
            self._write("ids", ids[pos: pos + take].astype(f"<{np.dtype(DTYPES[self.dtype]).str[1:]}", copy=False))
            f = flags[pos: pos + take]
            self._write("flags", f)
            self._write("docs", starts.astype("<i8"))
            ns = int(np.count_nonzero(f & SENT))
            cur["num_tokens"] += take
            cur["num_documents"] += k
            cur["num_sentences"] += ns
            self.n_tokens += take
            self.n_docs += k
            self.n_sent += ns
            pos += take
            lengths = lengths[k:]

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def install_store(tmp: Path, out: Path) -> None:
    """Move the finished store ``tmp`` to ``out``, replacing an older store there (moved aside first, then
    removed, so ``out`` never holds a mix of the two)."""
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _input_fingerprint(paths: list[Path], options: dict) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    return h.hexdigest()


def _read_manifest(root: Path) -> dict:
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise UserError(f"{root}: not a token store (no manifest.json); build one with plm prepare")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{mpath}: cannot read the manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{mpath}: not a plmkit token store manifest (format {m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("version") != VERSION:
        raise UserError(f"{mpath}: token store version {m.get('version')!r}, this plmkit reads version {VERSION}")
    return m


def prepare(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    doc_sep: str = "line",
    text_field: str = "text",
    errors: str = "strict",
    format: str = "auto",
    dtype: str | None = None,
    shard_tokens: int = 1 << 27,
    batch_docs: int = 4096,
    batch_chars: int = 1 << 20,
    num_workers: int = 0,
    words: bool = True,
    sentences: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    heartbeat: bool = True,
) -> dict:
    """Tokenize ``inputs`` into a token store at ``out_dir``; returns the manifest (also ``out_dir/manifest.json``).

    ``tokenizer``: a ``plmkit.tokenization.Tokenizer`` or a path for ``load_tokenizer``.
    ``progress``: tqdm bar on stderr (``None`` = only when stderr is a terminal). ``heartbeat``: without a bar
    and with stderr not a terminal, a plain progress line every ``PLMKIT_PROGRESS_EVERY`` seconds.
    """
    from plmkit.tokenization import Tokenizer, load_tokenizer

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    config = CorpusConfig(doc_sep=doc_sep, text_field=text_field, errors=errors, format=format)  # type: ignore[arg-type]
    dt = choose_dtype(len(tok), dtype)
    if shard_tokens <= 0:
        raise UserError(f"shard_tokens must be positive, got {shard_tokens}")
    paths = expand_inputs(inputs)
    out = Path(out_dir)
    options = {"corpus": config.to_dict(), "dtype": dt, "tokenizer": tok.fingerprint, "words": words,
               "sentences": sentences, "chinese_words": tok.chinese_words}
    fp = _input_fingerprint(paths, options)
    say = log or (lambda msg: None)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out}: exists and is not a directory")
        if (out / "manifest.json").is_file() and not overwrite:
            old = _read_manifest(out)
            if old.get("inputs_fingerprint") == fp:
                say(f"{out}: up to date ({old['num_tokens']} tokens); nothing to do")
                return old
            if old.get("tokenizer", {}).get("fingerprint") != tok.fingerprint:
                raise UserError(f"{out}: a token store written by another tokenizer "
                                f"({old.get('tokenizer', {}).get('fingerprint', '?')[:12]} vs {tok.fingerprint[:12]}); "
                                f"pass --overwrite or choose another --out")
            raise UserError(f"{out}: a token store built from other inputs or options; pass --overwrite or choose another --out")
        if any(out.iterdir()) and not overwrite and not (out / "manifest.json").is_file():
            raise UserError(f"{out}: directory exists and is not empty (and is not a token store); pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    t0 = time.time()
    stats = CorpusStats()
    bar = None
    try:
        total_bytes = sum(p.stat().st_size for p in paths)
        if progress is None:
            import sys

            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
                       disable=False, dynamic_ncols=True, smoothing=0.1)
        from plmkit.progress import Heartbeat

        beat = Heartbeat("prepare", total_bytes, "byte", bar_shown=bar is not None,
                         enabled=None if heartbeat else False, scale=1e6, unit_label="MB")
        writer = _ShardWriter(tmp, dt, shard_tokens)
        empty = 0
        consumed = [0]  # input bytes read so far; the bar advances when the batch they fed is written

        def on_bytes(n: int) -> None:
            consumed[0] += n

        shown = [0]

        def write(result: tuple, mark: int) -> None:
            nonlocal empty
            ids, flags, lengths = result
            empty += int(np.count_nonzero(lengths == 0))
            writer.add(ids, flags, lengths)
            beat.update(mark, tokens=f"{writer.n_tokens:,}")
            if bar is not None and mark > shown[0]:
                bar.update(mark - shown[0])
                shown[0] = mark

        docs = iter_documents(paths, config, stats, on_bytes=on_bytes)
        batches = ((b, consumed[0]) for b in _batches(docs, batch_docs, batch_chars))
        if num_workers <= 0:
            # Pipelined: the Rust tokenizer (its own threads, GIL released) encodes batch k+1 in a
            # helper thread while this thread reads input and turns batch k into arrays.
            from concurrent.futures import ThreadPoolExecutor

            def enc(batch: list[str]) -> list:
                return tok.backend.encode_batch(batch, add_special_tokens=False)

            with ThreadPoolExecutor(1) as ex:
                prev = None
                for batch, mark in batches:
                    fut = ex.submit(enc, batch)
                    if prev is not None:
                        write(encode_documents(tok, prev[0], dt, words, sentences, prev[1].result()), prev[2])
                    prev = (batch, fut, mark)
                if prev is not None:
                    write(encode_documents(tok, prev[0], dt, words, sentences, prev[1].result()), prev[2])
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(num_workers, initializer=_worker_init, initargs=(tok,)) as pool:
                pending: deque = deque()
                for batch, mark in batches:
                    pending.append((pool.apply_async(_worker_encode, ((batch, dt, words, sentences),)), mark))
                    while len(pending) > 2 * num_workers:
                        fut, m = pending.popleft()
                        write(fut.get(), m)
                while pending:
                    fut, m = pending.popleft()
                    write(fut.get(), m)
        shards = writer.finish()
        if bar is not None:
            bar.close()
            bar = None
        if stats.documents != writer.n_docs + empty:  # pragma: no cover - an internal invariant
            raise RuntimeError(f"document accounting mismatch: {stats.documents} read, {writer.n_docs} stored + {empty} empty")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": dt,
            "num_tokens": writer.n_tokens,
            "num_documents": writer.n_docs,
            "num_sentences": writer.n_sent,
            "input": {
                "files": stats.files,
                "empty_files": stats.empty_files,
                "bytes": stats.bytes,
                "documents": stats.documents,
                "empty_documents": empty,
                "replaced_characters": stats.replaced,
                "per_file": stats.per_file,
            },
            "tokenizer": {"fingerprint": tok.fingerprint, "kind": tok.kind, "vocab_size": len(tok)},
            "corpus": config.to_dict(),
            "word_ids": "pre-tokenizer words; CJK grouped by jieba" if words else None,
            "sentence_splitter": SPLITTER if sentences else None,
            "shards": shards,
            "inputs_fingerprint": fp,
            "options": options,
            "seconds": round(time.time() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        install_store(tmp, out)
    except BaseException:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    mb = stats.bytes / 1e6
    secs = max(manifest["seconds"], 1e-9)
    say(f"{out}: {manifest['num_documents']} documents ({empty} empty), {manifest['num_tokens']} tokens, "
        f"{len(shards)} shard(s), {mb:.1f} MB in {secs:.1f}s ({mb / secs:.1f} MB/s)")
    return manifest


# ---------------------------------------------------------------------- reading
class View(Sequence):
    """A map-style view of records (``__len__`` / ``__getitem__``) with deterministic shuffling."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get(self, i: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of length {n}")
        return self._get(i)

    def shuffled(self, seed: int = 0) -> "View":
        """The same records in a permutation fixed by ``seed``."""
        return _Shuffled(self, seed)


class _Shuffled(View):
    def __init__(self, base: View, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.perm = np.random.default_rng(seed).permutation(len(base))

    def __len__(self) -> int:
        return len(self.base)

    def _get(self, i: int) -> dict:
        return self.base[int(self.perm[i])]


def _record(ids: np.ndarray, flags: np.ndarray) -> dict:
    word_ids = np.cumsum(flags & WORD != 0) - 1
    if len(word_ids) and word_ids[0] < 0:  # the window starts inside a word
        word_ids += 1
    return {
        "input_ids": ids.astype(np.int64).tolist(),
        "word_ids": word_ids.tolist(),
        "sentence_starts": np.flatnonzero(flags & SENT).tolist(),
        "doc_boundaries": np.flatnonzero(flags & DOC).tolist(),
    }


class TokenStore:
    """Read a store written by ``prepare`` (memory-mapped; nothing is loaded eagerly).

    ``tokenizer`` (optional): check that the store was written by this tokenizer (UserError if not).
    """

    def __init__(self, path: str | os.PathLike, tokenizer: Any = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: no such token store directory")
        self.manifest = _read_manifest(self.path)
        m = self.manifest
        self.dtype = m["dtype"]
        if self.dtype not in DTYPES:
            raise UserError(f"{self.path}/manifest.json: unknown dtype {self.dtype!r}")
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)
        self._ids: list[np.ndarray] = []
        self._flags: list[np.ndarray] = []
        self._docs: list[np.ndarray] = []
        item = np.dtype(DTYPES[self.dtype]).newbyteorder("<")
        for sh in m["shards"]:
            base = self.path / "shards" / sh["name"]
            n, nd = sh["num_tokens"], sh["num_documents"]
            for ext, size in (("ids", n * item.itemsize), ("flags", n), ("docs", (nd + 1) * 8)):
                f = Path(f"{base}.{ext}")
                if not f.is_file():
                    raise UserError(f"{f}: missing shard file of token store {self.path}")
                if f.stat().st_size != size:
                    raise UserError(f"{f}: {f.stat().st_size} bytes, the manifest says {size}; the store is damaged (re-run plm prepare --overwrite)")
            self._ids.append(np.memmap(f"{base}.ids", dtype=item, mode="r", shape=(n,)))
            self._flags.append(np.memmap(f"{base}.flags", dtype=np.uint8, mode="r", shape=(n,)))
            self._docs.append(np.memmap(f"{base}.docs", dtype="<i8", mode="r", shape=(nd + 1,)))
        self._tok_base = np.concatenate([[0], np.cumsum([s["num_tokens"] for s in m["shards"]])]).astype(np.int64)
        self._doc_base = np.concatenate([[0], np.cumsum([s["num_documents"] for s in m["shards"]])]).astype(np.int64)

    # -------------------------------------------------------------- metadata
    num_tokens = property(lambda self: int(self.manifest["num_tokens"]))
    num_documents = property(lambda self: int(self.manifest["num_documents"]))
    num_sentences = property(lambda self: int(self.manifest.get("num_sentences", 0)))
    tokenizer_fingerprint = property(lambda self: self.manifest["tokenizer"]["fingerprint"])
    vocab_size = property(lambda self: int(self.manifest["tokenizer"]["vocab_size"]))

    def __repr__(self) -> str:
        return (f"TokenStore({str(self.path)!r}, tokens={self.num_tokens}, documents={self.num_documents}, "
                f"shards={len(self._ids)}, dtype={self.dtype})")

    def check_tokenizer(self, tokenizer: Any) -> None:
        """UserError unless ``tokenizer`` (a Tokenizer or its fingerprint) wrote this store."""
        fp = tokenizer if isinstance(tokenizer, str) else tokenizer.fingerprint
        if fp != self.tokenizer_fingerprint:
            raise UserError(f"{self.path}: token store written by another tokenizer "
                            f"(store {self.tokenizer_fingerprint[:12]}, given {fp[:12]}); re-run plm prepare with this tokenizer")

    def verify(self) -> None:
        """Recompute every shard checksum (UserError on a mismatch)."""
        for sh in self.manifest["shards"]:
            for ext, want in sh["sha256"].items():
                f = self.path / "shards" / f"{sh['name']}.{ext}"
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                if h.hexdigest() != want:
                    raise UserError(f"{f}: checksum mismatch; the store is damaged (re-run plm prepare --overwrite)")

    # -------------------------------------------------------------- raw access
    def tokens(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, flags) of global token positions ``[start, end)`` (may cross shards)."""
        start, end = max(0, int(start)), min(self.num_tokens, int(end))
        if end <= start:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        s = int(np.searchsorted(self._tok_base, start, side="right")) - 1
        ids, flags = [], []
        pos = start
        while pos < end:
            b = int(self._tok_base[s])
            stop = min(end, int(self._tok_base[s + 1]))
            ids.append(self._ids[s][pos - b: stop - b])
            flags.append(self._flags[s][pos - b: stop - b])
            pos = stop
            s += 1
        if len(ids) == 1:
            return np.asarray(ids[0]), np.asarray(flags[0])
        return np.concatenate(ids), np.concatenate(flags)

    def document_span(self, i: int) -> tuple[int, int]:
        """Global token span ``[start, end)`` of document ``i``."""
        s = int(np.searchsorted(self._doc_base, i, side="right")) - 1
        k = i - int(self._doc_base[s])
        d = self._docs[s]
        b = int(self._tok_base[s])
        return b + int(d[k]), b + int(d[k + 1])

    def document_starts(self) -> np.ndarray:
        """Global start offset of every document, plus ``num_tokens`` at the end (int64)."""
        parts = [np.asarray(d[:-1]) + b for d, b in zip(self._docs, self._tok_base[:-1])]
        return np.concatenate(parts + [np.asarray([self.num_tokens])]).astype(np.int64)

    def sentence_start_positions(self) -> np.ndarray:
        """Global offsets of all sentence starts (int64)."""
        parts = [np.flatnonzero(np.asarray(f) & SENT) + b for f, b in zip(self._flags, self._tok_base[:-1])]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    # -------------------------------------------------------------- views
    def windows(self, seq_len: int, stride: int | None = None, drop_last: bool = True) -> "Windows":
        return Windows(self, seq_len, stride, drop_last)

    def documents(self, max_len: int | None = None) -> "Documents":
        return Documents(self, max_len)

    def sentence_pairs(self, max_len: int, seed: int = 0) -> "SentencePairs":
        return SentencePairs(self, max_len, seed)


class Windows(View):
    """Packed fixed-length windows over the whole token stream (see the module docstring)."""

    def __init__(self, store: TokenStore, seq_len: int, stride: int | None = None, drop_last: bool = True) -> None:
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        stride = seq_len if stride is None else stride
        if stride <= 0:
            raise ValueError(f"stride must be positive, got {stride}")
        self.store, self.seq_len, self.stride, self.drop_last = store, seq_len, stride, drop_last
        n = store.num_tokens
        if drop_last:
            self._n = 0 if n < seq_len else (n - seq_len) // stride + 1
        else:
            self._n = 0 if n == 0 else max(0, -(-(n - seq_len) // stride)) + 1

    def __len__(self) -> int:
        return self._n

    def _get(self, i: int) -> dict:
        start = i * self.stride
        ids, flags = self.store.tokens(start, start + self.seq_len)
        return _record(ids, flags)


class Documents(View):
    """One record per stored document (``input_ids``, ``word_ids``, ``sentence_starts``)."""

    def __init__(self, store: TokenStore, max_len: int | None = None) -> None:
        self.store, self.max_len = store, max_len

    def __len__(self) -> int:
        return self.store.num_documents

    def _get(self, i: int) -> dict:
        s, e = self.store.document_span(i)
        if self.max_len is not None:
            e = min(e, s + self.max_len)
        rec = _record(*self.store.tokens(s, e))
        del rec["doc_boundaries"]
        return rec


class SentencePairs(View):
    """Consecutive segments A, B of one document + a random other-document span (NSP / SOP)."""

    def __init__(self, store: TokenStore, max_len: int, seed: int = 0) -> None:
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2 for sentence pairs, got {max_len}")
        self.store, self.max_len, self.seed = store, max_len, seed
        rng = np.random.default_rng(seed)
        doc_starts = store.document_starts()
        sent = store.sentence_start_positions()
        rows: list[tuple[int, int, int, int]] = []  # a_start, b_start, b_end, doc
        n_docs = len(doc_starts) - 1
        # sentence starts grouped per document
        lo = np.searchsorted(sent, doc_starts[:-1], side="left")
        hi = np.searchsorted(sent, doc_starts[1:], side="left")
        for d in range(n_docs):
            ds, de = int(doc_starts[d]), int(doc_starts[d + 1])
            bounds = [int(x) for x in sent[lo[d]:hi[d]]]
            if not bounds or bounds[0] != ds:
                bounds.insert(0, ds)
            bounds.append(de)
            # sentences longer than max_len are cut into max_len pieces
            pieces: list[int] = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                pieces.extend(range(a, b, max_len))
            pieces.append(de)
            k = 0
            while k < len(pieces) - 1:
                j = k + 1
                while j + 1 < len(pieces) and pieces[j + 1] - pieces[k] <= max_len:
                    j += 1
                cs, ce = pieces[k], pieces[j]
                if ce - cs >= 2:
                    if j - k >= 2:
                        split = pieces[int(rng.integers(k + 1, j))]
                    else:
                        split = cs + (ce - cs) // 2
                    rows.append((cs, split, ce, d))
                k = j
        self._rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        # random B: a sentence start in another document, same length as B (cut at that document's end)
        n = len(self._rows)
        rand = np.zeros((n, 2), dtype=np.int64)
        if n:
            docs = self._rows[:, 3]
            if n_docs > 1:
                other = rng.integers(0, n_docs - 1, size=n)
                other = other + (other >= docs)
            else:
                other = docs.copy()
            r = rng.random(n)
            for i in range(n):
                o = int(other[i])
                ss = sent[lo[o]:hi[o]]
                if len(ss) == 0:
                    ss = np.asarray([doc_starts[o]])
                start = int(ss[int(r[i] * len(ss))])
                blen = int(self._rows[i, 2] - self._rows[i, 1])
                rand[i] = (start, min(start + blen, int(doc_starts[o + 1])))
        self._rand = rand

    def __len__(self) -> int:
        return len(self._rows)

    def _get(self, i: int) -> dict:
        a0, b0, b1, _d = (int(x) for x in self._rows[i])
        r0, r1 = (int(x) for x in self._rand[i])
        ids, flags = self.store.tokens(a0, b1)
        rids, rflags = self.store.tokens(r0, r1)
        k = b0 - a0
        a, b = _record(ids[:k], flags[:k]), _record(ids[k:], flags[k:])
        r = _record(rids, rflags)
        nwa = (a["word_ids"][-1] + 1) if a["word_ids"] else 0
        return {
            "input_ids": a["input_ids"] + b["input_ids"],
            "word_ids": a["word_ids"] + [w + nwa for w in b["word_ids"]],
            "sentence_starts": a["sentence_starts"] + [s + k for s in b["sentence_starts"]],
            "segment_a": a["input_ids"],
            "segment_b": b["input_ids"],
            "random_b": r["input_ids"],
            "word_ids_a": a["word_ids"],
            "word_ids_b": b["word_ids"],
            "word_ids_random_b": r["word_ids"],
        }
