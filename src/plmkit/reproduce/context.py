"""Running one claim: :class:`ClaimContext` (what a runner gets) and :func:`run_claim` (what ``plm reproduce`` calls).

A runner is ``fn(ctx) -> Outcome``. It splits its work into named steps, ``ctx.step(name, fn)``, whose JSON
results are kept under ``DIR/steps/`` (written atomically): a ``plm reproduce`` killed midway and run again
with the same ``--out`` loads the finished steps and redoes only the one it was in. Training runs go to
``ctx.run_dir(name)`` and resume from their own checkpoints (``ctx.pretrain``); ``ctx.plm([...])`` runs any
other ``plm`` command in a child process, its output kept in ``DIR/logs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from plmkit.errors import UserError
from plmkit.reproduce.registry import Claim
from plmkit.reproduce.stats import Verdict

STATE = "reproduce.json"


@dataclass
class Outcome:
    """What a runner returns. ``ours``: figure name -> :func:`stats.summary` dict (or a plain number);
    ``table``: optional per-arm detail ``{"columns": [...], "rows": [[...]]}``; ``runs``: run directories
    (relative to the claim's folder) whose ``metrics.jsonl`` curves belong in the report."""

    ours: dict[str, Any]
    verdict: Verdict
    table: dict | None = None
    runs: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


def _cpu() -> float:
    """CPU seconds of this process plus its finished children (the ``plm`` commands a step runs)."""
    import resource

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _write_json(path: Path, obj: Any) -> None:
    from plmkit.training.checkpoint import write_json_atomic

    write_json_atomic(path, obj)


class ClaimContext:
    def __init__(self, claim: Claim, budget: str, out: Path, data_root: Path, threads: int | None = None,
                 log: Callable[[str], None] | None = None):
        self.claim, self.budget, self.out, self.data_root = claim, budget, Path(out), Path(data_root)
        self.params = claim.params(budget)
        self.threads = threads
        self._log = log or (lambda msg: print(f"plm reproduce {claim.id}: {msg}", file=sys.stderr, flush=True))
        (self.out / "steps").mkdir(parents=True, exist_ok=True)

    # -- parameters ---------------------------------------------------------------------------------------
    def param(self, key: str, default: Any = ...) -> Any:
        if key in self.params:
            return self.params[key]
        if default is ...:
            raise UserError(f"{self.claim.path}: budgets.{self.budget}: missing parameter {key!r}")
        return default

    @property
    def seeds(self) -> list[int]:
        seeds = self.param("seeds", [0])
        if isinstance(seeds, int):
            seeds = list(range(seeds))
        return [int(s) for s in seeds]

    def data(self, rel: str) -> Path:
        p = self.data_root / rel
        if not p.exists():
            raise UserError(f"claim {self.claim.id}: data file {p} is missing (set --data or $PLMKIT_DATA)")
        return p

    def log(self, msg: str) -> None:
        self._log(msg)

    # -- resumable steps ----------------------------------------------------------------------------------
    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``'s JSON-able result, computed once: a finished step is read back from ``DIR/steps/NAME.json``."""
        safe = name.replace("/", "_")
        path = self.out / "steps" / f"{safe}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))["result"]
            except (ValueError, KeyError):
                self.log(f"step {name}: its saved result {path} is unreadable; running it again")
        t0, c0 = time.time(), _cpu()
        self.log(f"step {name} ...")
        result = fn()
        secs, cpu = time.time() - t0, _cpu() - c0
        _write_json(path, {"step": name, "seconds": secs, "cpu_seconds": cpu, "result": result})
        self.log(f"step {name} done in {secs:.1f} s")
        return result

    def run_dir(self, name: str) -> Path:
        d = self.out / "runs" / name
        d.parent.mkdir(parents=True, exist_ok=True)
        return d

    def pretrain(self, recipe: dict | str | os.PathLike, name: str, overrides: list[str] | None = None) -> dict:
        """``plm pretrain`` in this process into ``runs/NAME``; a finished run is not redone, a killed one resumes
        from its newest checkpoint. Returns the run's summary (``run_dir`` relative to the claim folder)."""
        from plmkit.pipelines.pretrain import RUN_MARKER, run_pretraining

        out = self.run_dir(name)
        done = out / "summary.json"  # written here, only for a run that reached its last step
        if done.is_file() and (out / "final").is_dir():
            return json.loads(done.read_text(encoding="utf-8"))
        resume = (out / RUN_MARKER).is_file() and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
        overwrite = out.exists() and not resume
        self.log(f"pretrain {name}{' (resuming)' if resume else ''} ...")
        summary = run_pretraining(recipe, out, overrides=list(overrides or []), resume=resume, overwrite=overwrite,
                                  progress=False, log=lambda m: self.log(f"{name}: {m}"))
        if summary.get("interrupted"):
            from plmkit.errors import Interrupted

            raise Interrupted(f"claim {self.claim.id}: pretraining run {name} stopped at step {summary.get('step')}; "
                              f"run the same plm reproduce command again to resume it")
        summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool, type(None), list, dict))}
        summary["run_dir"] = str(Path("runs") / name)
        _write_json(done, summary)
        return summary

    def plm(self, args: list[str], name: str, timeout: float | None = None) -> str:
        """Run ``plm ARGS...`` in a child process (same Python); its output goes to ``DIR/logs/NAME.log`` and is
        returned. A failure raises a UserError that quotes the command's last error line."""
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        env.setdefault("PLMKIT_DATA", str(self.data_root))
        cmd = [sys.executable, "-m", "plmkit", *map(str, args)]
        self.log(f"{name}: plm {' '.join(map(str, args))}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        (logs / f"{name}.log").write_text(f"$ plm {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}",
                                          encoding="utf-8")
        if proc.returncode != 0:
            last = next((line for line in reversed(proc.stderr.splitlines()) if line.strip()), "no output")
            raise UserError(f"claim {self.claim.id}: step {name} failed (plm {args[0]} exit {proc.returncode}): {last}")
        return proc.stdout


def environment() -> dict:
    """Versions, threads, host and git revision (``plmkit.reporting.environment.capture``) plus the command line."""
    from plmkit.reporting.environment import capture

    return capture() | {"argv": sys.argv[1:]}


def _state(claim: Claim, budget: str) -> dict:
    """What ``DIR/reproduce.json`` pins (as it reads back from JSON): the claim, the budget, its parameters."""
    return json.loads(json.dumps({"id": claim.id, "budget": budget, "params": claim.params(budget)}))


def check_out(claim: Claim, budget: str, out: Path, overwrite: bool = False) -> str:
    """What ``out`` holds: "new" (absent or empty), "resume" (this claim's earlier attempt at this budget and
    parameters), "replace" (a claim run, with ``overwrite``); anything else is refused in one line (a folder that is
    not a claim run is never deleted, even with ``overwrite``)."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return "new"
    state = _state(claim, budget)
    old = None
    if (out / STATE).is_file():
        try:
            old = json.loads((out / STATE).read_text(encoding="utf-8"))
        except ValueError:
            old = None
    if overwrite and isinstance(old, dict):
        return "replace"
    if old == state:
        return "resume"
    if overwrite:  # never delete a folder that is not a claim run
        raise UserError(f"--out {out} holds files that are not a plm reproduce run; --overwrite only replaces a "
                        f"claim's folder; choose another --out")
    what = f"claim {old.get('id')} at budget {old.get('budget')}" if isinstance(old, dict) else "files of something else"
    same = isinstance(old, dict) and old.get("id") == claim.id and old.get("budget") == budget
    raise UserError(f"--out {out} holds {what}" + (" with other parameters" if same else "")
                    + "; choose another --out or pass --overwrite")


def run_claim(claim: Claim, budget: str, out: Path, data_root: Path, *, threads: int | None = None,
              overwrite: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Run ``claim`` at ``budget`` into ``out`` and write ``out/claim.json``; returns its content.

    ``out`` may hold this claim's earlier, unfinished attempt at the same budget (its finished steps are reused);
    anything else there is refused unless ``overwrite``."""
    import shutil

    import torch

    out = Path(out)
    claim.check_prerequisites(data_root)
    fn = claim.function()
    params = claim.params(budget)
    if check_out(claim, budget, out, overwrite) == "replace":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / STATE, _state(claim, budget))
    if threads:
        torch.set_num_threads(threads)
    ctx = ClaimContext(claim, budget, out, data_root, threads=threads, log=log)
    t0, c0 = time.time(), _cpu()
    outcome = fn(ctx)
    if not isinstance(outcome, Outcome):
        raise TypeError(f"claim runner {claim.runner} returned {type(outcome).__name__}, not Outcome")
    for key, value in outcome.ours.items():  # the contract plm report reads: a number or a summary over seeds
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, dict) and {"mean", "sd", "n"} <= set(value))
        if not ok:
            raise TypeError(f"claim runner {claim.runner}: ours[{key!r}] is {value!r}, expected a number or "
                            f"stats.summary(...)")
    steps = sorted((out / "steps").glob("*.json"))
    step_seconds = sum(json.loads(p.read_text(encoding="utf-8")).get("seconds", 0.0) for p in steps)
    result = {
        "id": claim.id, "claim": claim.claim, "reference": claim.reference,
        "ours": outcome.ours, "verdict": outcome.verdict.verdict, "rule": outcome.verdict.rule,
        "effect": outcome.verdict.effect, "se": outcome.verdict.se,
        "budget": budget, "params": params, "seeds": ctx.seeds,
        "seconds": time.time() - t0, "cpu_seconds": _cpu() - c0, "step_seconds": step_seconds,
        "table": outcome.table, "runs": outcome.runs, "details": outcome.details,
        "environment": environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json(out / "claim.json", result)
    return result
