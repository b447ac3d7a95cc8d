"""``plm pretrain`` end to end on a tiny corpus: run dir layout, reload of final/, resume, refusals, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import plmkit
from plmkit.cli.main import main
from plmkit.pipelines.pretrain import run_pretraining
from plmkit.training import evaluate_perplexity
from pretrain_recipes import tiny_clm_recipe


_recipe = tiny_clm_recipe


def test_cli_pretrain_writes_a_self_contained_run(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", str(_recipe(corpus, tmp_path)), "--out", str(out), "train.seed=2", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 6 and summary["final"] == str(out / "final")
    for f in ["recipe.yaml", "tokenizer/tokenizer.json", "metrics.jsonl", "eval.jsonl",
              "checkpoints/step-6/tokenizer.json", "checkpoints/step-6/config.json", "final/tokenizer.json",
              "final/model.safetensors", "final/config.json"]:
        assert (out / f).is_file(), f
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["seed"] == 2
    # final/ is self-contained: reload model + tokenizer and recompute the held-out perplexity.
    tok = plmkit.load_tokenizer(out / "final")
    model = plmkit.load(out / "final")
    from plmkit import objectives
    from plmkit.data import TokenStore

    obj = objectives.build("clm", tokenizer=tok)
    valid = TokenStore(out / "data" / "valid").windows(32)
    ppl = evaluate_perplexity(model, obj, valid, batch_size=8)
    assert ppl == pytest.approx(summary["eval_ppl"], rel=1e-4)
    assert summary["eval_loss"] < math.log(len(tok))  # it learned something in 6 steps


def test_resume_continues_and_refuses_to_clobber(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    recipe = str(_recipe(corpus, tmp_path))
    assert main(["pretrain", recipe, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["pretrain", recipe, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plm pretrain: error:") and "already holds a run" in err and "\n" not in err
    # Resume with a longer schedule: steps continue after the newest checkpoint (6).
    assert main(["pretrain", recipe, "--out", str(out), "--resume", "train.max_steps=9", "--no-progress"]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))
    # Resuming with another model is refused.
    assert main(["pretrain", recipe, "--out", str(out), "--resume", "model.overrides.hidden_size=64"]) == 2
    assert "different model section" in capsys.readouterr().err
    assert main(["pretrain", recipe, "--out", str(out), "--overwrite", "train.max_steps=2", "--no-progress"]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("max_steps: 6", "max_steps: six"), "train.max_steps: expected an integer"),
    (lambda t: t.replace("lr: 0.003", "lrate: 0.003"), "train.lrate: unknown key (did you mean 'lr'?)"),
    (lambda t: t.replace("train.txt", "missing.txt"), "data.train: no such file or directory"),
    (lambda t: t + "  bad: [\n", "malformed YAML"),
])
def test_bad_input_is_one_line_exit_2(corpus, tmp_path, capsys, edit, message):
    p = _recipe(corpus, tmp_path)
    p.write_text(edit(p.read_text()))
    assert main(["pretrain", str(p), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["recipe", "override"])
def test_unknown_model_override_is_refused_before_anything_is_trained_or_written(corpus, tmp_path, capsys, where):
    p = _recipe(corpus, tmp_path)
    extra = []
    if where == "recipe":
        p.write_text(p.read_text().replace("hidden_size: 32", "hiden_size: 32"))
    else:
        extra = ["model.overrides.num_layer=2"]
    out = tmp_path / "run"
    assert main(["pretrain", str(p), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    if where == "recipe":
        line = next(i for i, t in enumerate(p.read_text().splitlines(), 1) if "hiden_size" in t)
        assert err == (f"plm pretrain: error: {p}:{line}: model.overrides.hiden_size: unknown key "
                       f"(did you mean 'hidden_size'?)")
    else:
        assert err == "plm pretrain: error: model.overrides.num_layer: unknown key (did you mean 'num_layers'?)"
    assert not out.exists()  # no run directory, no tokenizer trained


def test_out_dir_that_is_not_a_run_is_refused(corpus, tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    assert main(["pretrain", str(_recipe(corpus, tmp_path)), "--out", str(tmp_path / "stuff"), "--overwrite"]) == 2
    assert "not a plmkit run" in capsys.readouterr().err
    assert (tmp_path / "stuff" / "notes.txt").exists()


def test_python_helper_accepts_a_dict(corpus, tmp_path):
    recipe = yaml.safe_load(_recipe(corpus, tmp_path).read_text())
    recipe["objective"] = [{"name": "clm", "weight": 1.0}]
    summary = run_pretraining(recipe, tmp_path / "run", overrides=["train.max_steps=2", "train.save_every=0"],
                              progress=False, log=lambda m: None)
    assert summary["step"] == 2 and summary["train_examples"] > 0 and summary["num_parameters"] > 0
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_real_model_sigkill_and_resume_is_bit_identical(corpus, tmp_path):
    """``plm pretrain`` with bert-tiny + MLM (random masking, dropout 0.1, grad accumulation) killed with
    SIGKILL once a checkpoint exists, then resumed: the per-step losses equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    recipe = yaml.safe_load(_recipe(corpus, tmp_path).read_text())
    recipe["model"] = {"preset": "bert-tiny", "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                           "intermediate_size": 64}}
    # One tokenizer for both runs (HF WordPiece training may order tied tokens differently per process).
    tok = plmkit.train_tokenizer([corpus / "train.txt"], kind="wordpiece", vocab_size=60)
    tok.save(tmp_path / "tok")
    recipe["tokenizer"] = {"path": str(tmp_path / "tok")}
    recipe["objective"] = {"name": "mlm"}
    recipe["train"].update(max_steps=40, save_every=5, grad_accum=2, eval_every=0, log_every=1)
    path = tmp_path / "mlm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ref, run = tmp_path / "ref", tmp_path / "run"
    run_pretraining(path, ref, progress=False, log=lambda m: None)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "plmkit", "pretrain", str(path), "--out", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "step-10").is_dir():
            assert proc.poll() is None, "the run ended before a checkpoint appeared"
            assert time.time() < deadline
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = max(json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines())
    assert killed_at < 40
    subprocess.run(cmd + ["--resume"], env=env, check=True, capture_output=True, timeout=300)
    losses = lambda p: [(r["step"], r["loss"]) for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())]
    assert losses(run) == losses(ref)
    assert [s for s, _ in losses(run)] == list(range(1, 41))
