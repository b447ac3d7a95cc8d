"""Fine-tuning tasks: readers, heads, metrics, adaptation modes, and the finetune / evaluate / predict API.

- ``readers.py``: GLUE TSV / CSV / JSONL tables, CoNLL BIO files, SQuAD JSON, multiple-choice JSONL
- ``specs.py``: the ``--task`` registry (sst2, cola, mrpc, rte, stsb, conll2003, squad and generic kinds)
- ``encoding.py``: examples -> features (first-piece NER labels, QA windows) and outputs -> predictions
- ``heads.py``: sequence / token / span heads, ELMo scalar mix, DeeBERT off-ramps
- ``objective.py``: :class:`TaskObjective` (make_batch / loss) for the shared Trainer
- ``adapters.py``: LoRA, Houlsby adapters, PALs attached to any plmkit Transformer
- ``modes.py``: adaptation modes, L2-SP / EWC, self-distillation, ensembles, early exit
- ``metrics.py``: accuracy, F1, MCC, Pearson / Spearman, entity F1, SQuAD EM / F1
- ``runner.py``: :func:`finetune`, :func:`evaluate_checkpoints`, :func:`predict`, checkpoints
"""

from plmkit.tasks.specs import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task", "FinetuneConfig", "finetune", "evaluate_checkpoints", "predict",
           "load_checkpoint"]


def __getattr__(name: str):  # lazy: the runner imports torch and the trainer
    if name in ("FinetuneConfig", "finetune", "evaluate_checkpoints", "predict", "load_checkpoint"):
        from plmkit.tasks import runner

        return getattr(runner, name)
    raise AttributeError(name)
