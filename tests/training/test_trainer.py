"""Trainer: learning, exact resume after SIGKILL, DDP parity, faults, checkpoints, evaluation, unfreezing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plmkit.config import TrainConfig
from plmkit.errors import UserError
from plmkit.training import Trainer, TrainingDiverged, evaluate_perplexity
from plmkit.training import checkpoint as ckpt

# tiny.py sits beside this file: pytest puts a test file's folder on sys.path (tests/ is not a package)
import tiny
from tiny import TinyCLM, TinyLM, make_data

TINY = Path(__file__).parent / "tiny.py"
REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=20, batch_size=8, lr=3e-3, log_every=1, save_every=0, eval_every=0, progress=False,
                tensorboard=False, plots=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_loss_falls_and_run_dir_is_complete(tmp_path):
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    trainer = Trainer(model, TinyCLM(), make_data(), _cfg(max_steps=60, save_every=30, eval_every=30,
                                                          tensorboard=True, plots=True, log_every=10),
                      out_dir=tmp_path, eval_data=make_data(16, seed=1))
    summary = trainer.fit()
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [10, 20, 30, 40, 50, 60]
    assert {"step", "loss", "lr", "tokens_per_s", "accuracy"} <= set(logs[0])
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.5
    assert summary["eval_loss"] < math.log(24) - 0.5 and summary["eval_ppl"] == pytest.approx(
        math.exp(summary["eval_loss"]))
    for f in ["loss.png", "lr.png", "eval.jsonl", "final/model.safetensors", "final/train_summary.json",
              "checkpoints/step-30/trainer_state.json", "checkpoints/step-60/model_state.safetensors"]:
        assert (tmp_path / f).exists(), f
    assert any((tmp_path / "tensorboard").iterdir())


def test_kill_and_resume_is_bit_identical(tmp_path):
    """SIGKILL mid-run (after step 17, checkpoint at 15), resume: per-step losses equal the uninterrupted run."""
    args = ["--steps", "24", "--grad-accum", "2", "--save-every", "5"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    tiny.main([str(ref), *args])  # the uninterrupted reference, in this process (also 1 thread)
    proc = subprocess.Popen([sys.executable, str(TINY), str(run), *args, "--hang-at", "17"], env=_env())
    try:
        deadline = time.time() + 120
        while not (run / "HANGING").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert max(_losses(run)) == 16  # logged past the last checkpoint: those records must be replaced
    # A torn checkpoint write (crash mid-save) must be ignored and cleaned.
    (run / "checkpoints" / ".step-20.tmp-crash").mkdir()
    subprocess.run([sys.executable, str(TINY), str(run), *args, "--resume"], check=True, env=_env(), timeout=120)
    a, b = _losses(ref), _losses(run)
    assert sorted(b) == list(range(1, 25))
    assert a == b  # bit-identical floats
    evals = lambda p: [json.loads(x)["loss"] for x in (p / "eval.jsonl").read_text().splitlines()]
    assert evals(ref) == evals(run)
    assert not list((run / "checkpoints").glob(".*tmp*"))


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_processes_match_single_process(tmp_path, kind):
    """torchrun, 2 gloo processes x batch 4 == 1 process x batch 8 (same global batch), first steps."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    common = ["--steps", "4", "--save-every", "4", "--dropout", "0", "--grad-accum", "2", "--crop", "16"]
    tiny.main([str(single), *common, "--batch-size", "8"])
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(29500 + os.getpid() % 1000 + (kind == "fsdp")), str(TINY), str(multi), *common,
                    "--batch-size", "4", "--distributed", kind], check=True, env=_env(), timeout=180)
    a, b = _losses(single), _losses(multi)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for s in a:
        assert abs(a[s] - b[s]) < 1e-5, (s, a[s], b[s])
    # Rank 0 wrote one checkpoint with both ranks' RNG states; the weights match the single-process run.
    meta = json.loads((multi / "checkpoints/step-4/trainer_state.json").read_text())
    assert meta["world_size"] == 2 and len(meta["rng"]) == 2
    from safetensors.torch import load_file

    wa = load_file(str(single / "final/model.safetensors"))
    wb = load_file(str(multi / "final/model.safetensors"))
    for k in wa:
        # Adam divides by sqrt(v): 1e-7 gradient differences become ~1e-4 on near-zero-gradient entries.
        torch.testing.assert_close(wa[k], wb[k], atol=5e-4, rtol=1e-3)


class _NaNAfter(TinyCLM):
    def __init__(self, after: int, until: int = 10**9):
        super().__init__()
        self.calls, self.after, self.until = 0, after, until

    def loss(self, model, batch):
        loss, m = super().loss(model, batch)
        self.calls += 1
        if self.after <= self.calls < self.until:
            loss = loss * float("nan")
        return loss, m


def test_nan_steps_are_skipped_then_abort_when_asked(tmp_path):
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    # Micro-batch calls 4..5 are NaN: 2 skipped steps, training continues and weights stay finite.
    trainer = Trainer(model, _NaNAfter(4, 6), make_data(), _cfg(max_steps=8, skip_nonfinite=True, log_every=1),
                      out_dir=tmp_path)
    summary = trainer.fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.step == 8 and summary["skipped_steps"] == 2
    rows = [json.loads(x, parse_constant=_no_constant) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 0, 1, 2, 2, 2, 2]
    assert rows[3]["loss"] is None and rows[2]["loss"] > 0  # a step with only skipped updates has no loss
    trainer = Trainer(TinyLM(), _NaNAfter(1), make_data(), _cfg(max_steps=50, max_bad_steps=3, skip_nonfinite=True))
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        trainer.fit()
    assert trainer.step == 2


def _no_constant(name):
    raise AssertionError(f"non-strict JSON constant {name} in a .jsonl file")


def test_nan_loss_stops_at_that_step_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), _NaNAfter(7), make_data(), _cfg(max_steps=20, save_every=3, log_every=1),
                      out_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="loss is NaN/inf at step 7; the last good checkpoint .*step-6") as e:
        trainer.fit()
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert trainer.step == 6 and not (tmp_path / "final").exists()
    assert [d.name for _, d in ckpt.checkpoint_steps(tmp_path / "checkpoints")] == ["step-3", "step-6"]
    ckpt.read_state(tmp_path / "checkpoints" / "step-6")  # intact
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=_no_constant)


def test_nan_weights_are_never_written(tmp_path):
    """A finite loss whose update makes the weights inf (huge LR) at the very last step: no final/."""
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(max_steps=2, save_every=1), out_dir=tmp_path)
    trainer.add_callback("on_step_end", lambda tr, step: [p.data.fill_(float("inf")) for p in
                                                          list(tr.model.parameters())[:1]] if step == 2 else None)
    with pytest.raises(TrainingDiverged, match="weights are NaN/inf after step 2"):
        trainer.fit()
    assert not (tmp_path / "final").exists() and not (tmp_path / "checkpoints" / "step-2").exists()
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-1"


def test_interrupt_saves_checkpoint_and_stops(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(max_steps=50, save_every=100), out_dir=tmp_path)
    trainer.add_callback("on_step_end", lambda tr, step: os.kill(os.getpid(), signal.SIGINT) if step == 7 else None)
    summary = trainer.fit()
    assert summary["interrupted"] and summary["step"] == 7
    assert ckpt.latest_checkpoint(tmp_path / "checkpoints").name == "step-7"
    assert not (tmp_path / "final").exists()
    # Resuming continues from step 7.
    trainer2 = Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(max_steps=10), out_dir=tmp_path)
    assert trainer2.fit(resume=True)["step"] == 10
    assert sorted(_losses(tmp_path)) == list(range(1, 11))


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    torch.manual_seed(0)
    trainer = Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(max_steps=10, save_every=5), out_dir=tmp_path)
    real = ckpt.write_state

    def full(out, tensors, meta):
        if meta["step"] == 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(out, tensors, meta)

    monkeypatch.setattr(ckpt, "write_state", full)
    with pytest.raises(UserError, match=r"disk full while writing .*step-10.*step-5 is intact"):
        trainer.fit()
    assert [s for s, _ in ckpt.checkpoint_steps(tmp_path / "checkpoints")] == [5]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def test_keep_last_and_best(tmp_path):
    torch.manual_seed(0)
    # lr so high that the held-out loss gets worse after the first evaluation: best stays at step 2.
    trainer = Trainer(TinyLM(dropout=0.0), TinyCLM(), make_data(), _cfg(max_steps=12, save_every=2, keep_last=2,
                                                                   eval_every=2, lr=0.3, clip_grad_norm=0,
                                                                   schedule="constant"),
                      out_dir=tmp_path, eval_data=make_data(16, seed=1))
    trainer.fit()
    steps = [s for s, _ in ckpt.checkpoint_steps(tmp_path / "checkpoints")]
    best = json.loads((tmp_path / "checkpoints/best.json").read_text())
    assert best["step"] in steps and steps[-2:] == [10, 12]
    evals = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert best["loss"] == min(e["loss"] for e in evals)
    assert len(steps) == (2 if best["step"] >= 10 else 3)


def test_early_stopping(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(dropout=0.0), TinyCLM(), make_data(),
                      _cfg(max_steps=200, eval_every=1, early_stopping_patience=2, lr=1e-9, schedule="constant"),
                      eval_data=make_data(8, seed=1))
    summary = trainer.fit()
    # With an LR of 1e-9 the held-out loss barely moves: at most one of the first evals improves by float noise.
    assert summary["step"] < 20 and "early stopping" in summary["stop_reason"]


def test_evaluate_perplexity_is_token_weighted_exp_nll():
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    data = make_data(10, seed=2)
    obj = TinyCLM(crop=16)  # crop == length: no randomness
    ppl = evaluate_perplexity(model, obj, data, batch_size=4)  # batches of 4, 4, 2
    with torch.no_grad():
        ids = torch.tensor([d["input_ids"] for d in data])
        logp = torch.log_softmax(model(ids[:, :-1]).logits, -1)
        nll = -logp.gather(-1, ids[:, 1:, None]).mean()
    assert ppl == pytest.approx(math.exp(float(nll)), rel=1e-5)
    model.train()
    evaluate_perplexity(model, obj, data)
    assert model.training  # evaluation restores the training mode


def test_no_perplexity_for_losses_that_are_not_token_nll():
    from plmkit.objectives import REGISTRY
    from plmkit.training.trainer import evaluate_objective

    class Weighted(TinyCLM):  # e.g. ELECTRA's gen + 50 * disc: exp(loss) is no perplexity
        token_nll = False

    data = make_data(4, seed=2)
    res = evaluate_objective(TinyLM(dropout=0.0), Weighted(crop=16), data)
    assert "ppl" not in res and res["loss"] > 0
    with pytest.raises(UserError, match="no perplexity"):
        evaluate_perplexity(TinyLM(dropout=0.0), Weighted(crop=16), data)
    assert all(not REGISTRY[n].token_nll for n in ("rtd", "infoword", "nsp", "sop"))
    assert all(REGISTRY[n].token_nll for n in ("mlm", "clm", "t5_span", "bart_denoise", "glm", "plm"))


def test_gradual_unfreezing_and_layerwise_lr():
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, TinyCLM(), make_data(), _cfg(max_steps=3, unfreeze_every=2, layer_lr_decay=0.5,
                                                          schedule="constant", weight_decay=0.1))
    lrs = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert lrs == pytest.approx([3e-3 * 0.5 ** k for k in (3, 2, 1, 0)])
    trainer.fit()  # steps 0,1: only the top group (norm + head); step 2: the top two groups
    groups = model.layer_groups()
    changed = lambda ps: any(not torch.equal(p, before[[id(q) for q in model.parameters()].index(id(p))])
                             for p in ps)
    assert changed(groups[3]) and changed(groups[2])
    assert not changed(groups[0]) and not changed(groups[1])


def test_bf16_autocast_on_cpu_trains():
    torch.manual_seed(0)
    trainer = Trainer(TinyLM(dropout=0.0), TinyCLM(), make_data(), _cfg(max_steps=3, precision="bf16"))
    seen = []
    orig = TinyCLM.loss

    class Probe(TinyCLM):
        def loss(self, model, batch):
            out = model(batch["input_ids"])
            seen.append(out.logits.dtype)
            return orig(self, model, batch)

    trainer.objectives = [("clm", Probe(), 1.0)]
    trainer.fit()
    assert seen[0] == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(precision="fp16", device="cpu"))


def test_several_weighted_objectives_and_data_views():
    torch.manual_seed(0)

    class Other(TinyCLM):
        name = "other"
        example_kind = "document"

    data = {"window": make_data(), "document": make_data(seed=5)}
    trainer = Trainer(TinyLM(dropout=0.0), [(TinyCLM(), 1.0), (Other(), 0.5)], data, _cfg(max_steps=2))
    logs = []
    trainer.add_callback("on_log", lambda tr, l: logs.append(l))
    trainer.fit()
    assert {"clm/loss", "other/loss", "clm/accuracy"} <= set(logs[0])
    assert logs[0]["loss"] == pytest.approx(logs[0]["clm/loss"] + 0.5 * logs[0]["other/loss"], rel=1e-6)
    with pytest.raises(UserError, match="no data for objective"):
        Trainer(TinyLM(), [Other()], {"window": make_data()}, _cfg())


def test_resume_applies_changed_settings_from_the_first_resumed_step(tmp_path):
    """lr / weight_decay / betas changed on resume reach the optimizer groups before the first resumed step
    (the schedule is re-evaluated with the new peak); seed / optimizer changes are refused."""
    torch.manual_seed(0)
    Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(max_steps=4, save_every=4, lr=1e-3), out_dir=tmp_path).fit()
    t = Trainer(TinyLM(), TinyCLM(), make_data(),
                _cfg(max_steps=8, save_every=4, lr=1e-2, weight_decay=0.2, beta2=0.99), out_dir=tmp_path)
    t.load_checkpoint(tmp_path / "checkpoints" / "step-4")
    assert {k for k, _, _ in t.resume_changes} == {"max_steps", "lr", "weight_decay", "beta2"}
    lrs = [g["lr"] for g in t.optimizer.param_groups]
    assert lrs == pytest.approx([1e-2 * (1 - 4 / 8)] * len(lrs))  # linear decay at step 4 of 8, new peak
    assert {g["weight_decay"] for g in t.optimizer.param_groups} == {0.2, 0.0}
    assert all(g["betas"] == (0.9, 0.99) for g in t.optimizer.param_groups)
    for bad in ({"seed": 5}, {"optimizer": "lamb"}, {"max_steps": 3}):
        t = Trainer(TinyLM(), TinyCLM(), make_data(), _cfg(**{"max_steps": 8, **bad}), out_dir=tmp_path)
        with pytest.raises(UserError, match=f"train.{next(iter(bad))}"):
            t.load_checkpoint(tmp_path / "checkpoints" / "step-4")


@pytest.mark.parametrize("kind, expected", [("amx", torch.bfloat16), ("avx512_bf16", torch.bfloat16), (None, None)])
def test_precision_auto_on_cpu_follows_native_bf16(monkeypatch, kind, expected):
    import plmkit.training.trainer as tr

    monkeypatch.setattr(tr, "cpu_bf16", lambda: kind)
    cpu = torch.device("cpu")
    assert tr.autocast_dtype("auto", cpu) is expected
    assert tr.autocast_dtype("fp32", cpu) is None and tr.autocast_dtype("bf16", cpu) is torch.bfloat16
    note = tr.precision_note("auto", cpu)
    assert note.startswith("precision bf16 autocast" if expected else "precision fp32") and "auto" in note
    assert (kind or "no native bf16") in note
    assert tr.precision_note("fp32", cpu) == "precision fp32 (train.precision=fp32)"
