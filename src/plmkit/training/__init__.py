"""Training: the model-agnostic :class:`Trainer`, optimizers and schedules, checkpoints, distributed runs.

- ``trainer.py``: :class:`Trainer`, :func:`evaluate_objective`, :func:`evaluate_perplexity`
- ``optim.py``: AdamW / :class:`Lamb`, layer-wise LR, schedules (linear, cosine, constant, inverse-sqrt,
  slanted triangular), :class:`GradualUnfreezer`
- ``checkpoint.py``: atomic self-contained checkpoints, RNG capture
- ``distributed.py``: torchrun set-up, DDP / FSDP wrapping
- ``callbacks.py``, ``plots.py``: metrics.jsonl, TensorBoard, progress bar, loss-curve PNGs

Workflows built on the engine (recipe -> run: ``run_pretraining``, the quickstart) live in
:mod:`plmkit.pipelines`.
"""

from plmkit.config import TrainConfig
from plmkit.training.callbacks import Callback
from plmkit.training.optim import GradualUnfreezer, Lamb, build_optimizer, build_scheduler, lr_multiplier, param_groups
from plmkit.training.trainer import Trainer, TrainingDiverged, evaluate_objective, evaluate_perplexity

__all__ = ["Trainer", "TrainConfig", "Callback", "Lamb", "GradualUnfreezer", "TrainingDiverged",
           "build_optimizer", "build_scheduler", "lr_multiplier", "param_groups", "evaluate_objective",
           "evaluate_perplexity"]
