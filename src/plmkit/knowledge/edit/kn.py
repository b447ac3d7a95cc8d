"""KN: knowledge-neuron editing (Dai et al. 2022), through ``plmkit.knowledge.neurons``.

For each request: integrated-gradients attribution of the FFN neurons of ``layers`` for the true
object's first token on the prompt (and the prompt in the context templates, to have several prompts
of the same fact), the paper's selection (t x max, shared by >= p of the prompts, adapted towards
2-5 neurons), then each selected neuron's value vector (column of ``down``) is moved from the old
object's embedding towards the new one: v += -lambda1 e(old) + lambda2 e(new) (``neurons --update``).
Needs the true object (``target_true``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plmkit.errors import UserError
from plmkit.knowledge import neurons as kn
import plmkit.knowledge.edit.common as common
from plmkit.knowledge.structure import ModelStructure


@dataclass
class KNParams:
    layers: list[int] | None = None
    """Layers whose neurons are attributed (all by default in the recipes: the paper searches all)."""
    steps: int = 20
    threshold: float = 0.2
    share: float = 0.7
    n_context: int = 3
    context_length: int = 10
    context_seed: int = 0
    lambda1: float = 1.0
    lambda2: float = 8.0


def apply(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: KNParams,
          rec: common.Recorder, info: dict[str, Any]) -> None:
    templates = common.context_templates(struct, tok, hp.n_context, hp.context_length, hp.context_seed)
    info["neurons"] = []
    for req in requests:
        if not req.target_true:
            raise UserError(f"KN editing needs the true object (target_true) of {req.prompt!r}")
        prompts = [kn.encode_prompt(struct, tok, t.replace("{}", req.prompt), req.target_true) for t in templates]
        attrs = [kn.attribute(struct, p, hp.steps, hp.layers) for p in prompts]
        neurons, share = kn.select(attrs, hp.threshold, hp.share)
        info["neurons"].append([list(n) for n in neurons])
        delta = -hp.lambda1 * kn.word_embedding(struct, tok, req.target_true) + \
            hp.lambda2 * kn.word_embedding(struct, tok, req.target_new)
        for layer, i in neurons:
            W = rec.watch(struct.down(layer).weight)
            common.add_(W[:, i], delta)
