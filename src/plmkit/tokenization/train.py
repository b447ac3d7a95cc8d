"""Train WordPiece, byte-level BPE, Unigram and char tokenizers with the HF ``tokenizers`` trainers.

Each family gets its own special tokens and post-processing:

========== ======================================== ==========================================
kind       special tokens (ids in this order)       post-processing / pipeline
========== ======================================== ==========================================
wordpiece  [PAD] [UNK] [CLS] [SEP] [MASK]           BERT: BertNormalizer (lower-case by default,
                                                    CJK chars split), ``[CLS] A [SEP] B [SEP]``
bpe        <s> <pad> </s> <unk> <mask>              RoBERTa: byte-level, ``<s> A </s></s> B </s>``
bpe/gpt2   <|endoftext|>                            GPT-2: byte-level, no special tokens added
unigram    <pad> </s> <unk> + <extra_id_0..99>      T5: NFKC + Metaspace (▁), ``A </s> B </s>``;
                                                    sentinels get the highest ids, ``<extra_id_0>``
                                                    the very last (as in T5)
char       [PAD] [UNK] [CLS] [SEP] [MASK]           one token per character seen (any script,
                                                    spaces and newlines included), ``[CLS] A [SEP]``
========== ======================================== ==========================================

The char tokenizer is a BPE model without merges whose vocabulary is the characters seen
(``BpeTrainer`` with ``limit_alphabet`` keeps the most frequent ones when ``vocab_size`` is
given); space, tab, newline and carriage return are always in it, since files are read one line
per document and the separators never reach the trainer. Unseen characters map to [UNK].
Byte-level BPE and char round-trip exactly, whitespace included:
``decode(encode(x, add_special_tokens=False)) == x`` for any UTF-8 text (char: when every
non-whitespace character was seen). WordPiece and Unigram normalise by design (BERT splits on
whitespace, lower-cases and decodes with single spaces; T5's NFKC collapses runs of spaces, and tabs
and newlines are [UNK] unless seen), so they do not round-trip whitespace.
``vocab_size`` counts every id, special tokens and sentinels included.

References: Schuster & Nakajima 2012 / Wu et al. 2016 (WordPiece); Sennrich et al. 2016 and
Radford et al. 2019 (byte-level BPE); Kudo 2018 (Unigram); Raffel et al. 2020 (T5 sentinels).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

from tokenizers import AddedToken
from tokenizers import Regex
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from plmkit.errors import UserError
from plmkit.tokenization.tokenizer import DEFAULT_SPECIALS, KINDS, ROLES, Tokenizer

# always in a char tokenizer's alphabet: a character-level LM must see and write line breaks
CHAR_WHITESPACE = (" ", "\n", "\t", "\r")

_ORDER = {
    "wordpiece": ["pad", "unk", "cls", "sep", "mask"],
    "char": ["pad", "unk", "cls", "sep", "mask"],
    "bpe": ["bos", "pad", "eos", "unk", "mask"],
    "gpt2": ["bos"],
    "unigram": ["pad", "eos", "unk"],
}


def _resolve_specials(family: str, special_tokens: Any) -> tuple[dict[str, str], list[str]]:
    """Role map and ordered special-token list (defaults, overridden by a dict, extended by a list)."""
    roles = dict(DEFAULT_SPECIALS[family])
    extra: list[str] = []
    if special_tokens is None:
        pass
    elif isinstance(special_tokens, dict):
        for role, tok in special_tokens.items():
            if role not in ROLES:
                raise UserError(f"special_tokens: unknown role {role!r}; expected one of {', '.join(ROLES)}")
            if tok is None:
                roles.pop(role, None)
            else:
                roles[role] = str(tok)
    else:
        extra = [str(t) for t in special_tokens]
    ordered: list[str] = []
    for role in _ORDER[family] + [r for r in ROLES if r not in _ORDER[family]]:
        t = roles.get(role)
        if t is not None and t not in ordered:
            ordered.append(t)
    for t in extra:
        if t not in ordered:
            ordered.append(t)
    return roles, ordered


LINE_CAP = 10_000
"""Texts longer than this many characters are cut at whitespace into pieces of at most this length."""
WORD_CAP = 1_000
"""Runs of non-whitespace longer than this are cut every WORD_CAP characters: the trainers' time grows with the
square of a word's length (a 1 MB line without spaces would take minutes)."""


def _pieces(text: str) -> list[str]:
    """``text`` cut at whitespace (each piece keeps the whitespace before its first word, so byte-level
    pre-tokenization sees the same words) into pieces of <= LINE_CAP characters; words over WORD_CAP
    characters are cut every WORD_CAP characters."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for m in _WORD.finditer(text):
        tok = m.group()
        if len(tok) > WORD_CAP:  # each slice of a long word is a piece of its own (never re-joined)
            if cur:
                out.append("".join(cur))
                cur, size = [], 0
            out.extend(tok[i:i + WORD_CAP] for i in range(0, len(tok), WORD_CAP))
            continue
        if size + len(tok) > LINE_CAP and cur:
            out.append("".join(cur))
            cur, size = [], 0
        cur.append(tok)
        size += len(tok)
    if cur:
        out.append("".join(cur))
    return out


_WORD = re.compile(r"\s*\S+|\s+")


def _batched(texts: Iterable[str], size: int = 1000, cut: list[int] | None = None) -> Iterator[list[str]]:
    """Batches of non-blank texts; a text over WORD_CAP characters with a word over WORD_CAP or a length over
    LINE_CAP is cut into pieces (:func:`_pieces`) and counted in ``cut[0]``."""
    buf: list[str] = []
    for t in texts:
        if t and not t.isspace():
            if len(t) > WORD_CAP and (len(t) > LINE_CAP or _LONG_WORD.search(t)):
                buf.extend(_pieces(t))
                if cut is not None:
                    cut[0] += 1
            else:
                buf.append(t)
            if len(buf) >= size:
                yield buf
                buf = []
    if buf:
        yield buf


_LONG_WORD = re.compile(r"\S{%d,}" % (WORD_CAP + 1))


def _stderr(msg: str) -> None:
    print(f"plmkit: tokenizer training: {msg}", file=sys.stderr, flush=True)


def build_untrained(kind: str, style: str = "roberta", lowercase: bool = True) -> _Backend:
    """The pipeline (normalizer, pre-tokenizer, decoder) of a family, with an empty model."""
    if kind == "wordpiece":
        bk = _Backend(models.WordPiece(unk_token="[UNK]"))
        bk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                   strip_accents=None, lowercase=lowercase)
        bk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        bk.decoder = decoders.WordPiece(prefix="##")
    elif kind == "bpe":
        bk = _Backend(models.BPE())
        bk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bk.decoder = decoders.ByteLevel()
    elif kind == "unigram":
        bk = _Backend(models.Unigram())
        bk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        bk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        bk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    elif kind == "char":
        bk = _Backend(models.BPE())
        # Each whitespace char is its own word, so words are whitespace-delimited and spaces are tokens.
        bk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
        bk.decoder = decoders.Fuse()
    else:
        raise UserError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    return bk


def _post_process(bk: _Backend, family: str, roles: dict[str, str]) -> None:
    def tid(role: str) -> tuple[str, int]:
        t = roles[role]
        i = bk.token_to_id(t)
        assert i is not None, t
        return t, i

    if family in ("wordpiece", "char") and "cls" in roles and "sep" in roles:
        (c, ci), (s, si) = tid("cls"), tid("sep")
        bk.post_processor = processors.TemplateProcessing(
            single=f"{c} $A {s}", pair=f"{c} $A {s} $B:1 {s}:1", special_tokens=[(c, ci), (s, si)])
    elif family == "bpe" and "cls" in roles and "sep" in roles:
        bk.post_processor = processors.RobertaProcessing(tid("sep"), tid("cls"), trim_offsets=True,
                                                         add_prefix_space=False)
    elif family == "gpt2":
        bk.post_processor = processors.ByteLevel(trim_offsets=False)
    elif family == "unigram" and "eos" in roles:
        e, ei = tid("eos")
        bk.post_processor = processors.TemplateProcessing(
            single=f"$A {e}", pair=f"$A {e} $B:1 {e}:1", special_tokens=[(e, ei)])


def train_tokenizer_from_iterator(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int | None = 8000,
    special_tokens: Sequence[str] | dict[str, str | None] | None = None,
    *,
    style: str = "roberta",
    lowercase: bool = True,
    min_frequency: int = 2,
    sentinels: int = 100,
    model_max_length: int | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Tokenizer:
    """Train a tokenizer on an iterable of texts (see the module docstring for each kind).

    Very long texts are cut into pieces first (:data:`LINE_CAP`, :data:`WORD_CAP`), and ``log`` (default:
    one line on stderr) says how many.

    ``special_tokens``: ``None`` = the family's defaults; a ``dict`` role -> token overrides roles
    (``None`` removes one); a list adds extra special tokens after the defaults.
    ``style`` (bpe only): ``"roberta"`` or ``"gpt2"``. ``sentinels`` (unigram only): number of
    ``<extra_id_k>`` tokens. ``lowercase`` (wordpiece only).
    """
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "bpe" and style not in ("roberta", "gpt2"):
        raise UserError(f"bpe style must be 'roberta' or 'gpt2', got {style!r}")
    family = "gpt2" if kind == "bpe" and style == "gpt2" else kind
    roles, specials = _resolve_specials(family, special_tokens)
    n_sent = sentinels if kind == "unigram" else 0
    if vocab_size is not None and vocab_size <= 0:
        vocab_size = None
    if vocab_size is None and kind != "char":
        raise UserError(f"{kind} tokenizer needs a positive vocab_size")
    minimum = len(specials) + n_sent + (256 if kind == "bpe" else 1)
    if vocab_size is not None and vocab_size < minimum:
        raise UserError(f"vocab_size {vocab_size} is too small for a {kind} tokenizer (at least {minimum}: "
                        f"{len(specials)} special tokens{f' + {n_sent} sentinels' if n_sent else ''}"
                        f"{' + 256 byte symbols' if kind == 'bpe' else ''})")
    bk = build_untrained(kind, style, lowercase)
    if kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials, continuing_subword_prefix="##",
                                            show_progress=show_progress)
    elif kind == "bpe":
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=show_progress)
    elif kind == "unigram":
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size - n_sent, special_tokens=specials,  # type: ignore[operator]
                                          unk_token=roles.get("unk"), show_progress=show_progress)
    else:  # char: the alphabet only (vocab_size=1 stops the trainer before any merge)
        limit = None if vocab_size is None else vocab_size - len(specials)
        opts: dict[str, Any] = {} if limit is None else {"limit_alphabet": limit}
        # Documents usually arrive without their separators (one line per document), so the
        # whitespace characters are always in the alphabet (the trainer ranks initial_alphabet first).
        trainer = trainers.BpeTrainer(vocab_size=1, special_tokens=specials, show_progress=show_progress,
                                      initial_alphabet=list(CHAR_WHITESPACE), **opts)
    cut = [0]
    try:
        bk.train_from_iterator(_batched(texts, cut=cut), trainer=trainer)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - errors of the Rust trainer
        hint = ""
        if "not large enough to contain all chars" in str(e):
            hint = " (a Unigram vocabulary keeps every distinct character; raise vocab_size)"
        raise UserError(f"{kind} tokenizer training failed: {e}{hint}") from None
    if cut[0]:
        (log or _stderr)(f"cut {cut[0]} text(s) longer than {LINE_CAP:,} characters or with a word over {WORD_CAP:,} "
                         f"characters into pieces for training (at whitespace, long words every {WORD_CAP:,} "
                         f"characters): training time grows with the square of a word's length")
    if kind == "char":
        # The trained BPE model has no unk token; rebuild it with [UNK] (vocab = specials + characters).
        vocab = bk.get_vocab(with_added_tokens=False)
        unk = roles.get("unk")
        bk = build_untrained("char")
        bk.model = models.BPE(vocab=vocab, merges=[], unk_token=unk)
        bk.add_special_tokens([t for t in specials if t in vocab])
    if len(bk.get_vocab(with_added_tokens=False)) <= len(specials):
        raise UserError("tokenizer training saw no text (all inputs empty?)")
    if kind == "bpe" and style == "roberta" and "mask" in roles:
        # RoBERTa's <mask> swallows the space before it.
        bk.add_special_tokens([AddedToken(roles["mask"], lstrip=True, special=True)])
    extra: list[str] = []
    if n_sent:
        sent = [f"<extra_id_{k}>" for k in range(n_sent - 1, -1, -1)]
        bk.add_special_tokens(sent)
        extra = sent[::-1]
    role_tokens = set(roles.values())
    extra = [t for t in specials if t not in role_tokens] + extra
    _post_process(bk, family, roles)
    # JSON (de)serialisation of Unigram scores is not exact in the last bit, so a saved and reloaded
    # tokenizer could split ties differently: use the serialised form from the start (a fixed point).
    text = bk.to_str()
    for _ in range(5):
        bk = _Backend.from_str(text)
        again = bk.to_str()
        if again == text:
            break
        text = again
    return Tokenizer(bk, kind, roles, extra, model_max_length=model_max_length)


def train_tokenizer(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    kind: str = "wordpiece",
    vocab_size: int | None = 8000,
    special_tokens: Sequence[str] | dict[str, str | None] | None = None,
    *,
    doc_sep: str = "line",
    text_field: str = "text",
    errors: str = "strict",
    format: str = "auto",
    **kwargs: Any,
) -> Tokenizer:
    """Train a tokenizer on text / JSONL / .gz files or folders (streamed; see ``plmkit.data.corpus``).

    Other keyword arguments go to ``train_tokenizer_from_iterator`` (``style``, ``lowercase``,
    ``min_frequency``, ``sentinels``, ``model_max_length``, ``show_progress``).
    """
    from plmkit.data.corpus import CorpusConfig, expand_inputs, iter_documents

    config = CorpusConfig(doc_sep=doc_sep, text_field=text_field, errors=errors, format=format)  # type: ignore[arg-type]
    paths = expand_inputs(files)  # fail early on missing paths
    return train_tokenizer_from_iterator(iter_documents(paths, config), kind, vocab_size, special_tokens, **kwargs)
