"""The ``Objective`` base class and the helpers every objective shares.

An objective is a small class with a typed ``Config`` dataclass of options and three methods
(the contract in ``docs/CONTRACTS.md``)::

    obj = plmkit.objectives.build("mlm", tokenizer=tok, rate=0.15)
    obj.prepare(model)                    # validate the backbone, attach heads (before the optimizer)
    batch = obj.make_batch(examples)      # dict of tensors; "labels" = -100 where nothing is predicted
    loss, metrics = obj.loss(model, batch)

Examples are either plain ``list[int]`` (token ids as ``tok.encode`` returns them, special tokens
included) or token-store *records*: ``{"input_ids": [...]}`` without special tokens, optionally
with ``"word_ids"``, ``"sentence_starts"``, ``"doc_boundaries"`` (and objective-specific keys
documented in each file). ``Example`` below normalises both.

Randomness: every draw goes through torch's global RNG (``torch.rand`` & co.) unless a caller
passes an explicit ``torch.Generator`` (only ``mlm``'s static masking does, seeded per example),
so the trainer's saving/restoring of RNG states resumes runs exactly.

Shape legend: B batch, T sequence length, V vocabulary, H hidden size, N labelled positions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError, suggest

IGNORE = -100  # label value for "no prediction here" (PyTorch's cross-entropy ignore_index)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ObjectiveConfig:
    """Options shared by every objective; subclasses add their own typed fields."""

    max_length: int | None = None
    """Truncate each example (after special tokens are added) to this many tokens; None = no limit."""

    def validate(self, name: str) -> None:  # overridden by configs with constraints
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 4):
            raise UserError(f"{name}: max_length must be an integer >= 4 or null, got {self.max_length!r}")


def check_open_unit(name: str, key: str, value: Any) -> None:
    """Raise ``UserError`` unless ``0 < value < 1`` (a rate)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise UserError(f"{name}: option {key} must be in (0, 1), got {value!r}")


def check_unit(name: str, key: str, value: Any) -> None:
    """Raise ``UserError`` unless ``0 <= value <= 1`` (a probability that may be 0 or 1)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"{name}: option {key} must be in [0, 1], got {value!r}")


def check_positive(name: str, key: str, value: Any, integer: bool = False) -> None:
    """Raise ``UserError`` unless ``value > 0`` (and an int when ``integer``)."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value <= 0:
        kind = "a positive integer" if integer else "> 0"
        raise UserError(f"{name}: option {key} must be {kind}, got {value!r}")


def check_choice(name: str, key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise UserError(f"{name}: option {key} must be one of {list(choices)}, got {value!r}"
                        f"{suggest(value, choices)}")


# ---------------------------------------------------------------------------------------------
# vocabulary facts taken from the tokenizer once
# ---------------------------------------------------------------------------------------------
class Vocab:
    """Special-token ids and the vocabulary size of a tokenizer (``None`` where absent)."""

    def __init__(self, tokenizer: Any):
        if tokenizer is None:
            raise UserError("objectives need a tokenizer: build(name, tokenizer=tok, ...)")
        self.tokenizer = tokenizer
        self.size = int(len(tokenizer))
        g = lambda k: getattr(tokenizer, k, None)  # noqa: E731
        self.pad, self.mask, self.unk = g("pad_token_id"), g("mask_token_id"), g("unk_token_id")
        self.cls, self.sep = g("cls_token_id"), g("sep_token_id")
        self.bos, self.eos = g("bos_token_id"), g("eos_token_id")
        ids = set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None)
        ids |= {i for i in (self.pad, self.mask, self.unk, self.cls, self.sep, self.bos, self.eos) if i is not None}
        self.special: frozenset[int] = frozenset(ids)
        self.kind = getattr(tokenizer, "kind", None)
        self._special_table: torch.Tensor | None = None
        self._normal_ids: torch.Tensor | None = None
        self._continuation: torch.Tensor | None = None

    @property
    def pad_id(self) -> int:
        """Id used to pad batches (pad, else eos, else 0): padded positions are masked out anyway."""
        for i in (self.pad, self.eos, self.sep):
            if i is not None:
                return int(i)
        return 0

    @property
    def begin(self) -> int | None:
        """Token that opens a sequence: [CLS] (BERT) or <s> (RoBERTa), else None."""
        return self.cls if self.cls is not None else self.bos

    @property
    def end(self) -> int | None:
        """Token that closes a segment: [SEP] or </s>, else None."""
        return self.sep if self.sep is not None else self.eos

    def special_table(self) -> torch.Tensor:
        """(V',) bool: True at special-token ids (V' covers every id seen so far)."""
        if self._special_table is None:
            t = torch.zeros(self.size, dtype=torch.bool)
            for i in self.special:
                if 0 <= i < self.size:
                    t[i] = True
            self._special_table = t
        return self._special_table

    def is_special(self, ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of special ids (ids beyond the tokenizer's vocabulary count as special)."""
        table = self.special_table()
        inside = ids < table.numel()
        out = torch.ones_like(ids, dtype=torch.bool)
        out[inside] = table[ids[inside]]
        return out

    def normal_ids(self) -> torch.Tensor:
        """(V_n,) ids of every non-special token: the pool for BERT's 10% random replacement."""
        if self._normal_ids is None:
            self._normal_ids = torch.nonzero(~self.special_table()).flatten()
            if self._normal_ids.numel() == 0:
                raise UserError("the tokenizer has no non-special tokens")
        return self._normal_ids

    def random_tokens(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` ids drawn uniformly from the non-special vocabulary."""
        pool = self.normal_ids()
        return pool[torch.randint(pool.numel(), (n,), generator=generator)]

    def continuation_table(self) -> torch.Tensor:
        """(V,) bool: True where a token continues the previous word (WordPiece ``##x``,
        byte-level BPE / SentencePiece tokens without the word-start marker)."""
        if self._continuation is None:
            toks = self.tokenizer.convert_ids_to_tokens(list(range(self.size)))
            cont = torch.zeros(self.size, dtype=torch.bool)
            if self.kind == "wordpiece":
                for i, t in enumerate(toks):
                    cont[i] = bool(t) and t.startswith("##")
            elif self.kind in ("bpe", "unigram"):
                marks = ("\u0120", "\u2581")  # "Ġ" (byte-level BPE), "▁" (SentencePiece metaspace)
                has_marks = any(t and t.startswith(marks) for t in toks)
                if has_marks:
                    for i, t in enumerate(toks):
                        cont[i] = bool(t) and not t.startswith(marks) and i not in self.special
            self._continuation = cont
        return self._continuation


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------
@dataclass
class Example:
    """One example normalised: token ids, and the optional record annotations.

    ``has_specials`` says whether the ids already carry special tokens (plain lists) or not
    (token-store records)."""

    ids: list[int]
    word_ids: list[int | None] | None = None
    sentence_starts: list[int] | None = None
    doc_boundaries: list[int] | None = None
    record: dict[str, Any] | None = None
    has_specials: bool = True


def as_example(x: Any, name: str) -> Example:
    """Turn a ``list[int]`` / 1-D tensor / token-store record into an ``Example``."""
    if isinstance(x, dict):
        if "input_ids" not in x:
            raise UserError(f"{name}: example record has no 'input_ids' (keys: {sorted(x)})")
        ids = _int_list(x["input_ids"], name)
        wid = x.get("word_ids")
        if wid is not None:
            wid = list(wid)
            if len(wid) != len(ids):
                raise UserError(f"{name}: record 'word_ids' has {len(wid)} entries for {len(ids)} tokens")
        return Example(ids=ids, word_ids=wid,
                       sentence_starts=_opt_list(x.get("sentence_starts")),
                       doc_boundaries=_opt_list(x.get("doc_boundaries")),
                       record=x, has_specials=False)
    return Example(ids=_int_list(x, name), has_specials=True)


def _int_list(x: Any, name: str) -> list[int]:
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    try:
        return [int(i) for i in x]
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected a list of token ids or a record dict, got {type(x).__name__}") from None


def _opt_list(x: Any) -> list[int] | None:
    return None if x is None else [int(i) for i in x]


def word_ids_of(ex: Example, vocab: Vocab) -> list[int | None]:
    """Word index per token (None at special tokens).

    Uses the record's ``word_ids`` when present (that is how Chinese word groups from jieba reach
    the objectives); otherwise infers word starts from the token strings (WordPiece ``##``,
    byte-level ``Ġ``, SentencePiece ``▁``); a tokenizer without such marks gives one word per token."""
    ids = ex.ids
    special = vocab.special
    if ex.word_ids is not None:
        return [None if t in special else w for t, w in zip(ids, ex.word_ids)]
    cont = vocab.continuation_table()
    out: list[int | None] = []
    w = -1
    prev_special = True
    for t in ids:
        if t in special:
            out.append(None)
            prev_special = True
            continue
        if prev_special or not (0 <= t < cont.numel() and bool(cont[t])):
            w += 1
        out.append(w)
        prev_special = False
    return out


def word_spans(word_ids: Sequence[int | None]) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of consecutive tokens sharing a word id (specials skipped)."""
    spans: list[tuple[int, int]] = []
    start, cur = None, None
    for i, w in enumerate(word_ids):
        if w is None or w != cur:
            if start is not None:
                spans.append((start, i))
            start, cur = (None, None) if w is None else (i, w)
    if start is not None:
        spans.append((start, len(word_ids)))
    return spans


def pad_2d(seqs: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(B, T) long tensor, right-padded with ``value``."""
    T = max((len(s) for s in seqs), default=0) if length is None else length
    out = torch.full((len(seqs), T), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(list(s)[:T], dtype=torch.long)
    return out


def attention_from_lengths(lengths: Sequence[int], T: int) -> torch.Tensor:
    """(B, T) long: 1 for real tokens, 0 for padding."""
    return (torch.arange(T)[None, :] < torch.as_tensor(list(lengths))[:, None]).long()


def stochastic_round(x: float, generator: torch.Generator | None = None) -> int:
    """floor(x) or ceil(x) with probabilities that make the expectation exactly ``x``."""
    lo = math.floor(x)
    frac = x - lo
    if frac > 0 and float(torch.rand((), generator=generator)) < frac:
        lo += 1
    return int(lo)


# ---------------------------------------------------------------------------------------------
# backbone checks
# ---------------------------------------------------------------------------------------------
def backbone_name(model: Any) -> str:
    """A short name for error messages: the preset/path the model came from, else its family."""
    cfg = getattr(model, "config", None)
    extra = getattr(cfg, "extra", None) or {}
    for v in (getattr(model, "name", None), extra.get("name"), extra.get("preset"),
              getattr(cfg, "name_or_path", None), getattr(cfg, "family", None)):
        if isinstance(v, str) and v:
            return v
    return type(model).__name__


ENCODER_DECODER_FAMILIES = frozenset({"t5", "mt5", "bart", "mbart", "mass", "encoder-decoder"})


def backbone_kind(model: Any) -> str:
    """"an encoder", "a decoder (causal)" or "an encoder-decoder"."""
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False) or getattr(cfg, "family", None) in ENCODER_DECODER_FAMILIES:
        return "an encoder-decoder"
    return "a decoder (causal)" if getattr(cfg, "causal", False) else "an encoder"


def require_encoder(obj_name: str, model: Any, why: str = "") -> None:
    """UserError unless the backbone is a bidirectional encoder."""
    kind = backbone_kind(model)
    if kind != "an encoder":
        raise UserError(f"{obj_name} needs a bidirectional encoder backbone{why}; "
                        f"{backbone_name(model)!r} is {kind}")


def require_decoder(obj_name: str, model: Any) -> None:
    kind = backbone_kind(model)
    if kind != "a decoder (causal)":
        raise UserError(f"{obj_name} needs a causal decoder backbone; {backbone_name(model)!r} is {kind}")


def require_encoder_decoder(obj_name: str, model: Any) -> None:
    kind = backbone_kind(model)
    if kind != "an encoder-decoder":
        raise UserError(f"{obj_name} needs an encoder-decoder backbone (decoder_input_ids); "
                        f"{backbone_name(model)!r} is {kind}")


def require_head(obj_name: str, model: Any, heads: Sequence[str | None]) -> None:
    head = getattr(model.config, "head", None)
    if head not in heads:
        raise UserError(f"{obj_name} needs a model with an output head in {list(heads)}; "
                        f"{backbone_name(model)!r} has head={head!r}")


def require_vocab(obj_name: str, model: Any, needed: int) -> None:
    v = model.config.vocab_size
    if v < needed:
        raise UserError(f"{obj_name}: the model {backbone_name(model)!r} has vocab_size={v} but the "
                        f"tokenizer/objective uses {needed} ids (load(..., vocab_size={needed}))")


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def hidden_only(model: Any, input_ids: torch.Tensor, **kwargs: Any) -> Any:
    """Run the backbone without materialising LM logits (an all-False ``labels_mask`` makes the
    head run on zero positions). Returns the model output (``last_hidden_state``, ``pooled``)."""
    empty = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    return model(input_ids, labels_mask=empty, **kwargs)


def top1_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many rows of ``logits`` (N, V) score their target ``y`` (N,) highest: argmax accuracy computed as
    ``logit[y] >= max`` (a tie counts as correct), because CPU ``argmax`` over a vocabulary is ~7x slower
    than ``amax`` (it was ~5% of a small BERT's MLM training step)."""
    logits = logits.detach()
    if y.numel() == 0:
        return torch.zeros((), dtype=torch.long, device=logits.device)
    return (logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) >= logits.amax(-1)).sum()


def _ce_chunk(head, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(h).float()  # (n, V)
    loss = F.cross_entropy(logits, y, reduction="sum")
    return loss, top1_correct(logits, y)


def chunked_cross_entropy(
    head, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of cross-entropies of ``head(hidden)`` against ``targets``, computed ``chunk_size`` rows
    at a time (litgpt's ``chunked_cross_entropy``). When gradients are needed each chunk is
    recomputed in backward (activation checkpointing), so at most one (chunk, V) block of logits
    is alive at any time instead of the full (N, V) one.

    Args:
        head: maps (n, H) hidden states to (n, V) logits (``model.head_logits``).
        hidden: (N, H); targets: (N,) long.
    Returns:
        (summed loss, number of argmax hits), both scalar tensors.
    """
    from torch.utils.checkpoint import checkpoint

    total = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    ckpt = torch.is_grad_enabled() and hidden.requires_grad and hidden.shape[0] > chunk_size
    for s in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[s : s + chunk_size], targets[s : s + chunk_size]
        if ckpt:
            l, c = checkpoint(_ce_chunk, head, h, y, use_reentrant=False)
        else:
            l, c = _ce_chunk(head, h, y)
        total = total + l
        correct = correct + c
    return total, correct


def token_metrics(prefix: str, loss: torch.Tensor, correct: torch.Tensor | int, n: int) -> dict[str, float]:
    """``{prefix}_loss``, ``{prefix}_ppl`` and ``{prefix}_acc`` for a token-level cross-entropy."""
    lv = float(loss.detach())
    return {f"{prefix}_loss": lv, f"{prefix}_ppl": math.exp(min(lv, 50.0)),
            f"{prefix}_acc": float(correct) / max(n, 1), f"{prefix}_tokens": float(n)}


# ---------------------------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------------------------
class Objective:
    """Base class: parses options into ``self.config`` and reads special ids from the tokenizer.

    Subclasses set ``name``, ``example_kind``, ``Config`` and implement ``make_batch`` / ``loss``
    (and ``prepare`` when they need a particular backbone or extra heads)."""

    name: ClassVar[str] = "objective"
    example_kind: ClassVar[str] = "window"
    Config: ClassVar[type[ObjectiveConfig]] = ObjectiveConfig
    token_nll: ClassVar[bool] = True
    """The loss is a mean token-level NLL, so exp(loss) is a perplexity (False: evaluation reports
    no ``ppl`` -- a weighted sum of terms or a sentence-level loss has none)."""

    def __init__(self, tokenizer: Any = None, **options: Any):
        fields = {f.name for f in dataclasses.fields(self.Config)}
        for k in options:
            if k not in fields:
                raise UserError(f"{self.name}: unknown option {k!r}{suggest(k, fields)}; "
                                f"expected one of {sorted(fields)}")
        try:
            self.config = self.Config(**options)
        except TypeError as e:  # pragma: no cover - dataclass signature errors
            raise UserError(f"{self.name}: {e}") from None
        self.config.validate(self.name)
        self.tokenizer = tokenizer
        self.vocab = Vocab(tokenizer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def prepare(self, model: Any) -> None:
        """Validate the backbone and attach heads. The default accepts any model."""

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # every registered objective overrides it

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError  # every registered objective overrides it

    # helpers for subclasses
    def _need(self, role: str) -> int:
        v = getattr(self.vocab, role)
        if v is None:
            raise UserError(f"{self.name}: the tokenizer has no {role} token, which this objective needs")
        return int(v)

    def _truncate(self, ids: list[int]) -> list[int]:
        m = self.config.max_length
        return ids if m is None else ids[:m]
