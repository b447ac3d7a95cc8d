"""Runs that go wrong, through the CLI (issues 24 and 25): a diverging loss, damaged checkpoints on --resume,
leftovers of kills, changed settings on resume, stops by SIGTERM / SIGINT, and progress lines in logs.

Every case asserts the exit code, exactly one line for the error (the last line of stderr), no traceback,
and that nothing was damaged (checkpoints still load, recipe.yaml unchanged, strict JSON logs).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from plmkit.cli.main import main
from plmkit.training import checkpoint as ckpt
from pretrain_recipes import tiny_clm_recipe

SRC = Path(__file__).resolve().parents[2] / "src"


def _no_constant(name):
    raise AssertionError(f"non-strict JSON constant {name}")


def _strict_rows(path: Path) -> list[dict]:
    return [json.loads(line, parse_constant=_no_constant) for line in path.read_text().splitlines()]


def _one_error(err: str, *needles: str) -> str:
    """The error is exactly one line, the last one; no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    flagged = [ln for ln in lines if ": error:" in ln or ": stopped" in ln]
    assert len(flagged) == 1 and flagged[0] == lines[-1], err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])
    return lines[-1]


def _recipe(corpus: Path, tmp: Path, **train) -> Path:
    return tiny_clm_recipe(corpus, tmp, **{"eval_batches": 2, "save_every": 2, "keep_last": 0, **train})


def _plm(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 6-step run with checkpoints step-2, step-4, step-6 (recipe, run dir)."""
    tmp = tmp_path_factory.mktemp("finished")
    recipe = _recipe(corpus, tmp)
    assert main(["pretrain", str(recipe), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return recipe, tmp / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A private copy of the finished run."""
    shutil.copytree(finished[1], tmp_path / "run")
    return tmp_path / "run"


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------- non-finite loss

def test_huge_lr_stops_at_the_first_nonfinite_step_and_keeps_the_last_checkpoint(finished, run, capsys):
    """A finished 6-step run continued with a huge (finite) LR: step 7's update blows the weights up, step 8's
    loss is NaN: the run stops there, step-6 and final/ stay as they were, the logs stay strict JSON."""
    recipe = finished[0]
    final_before = _snapshot(run / "final")
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--no-progress", "--resume",
                      "train.lr=1e30", "train.clip_grad_norm=0", "train.max_steps=12")
    assert rc == 3
    line = _one_error(err, "the loss is NaN/inf at step 8", "step-6 is kept and final/ is not written",
                      "train.skip_nonfinite=true")
    assert line.startswith("plm pretrain: error: ")
    assert _snapshot(run / "final") == final_before
    assert ckpt.latest_checkpoint(run / "checkpoints").name == "step-6"  # nothing newer was written
    ckpt.read_state(run / "checkpoints" / "step-6")
    rows = _strict_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    # The last good checkpoint resumes with a sane LR.
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--no-progress", "--resume", "train.max_steps=8")
    assert rc == 0, err
    assert "resume: train.max_steps 6 -> 8 from step 7" in err and "train.lr" not in err
    assert [r["step"] for r in _strict_rows(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _snapshot(run / "final") != final_before


def test_skip_nonfinite_counts_skipped_steps_then_gives_up(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _plm(capsys, "pretrain", _recipe(corpus, tmp_path), "--out", out, "--no-progress",
                      "train.lr=1e30", "train.clip_grad_norm=0", "train.skip_nonfinite=true",
                      "train.max_bad_steps=3", "train.max_steps=20")
    assert rc == 3
    _one_error(err, "NaN/inf for 3 consecutive steps")
    rows = _strict_rows(out / "metrics.jsonl")
    assert [r["skipped_steps"] for r in rows] == [0, 1, 2]
    assert rows[1]["loss"] is None and rows[0]["loss"] > 0
    assert not (out / "final").exists()
    for line in (out / "eval.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=_no_constant)


def test_finetune_with_a_diverging_lr_stops_with_one_line_and_writes_no_model(workdir, tmp_path, capsys):
    out = tmp_path / "ft"
    rc, _, err = _plm(capsys, "finetune", "--task", "classification", "--model", workdir / "model", "--data",
                      workdir, "--out", out, "--epochs", "2", "--batch-size", "16", "--max-seq-len", "16",
                      "--lr", "1e30")
    assert rc == 3
    _one_error(err, "plm finetune: error: ", "is NaN/inf at step ", "no model was written")
    assert not (out / "eval.json").exists() and not (out / "weights.safetensors").exists()
    for f in (out / "logs").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            json.loads(line, parse_constant=_no_constant)


# ---------------------------------------------------------------------------------------- damaged checkpoints

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("damage, reason", [
    ("pickle", "trainer_state.pt: a bare pickle; refused unread (nothing in it was run)"),
    ("zip-pickle", "trainer_state.pt: holds objects other than tensors; refused unread"),
    ("truncate", "model_state.safetensors: "),
    ("forty", "trainer_state.json: 'step' is 'forty'"),
    ("json", "trainer_state.json: not valid JSON"),
    ("missing", "trainer_state.pt is missing"),
])
def test_damaged_newest_checkpoint_names_the_intact_one(finished, run, capsys, damage, reason, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = finished[0]
    c6 = run / "checkpoints" / "step-6"
    if damage == "pickle":
        (c6 / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": _Payload()}))
    elif damage == "zip-pickle":  # a torch.save archive whose pickle would run a command if unpickled
        import torch

        torch.save({"optimizer": _Payload()}, c6 / "trainer_state.pt")
    elif damage == "truncate":
        f = c6 / "model_state.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "forty":
        meta = json.loads((c6 / "trainer_state.json").read_text())
        (c6 / "trainer_state.json").write_text(json.dumps({**meta, "step": "forty"}))
    elif damage == "json":
        (c6 / "trainer_state.json").write_text('{"step": 6, ')
    else:
        (c6 / "trainer_state.pt").unlink()
    before = _snapshot(run)
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume", "--no-progress", "train.max_steps=8")
    assert rc == 2
    _one_error(err, "step-6 is damaged (", reason, "step-4 is intact: pass --resume-from step-4")
    assert _snapshot(run) == before  # nothing written, recipe.yaml included
    assert not (tmp_path / "PWNED").exists()


def test_resume_from_an_older_checkpoint_replays_and_replaces_the_damaged_one(finished, run, capsys):
    recipe = finished[0]
    meta = json.loads((run / "checkpoints" / "step-6" / "trainer_state.json").read_text())
    (run / "checkpoints" / "step-6" / "trainer_state.json").write_text(json.dumps({**meta, "step": "forty"}))
    eval_before = _strict_rows(run / "eval.jsonl")
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume-from", "step-4", "--no-progress")
    assert rc == 0, err
    assert "Traceback" not in err and "(the newer step-6 will be removed)" in err
    ckpt.read_state(run / "checkpoints" / "step-6")  # written again, intact
    rows = _strict_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    def strip(rows):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert strip(_strict_rows(run / "eval.jsonl")) == strip(eval_before)  # replayed exactly: same held-out losses


def test_every_checkpoint_damaged_or_unknown(finished, run, capsys):
    recipe = finished[0]
    for s in (2, 3, 4, 6):
        (run / "checkpoints" / f"step-{s}" / "trainer_state.pt").write_bytes(b"not a zip")
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume", "--no-progress")
    assert rc == 2
    _one_error(err, "step-6 is damaged", "no older intact checkpoint is left: start over with --overwrite")
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume-from", "step-5", "--no-progress")
    assert rc == 2
    _one_error(err, "--resume-from step-5: no such checkpoint", "step-2, step-3, step-4, step-6")
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume-from", "4", "--no-progress")
    assert rc == 2
    _one_error(err, "step-4 is damaged", "no older intact checkpoint is left")


# ---------------------------------------------------------------------------------------- tidiness after kills

def test_leftovers_of_kills_are_removed_and_finished_resume_adds_no_rows(finished, run, capsys):
    recipe = finished[0]
    (run / ".final.tmp-k1l2").mkdir()
    (run / ".final.tmp-k1l2" / "model.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / ".step-8.tmp-abcd").mkdir()
    (run / ".metrics.json.tmp-123").write_text("{")
    metrics, evals = (run / "metrics.jsonl").read_text(), (run / "eval.jsonl").read_text()
    for _ in range(2):
        rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume", "--no-progress")
        assert rc == 0, err
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    assert not [p.name for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert (run / "metrics.jsonl").read_text() == metrics
    assert (run / "eval.jsonl").read_text() == evals
    assert (run / "final" / "model.safetensors").is_file()


def test_a_kill_between_the_fallback_renames_is_repaired(run, monkeypatch):
    """Where the atomic exchange is unavailable, final/ is renamed aside then replaced; a kill between the two
    renames leaves the complete old copy, which the next start puts back."""
    monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    real = os.replace
    calls = []

    def dying_replace(a, b):
        calls.append((Path(a).name, Path(b).name))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill, after final/ went aside
        return real(a, b)

    old = (run / "final" / "model.safetensors").read_bytes()
    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write_atomic_dir(run / "final", lambda tmp: (tmp / "model.safetensors").write_bytes(b"new"))
    monkeypatch.setattr(os, "replace", real)
    assert not (run / "final").exists() and (run / ".final.tmp-old").is_dir()
    ckpt.clean_partial(run)
    assert (run / "final" / "model.safetensors").read_bytes() == old
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def test_final_is_never_missing_while_it_is_replaced(run, monkeypatch):
    """On Linux the swap is one atomic exchange: every rename or removal that happens during the
    replacement finds final/ in place."""
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 exchange is Linux-only")
    seen = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def watch(fn):
        def inner(*a, **k):
            seen.append((run / "final").is_dir())
            return fn(*a, **k)
        return inner

    monkeypatch.setattr(os, "replace", watch(real_replace))
    monkeypatch.setattr(shutil, "rmtree", watch(real_rmtree))
    real_exchange = ckpt._exchange
    monkeypatch.setattr(ckpt, "_exchange", watch(real_exchange))
    ckpt.write_atomic_dir(run / "final", lambda tmp: (tmp / "model.safetensors").write_bytes(b"new"))
    monkeypatch.undo()
    assert seen and all(seen)
    assert (run / "final" / "model.safetensors").read_bytes() == b"new"
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------- resume semantics

def test_changed_settings_apply_from_the_first_resumed_step_and_are_printed(finished, run, capsys):
    recipe = finished[0]
    rc, _, err = _plm(capsys, "pretrain", recipe, "--out", run, "--resume", "--no-progress",
                      "train.max_steps=8", "train.lr=0.01", "train.batch_size=4")
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "resume: train." in ln]
    assert lines == ["plm pretrain: resume: train.max_steps 6 -> 8 from step 7",
                     "plm pretrain: resume: train.batch_size 8 -> 4 from step 7",
                     "plm pretrain: resume: train.lr 0.003 -> 0.01 from step 7"]
    rows = {r["step"]: r for r in _strict_rows(run / "metrics.jsonl")}
    # linear decay, no warm-up: lr(step k) = peak * (1 - (k - 1) / max_steps), with the new peak and length
    assert rows[7]["lr"] == pytest.approx(0.01 * (1 - 6 / 8))
    assert rows[8]["lr"] == pytest.approx(0.01 * (1 - 7 / 8))
    assert rows[6]["lr"] == pytest.approx(0.003 * (1 - 5 / 6))  # the steps before are untouched
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["lr"] == 0.01


@pytest.mark.parametrize("override, needle", [
    ("train.seed=5", "train.seed: cannot change on resume (1 in the checkpoint, 5 now): it fixes the order"),
    ("train.optimizer=lamb", "train.optimizer: cannot change on resume"),
    ("train.max_steps=3", "train.max_steps: 3 is below the checkpoint's step 6"),
])
def test_changes_that_cannot_be_honoured_are_refused(finished, run, capsys, override, needle):
    before = _snapshot(run)
    rc, _, err = _plm(capsys, "pretrain", finished[0], "--out", run, "--resume", "--no-progress", override)
    assert rc == 2
    _one_error(err, needle)
    assert _snapshot(run) == before


# ---------------------------------------------------------------------------------------- signals and progress

def _spawn(args: list[str], cwd: Path, every: str = "0.3") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "PLMKIT_PROGRESS_EVERY": every, "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    # a suite started as a background job inherits SIGINT ignored (POSIX), and so would the child: these tests
    # send it SIGINT as a user's Ctrl-C would, so the child starts with the default disposition
    return subprocess.Popen([sys.executable, "-m", "plmkit", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(proc: subprocess.Popen, needle: str, timeout: float = 120.0) -> list[str]:
    """Read stderr lines until one contains ``needle`` (the process keeps running)."""
    lines = []
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines
    proc.kill()
    raise AssertionError(f"no {needle!r} in stderr: {lines}")


def _finish(proc: subprocess.Popen, sig: int, before: list[str]) -> tuple[int, str]:
    proc.send_signal(sig)
    out, rest = proc.communicate(timeout=120)
    return proc.returncode, "\n".join(before) + "\n" + rest


def test_sigterm_during_pretraining_says_where_and_resumes(corpus, tmp_path):
    recipe = _recipe(corpus, tmp_path, max_steps=3000, save_every=0, eval_every=0)
    proc = _spawn(["pretrain", str(recipe), "--out", "run"], tmp_path)
    head = _wait_for(proc, "pretraining: step ")
    # a plain progress line (stderr is a pipe): step, loss, rate, ETA
    beat = next(ln for ln in head if "pretraining: step " in ln)
    assert beat.startswith("plm pretrain: pretraining: step ") and "/3000 (" in beat and "ETA" in beat
    rc, err = _finish(proc, signal.SIGTERM, head)
    assert rc == 130
    line = _one_error(err, "plm pretrain: stopped by SIGTERM at step ", "/3000; checkpoint ",
                      f"continue with: plm pretrain {recipe} --out {tmp_path / 'run'} --resume")
    step = int(line.split("at step ")[1].split("/")[0])
    ckpt.read_state(tmp_path / "run" / "checkpoints" / f"step-{step}")
    proc = _spawn(["pretrain", str(recipe), "--out", "run", "--resume", f"train.max_steps={step + 2}"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_sigint_before_training_starts_is_one_line(corpus, tmp_path):
    """A stop while the tokenizer trains / the data is prepared: one line with where and how to continue."""
    big = tmp_path / "big.txt"
    big.write_text((corpus / "train.txt").read_text() * 400)
    recipe = _recipe(corpus, tmp_path, max_steps=3000)  # a run that cannot finish before the signal
    r = yaml.safe_load(recipe.read_text())
    r["data"]["train"] = [str(big)]
    r["tokenizer"] = {"train": {"kind": "bpe", "vocab_size": 300}}
    recipe.write_text(yaml.safe_dump(r))
    proc = _spawn(["pretrain", str(recipe), "--out", "run"], tmp_path, every="0.05")
    head = _wait_for(proc, "plm pretrain: training a bpe tokenizer: running, elapsed ")  # a liveness line
    rc, err = _finish(proc, signal.SIGINT, head)
    assert rc == 130
    _one_error(err, "plm pretrain: stopped by SIGINT while training a bpe tokenizer; ",
               f"continue with: plm pretrain {recipe} --out {tmp_path / 'run'} --resume")
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_sigterm_during_quickstart_is_one_line_and_leaves_nothing(tmp_path):
    text = " ".join(f"word{i % 97} and word{i % 13} is a thing." for i in range(3000))
    (tmp_path / "c.txt").write_text(text + "\n")
    proc = _spawn(["quickstart", "--out", "qs", "--corpus", "c.txt", "--mlm-steps", "3000", "--clm-steps", "10",
                   "--vocab-size", "300", "--seq-len", "16", "--batch-size", "4"], tmp_path)
    head = _wait_for(proc, "MLM pretraining: step ")
    rc, err = _finish(proc, signal.SIGTERM, head)
    assert rc == 130
    _one_error(err, "plm quickstart: stopped: SIGTERM at step ", "/3000 of MLM pretraining; nothing was kept",
               "run the command again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]  # no qs/, no .qs.partial-*


def test_sigterm_during_finetune_keeps_the_partial_model(workdir, tmp_path):
    proc = _spawn(["finetune", "--task", "classification", "--model", str(workdir / "model"), "--data",
                   str(workdir), "--out", "ft", "--epochs", "400", "--batch-size", "4", "--max-seq-len", "16"],
                  tmp_path)
    head = _wait_for(proc, "fine-tuning: step ")
    rc, err = _finish(proc, signal.SIGTERM, head)
    assert rc == 130
    _one_error(err, "plm finetune: stopped by SIGTERM at step ", "fine-tuning does not resume")
    res = json.loads((tmp_path / "ft" / "eval.json").read_text())
    assert res["interrupted"] is True and 0 < res["train_steps"] < res["planned_steps"]


def test_word2vec_progress_lines_and_sigterm(tmp_path):
    words = [f"w{i}" for i in range(300)]
    import random

    rng = random.Random(0)
    (tmp_path / "t.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(12))
                                              for _ in range(20000)) + "\n")
    proc = _spawn(["word2vec", "train", "--text", "t.txt", "--out", "v.bin", "--epochs", "200", "--dim", "16"],
                  tmp_path, every="0.2")
    head = _wait_for(proc, "word2vec training: example ")
    beat = next(ln for ln in head if "word2vec training: example " in ln)
    assert "epoch 1/200" in beat and "loss " in beat and "ETA" in beat
    rc, err = _finish(proc, signal.SIGTERM, head)
    assert rc == 130
    _one_error(err, "plm word2vec: stopped by SIGTERM at example ", "of word2vec training",
               "v.bin was not written")
    assert not (tmp_path / "v.bin").exists()


def test_prepare_prints_progress_lines_when_not_a_terminal(corpus, tmp_path):
    from plmkit import train_tokenizer

    train_tokenizer([str(corpus / "train.txt")], kind="char", vocab_size=0).save(tmp_path / "tok")
    big = tmp_path / "big.txt"
    big.write_text((corpus / "train.txt").read_text() * 200)
    env = {**os.environ, "PYTHONPATH": str(SRC), "PLMKIT_PROGRESS_EVERY": "0"}
    cmd = [sys.executable, "-m", "plmkit", "prepare", str(big), "--tokenizer", str(tmp_path / "tok"), "--out"]
    quiet = subprocess.run([*cmd, str(tmp_path / "s0")], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "prepare: " not in quiet.stderr.replace("plm prepare: ", "")
    env["PLMKIT_PROGRESS_EVERY"] = "0.000001"
    r = subprocess.run([*cmd, str(tmp_path / "s1"), "--shard-tokens", "200000"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    beats = [ln for ln in r.stderr.splitlines() if ln.startswith("plm prepare: prepare: ")]
    assert beats and all(" MB (" in ln and "MB/s" in ln for ln in beats), r.stderr
    # a stop by SIGTERM: where it stood (the progress position), nothing partial left
    proc = _spawn(["prepare", *[str(big)] * 6, "--tokenizer", str(tmp_path / "tok"), "--out", "s3",
                   "--shard-tokens", "100000"], tmp_path, every="0.000001")
    head = _wait_for(proc, "plm prepare: prepare: ")
    rc, err = _finish(proc, signal.SIGTERM, head)
    assert rc == 130
    _one_error(err, "plm prepare: stopped by SIGTERM at ", " MB (", "of prepare; s3 was not written")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s3")) == []
    env["PLMKIT_PROGRESS_EVERY"] = "soon"
    bad = subprocess.run([*cmd, str(tmp_path / "s2")], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    _one_error(bad.stderr, "PLMKIT_PROGRESS_EVERY='soon': expected a number of seconds")
