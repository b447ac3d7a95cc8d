"""The forget loop (plmkit.attribution.forget): what is removed, and that only the data changes."""

from __future__ import annotations

import json

import pytest
import yaml

from plmkit.attribution import bench as B
from plmkit.attribution import forget as F
from plmkit.errors import UserError
from plmkit.pipelines import attribution as P
from tests.attribution.test_bench import TINY

FACTS = [{"id": "0", "prompt": "A was born in", "target": "Paris", "proponents": [1, 2]},
         {"id": "1", "prompt": "B works for", "target": "BBC", "proponents": [5, 6, 7]},
         {"id": "2", "prompt": "C died in", "target": "Rome", "proponents": [9] * 1 + list(range(10, 30))}]


class _Fixed:
    """A method whose ranking is fixed per query: ids in ``order[q.id]`` first."""

    def __init__(self, order):
        self.order = order

    def top_k(self, q, k):
        return [(i, 1.0) for i in self.order[q.id][:k]]


def test_choose_facts_respects_gold_limit_and_seed():
    got = F.choose_facts(FACTS, k=3, n_facts=5)
    assert [f["id"] for f in got] == ["0", "1"]  # fact 2 has 21 gold proponents > K
    assert F.choose_facts(FACTS, k=3, n_facts=1, seed=0) == F.choose_facts(FACTS, k=3, n_facts=1, seed=0)
    assert [f["id"] for f in F.choose_facts(FACTS, k=3, n_facts=5, max_gold=100)] == ["0", "1", "2"]
    with pytest.raises(UserError, match="at most 1 gold proponents"):
        F.choose_facts(FACTS, k=1, n_facts=2)
    probe = [{"fact": 0, "rank": 3}, {"fact": 1, "rank": 1}, {"fact": 2, "rank": 1}]
    assert [f["id"] for f in F.choose_facts(FACTS, k=3, n_facts=5, probe=probe, max_rank=1)] == ["1"]


def test_removal_sets():
    facts = FACTS[:2]
    assert F.removal_set("gold", facts, 3, 100) == [1, 2, 5, 6, 7]
    r = F.removal_set("random", facts, 3, 100, seed=4)
    assert r == F.removal_set("random", facts, 3, 100, seed=4) and 3 <= len(r) <= 6
    assert r != F.removal_set("random", facts, 3, 100, seed=5)
    m = {"bm25": _Fixed({"0": [40, 1, 41, 42], "1": [41, 5, 50]})}
    assert F.removal_set("bm25", facts, 2, 100, m) == [1, 5, 40, 41]  # the union of each fact's top 2
    with pytest.raises(UserError, match="unknown arm 'oracle'"):
        F.removal_set("oracle", facts, 2, 100)


def test_reduced_corpus_removes_exactly_the_chosen_examples(tmp_path):
    texts = [f"example {i}" for i in range(10)]
    kept = F.write_reduced_corpus(texts, [0, 4, 9, 4], tmp_path / "c.jsonl")
    assert kept == [1, 2, 3, 5, 6, 7, 8]
    rows = [json.loads(x)["text"] for x in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [texts[i] for i in kept]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    from tests.conftest import data_dir

    d = data_dir()
    if not (d / "lama" / "TREx").is_dir() or not (d / "english-books").is_dir():
        pytest.skip(f"shared data (lama/, english-books/) not found at {d}")
    out = tmp_path_factory.mktemp("forget_bench")
    P.run_bench(out, d / "lama", d / "english-books", TINY, seed=3, learned_rank=10 ** 6, methods=["bm25"],
                log=lambda m: None)
    return out


def test_forget_recipe_changes_only_the_data(bench_dir, tmp_path):
    base = yaml.safe_load((bench_dir / "run" / "recipe.yaml").read_text(encoding="utf-8"))
    r = F.forget_recipe(base, tmp_path / "c.jsonl", bench_dir / "run" / "tokenizer")
    assert r["train"] == base["train"] and r["model"] == base["model"] and r["objective"] == base["objective"]
    assert {k: v for k, v in r["data"].items() if k not in ("train", "valid")} == \
           {k: v for k, v in base["data"].items() if k not in ("train", "valid")}
    assert r["data"]["train"] == [str((tmp_path / "c.jsonl").resolve())]
    assert r["tokenizer"]["path"] == str((bench_dir / "run" / "tokenizer").resolve())


def test_forget_arm_end_to_end(bench_dir, tmp_path):
    """One gold arm and one BM25 arm: the retrained runs saw exactly the kept examples, with the base run's
    seed, steps and schedule; forget.json has the issue's shape."""
    out = tmp_path / "f"
    res = P.run_forget(bench_dir, k=4, out_dir=out, n_facts=2, arms=["gold", "bm25"], max_rank=None,
                       log=lambda m: None)
    choice = json.loads((out / "choice.json").read_text(encoding="utf-8"))
    queries = {q["id"]: q for q in map(json.loads, (bench_dir / "queries.jsonl").read_text().splitlines())}
    gold = sorted(set().union(*(queries[str(i)]["proponents"] for i in choice["facts"])))
    corpus = B.read_corpus(bench_dir)
    base = yaml.safe_load((bench_dir / "run" / "recipe.yaml").read_text(encoding="utf-8"))
    for arm in ("gold", "bm25"):
        detail = json.loads((out / arm / "result.json").read_text(encoding="utf-8"))
        if arm == "gold":
            assert detail["removed_ids"] == gold
        else:  # the union of each chosen fact's top 4 in the benchmark's saved BM25 scores
            import numpy as np

            S = np.load(bench_dir / "scores" / "bm25.npy")
            rows = json.loads((bench_dir / "scores" / "queries.json").read_text())
            want = set()
            for i in choice["facts"]:
                want |= set(B.rank_ids(S[rows.index(str(i))])[:4])
            assert detail["removed_ids"] == sorted(want)
        from plmkit.data import TokenStore

        store = TokenStore(out / arm / "run" / "data" / "train")
        assert store.num_documents == len(corpus) - len(detail["removed_ids"])
        kept = [json.loads(x)["text"] for x in (out / arm / "corpus.jsonl").read_text().splitlines()]
        gone = set(detail["removed_ids"])
        assert kept == [t for i, t in enumerate(corpus.texts) if i not in gone]
        rec = yaml.safe_load((out / arm / "run" / "recipe.yaml").read_text(encoding="utf-8"))
        assert rec["train"] == base["train"] and rec["model"] == base["model"]
        summary = json.loads((out / arm / "run" / "final" / "train_summary.json").read_text(encoding="utf-8"))
        assert summary["step"] == base["train"]["max_steps"]
    assert set(res) == {"before", "facts", "k", "gold", "bm25"}
    for arm in ("gold", "bm25"):
        assert set(res[arm]) == {"k", "target_logprob_drop", "target_rank_after", "other_facts_accuracy"}
    assert json.loads((out / "forget.json").read_text(encoding="utf-8")) == res
    # another K on the same --out is refused rather than mixed in
    with pytest.raises(UserError, match="holds a forget run with other facts"):
        P.run_forget(bench_dir, k=5, out_dir=out, n_facts=2, arms=["gold"], max_rank=None, log=lambda m: None)


def test_random_seed_repeats_the_control_on_the_same_facts(bench_dir, tmp_path):
    a = P.run_forget(bench_dir, k=4, out_dir=tmp_path / "a", n_facts=2, arms=["random"], max_rank=None,
                     log=lambda m: None)
    b = P.run_forget(bench_dir, k=4, out_dir=tmp_path / "b", n_facts=2, arms=["random"], max_rank=None,
                     random_seed=7, log=lambda m: None)
    ca, cb = (json.loads((tmp_path / x / "choice.json").read_text()) for x in "ab")
    assert ca["facts"] == cb["facts"] and cb["random_seed"] == 7 and "random_seed" not in ca
    ra, rb = (json.loads((tmp_path / x / "random" / "result.json").read_text())["removed_ids"] for x in "ab")
    assert ra != rb and set(a) == set(b) == {"before", "facts", "k", "random"}
