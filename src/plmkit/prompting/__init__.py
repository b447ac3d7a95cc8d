"""Prompting: in-context evaluation (``plm icl``), verbalizer scoring, soft prompts and PET (``plm finetune``).

- ``templates``: prompt templates + verbalizers read from YAML (``recipes/prompts/<task>/*.yaml``);
- ``chat``: a model's chat template (GGUF metadata or an HF directory) rendered around a prompt;
- ``scoring``: log-likelihood of label continuations, with a KV cache shared by a common prefix;
- ``icl``: seeded demonstrations, truncation by whole demonstrations, contextual calibration, metrics;
- ``qa``: in-context multiple choice (options scored as continuations) and short-answer generation (EM / F1);
- ``verbalizer``: ``plm finetune --verbalizer``: the LM / MLM head's label-word log-probabilities as class scores;
- ``soft``: prompt tuning, P-tuning, prefix tuning (``plm finetune --mode``);
- ``pet``: PET's loss, masking, soft labels and distillation objective (``plm finetune --mode pet``).

Overview and commands: docs/PROMPTING.md.
"""

from plmkit.prompting.templates import Template, load_templates  # noqa: F401
