"""Pretraining objectives: one file each, registered by name in ``REGISTRY``.

    obj = plmkit.objectives.build("mlm", tokenizer=tok, masking="whole_word")
    obj.prepare(model)                       # checks the backbone, adds heads (before the optimizer)
    batch = obj.make_batch(examples)         # examples: list[int] or token-store records
    loss, metrics = obj.loss(model, batch)

    both = plmkit.objectives.build_many([{"name": "mlm", "weight": 1.0},
                                          {"name": "sop", "weight": 1.0}], tokenizer=tok)

Trainable end to end: clm, mlm, nsp, sop, rtd, infoword, tlm, unilm (encoder / decoder
``Transformer``), t5_span, bart_denoise, mass (``plmkit.models.seq2seq.EncoderDecoder``), glm
(``plmkit.models.prefix_lm.GLM``, 2D positions), plm (``plmkit.models.xlnet.XLNet``, two-stream
attention; ``transformers.XLNetLMHeadModel`` works too), bilm (ELMo, ``plmkit.objectives.bilm``) and colake
(word-knowledge graphs over an encoder; it reads its own files, LAMA T-REx facts, via ``read_examples``).

The base class and shared helpers are in ``base.py``; masking primitives in ``masking.py``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from plmkit.errors import UserError, suggest
from plmkit.objectives.bilm import BiLM
from plmkit.objectives.bart_denoise import BartDenoise
from plmkit.objectives.canine_char import CanineChar
from plmkit.objectives.base import Objective, ObjectiveConfig
from plmkit.objectives.clm import CLM
from plmkit.objectives.colake import CoLAKE
from plmkit.objectives.distill_mlm import DistillMLM
from plmkit.objectives.ernie2 import Ernie2
from plmkit.objectives.ernie2_tasks import CapitalizationPrediction, SentenceDistance, SentenceReordering
from plmkit.objectives.glm import GLM
from plmkit.objectives.infoword import InfoWord
from plmkit.objectives.mass import MASS
from plmkit.objectives.mlm import MLM
from plmkit.objectives.nsp import NSP
from plmkit.objectives.plm import PLM
from plmkit.objectives.prophetnet import ProphetNet
from plmkit.objectives.realm import REALM
from plmkit.objectives.realm_ict import ICT
from plmkit.objectives.ernie_thu import ERNIE
from plmkit.objectives.kepler import KEPLER
from plmkit.objectives.rtd import RTD
from plmkit.objectives.seq_autoencoder import SeqAutoencoder
from plmkit.objectives.sop import SOP
from plmkit.objectives.spanbert import SpanBERT
from plmkit.objectives.structbert import StructBERT_SSO, StructBERT_WSO
from plmkit.objectives.t5_span import T5Span
from plmkit.objectives.tlm import TLM
from plmkit.objectives.translation import Translation
from plmkit.objectives.unilm import UniLM

REGISTRY: dict[str, type[Objective]] = {
    "clm": CLM,
    "mlm": MLM,
    "nsp": NSP,
    "sop": SOP,
    "rtd": RTD,
    "infoword": InfoWord,
    "tlm": TLM,
    "unilm": UniLM,
    "t5_span": T5Span,
    "bart_denoise": BartDenoise,
    "mass": MASS,
    "plm": PLM,
    "glm": GLM,
    "bilm": BiLM,  # ELMo's forward + backward LM (plmkit.objectives.bilm)
    "colake": CoLAKE,  # word-knowledge graphs from T-REx (plmkit.objectives.colake)
    "spanbert": SpanBERT,  # span masking + span boundary objective (plmkit.objectives.spanbert)
    "structbert_wso": StructBERT_WSO,  # StructBERT word structural objective + MLM
    "structbert_sso": StructBERT_SSO,  # StructBERT sentence structural objective (next/previous/random)
    "prophetnet": ProphetNet,  # future n-gram prediction, n-stream decoder (plmkit.models.prophetnet)
    "cap_pred": CapitalizationPrediction,  # ERNIE 2.0 tasks (plmkit.objectives.ernie2_tasks)
    "sent_reorder": SentenceReordering,
    "sent_distance": SentenceDistance,
    "ernie2": Ernie2,  # ERNIE 2.0 continual multi-task schedule over the tasks above (and mlm, ...)
    "canine_char": CanineChar,  # masked character prediction for CANINE (plmkit.models.canine)
    "translation": Translation,  # teacher-forced seq2seq on parallel pairs (CoVe's MT-LSTM)
    "realm": REALM,  # retrieval-augmented salient-span MLM (plmkit.objectives.realm)
    "ict": ICT,  # inverse cloze task: REALM's retriever warm-up (plmkit.objectives.realm_ict)
    "ernie_thu": ERNIE,  # TransE entities fused at mentions + dEA (plmkit.objectives.ernie_thu)
    "kepler": KEPLER,  # MLM + knowledge embedding of entity descriptions (plmkit.objectives.kepler)
    "seq_autoencoder": SeqAutoencoder,  # Dai & Le 2015's sequence autoencoder for RNN / LSTM LMs
    "distill_mlm": DistillMLM,  # general distillation on MLM against a pretrained teacher (DistilBERT's losses)
}

__all__ = ["REGISTRY", "Objective", "ObjectiveConfig", "MultiObjective", "build", "build_many"]


def build(name: str, tokenizer: Any = None, **options: Any) -> Objective:
    """Build the objective registered as ``name`` with its options (unknown names/options raise UserError)."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise UserError(f"unknown objective {name!r}{suggest(name, REGISTRY)}; "
                        f"expected one of {', '.join(REGISTRY)}")
    return cls(tokenizer=tokenizer, **options)


class MultiObjective:
    """Several objectives trained together, loss = sum of ``weight * loss``.

    ``make_batch(examples)`` gives each objective the same examples, or, when ``examples`` is a
    dict keyed by objective name, each its own list (for objectives reading different store
    views: ``example_kind`` is then a dict name -> kind). Batch keys are prefixed ``"<name>/"``;
    metrics are prefixed the same way and ``"<name>/loss"`` holds each unweighted loss. Each
    objective runs its own forward pass.
    """

    def __init__(self, parts: Sequence[tuple[str, float, Objective]]):
        if not parts:
            raise UserError("build_many: expected at least one objective")
        names = [p[0] for p in parts]
        if len(set(names)) != len(names):
            raise UserError(f"build_many: objective names must be unique, got {names} "
                            "(give repeated objectives a distinct 'key')")
        self.parts = list(parts)

    @property
    def example_kind(self) -> str | dict[str, str]:
        kinds = {n: o.example_kind for n, _, o in self.parts}
        vals = set(kinds.values())
        return vals.pop() if len(vals) == 1 else kinds

    @property
    def name(self) -> str:
        return "+".join(n for n, _, _ in self.parts)

    def prepare(self, model: Any) -> None:
        for _, _, o in self.parts:
            o.prepare(model)

    def make_batch(self, examples: Sequence[Any] | Mapping[str, Sequence[Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for n, _, o in self.parts:
            if isinstance(examples, Mapping):
                if n not in examples:
                    raise UserError(f"build_many: no examples given for objective {n!r} "
                                    f"(got {sorted(examples)})")
                ex = examples[n]
            else:
                ex = examples
            for k, v in o.make_batch(ex).items():
                batch[f"{n}/{k}"] = v
        return batch

    def loss(self, model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total: torch.Tensor | None = None
        metrics: dict[str, float] = {}
        for n, w, o in self.parts:
            pre = f"{n}/"
            sub = {k[len(pre):]: v for k, v in batch.items() if k.startswith(pre)}
            loss, m = o.loss(model, sub)
            total = w * loss if total is None else total + w * loss
            metrics[f"{n}/loss"] = float(loss.detach())
            metrics.update({f"{n}/{k}": v for k, v in m.items()})
        assert total is not None
        return total, metrics


Ernie2.build_task = staticmethod(build)  # ERNIE 2.0 builds its tasks through the registry


def build_many(specs: Sequence[Mapping[str, Any]], tokenizer: Any = None) -> MultiObjective:
    """Build weighted objectives from ``[{"name": ..., "weight": 1.0, "key": optional, **options}]``."""
    parts = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise UserError(f"build_many: entry {i} must be a mapping with a 'name' key, got {spec!r}")
        opts = dict(spec)
        name = opts.pop("name")
        key = opts.pop("key", name)
        weight = opts.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise UserError(f"build_many: entry {i} ({name}): weight must be a number >= 0, got {weight!r}")
        parts.append((str(key), float(weight), build(name, tokenizer=tokenizer, **opts)))
    return MultiObjective(parts)
