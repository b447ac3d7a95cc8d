"""The ``Tokenizer`` class (a thin wrapper over an HF ``tokenizers.Tokenizer``) and ``load_tokenizer``.

The wrapper keeps the conventions users know from ``transformers``: ``encode`` returns the same
ids as ``transformers``' ``tokenizer(text)["input_ids"]`` for the same tokenizer files,
``tok(texts, text_pairs, padding=..., truncation=..., max_length=...)`` encodes batches, and
``save(dir)`` writes ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``
that ``transformers.AutoTokenizer.from_pretrained(dir)`` reads back with the same ids.

Special tokens are held as *roles* (``pad``, ``unk``, ``cls``, ``sep``, ``mask``, ``bos``, ``eos``)
mapped to token strings; ``tok.pad_token_id`` etc. are ``None`` when a role is absent.

``load_tokenizer`` accepts ``tokenizer.json``, an HF tokenizer directory, a BERT ``vocab.txt``
(WordPiece), or a GPT-2/RoBERTa ``vocab.json`` + ``merges.txt`` (byte-level BPE).

References: HF tokenizers (https://huggingface.co/docs/tokenizers), BERT (Devlin et al. 2019),
GPT-2 (Radford et al. 2019), RoBERTa (Liu et al. 2019), T5 (Raffel et al. 2020).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from tokenizers import AddedToken
from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from plmkit.errors import UserError
from plmkit.tokenization.words import word_ids_for

KINDS = ("wordpiece", "bpe", "unigram", "char")
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")

# Role -> token, by family. Used when training and when inferring roles of foreign files.
DEFAULT_SPECIALS: dict[str, dict[str, str]] = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "char": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "bpe": {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>",
            "cls": "<s>", "sep": "</s>"},
    "gpt2": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"},
    "unigram": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
}
# Candidate strings per role when a file carries no tokenizer_config.json.
_ROLE_CANDIDATES = {
    "pad": ["[PAD]", "<pad>"],
    "unk": ["[UNK]", "<unk>", "<|endoftext|>"],
    "cls": ["[CLS]", "<s>"],
    "sep": ["[SEP]", "</s>"],
    "mask": ["[MASK]", "<mask>"],
    "bos": ["<s>", "<|endoftext|>"],
    "eos": ["</s>", "<|endoftext|>"],
}


class Tokenizer:
    """A WordPiece / byte-level BPE / Unigram / char tokenizer over an HF ``tokenizers.Tokenizer``.

    Args:
        backend: the ``tokenizers.Tokenizer`` (truncation and padding are switched off; they
            are applied per call by ``__call__``).
        kind: ``"wordpiece" | "bpe" | "unigram" | "char"``.
        special_tokens: role -> token string (roles in ``ROLES``); tokens must be in the vocab.
        additional_special_tokens: further special tokens (e.g. T5 sentinels ``<extra_id_k>``).
        model_max_length: default ``max_length`` for ``truncation=True`` (``None`` = unlimited).
        chinese_words: group CJK characters into jieba words in ``word_ids``.
    """

    def __init__(
        self,
        backend: _Backend,
        kind: str,
        special_tokens: dict[str, str] | None = None,
        additional_special_tokens: Sequence[str] = (),
        model_max_length: int | None = None,
        chinese_words: bool = True,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(KINDS)}")
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.kind = kind
        self.special_tokens: dict[str, str] = {}
        for role, token in (special_tokens or {}).items():
            if role not in ROLES:
                raise ValueError(f"unknown special-token role {role!r}; expected one of {', '.join(ROLES)}")
            if token is not None and backend.token_to_id(token) is not None:
                self.special_tokens[role] = token
        self.additional_special_tokens = [t for t in additional_special_tokens if backend.token_to_id(t) is not None]
        self.model_max_length = model_max_length
        self.chinese_words = chinese_words
        self.extra_config = dict(extra_config or {})
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        key = self.backend.get_vocab_size(with_added_tokens=True)
        cached = self.__dict__.get("_len_cache")
        if cached is None or cached[0] != key:
            vocab = self.backend.get_vocab(with_added_tokens=True)
            cached = (key, max(vocab.values()) + 1 if vocab else 0)
            self.__dict__["_len_cache"] = cached
        return cached[1]

    @property
    def vocab_size(self) -> int:
        """Number of ids (max id + 1, added tokens included): the embedding rows a model needs."""
        return len(self)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}={t!r}" for r, t in self.special_tokens.items())
        return f"Tokenizer(kind={self.kind!r}, vocab_size={len(self)}, {roles})"

    def _role_id(self, role: str) -> int | None:
        tok = self.special_tokens.get(role)
        return None if tok is None else self.backend.token_to_id(tok)

    pad_token_id = property(lambda self: self._role_id("pad"))
    unk_token_id = property(lambda self: self._role_id("unk"))
    cls_token_id = property(lambda self: self._role_id("cls"))
    sep_token_id = property(lambda self: self._role_id("sep"))
    mask_token_id = property(lambda self: self._role_id("mask"))
    bos_token_id = property(lambda self: self._role_id("bos"))
    eos_token_id = property(lambda self: self._role_id("eos"))
    pad_token = property(lambda self: self.special_tokens.get("pad"))
    unk_token = property(lambda self: self.special_tokens.get("unk"))
    cls_token = property(lambda self: self.special_tokens.get("cls"))
    sep_token = property(lambda self: self.special_tokens.get("sep"))
    mask_token = property(lambda self: self.special_tokens.get("mask"))
    bos_token = property(lambda self: self.special_tokens.get("bos"))
    eos_token = property(lambda self: self.special_tokens.get("eos"))

    @property
    def sentinel_token_ids(self) -> list[int]:
        """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... (T5 span corruption), in sentinel order."""
        out = []
        k = 0
        while (i := self.backend.token_to_id(f"<extra_id_{k}>")) is not None:
            out.append(i)
            k += 1
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        seen: list[str] = []
        for t in list(self.special_tokens.values()) + list(self.additional_special_tokens):
            if t not in seen:
                seen.append(t)
        for t in self.backend.get_added_tokens_decoder().values():
            if t.special and t.content not in seen:
                seen.append(t.content)
        return seen

    @property
    def all_special_ids(self) -> list[int]:
        return [self.backend.token_to_id(t) for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            i = self.backend.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | None | list[str | None]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(int(i)) for i in _as_list(ids)]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).tokens

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical tokenizer.json: identifies the tokenizer a token store was built with."""
        if self._fingerprint is None:
            canon = json.dumps(json.loads(self.backend.to_str()), sort_keys=True, ensure_ascii=False)
            self._fingerprint = hashlib.sha256(canon.encode("utf-8")).hexdigest()
        return self._fingerprint

    # ------------------------------------------------------------------ encode / decode
    # What encode() / encode_batch() do when add_special_tokens is not given. load_tokenizer sets it
    # False for the tokenizer of a causal LM whose post-processor would wrap a prompt ([CLS] x [SEP],
    # <s> x </s>): a prompt must not end in a separator. A BOS-only template (llama) is kept.
    add_special_tokens_default: bool = True

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of ``text`` (and ``text_pair``); special tokens are added unless asked not to
        (``None``: ``add_special_tokens_default``, True except for causal-LM tokenizers that wrap)."""
        if add_special_tokens is None:
            add_special_tokens = self.add_special_tokens_default
        return self.backend.encode(text, text_pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool | None = None) -> list[list[int]]:
        """Token ids of many texts at once (the Rust tokenizer's own threads); defaults as ``encode``."""
        if add_special_tokens is None:
            add_special_tokens = self.add_special_tokens_default
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(_as_list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        return self.backend.decode_batch([_as_list(s) for s in _as_list(sequences)], skip_special_tokens=skip_special_tokens)

    def word_ids(self, text: str, add_special_tokens: bool = True) -> list[int | None]:
        """Word index per token of ``encode(text)`` (``None`` for special tokens).

        Words are the pre-tokenizer's words (whitespace/punctuation split); tokens covering CJK
        characters are grouped into jieba words. Ids are contiguous and start at 0.
        """
        enc = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return self._encoding_word_ids(enc, text, None)

    def _encoding_word_ids(self, enc: Any, text: str, pair: str | None) -> list[int | None]:
        seq_ids = enc.sequence_ids
        offsets = enc.offsets
        wids = enc.word_ids
        out: list[int | None] = [None] * len(wids)
        base = 0
        for s, t in ((0, text), (1, pair)):
            if t is None:
                continue
            pos = [i for i, q in enumerate(seq_ids) if q == s]
            if not pos:
                continue
            sub = word_ids_for(t, [offsets[i] for i in pos], [wids[i] for i in pos], self.chinese_words)
            for i, w in zip(pos, sub):
                out[i] = None if w is None else w + base
            base += 1 + max((w for w in sub if w is not None), default=-1)
        return out

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_offsets: bool = False,
        return_word_ids: bool = False,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool = True,
        return_token_type_ids: bool = True,
        pad_to_multiple_of: int | None = None,
    ) -> dict[str, Any]:
        """Encode a text or a batch (with optional pairs), like ``transformers``' tokenizers.

        ``padding``: ``False``/``"do_not_pad"``, ``True``/``"longest"``, or ``"max_length"``.
        ``truncation``: ``False``, ``True``/``"longest_first"``, ``"only_first"``, ``"only_second"``;
        ``max_length`` defaults to ``model_max_length``. Returns ``input_ids``, ``attention_mask``,
        ``token_type_ids`` (and ``offset_mapping``, ``word_ids`` when asked; word ids of the second
        text of a pair continue after the first text's words). A single ``str`` gives unbatched
        lists. ``return_tensors="pt"`` gives ``torch.long`` tensors (word ids: -1 for specials).
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        pairs: list[str] | None = None
        if text_pairs is not None:
            pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(pairs) != len(batch):
                raise ValueError(f"got {len(batch)} texts but {len(pairs)} text_pairs")
        pad_mode = {False: None, "do_not_pad": None, True: "longest", "longest": "longest",
                    "max_length": "max_length"}.get(padding, "?")  # type: ignore[arg-type]
        if pad_mode == "?":
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        trunc = {False: None, "do_not_truncate": None, True: "longest_first", "longest_first": "longest_first",
                 "only_first": "only_first", "only_second": "only_second"}.get(truncation, "?")  # type: ignore[arg-type]
        if trunc == "?":
            raise ValueError(f"truncation must be False, True, 'longest_first', 'only_first' or 'only_second', got {truncation!r}")
        length = max_length if max_length is not None else self.model_max_length
        if (trunc or pad_mode == "max_length") and length is None:
            raise ValueError("truncation / padding='max_length' need max_length (the tokenizer has no model_max_length)")
        if pad_mode and self.pad_token_id is None:
            raise ValueError("this tokenizer has no pad token, so it cannot pad; pass padding=False")
        bk = self.backend
        try:
            if trunc:
                bk.enable_truncation(int(length), strategy=trunc)  # type: ignore[arg-type]
            if pad_mode:
                bk.enable_padding(
                    pad_id=self.pad_token_id, pad_token=self.pad_token,
                    length=int(length) if pad_mode == "max_length" else None,  # type: ignore[arg-type]
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            inputs = batch if pairs is None else list(zip(batch, pairs))
            try:
                encs = bk.encode_batch(inputs, add_special_tokens=add_special_tokens)
            except Exception as e:  # the Rust error (e.g. "Sequence to truncate too short ...")
                raise ValueError(f"cannot encode with truncation={truncation!r}, max_length={length}: {e}") from None
        finally:
            bk.no_truncation()
            bk.no_padding()
        out: dict[str, Any] = {"input_ids": [e.ids for e in encs]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encs]
        if return_token_type_ids:
            out["token_type_ids"] = [e.type_ids for e in encs]
        if return_offsets:
            out["offset_mapping"] = [e.offsets for e in encs]
        if return_word_ids:
            out["word_ids"] = [
                self._encoding_word_ids(e, t, None if pairs is None else pairs[i])
                for i, (e, t) in enumerate(zip(encs, batch))
            ]
        if return_tensors is not None:
            if return_tensors != "pt":
                raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
            import torch

            lengths = {len(x) for x in out["input_ids"]}
            if len(lengths) > 1:
                raise ValueError("sequences have different lengths; pass padding=True to get tensors")
            for k in list(out):
                rows = out[k]
                if k == "word_ids":
                    rows = [[-1 if w is None else w for w in r] for r in rows]
                out[k] = torch.tensor(rows, dtype=torch.long)
        if single:
            out = {k: v[0] for k, v in out.items()}
        return out

    # ------------------------------------------------------------------ save
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stmap: dict[str, Any] = {f"{r}_token": t for r, t in self.special_tokens.items()}
        if self.additional_special_tokens:
            stmap["additional_special_tokens"] = list(self.additional_special_tokens)
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.model_max_length if self.model_max_length is not None else int(1e30),
            "clean_up_tokenization_spaces": False,
            **stmap,
            "plmkit_kind": self.kind,
            "plmkit_chinese_words": self.chinese_words,
            **self.extra_config,
        }
        if self.kind == "bpe" and self.special_tokens.get("bos") == "<s>":
            config["add_prefix_space"] = False
        _atomic_write(out / "tokenizer.json", self.backend.to_str(pretty=True))
        _atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
        _atomic_write(out / "special_tokens_map.json", json.dumps(stmap, indent=2, ensure_ascii=False))
        return out

    save_pretrained = save

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["backend"] = self.backend.to_str()
        state.pop("_len_cache", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["backend"] = _Backend.from_str(state["backend"])
        self.__dict__.update(state)


def _as_list(ids: Any) -> list:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) if not isinstance(i, list) else i for i in ids] if isinstance(ids, (list, tuple)) else ids


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------- loading
def _token_str(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read JSON ({e})") from None


def _infer_kind(backend: _Backend) -> str:
    d = json.loads(backend.to_str())
    mtype = (d.get("model") or {}).get("type")
    if mtype == "WordPiece":
        return "wordpiece"
    if mtype == "Unigram":
        return "unigram"
    if mtype == "BPE":
        merges = d["model"].get("merges") or []
        return "char" if not merges else "bpe"
    raise UserError(f"unsupported tokenizer model type {mtype!r}; expected WordPiece, BPE or Unigram")


def _infer_roles(backend: _Backend, kind: str) -> dict[str, str]:
    roles: dict[str, str] = {}
    for role, cands in _ROLE_CANDIDATES.items():
        for c in cands:
            if backend.token_to_id(c) is not None:
                roles[role] = c
                break
    if kind == "bpe" and backend.token_to_id("<s>") is None and backend.token_to_id("<|endoftext|>") is not None:
        roles = dict(DEFAULT_SPECIALS["gpt2"])
    return roles


def _from_backend(backend: _Backend, folder: Path | None) -> Tokenizer:
    config: dict[str, Any] = {}
    stmap: dict[str, Any] = {}
    if folder is not None:
        if (folder / "tokenizer_config.json").is_file():
            config = _read_json(folder / "tokenizer_config.json")
        if (folder / "special_tokens_map.json").is_file():
            stmap = _read_json(folder / "special_tokens_map.json")
    kind = config.get("plmkit_kind") or _infer_kind(backend)
    if kind not in KINDS:
        raise UserError(f"{folder}/tokenizer_config.json: plmkit_kind {kind!r} is not one of {', '.join(KINDS)}")
    roles: dict[str, str] = {}
    declared = {**stmap, **{k: v for k, v in config.items() if k.endswith("_token")}}
    for role in ROLES:
        t = _token_str(declared.get(f"{role}_token"))
        if t is not None:
            roles[role] = t
    if not roles:
        roles = _infer_roles(backend, kind)
    extra = [_token_str(t) for t in (config.get("additional_special_tokens") or stmap.get("additional_special_tokens") or [])]
    mml = config.get("model_max_length")
    if not isinstance(mml, int) or mml >= int(1e12):
        mml = None
    return Tokenizer(backend, kind, roles, [t for t in extra if t], model_max_length=mml,
                     chinese_words=bool(config.get("plmkit_chinese_words", True)))


def _bert_from_vocab(vocab: Path, lowercase: bool) -> _Backend:
    try:
        model = models.WordPiece.from_file(str(vocab), unk_token="[UNK]")
    except Exception as e:  # noqa: BLE001 - the Rust error text is the useful part
        raise UserError(f"{vocab}: not a WordPiece vocab.txt ({e})") from None
    bk = _Backend(model)
    bk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                               lowercase=lowercase)
    bk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bk.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in DEFAULT_SPECIALS["wordpiece"].values() if model.token_to_id(t) is not None]
    bk.add_special_tokens(present)
    cls, sep = bk.token_to_id("[CLS]"), bk.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise UserError(f"{vocab}: a BERT vocab.txt needs [CLS] and [SEP] entries")
    bk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return bk


def _gpt2_from_files(vocab: Path, merges: Path) -> _Backend:
    try:
        model = models.BPE.from_file(str(vocab), str(merges))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{vocab} + {merges}: not a GPT-2 vocab.json/merges.txt pair ({e})") from None
    bk = _Backend(model)
    bk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bk.decoder = decoders.ByteLevel()
    if model.token_to_id("<s>") is not None and model.token_to_id("</s>") is not None:
        present = [t for t in ("<s>", "<pad>", "</s>", "<unk>") if model.token_to_id(t) is not None]
        bk.add_special_tokens(present)
        if model.token_to_id("<mask>") is not None:
            bk.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
        bk.post_processor = processors.RobertaProcessing(
            ("</s>", bk.token_to_id("</s>")), ("<s>", bk.token_to_id("<s>")), trim_offsets=True, add_prefix_space=False)
    else:
        if model.token_to_id("<|endoftext|>") is not None:
            bk.add_special_tokens(["<|endoftext|>"])
        bk.post_processor = processors.ByteLevel(trim_offsets=False)
    return bk


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> Tokenizer:
    """Load ``tokenizer.json``, an HF tokenizer directory, a BERT ``vocab.txt`` or GPT-2 ``vocab.json``.

    Keyword arguments override ``Tokenizer`` fields (``model_max_length``, ``chinese_words``).
    The tokenizer of a ``.gguf`` file is rebuilt by ``plmkit.interop.gguf`` (``plmkit.load_tokenizer``
    dispatches there): this package reads tokenizer files only.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such tokenizer file or directory")
    if p.suffix == ".gguf":
        raise UserError(f"{p}: a GGUF file; load its tokenizer with plmkit.load_tokenizer (plmkit.interop.gguf)")
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "vocab.txt").is_file():
            p = p / "vocab.txt"
        elif (p / "vocab.json").is_file():
            p = p / "vocab.json"
        else:
            found = sorted(x.name for x in folder.iterdir())[:8]
            raise UserError(f"{folder}: no tokenizer.json, vocab.txt or vocab.json+merges.txt here (found: {', '.join(found) or 'nothing'})")
    name = p.name
    if name == "vocab.txt" or (p.suffix == ".txt" and not name.startswith("merges")):
        lower = True
        if (folder / "tokenizer_config.json").is_file():
            lower = bool(_read_json(folder / "tokenizer_config.json").get("do_lower_case", True))
        lower = bool(kwargs.pop("lowercase", lower))
        tok = Tokenizer(_bert_from_vocab(p, lower), "wordpiece", dict(DEFAULT_SPECIALS["wordpiece"]))
    elif name == "vocab.json" or (p.suffix == ".json" and (folder / "merges.txt").is_file() and name != "tokenizer.json"):
        merges = folder / "merges.txt"
        if not merges.is_file():
            raise UserError(f"{p}: a GPT-2 vocab.json needs merges.txt beside it")
        bk = _gpt2_from_files(p, merges)
        roles = dict(DEFAULT_SPECIALS["bpe"] if bk.token_to_id("<s>") is not None else DEFAULT_SPECIALS["gpt2"])
        tok = Tokenizer(bk, "bpe", roles)
    else:
        try:
            bk = _Backend.from_file(str(p))
        except Exception as e:  # noqa: BLE001
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{p}: not a tokenizers JSON file ({msg})") from None
        tok = _from_backend(bk, folder)
    if _is_causal_lm_dir(folder) and _wraps_text(tok):
        tok.add_special_tokens_default = False
    for k, v in kwargs.items():
        if not hasattr(tok, k):
            raise TypeError(f"load_tokenizer() got an unexpected keyword argument {k!r}")
        setattr(tok, k, v)
    return tok


_CAUSAL_MODEL_TYPES = ("gpt2", "openai-gpt", "llama")


def _is_causal_lm_dir(folder: Path) -> bool:
    """True when ``folder/config.json`` describes a causal LM (HF gpt2 / openai-gpt / llama, a
    plmkit-native decoder-only Transformer, or a recurrent FFNN / RNN / LSTM LM)."""
    f = folder / "config.json"
    if not f.is_file():
        return False
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # the model loader reports a broken config.json; the tokenizer keeps its defaults
    if not isinstance(cfg, dict):
        return False
    if cfg.get("model_type") in _CAUSAL_MODEL_TYPES or cfg.get("plmkit_family") in ("ffnn", "rnn", "lstm"):
        return True
    inner = cfg.get("plmkit_config")
    return cfg.get("model_type") == "plmkit" and isinstance(inner, dict) and inner.get("causal") is True \
        and cfg.get("plmkit_class") in ("Transformer", "MoETransformer")


def _wraps_text(tok: Tokenizer) -> bool:
    """True when the post-processor adds a token after a single text (not just a BOS before it)."""
    bare = tok.backend.encode("a", add_special_tokens=False).ids
    full = tok.backend.encode("a", add_special_tokens=True).ids
    return full[len(full) - len(bare):] != bare
