"""The fact-tracing benchmark (plmkit.attribution.bench): corpus, probing, candidate sets, metrics."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from plmkit.attribution import bench as B
from plmkit.attribution.queries import Query
from plmkit.pipelines import attribution as P

TINY = B.BenchSize(facts_per_relation=3, repeats=(1, 4), background=30, relations=("P19", "P108"),
                   vocab_size=400, model=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                                max_position_embeddings=256),
                   seq_len=64, train=dict(B._TRAIN, max_steps=4, batch_size=4, warmup_steps=0, log_every=2),
                   checkpoints=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.conftest import data_dir

    d = data_dir()
    if not (d / "lama" / "TREx").is_dir() or not (d / "english-books").is_dir():
        pytest.skip(f"shared data (lama/, english-books/) not found at {d}")
    out = tmp_path_factory.mktemp("bench")
    return out, B.build_corpus(out, d / "lama", d / "english-books", TINY, seed=3), d


def test_corpus_counts_ids_and_gold_proponents(corpus):
    out, c, _ = corpus
    n_facts = len(TINY.relations) * TINY.facts_per_relation
    assert len(c.facts) == n_facts
    assert [f.repeats for f in c.facts] == [1, 4, 1] * len(TINY.relations)
    assert len(c) == TINY.background + sum(f.repeats for f in c.facts)
    # the files say the same as the returned corpus, record i = example i
    lines = [json.loads(x) for x in (out / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in lines] == c.texts
    meta = [json.loads(x) for x in (out / "examples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [m["id"] for m in meta] == list(range(len(c)))
    assert sum(m["kind"] == "background" for m in meta) == TINY.background
    temps = B.load_paraphrases()
    for f in c.facts:
        assert len(f.example_ids) == f.repeats == len(set(f.example_ids))
        # gold proponents = exactly the examples whose record says they state this fact
        assert sorted(f.example_ids) == [m["id"] for m in meta if m.get("fact") == f.id]
        for i in f.example_ids:
            sent = temps[f.relation][meta[i]["template"]].replace("[X]", f.subject).replace("[Y]", f.object)
            assert sent in c.texts[i]
        # the held-out query (LAMA's template) is never a training sentence
        assert not any(f"{f.prompt} {f.object}" in t for t in c.texts)
    assert len({f.subject for f in c.facts}) == len(c.facts)
    back = B.read_corpus(out)
    assert back.texts == c.texts and [f.example_ids for f in back.facts] == [f.example_ids for f in c.facts]


def test_corpus_records_are_token_store_documents(corpus, tmp_path):
    """The attribution contract: corpus record i is document i of the token store a run prepares."""
    from plmkit.data import TokenStore, prepare
    from plmkit.tokenization import train_tokenizer

    out, c, _ = corpus
    tok = train_tokenizer([str(out / "corpus.jsonl")], kind="bpe", vocab_size=400)
    prepare([str(out / "corpus.jsonl")], tok, tmp_path / "store", format="jsonl", progress=False)
    store = TokenStore(tmp_path / "store", tokenizer=tok)
    assert store.num_documents == len(c)
    for i in (0, len(c) // 2, len(c) - 1):
        s, e = store.document_span(i)
        assert store.tokens(s, e)[0].tolist() == tok.encode(c.texts[i], add_special_tokens=False)


def test_same_seed_same_corpus(corpus, tmp_path):
    out, c, d = corpus
    again = B.build_corpus(tmp_path, d / "lama", d / "english-books", TINY, seed=3)
    assert again.texts == c.texts
    other = B.build_corpus(tmp_path / "o", d / "lama", d / "english-books", TINY, seed=4)
    assert other.texts != c.texts


def test_query_prompt_and_bad_paraphrases(tmp_path):
    assert B.query_prompt("[X] was born in [Y] .", "Ada Lovelace") == "Ada Lovelace was born in"
    from plmkit.errors import UserError

    with pytest.raises(UserError, match=r"\[X\] must come before \[Y\]"):
        B.query_prompt("[Y] is the home of [X] .", "Ada")
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"P19": ["[X] lives in Paris."]}), encoding="utf-8")
    with pytest.raises(UserError, match=r"p.json: key 'P19': template '\[X\] lives in Paris.' needs exactly one"):
        B.load_paraphrases(bad)


def test_candidate_set_composition():
    q = Query("q", "p", "t", [3, 7, 11])
    rng = random.Random(0)
    bm25_top = list(range(100, 200))
    same = list(range(0, 20)) + list(range(500, 800))  # 320 same-target examples, 3 of them gold
    parts = {}
    cand = B.candidate_set(q, 5000, bm25_top, same, rng, parts=parts)
    s = set(cand)
    assert {3, 7, 11} <= s and set(bm25_top) <= s
    assert cand == sorted(s)
    # 100 of the 317 same-target non-gold examples, then 100 random ones from outside everything chosen
    assert len(parts["distractors"]) == 100 and parts["distractors"] <= set(same) - {3, 7, 11}
    assert len(parts["random"]) == 100 and not parts["random"] & (parts["distractors"] | set(bm25_top) | {3, 7, 11})
    assert s == parts["gold"] | parts["bm25"] | parts["distractors"] | parts["random"]
    assert len(s) == 3 + 100 + 100 + 100  # gold, BM25 and distractor pools are disjoint here
    # fewer same-target examples than 100: all of them are taken
    cand2 = B.candidate_set(q, 5000, [], [3, 40, 41], random.Random(1))
    assert {3, 7, 11, 40, 41} <= set(cand2) and len(cand2) == 5 + 100
    # a corpus smaller than the pools: every example, no error
    assert B.candidate_set(q, 50, [], [], random.Random(2)) == list(range(50))


def test_same_target_whole_words():
    texts = ["born in Paris.", "Parisian art", "PARIS", "Paris, France", "x"]
    assert B.same_target_examples(texts, "Paris") == [0, 3]


def test_rank_ids_ties_by_lower_id():
    assert B.rank_ids(np.array([0.5, 2.0, 0.5, 1.0])) == [1, 3, 0, 2]
    assert B.rank_ids(np.array([1.0, 3.0]), [40, 7]) == [7, 40]


class _Oracle:
    """Scores the gold proponents first (1), everything else 0; or the reverse with ``worst``."""

    def __init__(self, n, worst=False):
        self.n, self.worst = n, worst

    def scores(self, q, candidate_ids=None):
        ids = range(self.n) if candidate_ids is None else candidate_ids
        s = np.array([1.0 if i in q.proponents else 0.0 for i in ids])
        return -s if self.worst else s

    def top_k(self, q, k):
        s = self.scores(q)
        return [(int(i), float(s[i])) for i in B.rank_ids(s)[:k]]


def test_evaluate_metrics_shape_and_values():
    n = 400
    texts = [f"filler {i}" for i in range(n)]
    texts[5] = "Paris again"
    qs = [Query("a", "A was born in", "Paris", [1, 2]), Query("b", "B works for", "BBC", [300])]
    m, details = B.evaluate({"bm25": _Oracle(n), "embedding": _Oracle(n, worst=True)}, qs, texts, _Oracle(n))
    assert set(m) == {"full", "candidates", "n_queries"} and m["n_queries"] == 2
    for proto in ("full", "candidates"):
        assert set(m[proto]) == {"bm25", "embedding"}
        for meth in m[proto].values():
            assert set(meth) == {"mrr", "recall_at_10"} and all(0.0 <= v <= 1.0 for v in meth.values())
        assert m[proto]["bm25"] == {"mrr": 1.0, "recall_at_10": 1.0}
    # the worst method puts the gold last: full set ranks 399-400 / 400, candidates within their set
    assert m["full"]["embedding"]["recall_at_10"] == 0.0
    assert m["full"]["embedding"]["mrr"] == pytest.approx((1 / 399 + 1 / 400) / 2, abs=1e-4)
    assert details["per_query"][0]["candidates"] >= 2 + 100
    json.dumps(m)


def test_target_logprobs_match_one_at_a_time():
    """Batched, padded scoring equals scoring each (prompt, object) sequence alone."""
    from plmkit.models import load
    from plmkit.tokenization import train_tokenizer_from_iterator

    texts = ["Ada Lovelace was born in London.", "Alan Turing works for the University of Manchester.",
             "The birthplace of Ada is London, England."] * 5
    tok = train_tokenizer_from_iterator(texts, kind="bpe", vocab_size=300)
    torch.manual_seed(0)
    model = load("gpt2-tiny", vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2,
                 intermediate_size=64).eval()
    prompts, objects = ["Ada Lovelace was born in", "Alan Turing works for"], ["London", "the University", "England"]
    got = B.target_logprobs(model, tok, prompts, objects, batch_size=4)
    for i, p in enumerate(prompts):
        for j, o in enumerate(objects):
            pi = tok.encode(p, add_special_tokens=False)
            oi = tok.encode(" " + o, add_special_tokens=False)
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([pi + oi])).logits[0].float(), -1)
            want = sum(float(lp[len(pi) - 1 + t, oi[t]]) for t in range(len(oi)))
            assert got[i, j] == pytest.approx(want, abs=1e-4)
    facts = [B.BenchFact(0, "P19", "Ada Lovelace", "London", 1, prompts[0]),
             B.BenchFact(1, "P108", "Alan Turing", "England", 1, prompts[1])]
    rows = B.probe_facts(model, tok, facts, objects)
    for r, f, i in zip(rows, facts, range(2)):
        j = objects.index(f.object)
        assert r["rank"] == 1 + int((got[i] > got[i, j]).sum())


def test_bench_end_to_end_tiny(corpus, tmp_path):
    """Corpus -> pretraining (checkpoints kept) -> probe -> queries -> every method -> metrics.json."""
    _, _, d = corpus
    out = tmp_path / "b"
    logs = []
    rep = P.run_bench(out, d / "lama", d / "english-books", TINY, seed=3, learned_rank=10 ** 6, log=logs.append)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(m) == {"full", "candidates", "n_queries"}
    assert m["n_queries"] == len(TINY.relations) * TINY.facts_per_relation  # every fact "learned" at this rank
    for proto in ("full", "candidates"):
        assert set(m[proto]) == set(B.METHODS)
    steps = sorted(p.name for p in (out / "run" / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-2", "step-4"]
    qs = [json.loads(x) for x in (out / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    facts = B.read_corpus(out).facts
    assert [q["proponents"] for q in qs] == [f.example_ids for f in facts]
    assert rep["examples"] == TINY.background + sum(f.repeats for f in facts)
    # a second call reuses the finished run
    P.run_bench(out, d / "lama", d / "english-books", TINY, seed=3, learned_rank=10 ** 6, methods=["bm25"],
                log=logs.append)
    assert any("reusing the finished pretraining run" in x for x in logs)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from plmkit.cli.main import main

    assert main(["attribute", "bench", "--out", str(tmp_path / "b"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "lama/TREx" in err[0]
    assert main(["attribute", "forget", "--bench", str(tmp_path), "--k", "5", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no queries.jsonl; run plm attribute bench" in err[0]
    assert main(["attribute", "bench", "--out", str(tmp_path / "b"), "--size", "huge"]) == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
