"""Prompting: zero/few-shot in-context evaluation of causal LMs (``plm icl``).

- ``templates``: prompt templates + verbalizers read from YAML (``recipes/prompts/<task>/*.yaml``);
- ``chat``: a model's chat template (GGUF metadata or an HF directory) rendered around a prompt;
- ``scoring``: log-likelihood of label continuations, with a KV cache shared by a common prefix;
- ``icl``: seeded demonstrations, truncation by whole demonstrations, contextual calibration, metrics.
"""

from plmkit.prompting.templates import Template, load_templates  # noqa: F401
