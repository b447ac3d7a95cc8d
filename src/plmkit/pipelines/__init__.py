"""Workflows that turn a recipe or a few options into runs, on top of the engine packages.

- ``pretrain.py``: :func:`run_pretraining` (recipe -> tokenizer, token store, model, objective(s), Trainer);
  the body of ``plm pretrain`` (also under ``torchrun ... -m plmkit pretrain``)
- ``quickstart.py``: :func:`run_quickstart` (tokenizer + tiny MLM and CLM pretraining + samples on a CPU);
  the body of ``plm quickstart``
- ``attribution.py``: :func:`run_bench` / :func:`run_forget` (the fact-tracing benchmark: corpus, pretraining,
  evaluation; and remove -> retrain -> probe); the bodies of ``plm attribute bench`` / ``forget``

Layering: ``cli`` imports ``pipelines``; ``pipelines`` imports ``training``, ``tasks``, ``objectives``,
``data``, ``tokenization``, ``models`` and ``attribution``; nothing below imports ``pipelines``.
"""

__all__ = ["run_pretraining", "run_quickstart"]


def __getattr__(name: str):  # lazy: ``import plmkit.pipelines`` does not import torch
    if name == "run_pretraining":
        from plmkit.pipelines.pretrain import run_pretraining

        return run_pretraining
    if name == "run_quickstart":
        from plmkit.pipelines.quickstart import run_quickstart

        return run_quickstart
    raise AttributeError(name)
