"""``plm finetune``'s entry point: one run of the kind the config asks for.

- ``--multi-task``: :func:`plmkit.tasks.multitask.finetune_multitask` (MT-DNN, one head per task);
- ``--active-learning``: :func:`plmkit.tasks.active.finetune_active` (a fine-tuning run per labelling round);
- otherwise: :func:`plmkit.tasks.finetuning.finetune` (one task).

The two loops build on ``finetuning``'s steps, so the dispatch lives here, above all three modules.
"""

from __future__ import annotations

from typing import Any


def finetune(cfg) -> dict[str, Any]:
    """Run ``cfg`` (a :class:`plmkit.tasks.config.FinetuneConfig`); returns the eval.json dict."""
    if cfg.multi_task:
        from plmkit.tasks.multitask import finetune_multitask

        return finetune_multitask(cfg)
    if cfg.active_learning:
        from plmkit.tasks.active import finetune_active

        return finetune_active(cfg)
    from plmkit.tasks.finetuning import finetune as finetune_one

    return finetune_one(cfg)
