"""ERNIE 2.0 continual multi-task pretraining (Sun et al. 2020, arXiv:1907.12412, section 3).

Tasks are introduced in stages; in the continual setting every stage keeps training the earlier tasks
in the mix ("continual multi-task learning"), so what was learnt first is not forgotten. Each training
batch belongs to ONE task, drawn from the current stage's active tasks with probability proportional to
their ``weight``; a task-id embedding (``model.heads["ernie2"].task``, one row per task, width E) is
added to the word embeddings of that batch, as ERNIE 2.0's task embedding.

Recipe (``objective:`` section)::

    {name: ernie2, keep_earlier: true,
     tasks: [{name: mlm, masking: whole_word}, {name: cap_pred}, {name: sent_reorder}, {name: sent_distance}],
     stages: [{batches: 300, tasks: [mlm]}, {batches: 300, tasks: [cap_pred]},
              {batches: 300, tasks: [sent_reorder, sent_distance]}]}

Stage s runs for ``batches`` training batches (micro-batches; the last stage continues to the end of
training). Its active tasks are the tasks listed in stages 0..s (``keep_earlier: true``, ERNIE 2.0) or
only its own (``keep_earlier: false``: sequential training, the forgetting baseline). A task key is its
``key`` or ``name``; any registered objective whose examples the ``documents`` view provides can be a
task (mlm, cap_pred, sent_reorder, sent_distance from ``ernie2_tasks``, ...).

Where the schedule stands is the number of training batches seen, kept in the model as the buffer
``heads["ernie2"].batches`` (so checkpoints resume in the right stage). ``make_batch`` builds a batch for
every task (cheap) and draws the training task; ``loss`` in training mode runs only that task and counts
the batch; in evaluation mode (``model.eval()``) it runs every task and reports each one's metrics as
``<key>/<metric>`` (the held-out loss is the mean over the current stage's active tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from plmkit.errors import UserError
from plmkit.objectives.base import Objective, ObjectiveConfig

HEAD = "ernie2"


class TaskEmbedding(nn.Module):
    """``task`` (num_tasks, E) task-id embeddings and the ``batches`` counter of the stage schedule."""

    def __init__(self, num_tasks: int, embed_dim: int) -> None:
        super().__init__()
        self.task = nn.Embedding(num_tasks, embed_dim)
        nn.init.normal_(self.task.weight, 0.0, 0.02)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))


@dataclass(kw_only=True)
class Ernie2Config(ObjectiveConfig):
    tasks: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "mlm", "masking": "whole_word"}, {"name": "sent_reorder"}, {"name": "sent_distance"}])
    """Task specs ``{name, key?, weight?, **options}`` (``cap_pred`` needs a cased tokenizer)."""
    stages: list[dict[str, Any]] = field(default_factory=lambda: [
        {"batches": 1000, "tasks": ["mlm"]}, {"batches": 1000, "tasks": ["sent_reorder"]},
        {"batches": 1000, "tasks": ["sent_distance"]}])
    """``{batches: N, tasks: [keys introduced in this stage]}`` in order (the last one's batches may be left
    out: it runs to the end of training)."""
    keep_earlier: bool = True
    """Keep the earlier stages' tasks in the mix (ERNIE 2.0's continual multi-task learning)."""
    task_embedding: bool = True
    """Add a task-id embedding to the word embeddings of each task's batches."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if not isinstance(self.tasks, list) or not self.tasks:
            raise UserError(f"{name}: option tasks must be a non-empty list of {{name: ...}} mappings")
        keys = []
        for i, t in enumerate(self.tasks):
            if not isinstance(t, dict) or "name" not in t:
                raise UserError(f"{name}: tasks[{i}] must be a mapping with a 'name', got {t!r}")
            w = t.get("weight", 1.0)
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w <= 0:
                raise UserError(f"{name}: tasks[{i}].weight must be a number > 0, got {w!r}")
            keys.append(str(t.get("key", t["name"])))
        if len(set(keys)) != len(keys):
            raise UserError(f"{name}: task keys must be unique, got {keys} (give repeated tasks a 'key')")
        if not isinstance(self.stages, list) or not self.stages:
            raise UserError(f"{name}: option stages must be a non-empty list of {{batches: N, tasks: [...]}}")
        seen: set[str] = set()
        for i, s in enumerate(self.stages):
            if not isinstance(s, dict) or set(s) - {"batches", "tasks"} or "tasks" not in s:
                raise UserError(f"{name}: stages[{i}] must be a mapping with keys batches, tasks; got {s!r}")
            b = s.get("batches", 0)
            if not isinstance(b, int) or isinstance(b, bool) or b < 1:
                if not (i == len(self.stages) - 1 and "batches" not in s):
                    raise UserError(f"{name}: stages[{i}].batches must be a positive integer, got {b!r}")
            ts = s["tasks"]
            if not isinstance(ts, list) or not ts:
                raise UserError(f"{name}: stages[{i}].tasks must be a non-empty list of task keys")
            for k in ts:
                if k not in keys:
                    raise UserError(f"{name}: stages[{i}].tasks: unknown task {k!r}; expected one of {keys}")
            seen |= set(ts)
        if set(keys) - seen:
            raise UserError(f"{name}: tasks {sorted(set(keys) - seen)} appear in no stage")


class Ernie2(Objective):
    """ERNIE 2.0 continual multi-task pretraining (see the module docstring)."""

    name = "ernie2"
    example_kind = "document"
    Config = Ernie2Config
    token_nll = False

    build_task: Any = None
    """``build(name, tokenizer=..., **options)`` of the objective registry; ``plmkit.objectives`` sets it
    (this module cannot import the package that imports it)."""

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        build = type(self).build_task
        if build is None:  # pragma: no cover - set when plmkit.objectives is imported
            raise RuntimeError("Ernie2.build_task is unset: import plmkit.objectives")
        c = self.config
        self.keys: list[str] = []
        self.tasks: dict[str, Objective] = {}
        self.weights: dict[str, float] = {}
        for spec in c.tasks:
            opts = dict(spec)
            name = opts.pop("name")
            key = str(opts.pop("key", name))
            self.weights[key] = float(opts.pop("weight", 1.0))
            if name == self.name:
                raise UserError(f"{self.name}: a task cannot be ernie2 itself")
            obj = build(name, tokenizer=tokenizer, **opts)
            if obj.example_kind not in ("document", "window"):
                raise UserError(f"{self.name}: task {key!r} ({name}) reads {obj.example_kind!r} examples; ernie2 "
                                "tasks share the documents view (mlm, cap_pred, sent_reorder, sent_distance, ...)")
            self.keys.append(key)
            self.tasks[key] = obj
        self.bounds: list[int] = []  # cumulative batch count at the end of each stage but the last
        total = 0
        for s in c.stages[:-1]:
            total += int(s["batches"])
            self.bounds.append(total)
        self._head: TaskEmbedding | None = None
        self._counter = 0  # used until prepare() attaches the head
        self._active_task: int | None = None

    # ------------------------------------------------------------------ schedule
    def stage_at(self, batches: int) -> int:
        """Stage index after ``batches`` training batches."""
        return sum(1 for b in self.bounds if batches >= b)

    def active(self, stage: int) -> list[str]:
        """Task keys trained in ``stage`` (in task order)."""
        st = self.config.stages
        chosen = {k for s in (st[: stage + 1] if self.config.keep_earlier else [st[stage]]) for k in s["tasks"]}
        return [k for k in self.keys if k in chosen]

    def mixing(self, stage: int) -> dict[str, float]:
        """Probability of each active task of ``stage`` for one batch."""
        act = self.active(stage)
        z = sum(self.weights[k] for k in act)
        return {k: self.weights[k] / z for k in act}

    @property
    def batches_seen(self) -> int:
        return int(self._head.batches) if self._head is not None else self._counter

    def draw(self, stage: int) -> str:
        mix = self.mixing(stage)
        keys = list(mix)
        i = int(torch.multinomial(torch.tensor([mix[k] for k in keys]), 1))
        return keys[i]

    # ------------------------------------------------------------------ objective contract
    def prepare(self, model: Any) -> None:
        for obj in self.tasks.values():
            obj.prepare(model)
        E = model.config.embed_dim
        head = model.heads[HEAD] if HEAD in model.heads else None
        if head is None or head.task.weight.shape != (len(self.keys), E):
            head = model.add_head(HEAD, TaskEmbedding(len(self.keys), E), init=False, replace=True)
        self._head = head
        emb = model.get_input_embeddings()
        if self.config.task_embedding and not getattr(emb, "_ernie2_hooked", False):
            emb.register_forward_hook(self._add_task_embedding)
            emb._ernie2_hooked = True

    def _add_task_embedding(self, module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor | None:
        if self._active_task is None or self._head is None:
            return None
        return out + self._head.task.weight[self._active_task].to(out.dtype)

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for k in self.keys:
            for name, v in self.tasks[k].make_batch(examples).items():
                batch[f"{k}/{name}"] = v
        chosen = self.draw(self.stage_at(self.batches_seen))
        batch["task"] = torch.tensor(self.keys.index(chosen))
        for name in ("input_ids", "attention_mask"):  # the Trainer's token count: the drawn task's batch
            if f"{chosen}/{name}" in batch:
                batch[name] = batch[f"{chosen}/{name}"]
        return batch

    def _task_loss(self, model: Any, key: str, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        pre = f"{key}/"
        sub = {k[len(pre):]: v for k, v in batch.items() if k.startswith(pre)}
        self._active_task = self.keys.index(key) if self.config.task_embedding else None
        try:
            return self.tasks[key].loss(model, sub)
        finally:
            self._active_task = None

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        stage = self.stage_at(self.batches_seen)
        if model.training:
            key = self.keys[int(batch["task"])]
            loss, m = self._task_loss(model, key, batch)
            if self._head is not None:
                self._head.batches += 1
            else:
                self._counter += 1
            metrics = {f"{key}/{k}": v for k, v in m.items()}
            metrics[f"{key}/loss"] = float(loss.detach())
            metrics["stage"] = float(stage)
            return loss, metrics
        metrics = {"stage": float(stage)}
        act = self.active(stage)
        total = None
        for key in self.keys:
            loss, m = self._task_loss(model, key, batch)
            metrics.update({f"{key}/{k}": v for k, v in m.items()})
            metrics[f"{key}/loss"] = float(loss.detach())
            if key in act:
                total = loss / len(act) if total is None else total + loss / len(act)
        assert total is not None
        return total, metrics
