"""ProphetNet's future n-gram prediction (Qi et al. 2020, arXiv:2001.04063) on an encoder-decoder.

The source is corrupted by one of plmkit's seq2seq denoisers (``corruption``: ``mass`` -- ProphetNet's
own pretraining masks one contiguous span and predicts it, as MASS does -- or ``bart_denoise``), with
that objective's options in ``corruption_options``. The decoder then runs the n-stream self-attention
of ``plmkit.models.prophetnet`` (``ngram`` streams, shared weights): at row t the main stream predicts
y_t (the ordinary next token) and predicting stream j predicts y_{t+j} from the same context y_{<t}.

Loss (the paper's eq. 5, averaged per token)::

    L = sum_{j=0}^{n-1} alpha_j * CE_j,     alpha_j = gamma^j / sum_{i<n} gamma^i

where CE_j is the mean cross-entropy of the j-th future token over the rows that have one (the last j
labelled rows of a target have no y_{t+j}). ``gamma`` (``power attenuation`` in the paper) defaults to
1.0: equal weights. ``alphas`` gives the n weights explicitly instead (normalised to sum 1).
``ngram: 1`` is exactly the corruption objective's own loss (the plain seq2seq baseline).

Metrics: ``prophetnet_loss`` / ``_ppl`` / ``_acc`` are the main stream's next-token ones (comparable
with a plain seq2seq model's), ``prophetnet_future{j}_loss`` / ``_acc`` the stream-j ones.

The n-gram input embeddings are ``model.heads["prophetnet_ngram"]`` (``NgramEmbedding``); the
decoder itself is unchanged, so the trained model generates with the main stream only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (IGNORE, Objective, ObjectiveConfig, check_choice, check_positive,
                                    require_encoder_decoder, require_vocab, token_metrics, top1_correct)

HEAD = "prophetnet_ngram"


@dataclass(kw_only=True)
class ProphetNetConfig(ObjectiveConfig):
    ngram: int = 2
    """Tokens predicted at every step (main stream + ngram - 1 predicting streams); 1 = plain seq2seq."""
    gamma: float = 1.0
    """Power attenuation of the per-step weights: alpha_j proportional to gamma^j."""
    alphas: list[float] | None = None
    """Explicit per-step weights (length ngram, normalised to sum 1); overrides gamma."""
    corruption: str = "mass"
    """The source corruption and target: ``mass`` or ``bart_denoise``."""
    corruption_options: dict[str, Any] = field(default_factory=dict)
    """Options of the corruption objective (e.g. ``{fragment_ratio: 0.15}``)."""

    def validate(self, name: str) -> None:
        super().validate(name)
        if not isinstance(self.ngram, int) or isinstance(self.ngram, bool) or not 1 <= self.ngram <= 8:
            raise UserError(f"{name}: option ngram must be an integer in [1, 8], got {self.ngram!r}")
        check_positive(name, "gamma", self.gamma)
        if self.alphas is not None:
            ok = (isinstance(self.alphas, list) and len(self.alphas) == self.ngram
                  and all(isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0 for a in self.alphas)
                  and sum(self.alphas) > 0)
            if not ok:
                raise UserError(f"{name}: option alphas must be a list of {self.ngram} numbers >= 0 with a positive "
                                f"sum (one per predicted step), got {self.alphas!r}")
        check_choice(name, "corruption", self.corruption, ["mass", "bart_denoise"])
        if not isinstance(self.corruption_options, dict):
            raise UserError(f"{name}: option corruption_options must be a mapping, got {self.corruption_options!r}")


def future_weights(ngram: int, gamma: float = 1.0, alphas: Sequence[float] | None = None) -> list[float]:
    """alpha_0 .. alpha_{n-1}: ``alphas`` normalised, else gamma^j / sum_i gamma^i."""
    raw = [float(a) for a in alphas] if alphas is not None else [gamma ** j for j in range(ngram)]
    s = sum(raw)
    return [a / s for a in raw]


def future_labels(labels: torch.Tensor, j: int) -> torch.Tensor:
    """(B, U) labels -> the label j steps ahead at each row (-100 where the target has none)."""
    if j == 0:
        return labels
    out = torch.full_like(labels, IGNORE)
    out[:, :-j] = labels[:, j:]
    return out


class ProphetNet(Objective):
    """Future n-gram prediction with the n-stream decoder (see the module docstring)."""

    name = "prophetnet"
    Config = ProphetNetConfig
    config: ProphetNetConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        c = self.config
        if c.corruption == "mass":
            from plmkit.objectives.mass import MASS as inner_cls
        else:
            from plmkit.objectives.bart_denoise import BartDenoise as inner_cls
        opts = dict(c.corruption_options)
        if c.max_length is not None:
            opts.setdefault("max_length", c.max_length)
        self.inner = inner_cls(tokenizer=tokenizer, **opts)
        self.example_kind = self.inner.example_kind
        self.weights = future_weights(c.ngram, c.gamma, c.alphas)
        self.token_nll = c.ngram == 1 or self.weights[0] == 1.0

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self.inner.make_batch(examples)

    def prepare(self, model: Any) -> None:
        require_encoder_decoder(self.name, model)
        require_vocab(self.name, model, self.vocab.size)
        if self.config.ngram > 1:
            from plmkit.models.prophetnet import NgramEmbedding

            head = model.heads[HEAD] if HEAD in model.heads else None
            if head is None or head.weight.shape != (self.config.ngram - 1, model.config.embed_dim):
                model.add_head(HEAD, NgramEmbedding(self.config.ngram, model.config.embed_dim), init=False,
                               replace=True)

    def streams(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Main stream (B, U, H) and predicting streams (B, n-1, U, H) of the decoder for ``batch``."""
        from plmkit.models.moe import reset_router_stats
        from plmkit.models.prophetnet import ngram_decode

        reset_router_stats(model)
        enc, _ = model.encode(batch["input_ids"], batch.get("attention_mask"))
        return ngram_decode(model, model.heads[HEAD].weight, enc, batch.get("attention_mask"),
                            batch["decoder_input_ids"], batch.get("decoder_attention_mask"),
                            batch.get("decoder_position_ids"))

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        n = self.config.ngram
        if n == 1:
            return self.inner.loss(model, batch)
        labels = batch["labels"]
        main, pred = self.streams(model, batch)
        total = None
        metrics: dict[str, float] = {}
        for j in range(n):
            y_all = future_labels(labels, j)
            sel = y_all != IGNORE
            if not bool(sel.any()):
                continue
            h = main[sel] if j == 0 else pred[:, j - 1][sel]  # (N_j, H)
            logits = model.head_logits(h)
            y = y_all[sel]
            ce = F.cross_entropy(logits.float(), y)
            total = self.weights[j] * ce if total is None else total + self.weights[j] * ce
            if j == 0:
                metrics.update(token_metrics("prophetnet", ce, top1_correct(logits, y), int(y.numel())))
            else:
                metrics[f"prophetnet_future{j}_loss"] = float(ce.detach())
                metrics[f"prophetnet_future{j}_acc"] = float(top1_correct(logits, y)) / max(int(y.numel()), 1)
        assert total is not None, "a batch with no labelled target token"
        return total, metrics
