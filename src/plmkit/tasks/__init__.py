"""Fine-tuning tasks: readers, heads, metrics, adaptation modes, and the finetune / evaluate / predict API.

- ``readers.py``: GLUE TSV / CSV / JSONL tables, CoNLL BIO files, SQuAD JSON, multiple-choice JSONL
- ``specs.py``: the ``--task`` registry (sst2, cola, mrpc, rte, stsb, conll2003, squad and generic kinds)
- ``config.py``: :class:`FinetuneConfig` (``plm finetune``'s flags are generated from it)
- ``data.py``: the task spec of a config, example subsets, label inventories, examples -> features
- ``encoding.py``: examples -> features (first-piece NER labels, QA windows) and outputs -> predictions
- ``heads.py``: sequence / token / span heads, ELMo scalar mix, DeeBERT off-ramps
- ``objective.py``: :class:`TaskObjective` (make_batch / loss) for the shared Trainer
- ``adapters.py``: LoRA, Houlsby adapters, PALs attached to any plmkit Transformer
- ``modes.py``: adaptation modes, L2-SP / EWC, self-distillation, ensembles, early exit
- ``metrics.py``: accuracy, F1, MCC, Pearson / Spearman, entity F1, SQuAD EM / F1
- ``scoring.py``: a task's metrics from model outputs; ``inference.py``: running a task model, early exit
- ``checkpoint.py``: the fine-tuned checkpoint directory (:func:`load_checkpoint`)
- ``finetuning.py``: :func:`finetune`, step by step; ``text2text.py``: encoder-decoder tasks
- ``multitask.py``: MT-DNN multi-task fine-tuning; ``active.py``: active learning; ``plausibility.py``:
  multiple choice by MLM plausibility; ``run.py``: the entry point that picks among them (``plm finetune``)
- ``evaluation.py``: :func:`evaluate_checkpoints` (ensembles); ``prediction.py``: :func:`predict`

Submodules import each other directly (``plmkit.tasks.X``), never this package, so it can re-export them.
"""

from plmkit.tasks.specs import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task", "FinetuneConfig", "finetune", "evaluate_checkpoints", "predict",
           "load_checkpoint"]


def __getattr__(name: str):  # lazy: these import torch and the trainer
    if name == "FinetuneConfig":
        from plmkit.tasks.config import FinetuneConfig

        return FinetuneConfig
    if name == "finetune":
        from plmkit.tasks.run import finetune

        return finetune
    if name == "evaluate_checkpoints":
        from plmkit.tasks.evaluation import evaluate_checkpoints

        return evaluate_checkpoints
    if name == "predict":
        from plmkit.tasks.prediction import predict

        return predict
    if name == "load_checkpoint":
        from plmkit.tasks.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(name)
