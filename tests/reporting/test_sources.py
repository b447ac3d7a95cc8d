"""Finding claim and run directories, reading them, and the one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from plmkit.errors import UserError
from plmkit.reporting.sources import describe, discover, read_jsonl

from tests.reporting.fakes import fake_claim, write_run


def test_discovers_claims_and_their_runs_recursively(reproduce_out):
    found = discover([reproduce_out])
    assert [c.data["id"] for c in found.claims] == ["ngram-order", "pretrain-vs-scratch"]
    assert [r.label for r in found.runs] == ["ngram-order/runs/arm-0", "ngram-order/runs/arm-1",
                                             "pretrain-vs-scratch/runs/arm-0"]
    # links both ways: a claim's runs, and each run's claim
    c0 = found.claims[0]
    assert c0.run_anchors == [found.runs[0].anchor, found.runs[1].anchor]
    assert found.runs[2].claims == [found.claims[1].anchor]
    assert len({c.anchor for c in found.claims} | {r.anchor for r in found.runs}) == 5
    r = found.runs[0]
    assert [m["step"] for m in r.metrics] == list(range(5, 41, 5))
    assert [e["step"] for e in r.evals] == [20, 40]
    assert r.recipe[0] == "recipe.yaml" and "gpt2-tiny" in r.recipe[1]
    lines = describe(found)
    assert lines[0] == "found 2 claim(s) and 3 run(s)"
    assert any("claim pretrain-vs-scratch (not held)" in ln for ln in lines)


def test_each_item_once_when_given_twice_or_nested(reproduce_out):
    found = discover([reproduce_out / "ngram-order" / "runs" / "arm-1", reproduce_out,
                      reproduce_out / "ngram-order" / "claim.json"])
    assert len(found.claims) == 2 and len(found.runs) == 3


def test_run_directories_are_not_searched_inside(tmp_path):
    # plm quickstart: one metrics.jsonl for both models at the top, and each model's own run below it
    top = write_run(tmp_path / "qs", model="mlm")
    write_run(top, model="clm", evals=False)
    write_run(top / "mlm")
    write_run(top / "clm")
    found = discover([tmp_path])
    assert [r.label for r in found.runs] == ["qs"]


def test_finetune_output_layout(tmp_path):
    out = tmp_path / "ft"
    write_run(out / "logs", evals=False, recipe=False)
    (out / "eval.json").write_text(json.dumps({"accuracy": 0.81, "train_cpu_s": 12.5, "params": {"lr": 3e-5}}))
    (out / "task.json").write_text(json.dumps({"task": "sst2"}))
    for arg in (tmp_path, out, out / "logs" / "metrics.jsonl"):
        (run,) = discover([arg]).runs
        assert run.path == out
        assert run.summary == ("eval.json", {"accuracy": 0.81, "train_cpu_s": 12.5, "params.lr": 3e-5})
        assert run.recipe[0] == "task.json"


def test_torn_last_line_is_left_out_and_reported(tmp_path):
    run = write_run(tmp_path / "r", evals=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 45, "lo')
    (r,) = discover([run]).runs
    assert r.metrics[-1]["step"] == 40
    assert any("torn last line" in n and "metrics.jsonl:9" in n for n in r.notes)
    assert any("torn last line" in ln for ln in describe(discover([run])))


def test_non_finite_values_become_null(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": Infinity, "x": [1, -Infinity]}\n')
    recs, notes = read_jsonl(p, "a training log")
    assert recs == [{"step": 1, "loss": None}, {"step": 2, "loss": None, "x": [1, None]}] and notes == []


def _error(paths) -> str:
    with pytest.raises(UserError) as e:
        discover(paths)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_input_lines(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    assert _error([empty]) == (f"{empty}: no claim.json or metrics.jsonl in it or below it (expected a claim "
                               "directory from plm reproduce, a run directory from plm pretrain / plm finetune, "
                               "or a folder of them)")
    assert _error([tmp_path / "nope"]).startswith(f"{tmp_path / 'nope'}: no such file or directory")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert "is a file; expected a directory holding claim.json or metrics.jsonl" in _error([other])

    run = write_run(tmp_path / "bad", evals=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = '{"step": 15, "loss": 3.1'  # malformed, not the last line
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _error([run]).startswith(f"{run / 'metrics.jsonl'}:3: not valid JSON")
    lines[2] = '[1, 2]'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _error([run]) == f"{run / 'metrics.jsonl'}:3: expected a JSON object per line of a training log, got list"
    lines[2] = '{"loss": 2.0}'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _error([run]) == (f"{run / 'metrics.jsonl'}:3: expected a numeric \"step\" in every line of a "
                             "training log, got null")
    lines[2] = '{"step": 15}'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "eval.jsonl").write_text('{"step": 20}\n\n{"step": 40 "loss": 1}\n{"step": 60}\n')
    assert _error([run]).startswith(f"{run / 'eval.jsonl'}:3: not valid JSON")


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(verdict="maybe"), "key 'verdict': expected one of held, not held, inconclusive, got 'maybe'"),
    (lambda d: d.pop("claim"), "key 'claim': expected a non-empty string, got null"),
    (lambda d: d["ours"].update(x={"mean": "big"}), "key 'ours.x.mean': expected a number, got \"big\""),
    (lambda d: d.update(table={"columns": ["a"]}), "key 'table': expected {\"columns\": [...], \"rows\": [[...], ...]}"),
    (lambda d: d.update(runs=["runs/missing"]), "key 'runs[0]': "),
    (lambda d: d["ours"].update(x={"mean": 1, "values": 3}), "key 'ours.x.values': expected a list of numbers"),
    (lambda d: d.update(reference=3), "key 'reference': expected a string or an object, got int"),
])
def test_bad_claim_files(tmp_path, edit, expected):
    d = fake_claim(tmp_path, runs=1)
    data = json.loads((d / "claim.json").read_text())
    edit(data)
    (d / "claim.json").write_text(json.dumps(data))
    msg = _error([d])
    assert msg.startswith(f"{d / 'claim.json'}: ") and expected in msg


def test_claim_file_not_json(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "claim.json").write_text('{"id": "x",\n "claim": }')
    assert _error([d]).startswith(f"{d / 'claim.json'}: not valid JSON")


def test_folders_without_runs_are_named(tmp_path):
    write_run(tmp_path / "a")
    (tmp_path / "pruned" / "x").mkdir(parents=True)  # e.g. plm prune outputs: no training log
    (tmp_path / "pruned" / "x" / "eval.json").write_text("{}")
    found = discover([tmp_path])
    assert [r.label for r in found.runs] == ["a"] and found.empty == [tmp_path / "pruned"]
    assert describe(found)[-1] == f"  no claim.json or metrics.jsonl in or below: {tmp_path / 'pruned'}"


def test_same_claim_id_twice_gets_two_anchors(tmp_path):
    fake_claim(tmp_path / "small", "ngram-order", runs=1)
    fake_claim(tmp_path / "full", "ngram-order", runs=1)
    found = discover([tmp_path / "small", tmp_path / "full"])
    assert [c.anchor for c in found.claims] == ["claim-ngram-order", "claim-ngram-order-2"]
    assert [r.label for r in found.runs] == ["small/ngram-order/runs/arm-0", "full/ngram-order/runs/arm-0"]
    assert [c.run_anchors for c in found.claims] == [["run-small-ngram-order-runs-arm-0"],
                                                     ["run-full-ngram-order-runs-arm-0"]]


def test_a_log_that_is_not_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"step": 1, "loss": 2.0}\n{"step": 2, "note": "\xff"}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: invalid UTF-8 at byte"):
        read_jsonl(p, "metrics.jsonl")
