"""Count-based n-gram language models: MLE, add-k, Katz back-off, (modified) Kneser-Ney.

Contents
--------
- ``Vocabulary``: token <-> id map with ``<s>``, ``</s>`` and (optionally) ``<unk>``.
- ``NgramCounts``: n-gram counts of orders 1..n, built streaming from any iterable of
  token sequences (strings, token ids, or token-store records ``{"input_ids": [...]}``).
- ``NgramLM`` subclasses ``MLE``, ``AddK`` (Laplace = add-1), ``Katz``, ``KneserNey``
  (interpolated, one discount per order) and ``ModifiedKneserNey`` (three discounts per order).
  Every model exposes ``prob(word, context)``, ``logprob`` and ``perplexity(sentences)``.
- ``write_arpa`` / ``ArpaLM``: export a back-off model to the ARPA text format and read it back.

Conventions (the same as ``nltk.lm`` with ``padded_everygram_pipeline``, so that counts and
probabilities can be compared one to one): a sentence ``w1..wm`` is padded to
``<s>^(n-1) w1..wm </s>``; for every order k <= n we count the k-grams that END at a real
token or ``</s>`` (``<s>`` is never predicted, only conditioned on). Perplexity is
``exp(-1/N sum ln P(w_i | w_{i-n+1..i-1}))`` over the N tokens plus one ``</s>`` per sentence.

References
----------
1) S. F. Chen, J. Goodman. An Empirical Study of Smoothing Techniques for Language Modeling.
   Harvard TR-10-98, 1998 (add-k, Katz, interpolated and modified Kneser-Ney; count-of-count discounts).
2) S. Katz. Estimation of probabilities from sparse data for the language model component of a
   speech recognizer. IEEE TASSP 35(3), 1987.
3) R. Kneser, H. Ney. Improved backing-off for m-gram language modeling. ICASSP 1995.
4) A. Stolcke. SRILM - an extensible language modeling toolkit, 2002 (the ARPA back-off format).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from plmkit.errors import UserError, suggest
from plmkit.textio import iter_lines

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
METHODS = ("mle", "laplace", "addk", "katz", "kn", "mkn")


# ----------------------------------------------------------------------------- vocabulary
class Vocabulary:
    """Token <-> dense id map. Id 0 is ``<s>``, id 1 is ``</s>``; ``<unk>`` when present.

    Tokens are any hashable (strings for text, ints for tokenizer ids).
    """

    def __init__(self, tokens: Iterable[Hashable] = (), add_unk: bool = False) -> None:
        self.itos: list[Hashable] = [BOS, EOS]
        self.stoi: dict[Hashable, int] = {BOS: 0, EOS: 1}
        if add_unk:
            self.add(UNK)
        for t in tokens:
            self.add(t)

    def add(self, token: Hashable) -> int:
        i = self.stoi.get(token)
        if i is None:
            i = self.stoi[token] = len(self.itos)
            self.itos.append(token)
        return i

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: Hashable) -> bool:
        return token in self.stoi

    @property
    def bos(self) -> int:
        return 0

    @property
    def eos(self) -> int:
        return 1

    @property
    def unk(self) -> int | None:
        return self.stoi.get(UNK)

    @property
    def num_predictable(self) -> int:
        """Size of the outcome space of P(w | h): every type except ``<s>``."""
        return len(self.itos) - 1

    def lookup(self, tokens: Sequence[Hashable], where: str = "text") -> list[int]:
        """Map tokens to ids; unknown tokens map to ``<unk>`` (UserError when there is none)."""
        unk = self.unk
        out = []
        for t in tokens:
            i = self.stoi.get(t)
            if i is None:
                if unk is None:
                    raise UserError(
                        f"{where}: token {t!r} is not in the training vocabulary and the vocabulary has no "
                        f"{UNK} (train with --min-count 2 or --add-unk, or map rare words to {UNK})")
                i = unk
            out.append(i)
        return out


def _as_tokens(example: Any) -> Sequence[Hashable]:
    """Accept a list of tokens/ids or a token-store record ``{"input_ids": [...]}``."""
    if isinstance(example, dict):
        if "input_ids" not in example:
            raise UserError(f"example record without 'input_ids' (keys: {sorted(example)})")
        return example["input_ids"]
    if isinstance(example, str):
        return example.split()
    return example


def read_sentences(path: str | os.PathLike, chars: bool = False, lowercase: bool = False,
                   errors: str = "strict") -> list[list[str]]:
    """Read a text file (``.gz`` too) as one sentence per non-empty line: words split on whitespace, or characters.

    With ``chars=True`` each line's characters (spaces included) are the tokens. Decoding goes through
    ``plmkit.textio`` (``errors``: "strict" stops at a non-UTF-8 byte with file:line, "replace" reads U+FFFD).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    out = []
    for line in iter_lines(p, errors):
        if lowercase:
            line = line.lower()
        toks = list(line) if chars else line.split()
        if toks and (not chars or line.strip()):
            out.append(toks)
    return out


# ----------------------------------------------------------------------------- counts
class NgramCounts:
    """Counts of all k-grams, k = 1..order, ending at a predicted position (see module docstring).

    ``counts[k]`` maps a k-tuple of ids to its count. Build with ``NgramCounts.build(...)``.
    """

    def __init__(self, order: int, vocab: Vocabulary) -> None:
        if not isinstance(order, int) or order < 1:
            raise UserError(f"n-gram order must be an integer >= 1, got {order!r}")
        self.order = order
        self.vocab = vocab
        self.counts: dict[int, dict[tuple[int, ...], int]] = {k: defaultdict(int) for k in range(1, order + 1)}
        self.num_sentences = 0
        self.num_tokens = 0  # predicted events: words + one </s> per sentence

    @classmethod
    def build(cls, sentences: Iterable[Any], order: int, min_count: int = 1, add_unk: bool = False,
              vocab: Vocabulary | None = None) -> "NgramCounts":
        """Count n-grams of ``sentences`` (one pass; two when ``min_count > 1``, which needs a re-iterable).

        Args:
            sentences: iterable of token lists (str or int), whitespace strings, or token-store records.
            order: the n of the model (>= 1).
            min_count: types seen fewer times map to ``<unk>`` (then ``<unk>`` is always in the vocabulary).
            add_unk: add ``<unk>`` to the vocabulary even when every training type is kept.
            vocab: a fixed vocabulary (tokens outside it map to ``<unk>``).
        """
        if not isinstance(order, int) or order < 1:
            raise UserError(f"n-gram order must be an integer >= 1, got {order!r}")
        if vocab is None and min_count > 1:
            if iter(sentences) is sentences:
                raise UserError("min_count > 1 needs two passes over the sentences: pass a list or a re-iterable")
            freq: dict[Hashable, int] = defaultdict(int)
            for ex in sentences:
                for t in _as_tokens(ex):
                    freq[t] += 1
            vocab = Vocabulary((t for t, c in sorted(freq.items(), key=lambda x: -x[1]) if c >= min_count),
                               add_unk=True)
        fixed = vocab is not None
        self = cls(order, vocab if fixed else Vocabulary(add_unk=add_unk))
        for ex in sentences:
            toks = _as_tokens(ex)
            if not toks:
                continue
            ids = self.vocab.lookup(toks) if fixed else [self.vocab.add(t) for t in toks]
            self.add_sentence(ids)
        if self.num_sentences == 0:
            raise UserError("empty training text: no non-empty sentence to count n-grams from")
        self.counts = {k: dict(v) for k, v in self.counts.items()}
        return self

    def add_sentence(self, ids: Sequence[int]) -> None:
        n = self.order
        seq = [0] * (n - 1) + list(ids) + [1]
        for i in range(n - 1, len(seq)):
            for k in range(1, n + 1):
                self.counts[k][tuple(seq[i - k + 1:i + 1])] += 1
        self.num_sentences += 1
        self.num_tokens += len(ids) + 1

    def ngrams(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        """The ``order``-grams (context + word) whose probabilities score sentence ``ids``."""
        n = self.order
        seq = [0] * (n - 1) + list(ids) + [1]
        return [tuple(seq[i - n + 1:i + 1]) for i in range(n - 1, len(seq))]

    def everygrams(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        """All k-grams (k = 1..order) counted for sentence ``ids`` (to feed a reference implementation)."""
        n = self.order
        seq = [0] * (n - 1) + list(ids) + [1]
        return [tuple(seq[i - k + 1:i + 1]) for i in range(n - 1, len(seq)) for k in range(1, n + 1)]

    def memory_bytes(self) -> int:
        """Estimate of the bytes held by the count tables (dicts + key tuples; small ints are shared)."""
        total = 0
        for k, table in self.counts.items():
            total += sys.getsizeof(table) + len(table) * (sys.getsizeof((0,) * k) + 32)
        return total

    def summary(self) -> dict[str, Any]:
        return {"order": self.order, "vocab_size": len(self.vocab), "sentences": self.num_sentences,
                "tokens": self.num_tokens, "ngrams": {k: len(v) for k, v in self.counts.items()},
                "memory_mb": round(self.memory_bytes() / 2**20, 2)}

    # --- persistence (JSON, gzip): vocabulary + counts, so that any method can be rebuilt
    def save(self, path: str | os.PathLike) -> None:
        data = {"format": "plmkit-ngram-counts-1", "order": self.order, "vocab": self.vocab.itos,
                "num_sentences": self.num_sentences, "num_tokens": self.num_tokens,
                "counts": {str(k): [[*g, c] for g, c in v.items()] for k, v in self.counts.items()}}
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as f:
            f.write(json.dumps(data).encode())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NgramCounts":
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not an n-gram counts file ({e})") from None
        if data.get("format") != "plmkit-ngram-counts-1":
            raise UserError(f"{path}: not an n-gram counts file (format {data.get('format')!r})")
        vocab = Vocabulary()
        for t in data["vocab"][2:]:
            vocab.add(t)
        self = cls(int(data["order"]), vocab)
        self.counts = {int(k): {tuple(r[:-1]): r[-1] for r in rows} for k, rows in data["counts"].items()}
        self.num_sentences, self.num_tokens = data["num_sentences"], data["num_tokens"]
        return self


# ----------------------------------------------------------------------------- models
class NgramLM:
    """Base class: ``prob(w, ctx)`` on ids; scoring helpers on token sequences."""

    method = "base"
    is_backoff = False  # True when write_arpa can represent it exactly

    def __init__(self, counts: NgramCounts) -> None:
        self.c = counts
        self.order = counts.order
        self.vocab = counts.vocab
        self.V = counts.vocab.num_predictable
        # per order k: context (k-1 tuple) -> [sum of counts, number of distinct followers]
        self.ctx_stats: dict[int, dict[tuple[int, ...], list[int]]] = {}
        for k, table in counts.counts.items():
            st: dict[tuple[int, ...], list[int]] = {}
            for g, cnt in table.items():
                s = st.get(g[:-1])
                if s is None:
                    st[g[:-1]] = [cnt, 1]
                else:
                    s[0] += cnt
                    s[1] += 1
            self.ctx_stats[k] = st

    def prob(self, word: int, context: Sequence[int] = ()) -> float:
        """P(word | context) on ids; context is truncated to the last ``order - 1`` ids."""
        if word == 0:  # <s> is conditioned on, never predicted
            return 0.0
        ctx = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        return self._prob(word, ctx)

    def _prob(self, w: int, ctx: tuple[int, ...]) -> float:
        raise NotImplementedError

    def logprob(self, word: int, context: Sequence[int] = ()) -> float:
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def score_sentences(self, sentences: Iterable[Any]) -> tuple[float, int, int]:
        """Return (sum of natural-log probs, number of predicted events, number of OOV tokens)."""
        total, n, oov = 0.0, 0, 0
        unk = self.vocab.unk
        for j, ex in enumerate(sentences):
            toks = _as_tokens(ex)
            if not toks:
                continue
            ids = self.vocab.lookup(toks, where=f"sentence {j + 1}")
            if unk is not None:
                oov += sum(1 for t, i in zip(toks, ids) if i == unk and t != UNK)
            for g in self.c.ngrams(ids):
                p = self._prob(g[-1], g[:-1])
                total += math.log(p) if p > 0 else -math.inf
                n += 1
        if n == 0:
            raise UserError("empty evaluation text: no non-empty sentence to score")
        return total, n, oov

    def perplexity(self, sentences: Iterable[Any]) -> float:
        """exp of the mean negative log-probability per predicted token (words + </s>); inf if any P = 0."""
        total, n, _ = self.score_sentences(sentences)
        return math.exp(-total / n) if total > -math.inf else math.inf


class MLE(NgramLM):
    """Maximum likelihood: c(h w) / c(h) (zero for unseen events; unseen contexts give 0)."""

    method = "mle"

    def __init__(self, counts: NgramCounts) -> None:
        super().__init__(counts)
        self.is_backoff = counts.order == 1

    def _prob(self, w, ctx):
        k = len(ctx) + 1
        st = self.ctx_stats[k].get(ctx)
        return self.c.counts[k].get(ctx + (w,), 0) / st[0] if st else 0.0


class AddK(NgramLM):
    """Additive (Lidstone) smoothing of the highest order: (c(h w) + k) / (c(h) + k V). k = 1 is Laplace."""

    method = "addk"

    def __init__(self, counts: NgramCounts, k: float = 1.0) -> None:
        if k <= 0:
            raise UserError(f"add-k smoothing needs k > 0, got {k}")
        super().__init__(counts)
        self.k = k
        self.is_backoff = counts.order == 1

    def _prob(self, w, ctx):
        n = len(ctx) + 1
        st = self.ctx_stats[n].get(ctx)
        tot = st[0] if st else 0
        return (self.c.counts[n].get(ctx + (w,), 0) + self.k) / (tot + self.k * self.V)


class Katz(NgramLM):
    """Katz back-off with Good-Turing discounts for counts r <= K (Katz 1987; Chen & Goodman sec. 2.4).

    P(w|h) = d_r c(h w)/c(h) when c(h w) = r > 0, else alpha(h) P(w|h'), alpha normalising each
    context. The unigram level is Good-Turing discounted too, its left-over mass spread uniformly
    over vocabulary types never seen (e.g. an added ``<unk>``); if there are none it is plain MLE.
    A context whose followers all have counts > K (so nothing is discounted) reserves 1/(c(h)+1)
    of its mass for back-off, so that no event has probability 0.
    """

    method = "katz"
    is_backoff = True

    def __init__(self, counts: NgramCounts, K: int = 5) -> None:
        super().__init__(counts)
        self.K = K
        self.d: dict[int, dict[int, float]] = {k: self._gt_discounts(counts.counts[k]) for k in counts.counts}
        # unigram level
        tab1 = counts.counts[1]
        self.N1 = sum(tab1.values())
        unseen = self.V - len(tab1)
        self.unseen_unigram = unseen
        if unseen <= 0:
            self.d[1] = {}
        disc_mass = sum(self._disc(1, c) * c for c in tab1.values()) / self.N1
        self.p_unseen_unigram = (1.0 - disc_mass) / unseen if unseen > 0 else 0.0
        # back-off weights, lowest order first
        self.alpha: dict[int, dict[tuple[int, ...], float]] = {}
        self.scale: dict[int, dict[tuple[int, ...], float]] = {}
        for k in range(2, self.order + 1):
            num: dict[tuple[int, ...], float] = defaultdict(float)
            den: dict[tuple[int, ...], float] = defaultdict(float)
            st = self.ctx_stats[k]
            for g, cnt in counts.counts[k].items():
                h = g[:-1]
                num[h] += self._disc(k, cnt) * cnt / st[h][0]
                den[h] += self._prob(g[-1], h[1:])  # lower orders are complete at this point
            # A context whose followers all have counts > K keeps no mass for unseen words: reserve
            # 1/(c(h)+1) of it (scaling its seen probabilities) so that no event gets probability 0.
            sc = self.scale[k] = {h: st[h][0] / (st[h][0] + 1.0) for h in num if num[h] > 1.0 - 1e-9}
            self.alpha[k] = {h: max(1.0 - num[h] * sc.get(h, 1.0), 0.0) / max(1.0 - den[h], 1e-300) for h in num}

    def _gt_discounts(self, table: dict) -> dict[int, float]:
        K = self.K
        nr: dict[int, int] = defaultdict(int)
        for c in table.values():
            if c <= K + 1:
                nr[c] += 1
        if not nr.get(1):
            return {}
        common = (K + 1) * nr.get(K + 1, 0) / nr[1]
        d = {}
        for r in range(1, K + 1):
            if nr.get(r) and nr.get(r + 1):
                dr = ((r + 1) * nr[r + 1] / (r * nr[r]) - common) / (1 - common)
                if 0 < dr <= 1:  # otherwise leave the count undiscounted (degenerate count-of-counts)
                    d[r] = dr
        return d

    def _disc(self, k: int, c: int) -> float:
        return self.d[k].get(c, 1.0)

    def _prob(self, w, ctx):
        k = len(ctx) + 1
        if k == 1:
            c = self.c.counts[1].get((w,), 0)
            return self._disc(1, c) * c / self.N1 if c else self.p_unseen_unigram
        c = self.c.counts[k].get(ctx + (w,), 0)
        if c:
            return self._disc(k, c) * c / self.ctx_stats[k][ctx][0] * self.scale[k].get(ctx, 1.0)
        return self.alpha[k].get(ctx, 1.0) * self._prob(w, ctx[1:])

    def backoff_weight(self, ctx: tuple[int, ...]) -> float:
        return self.alpha.get(len(ctx) + 1, {}).get(ctx, 1.0)


class KneserNey(NgramLM):
    """Interpolated Kneser-Ney with one absolute discount per order.

    Highest order uses raw counts, lower orders continuation counts N1+(. h w):
    P_k(w|h) = max(c_k(h w) - D_k, 0)/c_k(h .) + D_k N1+(h .)/c_k(h .) * P_{k-1}(w|h').
    The unigram level is interpolated with the uniform 1/V (Chen & Goodman) unless
    ``uniform_floor=False`` (then it is the undiscounted continuation distribution, as in ``nltk.lm``).

    Args:
        discount: a fixed D for every order (``nltk.lm`` uses 0.1); None estimates
            D_k = n1 / (n1 + 2 n2) from the count-of-counts of each order.
    """

    method = "kn"
    is_backoff = True
    modified = False

    def __init__(self, counts: NgramCounts, discount: float | None = None, uniform_floor: bool = True) -> None:
        super().__init__(counts)
        if discount is not None and not (0 <= discount <= 1 if not self.modified else discount >= 0):
            raise UserError(f"Kneser-Ney discount must be in [0, 1], got {discount}")
        n = self.order
        self.uniform_floor = uniform_floor
        # level tables: raw counts at the top, continuation counts below
        self.tab: dict[int, dict[tuple[int, ...], int]] = {n: counts.counts[n]}
        for k in range(n - 1, 0, -1):
            cc: dict[tuple[int, ...], int] = defaultdict(int)
            for g in counts.counts[k + 1]:
                cc[g[1:]] += 1
            self.tab[k] = dict(cc)
        # per level and context: total, and number of followers with count 1, 2, >= 3
        self.st: dict[int, dict[tuple[int, ...], list[int]]] = {}
        for k, table in self.tab.items():
            st: dict[tuple[int, ...], list[int]] = {}
            for g, cnt in table.items():
                s = st.get(g[:-1])
                if s is None:
                    s = st[g[:-1]] = [0, 0, 0, 0]
                s[0] += cnt
                s[min(cnt, 3)] += 1
            self.st[k] = st
        self.D: dict[int, tuple[float, float, float]] = {}
        for k, table in self.tab.items():
            if discount is not None:
                self.D[k] = (discount,) * 3
            else:
                self.D[k] = self._estimate(table)
        if not uniform_floor:
            self.D[1] = (0.0, 0.0, 0.0)

    def _estimate(self, table: dict) -> tuple[float, float, float]:
        nr = [0] * 5
        for c in table.values():
            if c <= 4:
                nr[c] += 1
        n1, n2, n3, n4 = nr[1], nr[2], nr[3], nr[4]
        if n1 == 0 or n2 == 0:
            return (0.5, 0.5, 0.5)  # too few counts to estimate (tiny corpora)
        Y = n1 / (n1 + 2 * n2)
        if not self.modified:
            return (Y, Y, Y)
        D1 = 1 - 2 * Y * n2 / n1
        D2 = 2 - 3 * Y * n3 / n2 if n2 else 1.0
        D3 = 3 - 4 * Y * n4 / n3 if n3 else 1.0
        return (min(max(D1, 0.0), 1.0), min(max(D2, 0.0), 2.0), min(max(D3, 0.0), 3.0))

    def _gamma(self, k: int, s: list[int]) -> float:
        D = self.D[k]
        return (D[0] * s[1] + D[1] * s[2] + D[2] * s[3]) / s[0]

    def level_prob(self, w: int, ctx: tuple[int, ...]) -> float:
        """P_k(w | ctx) of level k = len(ctx) + 1 (what ARPA stores for a k-gram)."""
        k = len(ctx) + 1
        s = self.st[k].get(ctx)
        if k == 1:
            if s is None:  # no data at all
                return 1.0 / self.V
            c = self.tab[1].get((w,), 0)
            D = self.D[1][min(c, 3) - 1] if c else 0.0
            return max(c - D, 0.0) / s[0] + (self._gamma(1, s) / self.V if self.uniform_floor else 0.0)
        lower = self.level_prob(w, ctx[1:])
        if s is None:
            return lower
        c = self.tab[k].get(ctx + (w,), 0)
        D = self.D[k][min(c, 3) - 1] if c else 0.0
        return max(c - D, 0.0) / s[0] + self._gamma(k, s) * lower

    _prob = level_prob

    def backoff_weight(self, ctx: tuple[int, ...]) -> float:
        """gamma(ctx): P(w|ctx) = gamma(ctx) P(w|ctx') for every w never seen after ctx."""
        k = len(ctx) + 1
        s = self.st.get(k, {}).get(ctx)
        return self._gamma(k, s) if s else 1.0


class ModifiedKneserNey(KneserNey):
    """Interpolated modified Kneser-Ney (Chen & Goodman 1998): discounts D1, D2, D3+ per order."""

    method = "mkn"
    modified = True


def build_model(counts: NgramCounts, method: str = "kn", **options: Any) -> NgramLM:
    """Build a model of ``method`` ("mle", "laplace", "addk", "katz", "kn", "mkn") over ``counts``."""
    m = method.lower().replace("-", "").replace("_", "")
    m = {"addone": "laplace", "kneserney": "kn", "modifiedkn": "mkn", "modifiedkneserney": "mkn"}.get(m, m)
    if m not in METHODS:
        raise UserError(f"unknown n-gram smoothing method {method!r}; expected one of {', '.join(METHODS)}"
                        + suggest(method, METHODS))
    if m == "mle":
        return MLE(counts)
    if m == "laplace":
        return AddK(counts, k=1.0)
    if m == "addk":
        return AddK(counts, k=float(options.get("k", 0.1)))
    if m == "katz":
        return Katz(counts, K=int(options.get("K", 5)))
    cls = KneserNey if m == "kn" else ModifiedKneserNey
    return cls(counts, discount=options.get("discount"), uniform_floor=options.get("uniform_floor", True))


# ----------------------------------------------------------------------------- ARPA
def _tok_str(t: Hashable) -> str:
    s = str(t)
    if not s or any(ch.isspace() for ch in s):
        raise UserError(f"token {t!r} cannot be written to ARPA (empty or contains whitespace); "
                        "use word tokens or map characters (e.g. ' ' -> '<space>')")
    return s


def write_arpa(model: NgramLM, path: str | os.PathLike) -> None:
    """Write a back-off model (Katz, KN, MKN, or any unigram model) as an ARPA file (log10 values).

    Every n-gram with a count is listed with log10 P_k(w|h) and, for orders < n, its back-off
    weight log10 bow(h w); ``<s>`` contexts used by the (n-1)-fold padding are listed with
    probability -99 so that the file reproduces the model exactly (``ArpaLM`` is the check).
    """
    if not model.is_backoff:
        raise UserError(f"ARPA export needs a back-off model (katz, kn, mkn) or order 1; got {model.method} "
                        f"of order {model.order}")
    n = model.order
    itos = model.vocab.itos
    names = [_tok_str(t) for t in itos]
    levels: dict[int, set[tuple[int, ...]]] = {}
    for k in range(1, n + 1):
        grams = set(model.c.counts[k])
        if k == 1:
            grams |= {(i,) for i in range(len(itos))}  # every vocabulary type, <s> included
        levels[k] = grams
    for k in range(2, n + 1):  # contexts of level k must be listed at level k-1 to carry a bow
        levels[k - 1] |= set(model.ctx_stats[k])

    def lp(k: int, g: tuple[int, ...]) -> float:
        if g[-1] == 0:  # <s> is never predicted
            return -99.0
        p = model.level_prob(g[-1], g[:-1]) if isinstance(model, KneserNey) else model._prob(g[-1], g[:-1])
        return math.log10(p) if p > 0 else -99.0

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for k in range(1, n + 1):
            f.write(f"ngram {k}={len(levels[k])}\n")
        for k in range(1, n + 1):
            f.write(f"\n\\{k}-grams:\n")
            for g in sorted(levels[k]):
                line = f"{lp(k, g):.7f}\t{' '.join(names[i] for i in g)}"
                if k < n:
                    bow = model.backoff_weight(g)
                    if bow != 1.0:
                        line += f"\t{math.log10(bow) if bow > 0 else -99.0:.7f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
    os.replace(tmp, path)


class ArpaLM:
    """A back-off LM read from an ARPA file: log10 P(w|h) = lp(h w) if listed, else bow(h) + log10 P(w|h')."""

    def __init__(self, path: str | os.PathLike, errors: str = "strict") -> None:
        self.path = str(path)
        self.lp: dict[tuple[str, ...], float] = {}
        self.bow: dict[tuple[str, ...], float] = {}
        self.order = 0
        expected: dict[int, int] = {}
        section = None
        f = iter_lines(self.path, errors)  # plmkit.textio: one-line errors for a missing / non-UTF-8 file
        seen: dict[int, int] = defaultdict(int)
        with contextlib.closing(f):
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                if line == "\\data\\":
                    section = "data"
                elif line == "\\end\\":
                    section = "end"
                    break
                elif line.startswith("\\") and line.endswith("-grams:"):
                    try:
                        section = int(line[1:-7])
                    except ValueError:
                        raise UserError(f"{path}:{lineno}: bad section header {line!r}") from None
                elif section == "data":
                    if not line.startswith("ngram ") or "=" not in line:
                        raise UserError(f"{path}:{lineno}: expected 'ngram N=COUNT', got {line!r}")
                    k, cnt = line[6:].split("=")
                    expected[int(k)] = int(cnt)
                    self.order = max(self.order, int(k))
                elif isinstance(section, int):
                    parts = line.split()
                    k = section
                    if len(parts) not in (k + 1, k + 2):
                        raise UserError(f"{path}:{lineno}: expected log10-prob, {k} tokens and an optional "
                                        f"back-off weight, got {len(parts)} fields")
                    try:
                        g = tuple(parts[1:k + 1])
                        self.lp[g] = float(parts[0])
                        if len(parts) == k + 2:
                            self.bow[g] = float(parts[-1])
                    except ValueError:
                        raise UserError(f"{path}:{lineno}: non-numeric probability or back-off weight") from None
                    seen[k] += 1
                else:
                    raise UserError(f"{path}:{lineno}: text outside an ARPA section")
        if section != "end" or not expected:
            raise UserError(f"{path}: not an ARPA file (missing \\data\\ or \\end\\)")
        for k, cnt in expected.items():
            if seen[k] != cnt:
                raise UserError(f"{path}: header says {cnt} {k}-grams, found {seen[k]}")
        self.has_unk = (UNK,) in self.lp

    def log10prob(self, word: str, context: Sequence[str] = ()) -> float:
        ctx = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        while True:
            g = ctx + (word,)
            if g in self.lp:
                return self.lp[g]
            if not ctx:
                return -math.inf
            bow = self.bow.get(ctx, 0.0)
            ctx = ctx[1:]
            lp = self.log10prob(word, ctx)
            return bow + lp

    def perplexity(self, sentences: Iterable[Any]) -> float:
        """Perplexity with the same padding convention as ``NgramLM`` (OOV -> <unk>)."""
        total, n = 0.0, 0
        for j, ex in enumerate(sentences):
            toks = [str(t) for t in _as_tokens(ex)]
            if not toks:
                continue
            ids = []
            for t in toks:
                if (t,) not in self.lp:
                    if not self.has_unk:
                        raise UserError(f"sentence {j + 1}: token {t!r} is not in the ARPA vocabulary, which has "
                                        f"no {UNK}")
                    t = UNK
                ids.append(t)
            seq = [BOS] * (self.order - 1) + ids + [EOS]
            for i in range(self.order - 1, len(seq)):
                total += self.log10prob(seq[i], seq[max(0, i - self.order + 1):i])
                n += 1
        if n == 0:
            raise UserError("empty evaluation text: no non-empty sentence to score")
        return 10 ** (-total / n)
