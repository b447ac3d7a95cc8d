"""KEPLER (Wang et al. 2021, arXiv:1911.06136): MLM + a knowledge-embedding loss whose entity embeddings
are the PLM's own encodings of entity descriptions.

loss = MLM(windows of the text corpus) + ``ke_weight`` * KE, KE = :func:`plmkit.objectives.kg.ke_loss` on
``ke_batch`` facts drawn (torch's global RNG) from ``triples`` each step, each with ``negatives`` corrupted
copies (head or tail replaced by a random entity). An entity's embedding is the model's last hidden state at
[CLS] for ``[CLS] description [SEP]`` (``desc_len`` tokens; descriptions are built by
:func:`plmkit.objectives.kg.read_trex` from the entity label and the T-REx evidence sentences mentioning it),
relations are a learned embedding table of the hidden size (``model.heads["kepler_relation"]``, not part of
the HF export). Batch keys: the MLM keys, and ``ke_desc_ids`` / ``ke_desc_mask`` (U, L) unique descriptions,
``ke_pos`` (B, 3) and ``ke_neg`` (B, n, 3) with heads / tails as rows of the description batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

from plmkit.errors import UserError
from plmkit.objectives.base import check_positive, hidden_only, pad_2d
from plmkit.objectives.kg import TriplesMLMConfig, corrupt, ke_loss, read_trex
from plmkit.objectives.mlm import MLM


@dataclass(kw_only=True)
class KEPLERConfig(TriplesMLMConfig):
    ke_weight: float = 1.0
    ke_batch: int = 8
    negatives: int = 1
    gamma: float = 4.0
    """KE margin (gamma in KEPLER eq. 2)."""
    norm: int = 1
    desc_len: int = 48

    def validate(self, name: str) -> None:
        super().validate(name)
        for key in ("ke_batch", "negatives", "desc_len", "norm"):
            check_positive(name, key, getattr(self, key), integer=True)
        check_positive(name, "gamma", self.gamma)
        if isinstance(self.ke_weight, bool) or not isinstance(self.ke_weight, (int, float)) or self.ke_weight < 0:
            raise UserError(f"{name}: option ke_weight must be a number >= 0, got {self.ke_weight!r}")


class KEPLER(MLM):
    """MLM + KE (module docstring)."""

    name = "kepler"
    Config = KEPLERConfig
    config: KEPLERConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        c = self.config
        self.kg = read_trex([c.triples] if isinstance(c.triples, str) else c.triples)
        b, e = self.vocab.begin, self.vocab.end
        self.desc = [([b] if b is not None else []) + tokenizer.encode(d, add_special_tokens=False)[: c.desc_len]
                     + ([e] if e is not None else []) for d in self.kg.descriptions]
        self.triples = torch.tensor(self.kg.triples, dtype=torch.long)

    def prepare(self, model: Any) -> None:
        super().prepare(model)
        if "kepler_relation" not in model.heads:
            model.add_head("kepler_relation", nn.Embedding(len(self.kg.relations), model.config.hidden_size))

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = super().make_batch(examples)
        c = self.config
        pos = self.triples[torch.randint(len(self.triples), (c.ke_batch,))]  # (B, 3)
        neg = corrupt(pos, len(self.kg.entities), c.negatives)  # (B, n, 3)
        ents = sorted(set(pos[:, [0, 2]].flatten().tolist()) | set(neg[..., [0, 2]].flatten().tolist()))
        row = {e: i for i, e in enumerate(ents)}
        seqs = [self.desc[e] for e in ents]
        T = max(len(s) for s in seqs)
        batch.update({
            "ke_desc_ids": pad_2d(seqs, self.vocab.pad_id, T),
            "ke_desc_mask": (torch.arange(T)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long(),
            "ke_pos": _remap(pos, row), "ke_neg": _remap(neg, row),
        })
        return batch

    def ke(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The KE loss of the batch's facts with description encodings from ``model``."""
        h = hidden_only(model, batch["ke_desc_ids"], attention_mask=batch["ke_desc_mask"]).last_hidden_state[:, 0]
        rel = model.heads["kepler_relation"]
        pos, neg = batch["ke_pos"], batch["ke_neg"]
        c = self.config
        return ke_loss(h[pos[:, 0]], rel(pos[:, 1]), h[pos[:, 2]], h[neg[..., 0]], h[neg[..., 2]], c.gamma, c.norm)

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mlm = {k: v for k, v in batch.items() if not k.startswith("ke_")}
        loss, metrics = super().loss(model, mlm)
        ke = self.ke(model, batch)
        metrics["ke_loss"] = float(ke.detach())
        return loss + self.config.ke_weight * ke, metrics


def _remap(x: torch.Tensor, row: dict[int, int]) -> torch.Tensor:
    """Entity ids in columns 0 and 2 of (..., 3) -> rows of the description batch."""
    out = x.clone()
    for col in (0, 2):
        flat = out[..., col].reshape(-1).tolist()
        out[..., col] = torch.tensor([row[v] for v in flat], dtype=x.dtype).view(out[..., col].shape)
    return out
