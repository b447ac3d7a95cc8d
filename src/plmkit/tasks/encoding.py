"""Turn task examples into model features, and model outputs back into predictions.

- sentence / pair classification, regression, multi-label: ``[CLS] a [SEP] (b [SEP])``;
  truncation is counted (``feature["truncated"]``), never silent.
- token classification: words are tokenized one by one; the label goes on the first word piece,
  other pieces get -100 (BERT, Devlin et al. 2019, sec. 5.3); predictions are read back from the
  first piece of each word; words cut off by ``max_len`` are predicted "O" and counted.
- extractive QA: the context is split into windows of ``max_len`` tokens with ``doc_stride``
  overlap (the BERT SQuAD recipe); answer start/end token positions (CLS = 0 when the answer is
  outside the window). Post-processing picks, per question, the best ``start <= end`` span of at
  most ``max_answer_len`` tokens over all windows (n-best by start/end logit sum) and maps it back
  to the context characters via the tokenizer's offsets.
- multiple choice: one ``[CLS] context [SEP] choice [SEP]`` sequence per choice (GPT's input
  transformation, Radford et al. 2018, fig. 1), scored jointly by a softmax over choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plmkit.errors import UserError


@dataclass
class SpecialIds:
    cls: int
    sep: int
    pad: int


def special_ids(tok) -> SpecialIds:
    """[CLS]/[SEP]/[PAD] ids, falling back to BOS/EOS for tokenizers without them."""
    cls = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (sep if sep is not None else 0)
    if cls is None or sep is None:
        raise UserError("the tokenizer has neither [CLS]/[SEP] nor BOS/EOS tokens; task inputs need them")
    return SpecialIds(cls, sep, pad)


# ----------------------------------------------------------------------------------------------
# sequence-level tasks
# ----------------------------------------------------------------------------------------------


def encode_texts(tok, examples, max_len: int, kind: str, labels: list[str] | None = None) -> list[dict]:
    """Features for classification / regression / multi-label examples (``TextExample``)."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    full = tok(texts, pairs)
    enc = tok(texts, pairs, truncation=True, max_length=max_len)
    index = {lab: i for i, lab in enumerate(labels or [])}
    feats = []
    for i, e in enumerate(examples):
        f = {
            "input_ids": enc["input_ids"][i],
            "token_type_ids": enc["token_type_ids"][i],
            "truncated": len(full["input_ids"][i]) > max_len,
            "source": e.source,
        }
        if e.label is not None:
            if kind == "classification":
                f["label"] = index[e.label]
            elif kind == "regression":
                f["label"] = float(e.label)
            elif kind == "multilabel":
                vec = [0.0] * len(index)
                for lab in e.label:
                    vec[index[lab]] = 1.0
                f["label"] = vec
        feats.append(f)
    return feats


def encode_choices(tok, examples, max_len: int) -> list[dict]:
    """One feature per example holding C sequences (``input_ids`` is a list of C lists)."""
    feats = []
    for e in examples:
        full = tok([e.context] * len(e.choices), e.choices)
        enc = tok([e.context] * len(e.choices), e.choices, truncation="only_first", max_length=max_len)
        f = {
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
            "truncated": any(len(a) > max_len for a in full["input_ids"]),
            "source": e.source,
        }
        if e.label is not None:
            f["label"] = e.label
        feats.append(f)
    return feats


# ----------------------------------------------------------------------------------------------
# token classification
# ----------------------------------------------------------------------------------------------


def encode_tokens(tok, examples, max_len: int, labels: list[str] | None = None) -> list[dict]:
    """First-piece labelling of pre-split words (``TokenExample``)."""
    sp = special_ids(tok)
    index = {lab: i for i, lab in enumerate(labels or [])}
    feats = []
    # tokenize every distinct word once (CoNLL repeats words a lot)
    vocab: dict[str, list[int]] = {}
    words = sorted({w for e in examples for w in e.tokens} - set(vocab))
    if words:
        pieces = tok(words, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        for w, p in zip(words, pieces):
            vocab[w] = p if p else ([tok.unk_token_id] if tok.unk_token_id is not None else [sp.sep])
    for e in examples:
        ids, lab, first = [sp.cls], [-100], []
        kept = 0
        for wi, w in enumerate(e.tokens):
            p = vocab[w]
            if len(ids) + len(p) > max_len - 1:
                break
            first.append(len(ids))
            lab.append(index[e.tags[wi]] if e.tags is not None and labels else -100)
            lab.extend([-100] * (len(p) - 1))
            ids.extend(p)
            kept += 1
        ids.append(sp.sep)
        lab.append(-100)
        f = {
            "input_ids": ids,
            "token_type_ids": [0] * len(ids),
            "word_starts": first,
            "num_words": len(e.tokens),
            "truncated": kept < len(e.tokens),
            "source": e.source,
        }
        if e.tags is not None and labels:
            f["labels"] = lab
        feats.append(f)
    return feats


def decode_tokens(feats: list[dict], logits: list[np.ndarray], labels: list[str]) -> list[list[str]]:
    """Per-word tags from per-token logits (T, C) of each feature; cut-off words get "O"."""
    out = []
    for f, lg in zip(feats, logits):
        pred = lg.argmax(-1)
        tags = [labels[int(pred[pos])] for pos in f["word_starts"]]
        tags += ["O"] * (f["num_words"] - len(tags))
        out.append(tags)
    return out


# ----------------------------------------------------------------------------------------------
# extractive QA
# ----------------------------------------------------------------------------------------------


def encode_qa(tok, examples, max_len: int = 384, doc_stride: int = 128, max_query_len: int = 64, train: bool = True) -> list[dict]:
    """Windows over each context: ``[CLS] question [SEP] context-window [SEP]``.

    Each feature keeps ``example_index``, ``context_offsets`` (char span of each window token,
    None for question/special tokens) for post-processing, and in training the token positions
    ``start_position`` / ``end_position`` (0 = [CLS] when the answer is not inside the window).
    """
    sp = special_ids(tok)
    feats = []
    q_enc = tok([e.question for e in examples], add_special_tokens=False)["input_ids"]
    contexts = list(dict.fromkeys(e.context for e in examples))
    c_enc = tok(contexts, add_special_tokens=False, return_offsets=True, return_token_type_ids=False)
    c_by_text = {c: (ids, offs) for c, ids, offs in zip(contexts, c_enc["input_ids"], c_enc["offset_mapping"])}
    for ei, e in enumerate(examples):
        q_ids = q_enc[ei][:max_query_len]
        c_ids, c_offs = c_by_text[e.context]
        budget = max_len - len(q_ids) - 3
        if budget < 8:
            raise UserError(f"{e.source}: max_seq_len {max_len} leaves no room for the context")
        ans_span = None
        if train and e.answers:
            a = e.answers[0]
            cs, ce = a["answer_start"], a["answer_start"] + len(a["text"])
            toks = [i for i, (s, t) in enumerate(c_offs) if s < ce and t > cs]
            if toks:
                ans_span = (toks[0], toks[-1])
        start = 0
        while True:
            length = min(budget, len(c_ids) - start)
            window = c_ids[start : start + length]
            ids = [sp.cls] + q_ids + [sp.sep] + window + [sp.sep]
            ctx0 = len(q_ids) + 2  # position of the first context token
            offsets = [None] * ctx0 + [tuple(o) for o in c_offs[start : start + length]] + [None]
            f = {
                "input_ids": ids,
                "token_type_ids": [0] * ctx0 + [1] * (length + 1),
                "example_index": ei,
                "context_offsets": offsets,
                "source": e.source,
            }
            if train:
                s_pos = e_pos = 0
                if ans_span and ans_span[0] >= start and ans_span[1] < start + length:
                    s_pos, e_pos = ans_span[0] - start + ctx0, ans_span[1] - start + ctx0
                f["start_position"], f["end_position"] = s_pos, e_pos
            feats.append(f)
            if start + length >= len(c_ids):
                break
            start += min(length, doc_stride)
    return feats


def decode_qa(examples, feats: list[dict], start_logits: list[np.ndarray], end_logits: list[np.ndarray],
              n_best: int = 20, max_answer_len: int = 30) -> dict[str, str]:
    """Best answer text per question id over all of its windows."""
    best: dict[int, tuple[float, str]] = {}
    for f, sl, el in zip(feats, start_logits, end_logits):
        offs = f["context_offsets"]
        sl, el = np.asarray(sl)[: len(offs)], np.asarray(el)[: len(offs)]
        starts = np.argsort(-sl)[:n_best]
        ends = np.argsort(-el)[:n_best]
        ctx = examples[f["example_index"]].context
        for s in starts:
            if offs[s] is None:
                continue
            for t in ends:
                if offs[t] is None or t < s or t - s + 1 > max_answer_len:
                    continue
                score = float(sl[s] + el[t])
                cur = best.get(f["example_index"])
                if cur is None or score > cur[0]:
                    best[f["example_index"]] = (score, ctx[offs[s][0] : offs[t][1]])
    return {examples[i].id: text for i, (_, text) in best.items()}


def set_language(feats: list[dict], language_id: int) -> None:
    """Give every token of ``feats`` the token type ``language_id`` (XLM language embeddings), in place."""
    for f in feats:
        if "token_type_ids" not in f:
            raise UserError("--language-id: this task's features have no token types to set")
        f["token_type_ids"] = [language_id] * len(f["token_type_ids"])
