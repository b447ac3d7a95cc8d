"""The pretraining-objective claims (``plmkit.reproduce.experiments.objectives``) end to end on tiny slices of the
shared data: claim.json's shape, verdicts that follow the numbers (and can fail), reruns that reuse the steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plmkit.reproduce import stats
from plmkit.reproduce.context import run_claim
from plmkit.reproduce.experiments import objectives as O
from plmkit.reproduce.registry import load_claim

REPO = Path(__file__).resolve().parents[2]
CLAIMS = REPO / "recipes" / "claims"
TINY = {"seeds": [0, 1], "steps": 4, "batch_size": 4, "seq_len": 32, "vocab_size": 600, "backbone": {"num_layers": 1},
        "eval_windows": 4, "eval_pairs": 16, "ft_train": 40, "ft_heldout": 20, "ft_lrs": [1.0e-3],
        "ft_batch_size": 8, "ft_seq_len": 16, "save_every": 2}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Slices of WikiText-2 and SST-2 in the shared layout (skips without the shared data)."""
    from tests.conftest import data_dir

    src = data_dir()
    if not (src / "wikitext-2" / "valid.txt").is_file() or not (src / "glue" / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"shared datasets not found at {src} (set PLMKIT_DATA)")
    root = tmp_path_factory.mktemp("data")
    (root / "wikitext-2").mkdir()
    (root / "glue" / "SST-2").mkdir(parents=True)
    for name, n in (("valid.txt", 400), ("test.txt", 250)):
        lines = (src / "wikitext-2" / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        (root / "wikitext-2" / name).write_text("".join(lines), encoding="utf-8")
    for name, n in (("train.tsv", 120), ("dev.tsv", 40)):
        lines = (src / "glue" / "SST-2" / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n + 1]
        (root / "glue" / "SST-2" / name).write_text("".join(lines), encoding="utf-8")
    return root


def tiny_claim(cid: str, **extra):
    c = load_claim(CLAIMS / f"{cid}.yaml")
    c.budgets = {"small": {**c.budgets["small"], **TINY, **extra}}
    return c


def check_shape(result: dict, cid: str) -> None:
    assert result["id"] == cid and result["budget"] == "small" and result["seeds"] == [0, 1]
    assert result["verdict"] in (stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE)
    assert result["rule"].startswith("all parts must hold")
    for name, part in result["details"]["parts"].items():
        assert f"[{name}: {part['verdict']}]" in result["rule"]
    for fig in result["ours"].values():
        assert fig["n"] == 2 and len(fig["values"]) == 2
    assert result["runs"] and all(r.startswith("runs/") for r in result["runs"])


def test_noninferior_rule_holds_fails_and_abstains():
    # better by a little and consistent: held (the pessimistic end is within the margin)
    assert O.noninferior([0.805, 0.81, 0.80], [0.80, 0.80, 0.80], margin=0.01).verdict == stats.HELD
    # worse by 5 points, consistently: not held
    v = O.noninferior([0.75, 0.76, 0.74], [0.80, 0.81, 0.79], margin=0.01)
    assert v.verdict == stats.NOT_HELD and v.effect == pytest.approx(-0.05)
    # noisy: inconclusive; one seed: inconclusive
    assert O.noninferior([0.70, 0.90, 0.80], [0.80, 0.80, 0.80], margin=0.01).verdict == stats.INCONCLUSIVE
    assert O.noninferior([0.9], [0.1], margin=0.01).verdict == stats.INCONCLUSIVE
    # lower is better (a loss): the direction flips
    assert O.noninferior([5.0, 5.1], [6.0, 6.1], margin=0.02, higher_is_better=False).verdict == stats.HELD
    assert O.noninferior([6.0, 6.1], [5.0, 5.1], margin=0.02, higher_is_better=False).verdict == stats.NOT_HELD
    assert O.above([0.70, 0.72, 0.71], 0.5).verdict == stats.HELD
    assert O.above([0.30, 0.32, 0.31], 0.5).verdict == stats.NOT_HELD


def test_downstream_parts_need_arms_above_the_majority_class(tmp_path):
    held = O.noninferior([0.51, 0.51], [0.51, 0.5], margin=0.01)
    assert held.verdict == stats.HELD
    floored = O.above_floor(held, {"a": [0.51, 0.51], "b": [0.51, 0.5]}, floor=0.509)
    assert floored.verdict == stats.INCONCLUSIVE and "majority-class rate 0.5090" in floored.rule
    assert O.above_floor(held, {"a": [0.7, 0.71], "b": [0.69, 0.7]}, floor=0.509) is held
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\na\t1\nb\t0\nc\t1\nd\t1\n", encoding="utf-8")
    assert O.majority_rate({"data": tmp_path}) == 0.75


def test_cross_task_parts_need_heads_that_learnt_their_own_task():
    v = O.above([0.70, 0.72, 0.71], 0.527)
    assert O.learnt(v, {"SOP head on SOP": ([0.80, 0.82, 0.81], 0.527)}) is v
    gated = O.learnt(v, {"SOP head on SOP": ([0.527, 0.527, 0.527], 0.527)})
    assert gated.verdict == stats.INCONCLUSIVE and "did not learn its own task" in gated.rule


def test_save_every_divides_the_steps():
    assert O._save_every(150, 100) == 75
    assert O._save_every(171, 100) == 57
    assert O._save_every(12, 100) == 12
    assert O._save_every(7, 2) == 1


def test_dynamic_masking_end_to_end_and_rerun(tiny_data, tmp_path, monkeypatch):
    claim = tiny_claim("dynamic-masking")
    out = tmp_path / "dm"
    r = run_claim(claim, "small", out, tiny_data, threads=1)
    check_shape(r, "dynamic-masking")
    assert [row[:2] for row in r["table"]["rows"]] == [["dynamic", 0], ["dynamic", 1], ["static", 0], ["static", 1]]
    for row in r["table"]["rows"]:
        loss, acc, sst2 = row[2:]
        assert 0 < loss < 20 and 0 <= acc <= 1 and 0 <= sst2 <= 1
    assert (out / "runs" / "static-s0" / "recipe.yaml").read_text().count("static") >= 1
    assert set(r["details"]["finetune_lr"]) == {"dynamic", "static"}
    # the verdict is the rule applied to the table's numbers
    col = {k: [row[4] for row in r["table"]["rows"] if row[0] == k] for k in ("dynamic", "static")}
    want = O.above_floor(O.noninferior(col["dynamic"], col["static"], margin=0.01), col,
                         O.majority_rate({"data": tiny_data / "glue" / "SST-2"})).verdict
    assert r["details"]["parts"]["SST-2 dev accuracy: dynamic >= static - margin"]["verdict"] == want

    # a rerun trains and fine-tunes nothing: every step is read back
    def boom(*a, **k):
        raise AssertionError("a finished step ran again")

    import plmkit.pipelines.pretrain as P
    import plmkit.tasks.run as R

    monkeypatch.setattr(P, "run_pretraining", boom)
    monkeypatch.setattr(R, "finetune", boom)
    again = run_claim(claim, "small", out, tiny_data, threads=1)
    assert again["ours"] == r["ours"] and again["verdict"] == r["verdict"]


def test_dynamic_masking_verdict_can_fail(tiny_data, tmp_path, monkeypatch):
    """With the downstream scores of static far above dynamic's, the claim is not held."""
    def fake_sst2(ctx, split, model_dir, out, lr, dev):
        run = Path(model_dir).parent.name  # runs/ARM-sSEED/final
        return 0.60 if run.startswith("dynamic") else 0.80 + 0.001 * run.endswith("s1")

    monkeypatch.setattr(O, "sst2_finetune", fake_sst2)
    r = run_claim(tiny_claim("dynamic-masking"), "small", tmp_path / "dm", tiny_data, threads=1)
    part = r["details"]["parts"]["SST-2 dev accuracy: dynamic >= static - margin"]
    assert part["verdict"] == stats.NOT_HELD and r["verdict"] == stats.NOT_HELD
    assert part["effect"] == pytest.approx(-0.2005)


def test_nsp_sop_scores_both_heads_on_both_tasks(tiny_data, tmp_path):
    r = run_claim(tiny_claim("nsp-sop"), "small", tmp_path / "ns", tiny_data, threads=1)
    check_shape(r, "nsp-sop")
    cols = r["table"]["columns"]
    rows = {(row[0], row[1]): dict(zip(cols, row)) for row in r["table"]["rows"]}
    for seed in (0, 1):
        nsp, sop, none = rows[("nsp", seed)], rows[("sop", seed)], rows[("none", seed)]
        assert 0 <= nsp["NSP head: NSP acc"] <= 1 and 0 <= nsp["NSP head: SOP acc"] <= 1
        assert 0 <= sop["SOP head: NSP acc"] <= 1 and 0 <= sop["SOP head: SOP acc"] <= 1
        assert nsp["SOP head: NSP acc"] is None and none["NSP head: NSP acc"] is None
    # the SOP head (not in the HF-format final/) was read from the final step's checkpoint
    model, _ = O._load(tmp_path / "ns" / "runs" / "sop-s0", ("sop",))
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "ns" / "runs" / "sop-s0" / "checkpoints" / "step-4" / "model_state.safetensors"))
    assert (model.heads["sop"].state_dict()["classifier.weight"] == state["heads.sop.classifier.weight"]).all()
    assert len(r["details"]["parts"]) == 3
    assert all(0.5 <= r["details"]["majority_rate"][t] <= 1 for t in ("nsp", "sop"))


def test_mask_rate_trains_both_rates(tiny_data, tmp_path):
    r = run_claim(tiny_claim("mask-rate"), "small", tmp_path / "mr", tiny_data, threads=1)
    check_shape(r, "mask-rate")
    assert {row[0] for row in r["table"]["rows"]} == {"rate-0.15", "rate-0.4"}
    assert "rate: 0.4" in (tmp_path / "mr" / "runs" / "rate-0.4-s0" / "recipe.yaml").read_text()


def test_electra_vs_mlm_equalises_flops(tiny_data, tmp_path):
    r = run_claim(tiny_claim("electra-vs-mlm", steps=6), "small", tmp_path / "el", tiny_data, threads=1)
    check_shape(r, "electra-vs-mlm")
    d = r["details"]
    assert d["step_flops"]["rtd"] > d["step_flops"]["mlm"] > 0  # the generator costs extra
    assert d["steps"] == {"electra": 6, "mlm": round(6 * d["step_flops"]["rtd"] / d["step_flops"]["mlm"])}
    summaries = {a: json.loads((tmp_path / "el" / "runs" / f"{a}-s0" / "summary.json").read_text())
                 for a in ("electra", "mlm")}
    assert summaries["electra"]["step"] == 6 and summaries["mlm"]["step"] == d["steps"]["mlm"]
