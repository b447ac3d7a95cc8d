"""The classical-model claims (plmkit.reproduce.experiments.classic) end to end on tiny slices of the shared data:
claim.json's shape, verdicts that follow the numbers (and can fail), reruns that reuse finished steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plmkit.classic.ngram import NgramCounts, build_model
from plmkit.reproduce import stats
from plmkit.reproduce.context import run_claim
from plmkit.reproduce.experiments.classic import _WordVocab, _entity_f1, _windows
from plmkit.reproduce.registry import Claim, load_claims


def _lines(src: Path, dst: Path, start: int, stop: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(src.read_text(encoding="utf-8").splitlines()[start:stop]) + "\n", encoding="utf-8")


def _conll(src: Path, dst: Path, sentences: int) -> None:
    out, k = [], 0
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        out.append(line)
        if not line.strip():
            k += 1
            if k >= sentences:
                break
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(out), encoding="utf-8")


def _claim(cid: str, runner: str, params: dict) -> Claim:
    return Claim(id=cid, claim="test claim", reference={"source": "test"}, runner=runner, budgets={"small": params})


def _step_mtimes(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.json")}


@pytest.fixture
def wiki(shared_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    src = shared_data / "wikitext-2" / "valid.txt"
    _lines(src, root / "wt" / "train.txt", 0, 300)
    _lines(src, root / "wt" / "test.txt", 300, 400)
    return root


def test_claim_files_load_and_name_their_runners():
    claims = load_claims()
    for cid in ("neural-lm-vs-ngram", "word2vec-architectures", "elmo-vs-word2vec"):
        assert cid in claims
        assert callable(claims[cid].function())
        assert {"small", "full"} <= set(claims[cid].budgets)


def test_word_stream_predicts_the_ngram_events(wiki: Path):
    """The neural LMs' test windows predict exactly the events the n-gram scores: each word and each line end."""
    from plmkit.classic.ngram import read_sentences

    train, test = read_sentences(wiki / "wt" / "train.txt"), read_sentences(wiki / "wt" / "test.txt")
    vocab = _WordVocab([t for s in train for t in s])
    test = [[t if t in vocab.stoi else "<unk>" for t in s] for s in test]
    ids = vocab.stream(test)
    for T in (1, 7, 64):
        w = _windows(ids, T)
        assert sum(len(x) - 1 for x in w) == len(ids) - 1
        assert [t for x in w for t in x[1:]] == ids[1:]
    _, n, _ = build_model(NgramCounts.build(train, 2), "kn").score_sentences(test)
    assert n == len(ids) - 1 == sum(len(s) + 1 for s in test)


def test_entity_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    pred[:100] = gold[:100]
    ours = _entity_f1(gold, pred, outside=4)
    assert ours == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2, 3], average="micro"))
    assert _entity_f1(gold, np.full_like(gold, 4), outside=4) == 0.0


def test_neural_lm_vs_ngram_not_held_when_undertrained_and_rerun_reuses_steps(wiki: Path, tmp_path: Path):
    tiny = {"train": "wt/train.txt", "test": "wt/test.txt", "orders": [1, 2, 3], "steps": 2, "seeds": [0, 1],
            "seq_len": 16, "batch_size": 4, "ffnn": {"context_size": 2, "embedding_size": 8, "hidden_size": 8},
            "lstm": {"embedding_size": 8, "hidden_size": 8}}
    claim = _claim("neural-lm-vs-ngram", "classic:neural_lm_vs_ngram", tiny)
    out = tmp_path / "out"
    res = run_claim(claim, "small", out, wiki, threads=1)
    on_disk = json.loads((out / "claim.json").read_text())
    assert on_disk["verdict"] == res["verdict"]
    kn = res["ours"][f"{res['details']['kn_order_chosen']}-gram KN ppl"]
    # two steps of training leave the neural LMs near the uniform perplexity: far above any KN n-gram
    for arm in ("FFNN ppl", "LSTM ppl"):
        assert res["ours"][arm]["n"] == 2 and res["ours"][arm]["mean"] > 3 * kn
    assert res["verdict"] == stats.NOT_HELD and "not held" in res["rule"]
    rows = {r[0]: r for r in res["table"]["rows"]}
    assert rows["1-gram KN"][1] > rows["2-gram KN"][1]  # sanity of the n-gram rows
    assert str(res["details"]["kn_order_chosen"]) in ("1", "2", "3")
    assert res["details"]["test_events"] == sum(len(line.split()) + 1 for line in
                                                (wiki / "wt" / "test.txt").read_text().splitlines() if line.split())
    for run in res["runs"]:
        assert (out / run / "metrics.jsonl").is_file()
    step = json.loads((out / "steps" / "lstm-seed1.json").read_text())
    assert step["result"]["steps"] == 2 and step["result"]["train_loss"] > 0
    before = _step_mtimes(out)
    again = run_claim(claim, "small", out, wiki, threads=1)
    assert _step_mtimes(out) == before and again["ours"] == res["ours"]


def test_word2vec_architectures_verdict_follows_the_table(wiki: Path, tmp_path: Path):
    params = {"corpus": ["wt/train.txt", "wt/test.txt"], "epochs": 1, "vector_size": 8, "min_count": 2,
              "seeds": [0, 1]}
    claim = _claim("word2vec-architectures", "classic:word2vec_architectures", params)
    out = tmp_path / "w2v"
    res = run_claim(claim, "small", out, wiki, threads=1)
    rows = res["table"]["rows"]
    assert len(rows) == 4 * 2 and {r[0] for r in rows} == {"skipgram-ns", "skipgram-hs", "cbow-ns", "cbow-hs"}
    assert len({r[5] for r in rows}) == 1  # every arm answers the same questions
    col = {(r[0], r[1]): r for r in rows}
    sem = lambda arm: [col[(arm, s)][2] for s in (0, 1)]  # noqa: E731
    tot = lambda arm: [col[(arm, s)][4] for s in (0, 1)]  # noqa: E731
    expect = stats.combine({
        "ns": stats.paired(sem("skipgram-ns"), sem("cbow-ns")), "hs": stats.paired(sem("skipgram-hs"), sem("cbow-hs")),
        "nshs": stats.paired(tot("skipgram-ns"), tot("skipgram-hs"))})
    assert res["verdict"] == expect.verdict
    for r in rows:
        assert 0.0 <= r[4] <= 1.0 and r[5] > 0
    before = _step_mtimes(out)
    assert run_claim(claim, "small", out, wiki, threads=1)["ours"] == res["ours"] and _step_mtimes(out) == before


def test_elmo_vs_word2vec_end_to_end(shared_data: Path, tmp_path: Path):
    root = tmp_path / "data"
    _conll(shared_data / "conll2003" / "train.txt", root / "conll" / "train.txt", 120)
    _conll(shared_data / "conll2003" / "valid.txt", root / "conll" / "valid.txt", 40)
    params = {"task_train": "conll/train.txt", "task_test": "conll/valid.txt", "elmo_steps": 2, "seeds": [0, 1],
              "hidden_size": 16, "elmo_preset": "elmo-tiny", "elmo": {"lstm_size": 16}, "w2v_epochs": 1, "vocab_min_count": 2,
              "seq_len": 16, "batch_size": 4, "probe_iters": 10}
    claim = _claim("elmo-vs-word2vec", "classic:elmo_vs_word2vec", params)
    out = tmp_path / "elmo"
    res = run_claim(claim, "small", out, root, threads=1)
    f1 = {arm: res["ours"][f"{arm} entity-token F1"]["values"] for arm in ("elmo", "word2vec")}
    assert res["verdict"] == stats.paired(f1["elmo"], f1["word2vec"]).verdict
    assert res["details"]["tags"][-1] == "O" and len(res["details"]["tags"]) == 9
    assert all(0.0 <= v <= 1.0 for vs in f1.values() for v in vs)
    assert res["details"]["probe_test_words"] > 0 and all((out / r / "metrics.jsonl").is_file() for r in res["runs"])
    before = _step_mtimes(out)
    assert run_claim(claim, "small", out, root, threads=1)["ours"] == res["ours"] and _step_mtimes(out) == before

