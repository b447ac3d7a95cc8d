"""Running a claim: claim.json's shape, resumable steps after a kill, and what --out may already hold."""

from __future__ import annotations

import json

import pytest

from plmkit.errors import UserError
from plmkit.reproduce import registry, stats
from plmkit.reproduce.context import Outcome, run_claim
from plmkit.reproduce.registry import Claim


def _claim(**budget) -> Claim:
    return Claim(id="toy", claim="Arm a beats arm b.", reference={"source": "a paper", "figures": {"a": 1.0}},
                 runner="classic:ngram_order", budgets={"small": {"seeds": [0, 1, 2], **budget}})


@pytest.fixture
def toy_runner(monkeypatch):
    calls = {"steps": [], "fail_at": None}

    def runner(ctx):
        a, b = [], []
        for s in ctx.seeds:
            def work(s=s):
                calls["steps"].append(s)
                if calls["fail_at"] == s:
                    raise KeyboardInterrupt
                return {"a": ctx.param("a0", 0.8) + 0.01 * s, "b": 0.7 + 0.003 * s}
            r = ctx.step(f"seed-{s}", work)
            a.append(r["a"])
            b.append(r["b"])
        return Outcome(ours={"a": stats.summary(a), "b": stats.summary(b)},
                       verdict=stats.paired(a, b), table={"columns": ["seed", "a", "b"],
                                                          "rows": [[s, x, y] for s, x, y in zip(ctx.seeds, a, b)]})

    monkeypatch.setattr(registry, "resolve_runner", lambda spec, where="": runner)
    return calls


def test_claim_json_has_the_issue_keys(tmp_path, toy_runner):
    res = run_claim(_claim(), "small", tmp_path / "out", tmp_path)
    on_disk = json.loads((tmp_path / "out" / "claim.json").read_text())
    assert on_disk["verdict"] == res["verdict"] == "held"
    for key in ("id", "claim", "reference", "ours", "verdict", "rule"):
        assert key in on_disk
    assert on_disk["ours"]["a"]["n"] == 3 and on_disk["seeds"] == [0, 1, 2]
    assert on_disk["environment"]["torch"] and on_disk["table"]["columns"] == ["seed", "a", "b"]


def test_a_killed_claim_resumes_its_finished_steps(tmp_path, toy_runner):
    toy_runner["fail_at"] = 2
    with pytest.raises(KeyboardInterrupt):
        run_claim(_claim(), "small", tmp_path / "out", tmp_path)
    assert toy_runner["steps"] == [0, 1, 2] and not (tmp_path / "out" / "claim.json").exists()
    toy_runner["fail_at"] = None
    res = run_claim(_claim(), "small", tmp_path / "out", tmp_path)
    assert toy_runner["steps"] == [0, 1, 2, 2]  # seeds 0 and 1 were read back, only seed 2 ran again
    assert res["verdict"] == "held"


def test_out_holding_something_else_is_refused(tmp_path, toy_runner):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files of something else; choose another --out or pass --overwrite"):
        run_claim(_claim(), "small", tmp_path / "out", tmp_path)
    with pytest.raises(UserError, match="holds files that are not a plm reproduce run"):
        run_claim(_claim(), "small", tmp_path / "out", tmp_path, overwrite=True)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_other_parameters_are_refused_then_overwritten(tmp_path, toy_runner):
    run_claim(_claim(), "small", tmp_path / "out", tmp_path)
    with pytest.raises(UserError, match="holds claim toy at budget small with other parameters"):
        run_claim(_claim(a0=0.75), "small", tmp_path / "out", tmp_path)
    res = run_claim(_claim(a0=0.75), "small", tmp_path / "out", tmp_path, overwrite=True)
    assert res["ours"]["a"]["values"][0] == pytest.approx(0.75)
    assert toy_runner["steps"][-3:] == [0, 1, 2]  # recomputed, not read back


def test_the_rule_can_fail(tmp_path, toy_runner):
    res = run_claim(_claim(a0=0.5), "small", tmp_path / "out", tmp_path)
    assert res["verdict"] == "not held"


def test_missing_prerequisite(tmp_path, toy_runner):
    c = _claim()
    c.requires = {"data": ["nope/file.txt"]}
    with pytest.raises(UserError, match="claim toy: missing prerequisite: data file .*nope/file.txt"):
        run_claim(c, "small", tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()


def _tiny_recipe(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    lines = [f"the {a} sees the {b}." for a in ("cat", "dog", "king") for b in ("sea", "ball", "house")] * 20
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    (d / "valid.txt").write_text("\n".join(lines[:20]) + "\n")
    return {"model": {"preset": "gpt2-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                           "intermediate_size": 64, "max_position_embeddings": 64}},
            "tokenizer": {"train": {"kind": "char", "vocab_size": 0}},
            "data": {"train": [str(d / "train.txt")], "valid": [str(d / "valid.txt")], "seq_len": 32},
            "objective": {"name": "clm"},
            "train": {"max_steps": 4, "batch_size": 4, "lr": 3e-3, "log_every": 1, "eval_every": 2, "eval_batches": 1,
                      "save_every": 2, "tensorboard": False, "plots": False, "num_threads": 1}}


def test_pretrain_runs_once_and_a_stopped_run_is_not_taken_for_finished(tmp_path, monkeypatch):
    import plmkit.pipelines.pretrain as P
    from plmkit.errors import Interrupted
    from plmkit.reproduce.context import ClaimContext

    ctx = ClaimContext(_claim(), "small", tmp_path / "out", tmp_path)
    recipe = _tiny_recipe(tmp_path)
    real = P.run_pretraining
    calls = []

    def stopped(recipe, out, **kw):  # the trainer returns this summary when SIGTERM stops it after a step
        calls.append(kw["resume"])
        return real(recipe, out, overrides=["train.max_steps=2"], resume=kw["resume"], overwrite=kw["overwrite"],
                    progress=False) | {"interrupted": True}

    monkeypatch.setattr(P, "run_pretraining", stopped)
    with pytest.raises(Interrupted, match="pretraining run tiny stopped at step 2; run the same plm reproduce"):
        ctx.pretrain(recipe, "tiny")
    assert not (tmp_path / "out" / "runs" / "tiny" / "summary.json").exists()
    monkeypatch.setattr(P, "run_pretraining", lambda recipe, out, **kw: calls.append(kw["resume"]) or real(
        recipe, out, **kw))
    summary = ctx.pretrain(recipe, "tiny")
    assert calls == [False, True] and summary["step"] == 4 and summary["run_dir"] == "runs/tiny"
    assert (tmp_path / "out" / "runs" / "tiny" / "metrics.jsonl").is_file()
    assert ctx.pretrain(recipe, "tiny") == summary and calls == [False, True]  # finished: read back, not rerun


def test_ours_must_be_numbers_or_summaries(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "resolve_runner", lambda spec, where="": lambda ctx: Outcome(
        ours={"ranks": [1, 2]}, verdict=stats.Verdict("held", "r")))
    with pytest.raises(TypeError, match=r"ours\['ranks'\] is \[1, 2\], expected a number or stats.summary"):
        run_claim(_claim(), "small", tmp_path / "out", tmp_path)
