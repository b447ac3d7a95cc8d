"""The training examples of a run, as attribution methods see them.

A training example is one DOCUMENT of the run's training token store (``store.documents()`` order;
index = example id, 0-based). Its token ids come from the store (no special tokens, as prepared);
its text comes from the corpus files the store was prepared from (the run's ``data.train`` by
default), read with the run's document splitting, so ``text(i)`` is exactly what was tokenized into
document ``i``. Documents that tokenized to nothing are not stored, so they are skipped here too.

Without corpus files (``from_store(..., corpus=None)``) the text is the tokenizer's decoding of the
stored ids. ``from_files`` / ``from_texts`` build examples from raw text for a model without a run
(``plm attribute --model M --corpus FILES``); their ids are tokenized on demand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from plmkit.errors import UserError


def _read_corpus(files: list[str], doc_sep: str = "line", text_field: str = "text", fmt: str = "auto",
                 errors: str = "strict") -> list[str]:
    from plmkit.data.corpus import CorpusConfig, iter_documents

    cfg = CorpusConfig(doc_sep=doc_sep, text_field=text_field, errors=errors, format=fmt)  # type: ignore[arg-type]
    return list(iter_documents(files, cfg))


class TrainingExamples:
    """``len(ex)``, ``ex.text(i)``, ``ex.input_ids(i)`` over the examples of a run, a store or raw texts.

    Args:
        texts: one string per example (None: decode the store's ids on demand).
        tokenizer: a plmkit ``Tokenizer`` (encodes ``texts`` when there is no store).
        store: a ``TokenStore`` whose documents are the examples (ids come from it).
        max_len: truncate ``input_ids`` to this many tokens (None: whole documents).
        source: a description for messages.
    """

    def __init__(self, texts: list[str] | None, tokenizer: Any, store: Any = None, max_len: int | None = None,
                 source: str = ""):
        if texts is None and store is None:
            raise ValueError("TrainingExamples needs texts or a token store")
        self._texts = texts
        self.tokenizer = tokenizer
        self.store = store
        self.max_len = max_len
        self.source = source
        self._ids_cache: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, corpus: list[str] | None = None,
                 max_len: int | None = None) -> "TrainingExamples":
        """The documents of ``RUN/data/train``; texts from ``corpus`` files (default: the recipe's data.train)."""
        import yaml

        from plmkit import load_tokenizer

        run = Path(run_dir)
        if not (run / "recipe.yaml").is_file():
            raise UserError(f"--run {run}: not a plmkit run directory (no recipe.yaml)")
        store_dir = run / "data" / "train"
        if not (store_dir / "manifest.json").is_file():
            raise UserError(f"--run {run}: no training token store at {store_dir} (was the run prepared?)")
        recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {}
        data = recipe.get("data") or {}
        tok = load_tokenizer(run / "tokenizer") if (run / "tokenizer" / "tokenizer.json").is_file() else \
            load_tokenizer((recipe.get("tokenizer") or {}).get("path"))
        files = list(corpus) if corpus else list(data.get("train") or [])
        return cls.from_store(store_dir, tok, corpus=files or None, max_len=max_len,
                              doc_sep=data.get("doc_sep", "line"), text_field=data.get("text_field", "text"),
                              fmt=data.get("format", "auto"), errors=data.get("encoding_errors", "strict"))

    @classmethod
    def from_store(cls, store_dir: str | os.PathLike, tokenizer: Any, corpus: list[str] | None = None,
                   max_len: int | None = None, doc_sep: str = "line", text_field: str = "text",
                   fmt: str = "auto", errors: str = "strict") -> "TrainingExamples":
        """The documents of a token store; texts from ``corpus`` (checked against the store) or decoded."""
        from plmkit.data import TokenStore

        store = TokenStore(store_dir, tokenizer=tokenizer)
        texts = None
        if corpus:
            for f in corpus:
                if not Path(f).exists():
                    raise UserError(f"--corpus {f}: no such file or directory")
            texts = _read_corpus(list(corpus), doc_sep, text_field, fmt, errors)
            if len(texts) != store.num_documents:
                # documents that tokenize to nothing are not stored: drop them the same way
                ids = tokenizer.encode_batch(texts, add_special_tokens=False)
                texts = [t for t, i in zip(texts, ids) if len(i)]
            ex = cls(texts, tokenizer, store, max_len, source=str(store_dir))
            ex.check_corpus(", ".join(map(str, corpus)))
            return ex
        return cls(None, tokenizer, store, max_len, source=str(store_dir))

    @classmethod
    def from_files(cls, files: Iterable[str | os.PathLike], tokenizer: Any, max_len: int | None = None,
                   doc_sep: str = "line", text_field: str = "text", fmt: str = "auto") -> "TrainingExamples":
        """One example per non-empty document of ``files`` (ids tokenized on demand)."""
        files = [str(f) for f in files]
        for f in files:
            if not Path(f).exists():
                raise UserError(f"--corpus {f}: no such file or directory")
        texts = [t for t in _read_corpus(files, doc_sep, text_field, fmt) if t.strip()]
        if not texts:
            raise UserError(f"--corpus {', '.join(files)}: no documents")
        return cls(texts, tokenizer, None, max_len, source=", ".join(files))

    @classmethod
    def from_texts(cls, texts: list[str], tokenizer: Any, max_len: int | None = None) -> "TrainingExamples":
        return cls(list(texts), tokenizer, None, max_len, source="texts")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self.store.num_documents if self.store is not None else len(self._texts)

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"example {i} out of range (0..{len(self) - 1})")
        return i

    def text(self, i: int) -> str:
        i = self._check(i)
        if self._texts is not None:
            return self._texts[i]
        return self.tokenizer.decode(self._store_ids(i))

    def texts(self) -> Iterable[str]:
        """All texts in order (decoded in batches when there are no corpus texts)."""
        if self._texts is not None:
            yield from self._texts
            return
        n = len(self)
        for s in range(0, n, 4096):
            yield from self.tokenizer.batch_decode([self._store_ids(i) for i in range(s, min(n, s + 4096))])

    def _store_ids(self, i: int, limit: int | None = None) -> list[int]:
        s, e = self.store.document_span(i)
        if limit is not None:
            e = min(e, s + limit)
        return self.store.tokens(s, e)[0].astype(np.int64).tolist()

    def input_ids(self, i: int) -> list[int]:
        """Token ids of example ``i`` (no special tokens), truncated to ``max_len``."""
        i = self._check(i)
        if self.store is not None:
            return self._store_ids(i, self.max_len)
        ids = self._ids_cache.get(i)
        if ids is None:
            ids = self.tokenizer.encode(self._texts[i], add_special_tokens=False)
            if len(self._ids_cache) < 100_000:
                self._ids_cache[i] = ids
        return ids[: self.max_len] if self.max_len else ids

    def check_corpus(self, what: str) -> None:
        """UserError unless the texts are the store's documents: same count, and a sample of documents
        (first, last and up to 30 spread between) tokenizes to the stored ids."""
        n = self.store.num_documents
        if len(self._texts) != n:
            raise UserError(f"--corpus {what}: {len(self._texts)} documents, but the run's token store "
                            f"{self.store.path} holds {n}; pass the files the run was trained on")
        if n == 0:
            return
        sample = sorted(set(np.linspace(0, n - 1, num=min(n, 32)).astype(int).tolist()))
        got = self.tokenizer.encode_batch([self._texts[i] for i in sample], add_special_tokens=False)
        for i, ids in zip(sample, got):
            if list(ids) != self._store_ids(i):
                raise UserError(f"--corpus {what}: document {i} does not match the run's token store "
                                f"{self.store.path} (it tokenizes differently); pass the files the run was "
                                f"trained on")
