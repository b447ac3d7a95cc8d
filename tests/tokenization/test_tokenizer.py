"""Tokenizers: parity with transformers on real files, each kind trained on real text, round trips."""

from __future__ import annotations

import json

import pytest

import plmkit
from plmkit.errors import UserError
from plmkit.tokenization import load_tokenizer, train_tokenizer, train_tokenizer_from_iterator
from tests.conftest import data_dir
from tests.tokenization.conftest import need

transformers = pytest.importorskip("transformers")


def _sst2_sentences() -> list[str]:
    rows = need(data_dir() / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1:]
    return [r.split("\t")[0] for r in rows if r]


def test_minilm_matches_transformers_on_wikitext_and_sst2(minilm_dir):
    tok = plmkit.load_tokenizer(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    wiki = need(data_dir() / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").split("\n")
    sst = _sst2_sentences()
    assert len(wiki) > 3000 and len(sst) == 872
    for lines in (wiki, sst):
        ours = tok.encode_batch(lines)
        theirs = hf(lines)["input_ids"]
        bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        assert not bad, f"{len(bad)} lines differ, first: {lines[bad[0]]!r}"
        assert len(ours) == len(theirs)
    # encode() of single lines (incl. long ones: the file's own truncation at 128 must not apply)
    longest = max(wiki, key=len)
    assert tok.encode(longest) == hf(longest)["input_ids"] and len(tok.encode(longest)) > 128
    assert tok.decode(tok.encode(sst[0]), skip_special_tokens=True) == hf.decode(hf(sst[0])["input_ids"], skip_special_tokens=True)
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id) == (
        hf.pad_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id, hf.unk_token_id)
    assert tok.bos_token_id is None and tok.eos_token_id is None
    assert len(tok) == len(hf) == 30522 and tok.kind == "wordpiece" and tok.model_max_length == 512


def test_minilm_vocab_txt_gives_same_ids(minilm_dir):
    tok = load_tokenizer(minilm_dir / "vocab.txt")
    ref = load_tokenizer(minilm_dir)
    sst = _sst2_sentences()
    assert tok.kind == "wordpiece"
    assert tok.encode_batch(sst) == ref.encode_batch(sst)


def test_batch_call_matches_transformers(minilm_dir):
    tok = plmkit.load_tokenizer(minilm_dir)
    hf = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    a = _sst2_sentences()[:40]
    b = _sst2_sentences()[40:80]
    for kw in (dict(padding=True), dict(padding="max_length", truncation=True, max_length=24),
               dict(truncation=True, max_length=12), dict(padding=True, truncation="only_second", max_length=80)):
        ours = tok(a, text_pairs=b, **kw)
        theirs = hf(a, b, **kw)
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert ours[key] == theirs[key], (kw, key)
    ours = tok(a, padding=True, return_offsets=True, return_tensors="pt")
    theirs = hf(a, padding=True, return_offsets_mapping=True, return_tensors="pt")
    assert ours["input_ids"].equal(theirs["input_ids"]) and ours["attention_mask"].equal(theirs["attention_mask"])
    assert ours["offset_mapping"].equal(theirs["offset_mapping"])
    single = tok("hello world", return_word_ids=True)
    assert single["input_ids"] == hf("hello world")["input_ids"] and single["word_ids"] == [None, 0, 1, None]
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="too short"):
        tok(["a b c d e f g h"], text_pairs=["x"], truncation="only_second", max_length=5)


def test_word_ids_group_wordpieces(minilm_dir):
    tok = load_tokenizer(minilm_dir)
    text = "The unaffable tokenizer, honestly."
    ids = tok.encode(text)
    toks = tok.convert_ids_to_tokens(ids)
    w = tok.word_ids(text)
    assert len(w) == len(ids) and w[0] is None and w[-1] is None
    # every "##" piece belongs to the word of the piece before it, every other token starts a new word
    for i in range(2, len(ids) - 1):
        if toks[i].startswith("##"):
            assert w[i] == w[i - 1]
        else:
            assert w[i] == w[i - 1] + 1
    assert w[1] == 0


KINDS = [("wordpiece", {}, 800), ("bpe", {}, 800), ("bpe", {"style": "gpt2"}, 800), ("unigram", {}, 800),
         ("char", {}, None)]


@pytest.mark.parametrize("kind,opts,size", KINDS, ids=["wordpiece", "bpe", "bpe-gpt2", "unigram", "char"])
def test_each_kind_on_english(kind, opts, size, english_file, tmp_path):
    tok = train_tokenizer([english_file], kind=kind, vocab_size=size, **opts)
    lines = [x for x in english_file.read_text(encoding="utf-8").split("\n") if x.strip()][:300]
    assert tok.kind == kind
    if size is not None:
        assert len(tok) <= size and len(tok) > size // 2
    # the family's special tokens
    if kind in ("wordpiece", "char"):
        assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        ids = tok.encode("First Citizen")
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    elif kind == "bpe" and not opts:
        assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        assert tok.encode("a", "b")[:1] == [0] and tok.encode("a", "b").count(2) == 3  # <s> A </s></s> B </s>
    elif kind == "bpe":
        assert tok.eos_token_id == tok.bos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
        assert tok.pad_token_id is None and tok.encode("First") == tok.encode("First", add_special_tokens=False)
    else:
        assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
        sent = tok.sentinel_token_ids
        assert len(sent) == 100 and sent[0] == len(tok) - 1 and sent[99] == len(tok) - 100  # T5 order
        assert tok.encode("First")[-1] == tok.eos_token_id
    # the tokenizer compresses real text: fewer tokens than characters (char: exactly the characters)
    n_tok = sum(len(x) for x in tok.encode_batch(lines, add_special_tokens=False))
    n_chr = sum(len(x) for x in lines)
    if kind == "char":
        assert n_tok == n_chr
    else:
        assert n_tok < 0.6 * n_chr
    # round trip where the kind guarantees it
    if kind in ("bpe", "char"):
        for x in lines:
            assert tok.decode(tok.encode(x), skip_special_tokens=True) == x
        if kind == "bpe":
            odd = "Ünïcödé  spaces\ttabs\n新しい 😀"
            assert tok.decode(tok.encode(odd, add_special_tokens=False)) == odd
    # save -> transformers reads the same ids; load back -> same ids and roles
    tok.save(tmp_path / "tok")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert hf(lines[:50])["input_ids"] == tok(lines[:50])["input_ids"]
    assert len(hf) == len(tok)
    again = load_tokenizer(tmp_path / "tok")
    assert again.kind == kind and again.special_tokens == tok.special_tokens
    assert again.encode_batch(lines) == tok.encode_batch(lines) and again.fingerprint == tok.fingerprint
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert cfg["plmkit_kind"] == kind


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram", "char"])
def test_each_kind_on_chinese(kind, chinese_files):
    size = {"char": None, "unigram": 4000}.get(kind, 1500)  # Unigram keeps every distinct character
    if kind == "unigram":
        with pytest.raises(UserError, match="keeps every distinct character"):
            train_tokenizer(chinese_files, kind=kind, vocab_size=1500)
    tok = train_tokenizer(chinese_files, kind=kind, vocab_size=size)
    text = "却说那悟空与八戒、沙僧保护唐僧往西天取经。"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids
    if kind in ("bpe", "char"):
        assert tok.decode(ids) == text
    # whole-word ids follow jieba words: two CJK tokens share a word id iff their first characters
    # lie in the same jieba word
    import jieba

    plain = "却说那悟空与八戒沙僧保护唐僧往西天取经"
    jword = [k for k, (word, s, e) in enumerate(jieba.tokenize(plain, HMM=False)) for _ in range(s, e)]
    enc = tok.backend.encode(plain, add_special_tokens=False)
    w = tok.word_ids(plain, add_special_tokens=False)
    cjk = [(i, jword[s]) for i, (s, e) in enumerate(enc.offsets) if e > s]
    assert len(cjk) >= 5
    for (i, ji), (k, jk) in zip(cjk, cjk[1:]):
        assert (w[i] == w[k]) == (ji == jk), (tok.convert_ids_to_tokens(enc.ids), w)
    if kind == "char":
        assert w == jword  # one token per character: exactly jieba's segmentation
    if enc.tokens[0] == "▁":
        assert w[0] == w[1]  # the Metaspace marker belongs to the word after it
    assert len(set(w)) < len(w) or kind == "unigram"


def test_gpt2_vocab_json_and_merges(english_file, tmp_path):
    tok = train_tokenizer([english_file], kind="bpe", vocab_size=600, style="gpt2")
    tok.backend.model.save(str(tmp_path))  # vocab.json + merges.txt
    loaded = load_tokenizer(tmp_path / "vocab.json")
    lines = english_file.read_text(encoding="utf-8").split("\n")[:200]
    assert loaded.kind == "bpe" and loaded.eos_token_id == tok.eos_token_id
    assert loaded.encode_batch(lines) == tok.encode_batch(lines)
    hf = transformers.GPT2Tokenizer.from_pretrained(str(tmp_path))  # reads vocab.json + merges.txt
    assert hf(lines)["input_ids"] == loaded.encode_batch(lines)


def test_roberta_vocab_json_and_merges(english_file, tmp_path):
    tok = train_tokenizer([english_file], kind="bpe", vocab_size=600)
    tok.backend.model.save(str(tmp_path))
    loaded = load_tokenizer(tmp_path)
    lines = english_file.read_text(encoding="utf-8").split("\n")[:200]
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.encode_batch(lines) == tok.encode_batch(lines)
    assert loaded.encode("a <mask> b") == tok.encode("a <mask> b")
    hf = transformers.RobertaTokenizer.from_pretrained(str(tmp_path))
    assert hf(lines)["input_ids"] == loaded.encode_batch(lines)


def test_special_tokens_options(english_file):
    lines = english_file.read_text(encoding="utf-8").split("\n")[:500]
    tok = train_tokenizer_from_iterator(lines, "unigram", 400, {"mask": "[MASK]"}, sentinels=5)
    assert tok.mask_token_id is not None and len(tok.sentinel_token_ids) == 5
    tok = train_tokenizer_from_iterator(lines, "wordpiece", 400, ["[E1]", "[E2]"])
    assert tok.convert_tokens_to_ids(["[E1]", "[E2]"]) == [5, 6]
    assert "[E1]" in tok.all_special_tokens and tok.encode("[E1] x", add_special_tokens=False)[0] == 5
    import pickle  # worker processes receive tokenizers by pickle

    back = pickle.loads(pickle.dumps(tok))
    assert back.encode_batch(lines[:50]) == tok.encode_batch(lines[:50]) and len(back) == len(tok)
    tok.backend.add_tokens(["zzzqqq"])
    assert len(tok) == len(back) + 1


def test_bad_input(tmp_path, english_file):
    with pytest.raises(UserError, match="no such"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "e").mkdir()
    with pytest.raises(UserError, match="no tokenizer.json, vocab.txt"):
        load_tokenizer(tmp_path / "e")
    with pytest.raises(UserError, match="too small"):
        train_tokenizer([english_file], kind="bpe", vocab_size=100)
    with pytest.raises(UserError, match="unknown tokenizer kind"):
        train_tokenizer([english_file], kind="sentencepiece", vocab_size=100)
    with pytest.raises(UserError, match="no such file"):
        train_tokenizer([tmp_path / "nope.txt"], kind="char", vocab_size=None)
