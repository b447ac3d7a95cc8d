"""The ``bilm`` objective: ELMo's joint forward + backward language-model loss (Peters et al. 2018).

Contract of ``plmkit.objectives`` (``make_batch`` / ``loss`` / ``prepare``), so that
``plm pretrain`` can train ``elmo-*`` models once the registry lists it
(``REGISTRY["bilm"] = plmkit.objectives.bilm.BiLM``). The loss is the mean of the forward
(position t predicts t + 1) and backward (t predicts t - 1) token cross-entropies; metrics:
``bilm_loss``, ``bilm_ppl``, ``fwd_ppl``, ``bwd_ppl``.

``bilm_logits`` / ``bilm_loss`` are also usable on their own (training scripts, e.g.
``scripts/classic_table.py``).

Reference: M. Peters et al. Deep contextualized word representations. NAACL 2018, sec. 3.1.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import IGNORE, Objective, ObjectiveConfig, as_example, pad_2d, require_vocab


def bilm_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward logits, backward logits), each (B, T, V): position t predicts t + 1 / t - 1."""
    out = model(input_ids, attention_mask=attention_mask)
    return out.logits, out.backward_logits


def bilm_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of the forward and backward token cross-entropies (Peters et al. 2018, eq. in sec. 3.1).

    Returns (loss, {"fwd_loss", "bwd_loss", "fwd_ppl", "bwd_ppl"}).
    """
    fwd, bwd = bilm_logits(model, input_ids, attention_mask)
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    pair = valid[:, 1:] & valid[:, :-1]  # (B, T-1) positions with both neighbours real
    lf = F.cross_entropy(fwd[:, :-1][pair].float(), input_ids[:, 1:][pair])
    lb = F.cross_entropy(bwd[:, 1:][pair].float(), input_ids[:, :-1][pair])
    loss = (lf + lb) / 2
    lf_, lb_ = lf.detach(), lb.detach()
    m = {"fwd_loss": float(lf_), "bwd_loss": float(lb_),
         "fwd_ppl": float(torch.exp(lf_)), "bwd_ppl": float(torch.exp(lb_))}
    return loss, m


class BiLM(Objective):
    """Forward + backward LM over windows. Batch keys: input_ids, attention_mask, labels (next token)."""

    name = "bilm"
    example_kind = "window"
    Config = ObjectiveConfig

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [as_example(x, self.name).ids for x in examples]
        m = self.config.max_length
        if m is not None:
            rows = [r[:m] for r in rows]
        T = max(len(r) for r in rows)
        pad = self.vocab.pad if self.vocab.pad is not None else 0
        ids = pad_2d(rows, pad, T)
        valid = torch.arange(T)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
        labels = torch.full_like(ids, IGNORE)
        labels[:, :-1] = ids[:, 1:]
        labels[:, :-1][~valid[:, 1:]] = IGNORE
        return {"input_ids": ids, "attention_mask": valid.long(), "labels": labels}

    def prepare(self, model: Any) -> None:
        from plmkit.classic.recurrent import ELMo

        if not isinstance(model, ELMo):
            raise UserError(f"{self.name} needs a bidirectional LM with forward and backward directions "
                            f"(an elmo-* model); got {type(model).__name__}")
        require_vocab(self.name, model, self.vocab.size)
        tok = self.vocab.tokenizer
        if hasattr(tok, "convert_ids_to_tokens"):  # spell the tokens for the char-CNN
            model.set_vocabulary([str(t) for t in tok.convert_ids_to_tokens(list(range(model.config.vocab_size)))])

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, m = bilm_loss(model, batch["input_ids"], batch["attention_mask"])
        return loss, {"bilm_loss": float(loss.detach()), "bilm_ppl": float(torch.exp(loss.detach())),
                      "fwd_ppl": m["fwd_ppl"], "bwd_ppl": m["bwd_ppl"]}
