"""Training: the model-agnostic :class:`Trainer`, optimizers and schedules, checkpoints, distributed runs.

- ``trainer.py``: :class:`Trainer`, :func:`evaluate_objective`, :func:`evaluate_perplexity`
- ``optim.py``: AdamW / :class:`Lamb`, layer-wise LR, schedules (linear, cosine, constant, inverse-sqrt,
  slanted triangular), :class:`GradualUnfreezer`
- ``checkpoint.py``: atomic self-contained checkpoints, RNG capture
- ``distributed.py``: torchrun set-up, DDP / FSDP wrapping
- ``callbacks.py``, ``plots.py``: metrics.jsonl, TensorBoard, progress bar, loss-curve PNGs
- ``pretrain.py``: :func:`run_pretraining` (recipe -> tokenizer, token store, model, objective(s), Trainer)
"""

from plmkit.config import TrainConfig
from plmkit.training.callbacks import Callback
from plmkit.training.optim import GradualUnfreezer, Lamb, build_optimizer, build_scheduler, lr_multiplier, param_groups
from plmkit.training.trainer import Trainer, TrainingDiverged, evaluate_objective, evaluate_perplexity


def run_pretraining(recipe, out_dir, **kwargs):
    """Run a pretraining recipe (a :class:`plmkit.config.Recipe`, a dict or a YAML path); see ``pretrain.py``."""
    from plmkit.training.pretrain import run_pretraining as _run

    return _run(recipe, out_dir, **kwargs)


__all__ = ["Trainer", "TrainConfig", "Callback", "Lamb", "GradualUnfreezer", "TrainingDiverged",
           "build_optimizer", "build_scheduler", "lr_multiplier", "param_groups", "evaluate_objective",
           "evaluate_perplexity", "run_pretraining"]
