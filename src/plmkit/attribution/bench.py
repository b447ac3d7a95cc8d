"""A fact-tracing benchmark built from our own data (``plm attribute bench``).

Akyürek et al. (2022, "Towards Tracing Factual Knowledge in Language Models Back to the Training Data")
ask which training examples taught a model a fact. plmkit owns the corpus, the token store and the
pretraining run, so the benchmark builds all three and knows the answer:

1. **Corpus** (:func:`build_corpus`): English text (``english-books``, Project Gutenberg) cut into
   background examples, plus LAMA T-REx facts, each written out by the training paraphrases of its
   relation (``plmkit/assets/fact_paraphrases.json``; LAMA's own template is never used in training)
   and placed between background sentences. Facts appear a different number of times (``repeats``, e.g.
   2, 4, 8, 16). ``DIR/corpus.jsonl`` holds one ``{"text": ...}`` per example; record i is document i
   of the run's token store, i.e. training example id i (the attribution contract).
   ``DIR/examples.jsonl`` says what each example is (background or which fact and paraphrase);
   ``DIR/facts.jsonl`` lists each fact with its example ids (its gold proponents).
2. **Pretraining** (:func:`pretrain_recipe`): a small causal LM, trained by
   :func:`plmkit.pipelines.run_pretraining` with checkpoints kept (TracIn reads them), documents attended
   as standalone sequences (``clm.block_documents``), the run in ``DIR/run``.
3. **Queries** (:func:`probe_facts`): for every fact the held-out prompt (LAMA's template up to ``[Y]``)
   is scored against every object of the benchmark (log P(" " + object | prompt), summed over the object's
   tokens); a fact is *learned* when its object ranks in the top ``learned_rank`` (10). Learned facts
   become ``DIR/queries.jsonl`` with their gold proponents.
4. **Evaluation** (:func:`evaluate`): each method ranks (a) the whole training set and (b) Akyürek et
   al.'s candidate set per query (:func:`candidate_set`: all gold proponents + BM25's top 100 + up to 100
   same-target distractors + 100 random examples); MRR and recall@10 averaged over the queries go to
   ``DIR/metrics.json``.

The workflow that strings these together and pretrains is :func:`plmkit.pipelines.attribution.run_bench`
(the attribution package sits below the pipelines and does not import them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from plmkit.errors import UserError

PARAPHRASES = Path(__file__).resolve().parents[1] / "assets" / "fact_paraphrases.json"
RELATIONS = ("P19", "P20", "P27", "P101", "P103", "P106", "P108", "P364", "P413", "P740")
METHODS = ("bm25", "embedding", "tracin")


# ----------------------------------------------------------------------------------------- sizes
@dataclass(kw_only=True)
class BenchSize:
    """How big the benchmark is: corpus, model and pretraining schedule."""

    facts_per_relation: int
    """Facts drawn (seeded) from each LAMA T-REx relation."""
    repeats: tuple[int, ...]
    """Examples per fact, cycled over each relation's facts (some facts many times, some few)."""
    background: int
    """Background examples (English text chunks)."""
    background_words: tuple[int, int] = (30, 60)
    """Words per background example (min, max)."""
    context_sentences: float = 0.5
    """Chance that a fact example gets a background sentence before it (and, separately, after it)."""
    relations: tuple[str, ...] = RELATIONS
    model: dict[str, Any] = field(default_factory=dict)
    """``model.overrides`` of the gpt2-tiny preset."""
    vocab_size: int = 8000
    seq_len: int = 128
    train: dict[str, Any] = field(default_factory=dict)
    """The recipe's ``train`` section."""
    checkpoints: int = 4
    """Checkpoints kept for TracIn (``train.save_every = max_steps / checkpoints``, all kept)."""


_MODEL_SMALL = dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                    max_position_embeddings=256, hidden_dropout=0.0, attention_dropout=0.0)
_TRAIN = dict(batch_size=16, lr=2e-3, schedule="linear", warmup_steps=100, weight_decay=0.01, seed=1,
              log_every=50, eval_every=0, num_threads=0, tensorboard=False, plots=False)

SIZES: dict[str, BenchSize] = {
    # about 8-10 minutes of pretraining on one busy CPU core
    "small": BenchSize(facts_per_relation=24, repeats=(2, 4, 8, 16), background=1500, background_words=(20, 45),
                       context_sentences=0.3, vocab_size=4000, model=dict(_MODEL_SMALL, num_layers=3),
                       train=dict(_TRAIN, max_steps=500)),
    "full": BenchSize(facts_per_relation=60, repeats=(1, 2, 4, 8, 16, 32), background=20000, vocab_size=12000,
                      model=dict(_MODEL_SMALL, hidden_size=256, intermediate_size=1024, num_layers=4),
                      train=dict(_TRAIN, max_steps=6000, batch_size=32, lr=1e-3, warmup_steps=300),
                      checkpoints=6),
    # a smoke test in about a minute (tests use smaller ones still)
    "tiny": BenchSize(facts_per_relation=4, repeats=(2, 8), background=200, vocab_size=2000,
                      model=dict(_MODEL_SMALL, hidden_size=64, num_layers=2, intermediate_size=256),
                      train=dict(_TRAIN, max_steps=60, batch_size=8, warmup_steps=10, log_every=20),
                      checkpoints=2),
}


def get_size(size: str | BenchSize) -> BenchSize:
    if isinstance(size, BenchSize):
        return size
    if size not in SIZES:
        raise UserError(f"--size {size!r}: expected one of {', '.join(SIZES)}")
    return SIZES[size]


# ----------------------------------------------------------------------------------------- data
def load_paraphrases(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """relation -> training paraphrase templates (each with one [X] and one [Y])."""
    path = Path(path) if path else PARAPHRASES
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: paraphrase file not found") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    out: dict[str, list[str]] = {}
    for rel, temps in raw.items():
        if rel.startswith("_"):
            continue
        if not isinstance(temps, list) or not temps or not all(isinstance(t, str) for t in temps):
            raise UserError(f"{path}: key {rel!r}: expected a non-empty list of template strings")
        for t in temps:
            if t.count("[X]") != 1 or t.count("[Y]") != 1:
                raise UserError(f"{path}: key {rel!r}: template {t!r} needs exactly one [X] and one [Y]")
        out[rel] = temps
    return out


_NAME = re.compile(r"^[A-Za-z][A-Za-z .'\-]*[A-Za-z.]$")


@dataclass
class BenchFact:
    """One fact of the benchmark and where the corpus states it."""

    id: int
    relation: str
    subject: str
    object: str
    repeats: int
    prompt: str
    """The held-out query prompt: LAMA's template up to [Y], subject filled in."""
    example_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def query_prompt(template: str, subject: str) -> str:
    """``"[X] was born in [Y] ."`` -> ``"Allan Peiper was born in"``."""
    head = template.split("[Y]")[0]
    if "[X]" not in head:
        raise UserError(f"LAMA template {template!r}: [X] must come before [Y] for a causal-LM prompt")
    return head.replace("[X]", subject).strip()


def select_facts(lama_dir: str | os.PathLike, size: BenchSize, rng: random.Random,
                 paraphrases: dict[str, list[str]]) -> list[BenchFact]:
    """Draw ``facts_per_relation`` facts from each relation: plain ASCII names, every subject used once."""
    from plmkit.knowledge.lama_data import load_lama

    missing = [r for r in size.relations if r not in paraphrases]
    if missing:
        raise UserError(f"no training paraphrases for relation(s) {', '.join(missing)}")
    rels = load_lama(lama_dir, sources=["trex"], relations=list(size.relations))
    facts: list[BenchFact] = []
    used: set[str] = set()
    for r in sorted(rels, key=lambda r: size.relations.index(r.relation)):
        pool = [f for f in r.facts if _NAME.match(f.subject) and _NAME.match(f.obj) and len(f.subject) <= 40
                and len(f.obj) <= 25 and f.obj.lower() not in f.subject.lower()]
        rng.shuffle(pool)
        chosen = []
        for f in pool:
            if f.subject.lower() in used:
                continue
            used.add(f.subject.lower())
            chosen.append(f)
            if len(chosen) == size.facts_per_relation:
                break
        if len(chosen) < size.facts_per_relation:
            raise UserError(f"LAMA relation {r.relation}: only {len(chosen)} usable facts, "
                            f"{size.facts_per_relation} asked")
        for i, f in enumerate(chosen):
            facts.append(BenchFact(len(facts), r.relation, f.subject, f.obj, size.repeats[i % len(size.repeats)],
                                   query_prompt(r.template or "", f.subject)))
    return facts


_START = re.compile(r"^\*\*\* ?START OF", re.M)
_END = re.compile(r"^\*\*\* ?END OF", re.M)
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def book_paragraphs(path: Path) -> list[str]:
    """Paragraphs (blank-line separated, whitespace collapsed) of a Gutenberg book, header/licence cut."""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    m = _START.search(text)
    if m:
        text = text[text.index("\n", m.end()) + 1:]
    m = _END.search(text)
    if m:
        text = text[:m.start()]
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p.split()) >= 8]


def background_chunks(books_dir: str | os.PathLike, n: int, words: tuple[int, int],
                      rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (book name, chunk) pairs: runs of whole sentences of ``words`` words, drawn evenly from the books."""
    books = sorted(Path(books_dir).glob("*.txt"))
    if not books:
        raise UserError(f"{books_dir}: no .txt books found (expected shared/data/english-books)")
    lo, hi = words
    per_book = -(-n // len(books))
    out: list[tuple[str, str]] = []
    for book in books:
        chunks: list[str] = []
        for p in book_paragraphs(book):
            cur: list[str] = []
            for s in _SENT.split(p):
                cur.append(s)
                nw = sum(len(x.split()) for x in cur)
                if nw >= lo:
                    if nw <= hi:
                        chunks.append(" ".join(cur))
                    cur = []
        rng.shuffle(chunks)
        out += [(book.stem, c) for c in chunks[:per_book]]
    rng.shuffle(out)
    if len(out) < n:
        raise UserError(f"{books_dir}: only {len(out)} background chunks of {lo}-{hi} words, {n} asked")
    return out[:n]


@dataclass
class Corpus:
    """What :func:`build_corpus` wrote: ``texts[i]`` is example i, ``kinds[i]`` its record."""

    texts: list[str]
    examples: list[dict]
    facts: list[BenchFact]

    def __len__(self) -> int:
        return len(self.texts)


def build_corpus(out_dir: str | os.PathLike, lama_dir: str | os.PathLike, books_dir: str | os.PathLike,
                 size: str | BenchSize = "small", seed: int = 0,
                 paraphrases: str | os.PathLike | None = None) -> Corpus:
    """Write ``corpus.jsonl``, ``examples.jsonl`` and ``facts.jsonl`` into ``out_dir`` (see the module doc)."""
    size = get_size(size)
    rng = random.Random(seed)
    temps = load_paraphrases(paraphrases)
    facts = select_facts(lama_dir, size, rng, temps)
    n_ctx = max(50, len(facts))
    chunks = background_chunks(books_dir, size.background + n_ctx, size.background_words, rng)
    bg = chunks[:size.background]
    # background sentences to put around fact statements (from other chunks than the background examples)
    ctx_pool = [s for _, c in chunks[size.background:] for s in _SENT.split(c) if 4 <= len(s.split()) <= 25]
    items: list[tuple[str, dict]] = [(c, {"kind": "background", "source": name}) for name, c in bg]
    for f in facts:
        ts = temps[f.relation]
        start = rng.randrange(len(ts))
        for j in range(f.repeats):
            t = (start + j) % len(ts)
            sent = ts[t].replace("[X]", f.subject).replace("[Y]", f.object)
            parts = [sent]
            if rng.random() < size.context_sentences:
                parts.insert(0, rng.choice(ctx_pool))
            if rng.random() < size.context_sentences:
                parts.append(rng.choice(ctx_pool))
            items.append((" ".join(parts), {"kind": "fact", "fact": f.id, "template": t}))
    rng.shuffle(items)
    texts, examples = [], []
    for i, (text, meta) in enumerate(items):
        if not text.strip() or "\n" in text:
            raise AssertionError(f"example {i} would not be one stored document: {text!r}")
        texts.append(text)
        examples.append({"id": i, **meta})
        if meta["kind"] == "fact":
            facts[meta["fact"]].example_ids.append(i)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl", [{"text": t} for t in texts])
    write_jsonl(out / "examples.jsonl", examples)
    write_jsonl(out / "facts.jsonl", [f.to_json() for f in facts])
    return Corpus(texts, examples, facts)


def read_corpus(bench_dir: str | os.PathLike) -> Corpus:
    """Read back what :func:`build_corpus` wrote."""
    d = Path(bench_dir)
    for name in ("corpus.jsonl", "examples.jsonl", "facts.jsonl"):
        if not (d / name).is_file():
            raise UserError(f"--bench {d}: no {name} (not a directory written by plm attribute bench)")
    texts = [r["text"] for r in read_jsonl(d / "corpus.jsonl")]
    examples = read_jsonl(d / "examples.jsonl")
    facts = [BenchFact(**r) for r in read_jsonl(d / "facts.jsonl")]
    return Corpus(texts, examples, facts)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- pretraining
def pretrain_recipe(corpus_file: str | os.PathLike, size: str | BenchSize,
                    tokenizer: str | os.PathLike | None = None) -> dict:
    """The pretraining recipe of the benchmark (also used, with another corpus file, by the forget loop)."""
    size = get_size(size)
    steps = int(size.train["max_steps"])
    train = dict(size.train, save_every=max(1, steps // size.checkpoints), keep_last=0)
    tok = {"path": str(tokenizer)} if tokenizer else {"train": {"kind": "bpe", "vocab_size": size.vocab_size}}
    return {
        "model": {"preset": "gpt2-tiny", "overrides": dict(size.model)},
        "tokenizer": tok,
        "data": {"train": [str(Path(corpus_file).resolve())], "format": "jsonl", "seq_len": size.seq_len},
        "objective": [{"name": "clm", "block_documents": True}],
        "train": train,
    }


# ----------------------------------------------------------------------------------------- probing
def load_final(run_dir: str | os.PathLike):
    """The model and tokenizer of ``RUN/final``."""
    import plmkit

    final = Path(run_dir) / "final"
    if not (final / "config.json").is_file():
        raise UserError(f"{run_dir}: no final/ model (did pretraining finish?)")
    model = plmkit.load(str(final)).eval()
    return model, plmkit.load_tokenizer(str(final))


def target_logprobs(model, tok, prompts: Sequence[str], objects: Sequence[str], batch_size: int = 256,
                    ) -> np.ndarray:
    """(len(prompts), len(objects)): log P(" " + object | prompt), summed over the object's tokens."""
    import torch

    p_ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    o_ids = [tok.encode(" " + o, add_special_tokens=False) for o in objects]
    pairs = [(i, j) for i in range(len(prompts)) for j in range(len(objects))]
    out = np.zeros((len(prompts), len(objects)), dtype=np.float64)
    pad = 0
    with torch.no_grad():
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            seqs = [p_ids[i] + o_ids[j] for i, j in chunk]
            n = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), n), pad, dtype=torch.long)
            am = torch.zeros((len(seqs), n), dtype=torch.long)
            for b, x in enumerate(seqs):
                ids[b, :len(x)] = torch.tensor(x)
                am[b, :len(x)] = 1
            logp = torch.log_softmax(model(ids, attention_mask=am).logits.float(), dim=-1)
            for b, (i, j) in enumerate(chunk):
                lp, lo = len(p_ids[i]), len(o_ids[j])
                pos = torch.arange(lp - 1, lp - 1 + lo)
                out[i, j] = float(logp[b, pos, torch.tensor(o_ids[j])].sum())
    return out


def probe_facts(model, tok, facts: Sequence[BenchFact], objects: Sequence[str] | None = None) -> list[dict]:
    """Per fact: the target's log-probability and its rank (1 = best) among all the benchmark's objects."""
    objects = list(objects) if objects is not None else sorted({f.object for f in facts})
    lp = target_logprobs(model, tok, [f.prompt for f in facts], objects)
    col = {o: j for j, o in enumerate(objects)}
    rows = []
    for i, f in enumerate(facts):
        j = col[f.object]
        rank = 1 + int((lp[i] > lp[i, j]).sum())
        rows.append({"fact": f.id, "target_logprob": round(float(lp[i, j]), 4), "rank": rank,
                     "top": objects[int(lp[i].argmax())]})
    return rows


def facts_summary(rows: Sequence[dict], learned_rank: int = 10) -> dict:
    n = len(rows)
    return {"facts": n, f"rank_le_{learned_rank}": sum(r["rank"] <= learned_rank for r in rows),
            "rank_1": sum(r["rank"] == 1 for r in rows),
            "mean_target_logprob": round(float(np.mean([r["target_logprob"] for r in rows])), 4) if n else None}


# ----------------------------------------------------------------------------------------- evaluation
def same_target_examples(texts: Sequence[str], target: str) -> list[int]:
    """Ids of the examples whose text contains ``target`` as a whole word (case-sensitive)."""
    pat = re.compile(r"(?<!\w)" + re.escape(target) + r"(?!\w)")
    return [i for i, t in enumerate(texts) if pat.search(t)]


def candidate_set(query, n_examples: int, bm25_top: Sequence[int], same_target: Sequence[int],
                  rng: random.Random, n_distractors: int = 100, n_random: int = 100,
                  parts: dict | None = None) -> list[int]:
    """Akyürek et al.'s candidates: all gold proponents + BM25's top 100 (``bm25_top``) + up to
    ``n_distractors`` examples with the same target that are not proponents + ``n_random`` random
    examples (from those not already in), as a sorted list of example ids. ``parts`` (a dict), when
    given, receives each part: gold, bm25, distractors, random."""
    gold = set(query.proponents or [])
    top = set(int(i) for i in bm25_top)
    dis_pool = [i for i in same_target if i not in gold]
    dis = set(rng.sample(dis_pool, min(n_distractors, len(dis_pool))))
    cand = gold | top | dis
    rest = [i for i in range(n_examples) if i not in cand]
    rand = set(rng.sample(rest, min(n_random, len(rest))))
    if parts is not None:
        parts.update(gold=gold, bm25=top, distractors=dis, random=rand)
    return sorted(cand | rand)


def rank_ids(scores: np.ndarray, ids: Sequence[int] | None = None) -> list[int]:
    """Example ids best first (ties broken by the lower id)."""
    ids = np.arange(len(scores)) if ids is None else np.asarray(ids)
    order = np.lexsort((ids, -np.asarray(scores, dtype=np.float64)))
    return [int(ids[k]) for k in order]


def score_matrix(method: Any, queries: Sequence[Any]) -> np.ndarray:
    """(Q, N) scores of every training example for every query (``scores_many`` in one pass when the
    method has it: TracIn then streams the examples' gradients once for all queries)."""
    if hasattr(method, "scores_many"):
        return np.asarray(method.scores_many(list(queries)), dtype=np.float64)
    return np.stack([np.asarray(method.scores(q), dtype=np.float64) for q in queries])


def evaluate(methods: dict[str, Any], queries: Sequence[Any], texts: Sequence[str], bm25: Any,
             seed: int = 0, k: int = 10, log: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """MRR and recall@k of each method over the full training set and over the candidate sets.

    ``methods``: name -> object with ``scores(query, candidate_ids=None)`` (or ``scores_many``);
    ``bm25``: the index whose ``top_k(query, 100)`` seeds the candidate sets. An example's score does not
    depend on which other examples are ranked (true of BM25, embedding cosine and TracIn), so the
    candidate-set ranking is the full ranking restricted to the candidates. Returns (metrics in the
    issue's shape, details).
    """
    from plmkit.attribution import mrr, recall_at_k

    rng = random.Random(seed)
    cand_sets = [candidate_set(q, len(texts), [i for i, _ in bm25.top_k(q, 100)],
                               same_target_examples(texts, q.target), rng) for q in queries]
    full = {m: {"mrr": [], "recall_at_10": []} for m in methods}
    cands = {m: {"mrr": [], "recall_at_10": []} for m in methods}
    seconds = {}
    matrices = {}
    per_query = [{"id": q.id, "candidates": len(c)} for q, c in zip(queries, cand_sets)]
    for m, meth in methods.items():
        t0 = time.perf_counter()
        S = score_matrix(meth, queries)
        seconds[m] = time.perf_counter() - t0
        matrices[m] = S
        if S.shape != (len(queries), len(texts)):
            raise ValueError(f"{m}: scores of shape {S.shape}, expected {(len(queries), len(texts))}")
        for qi, (q, cset) in enumerate(zip(queries, cand_sets)):
            r_full, r_cand = rank_ids(S[qi]), rank_ids(S[qi, cset], cset)
            for agg, r in ((full, r_full), (cands, r_cand)):
                agg[m]["mrr"].append(mrr(r, q.proponents))
                agg[m]["recall_at_10"].append(recall_at_k(r, q.proponents, k))
            per_query[qi][m] = {"full_mrr": round(full[m]["mrr"][-1], 4),
                                "candidates_mrr": round(cands[m]["mrr"][-1], 4), "top10": r_full[:10]}
        if log:
            log(f"{m}: scored {len(texts)} examples for {len(queries)} queries in {seconds[m]:.1f}s")

    def mean(d):
        return {m: {key: round(float(np.mean(v)), 4) if v else 0.0 for key, v in d[m].items()} for m in d}

    metrics = {"full": mean(full), "candidates": mean(cands), "n_queries": len(queries)}
    details = {"query_seconds": {m: round(s, 2) for m, s in seconds.items()},
               "mean_candidates": round(float(np.mean([len(c) for c in cand_sets])), 1) if cand_sets else 0,
               "per_query": per_query, "scores": matrices}
    return metrics, details


def queries_from_facts(facts: Sequence[BenchFact], rows: Sequence[dict], learned_rank: int = 10) -> list[dict]:
    """Query records (``load_queries`` format) of the learned facts."""
    by_id = {r["fact"]: r for r in rows}
    return [{"id": str(f.id), "prompt": f.prompt, "target": f.object, "proponents": list(f.example_ids),
             "relation": f.relation, "repeats": f.repeats}
            for f in facts if by_id[f.id]["rank"] <= learned_rank]


TRACIN_PARAMS = ("layers.*",)
"""TracIn differentiates the transformer blocks only by default: the tied word-embedding / output matrix
(a third of the small model's weights) would double the per-example gradient cost."""


def build_methods(run_dir: Path, out: Path, methods: Sequence[str], model=None, tok=None,
                  tracin_proj_dim: int | None = None, seed: int = 0,
                  tracin_params: Sequence[str] | None = TRACIN_PARAMS,
                  log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any], dict]:
    """(examples, name -> method, build seconds per method) for the run's training examples."""
    from plmkit.attribution import BM25Index, EmbeddingIndex, TracIn, TrainingExamples

    ex = TrainingExamples.from_run(run_dir)
    built: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in methods:
        t0 = time.perf_counter()
        if name == "bm25":
            built[name] = BM25Index.build(ex)
            built[name].save(out / "bm25")
        elif name == "embedding":
            if model is None:
                model, tok = load_final(run_dir)
            built[name] = EmbeddingIndex.build(model, tok, ex, layer=None, path=out / "embeddings.f16")
        elif name == "tracin":
            tr = TracIn.from_run(run_dir, examples=ex, proj_dim=tracin_proj_dim, seed=seed,
                                 params=list(tracin_params) if tracin_params else None)
            if hasattr(tr, "precompute"):
                tr.precompute()  # example gradients once, so build and query time are told apart
            built[name] = tr
        else:
            raise UserError(f"unknown attribution method {name!r}: expected one of {', '.join(METHODS)}")
        seconds[name] = round(time.perf_counter() - t0, 2)
        log(f"{name}: built over {len(ex)} examples in {seconds[name]:.1f}s")
    return ex, built, seconds


def save_scores(folder: Path, query_ids: Sequence[str], matrices: dict[str, np.ndarray]) -> None:
    """``folder/<method>.npy`` (Q, N) float32 and ``folder/queries.json`` (the row order): the forget loop
    takes each method's top K from here instead of scoring again."""
    folder.mkdir(parents=True, exist_ok=True)
    for m, S in matrices.items():
        tmp = folder / f".{m}.tmp.npy"
        np.save(tmp, np.asarray(S, dtype=np.float32))
        os.replace(tmp, folder / f"{m}.npy")
    write_json(folder / "queries.json", list(query_ids))


class SavedScores:
    """A method's saved score matrix, answering ``scores_many`` for the queries it was computed for."""

    def __init__(self, folder: str | os.PathLike, method: str):
        folder = Path(folder)
        self.rows = {q: i for i, q in enumerate(json.loads((folder / "queries.json").read_text(encoding="utf-8")))}
        self.S = np.load(folder / f"{method}.npy", allow_pickle=False)

    @classmethod
    def available(cls, folder: str | os.PathLike, method: str) -> bool:
        return (Path(folder) / f"{method}.npy").is_file() and (Path(folder) / "queries.json").is_file()

    def scores_many(self, queries: Sequence[Any]) -> np.ndarray:
        missing = [q.id for q in queries if q.id not in self.rows]
        if missing:
            raise KeyError(f"no saved scores for query {missing[0]!r}")
        return self.S[[self.rows[q.id] for q in queries]]
