"""Replaced-token detection (ELECTRA, Clark et al. 2020, arXiv:2003.10555).

A small *generator* (an MLM) fills the masked positions with tokens sampled from its softmax; the
*discriminator* (the model being trained) labels every token as original or replaced. The loss is
``gen_weight * L_MLM(generator) + disc_weight * L_BCE(discriminator)`` with ``disc_weight`` = 50.
Sampling is not differentiated through (the paper's choice), and draws use torch's global RNG.

Masking follows ELECTRA's code: ``rate`` = 15% of tokens, of which 85% become [MASK] and 15% are
kept (``mask_prob`` = 0.85, ``random_prob`` = 0).

The generator and where its parameters live
-------------------------------------------
``prepare(model)`` builds the generator and attaches it to the discriminator as
``model.heads["rtd_generator"]`` (and the discriminator head as ``model.heads["rtd"]``,
``DiscriminatorHead``). Because it is a submodule of ``model``, ``model.parameters()`` (hence the
trainer's optimizer, built after ``prepare``), ``state_dict`` checkpoints, device moves and DDP
wrapping all include it, with no extra plumbing; ``obj.generator`` is the same module. To export
the discriminator alone, ``del model.heads["rtd_generator"]`` before ``save_pretrained``.

The generator is ``plmkit.models.load(generator)`` when a preset name is given (e.g.
``"electra-small-generator"``), else the discriminator's config with ``hidden_size``,
``intermediate_size`` and the number of heads scaled by ``generator_ratio`` (0.25, ELECTRA's
default ``generator_hidden_size``), an MLM head, and the same embedding width. Its embeddings
(token, position, token type and their LayerNorm) are the discriminator's own modules (shared, as
in ELECTRA); its E -> H projection is its own. Batch keys: input_ids (masked), attention_mask,
labels (original ids at masked positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.objectives.base import (
    IGNORE,
    Objective,
    ObjectiveConfig,
    backbone_name,
    check_open_unit,
    check_positive,
    check_unit,
    hidden_only,
    require_encoder,
    require_vocab,
    token_metrics,
    top1_correct,
)


@dataclass(kw_only=True)
class RTDConfig(ObjectiveConfig):
    rate: float = 0.15
    """Fraction of tokens the generator predicts."""
    mask_prob: float = 0.85
    random_prob: float = 0.0
    masking: Literal["token", "whole_word", "span"] = "token"
    generator: str | None = None
    """Preset name of the generator (None: derive it from the discriminator with ``generator_ratio``)."""
    generator_ratio: float = 0.25
    """Generator width as a fraction of the discriminator's (hidden, intermediate, heads)."""
    disc_weight: float = 50.0
    gen_weight: float = 1.0
    temperature: float = 1.0
    """Sampling temperature of the generator's softmax."""

    def validate(self, name: str) -> None:
        super().validate(name)
        check_open_unit(name, "rate", self.rate)
        check_unit(name, "mask_prob", self.mask_prob)
        check_unit(name, "random_prob", self.random_prob)
        if self.mask_prob + self.random_prob > 1 + 1e-9:
            raise UserError(f"{name}: mask_prob + random_prob must be <= 1")
        if not isinstance(self.generator_ratio, (int, float)) or not 0 < self.generator_ratio <= 1:
            raise UserError(f"{name}: option generator_ratio must be in (0, 1], got {self.generator_ratio!r}")
        check_positive(name, "disc_weight", self.disc_weight)
        check_positive(name, "temperature", self.temperature)
        if not isinstance(self.gen_weight, (int, float)) or self.gen_weight < 0:
            raise UserError(f"{name}: option gen_weight must be >= 0, got {self.gen_weight!r}")


def generator_config(disc_config: Any, ratio: float) -> Any:
    """The discriminator's config scaled by ``ratio`` (ELECTRA's ``get_generator_config``)."""
    c = disc_config
    head_dim = c.dim_per_head
    hidden = max(head_dim, int(round(c.hidden_size * ratio / head_dim)) * head_dim)
    return c.replace(hidden_size=hidden, num_heads=hidden // head_dim, num_kv_heads=None, head_dim=None,
                     intermediate_size=max(1, int(round(c.intermediate_size * ratio))),
                     embedding_size=c.embed_dim, head="mlm", pooler=False, tie_word_embeddings=True)


class RTD(Objective):
    """ELECTRA replaced-token detection (see the module docstring)."""

    name = "rtd"
    token_nll = False
    example_kind = "window"
    Config = RTDConfig
    config: RTDConfig

    def __init__(self, tokenizer: Any = None, **options: Any):
        super().__init__(tokenizer, **options)
        from plmkit.objectives.mlm import MLM

        c = self.config
        self._mlm = MLM(tokenizer, rate=c.rate, mask_prob=c.mask_prob, random_prob=c.random_prob,
                        masking=c.masking, max_length=c.max_length)
        self._mlm.name = self.name  # errors name this objective
        self.generator: Any = None

    def make_batch(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self._mlm.make_batch(examples)

    def build_generator(self, model: Any) -> Any:
        import plmkit.models as models

        c = self.config
        if c.generator is not None:
            gen = models.load(c.generator, vocab_size=model.config.vocab_size)
        else:
            gen = models.from_config(generator_config(model.config, c.generator_ratio))
        if gen.config.head != "mlm":
            raise UserError(f"{self.name}: generator {c.generator!r} must have an MLM head")
        if gen.config.embed_dim != model.config.embed_dim:
            raise UserError(f"{self.name}: generator embedding width {gen.config.embed_dim} != discriminator's "
                            f"{model.config.embed_dim}; embeddings cannot be shared")
        # share the embeddings (token via set_input_embeddings so the generator's head is re-tied)
        gen.set_input_embeddings(model.get_input_embeddings())
        for part in ("position", "token_type", "norm"):
            d, g = getattr(model.embeddings, part, None), getattr(gen.embeddings, part, None)
            if d is not None and g is not None and all(
                    a.shape == b.shape for a, b in zip(d.parameters(), g.parameters())):
                setattr(gen.embeddings, part, d)
        return gen

    def prepare(self, model: Any) -> None:
        require_encoder(self.name, model, " (the discriminator labels every token from both sides)")
        require_vocab(self.name, model, self.vocab.size)
        if "rtd_generator" not in model.heads:
            model.add_head("rtd_generator", self.build_generator(model), init=False)
        if "rtd" not in model.heads:
            from plmkit.models.heads import DiscriminatorHead

            model.add_head("rtd", DiscriminatorHead(model.config))
        self.generator = model.heads["rtd_generator"]

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        heads = getattr(model, "heads", None)
        if heads is None or "rtd_generator" not in heads:
            raise UserError(f"{self.name}: call obj.prepare(model) before training (it adds the generator to "
                            f"{backbone_name(model)!r})")
        ids, labels = batch["input_ids"], batch["labels"]
        attn = batch.get("attention_mask")
        sel = labels != IGNORE  # (B, T)
        gen = heads["rtd_generator"]
        g_logits = gen(ids, attention_mask=attn, labels_mask=sel).logits  # (N, V)
        y = labels[sel]
        gen_loss = F.cross_entropy(g_logits.float(), y) if y.numel() else g_logits.sum() * 0
        with torch.no_grad():
            probs = torch.softmax(g_logits.float() / self.config.temperature, dim=-1)
            sampled = torch.multinomial(probs, 1).squeeze(-1) if y.numel() else y
            original = torch.where(sel, labels, ids)  # (B, T)
            corrupted = original.clone()
            corrupted[sel] = sampled
            valid = torch.ones_like(ids, dtype=torch.bool) if attn is None else attn.bool()
            replaced = (corrupted != original) & valid  # (B, T) discriminator targets
        out = hidden_only(model, corrupted, attention_mask=attn)
        d_logits = heads["rtd"](out.last_hidden_state)  # (B, T)
        disc_loss = F.binary_cross_entropy_with_logits(d_logits[valid].float(), replaced[valid].float())
        loss = self.config.gen_weight * gen_loss + self.config.disc_weight * disc_loss
        with torch.no_grad():
            pred = d_logits[valid] > 0
            tgt = replaced[valid]
            metrics = token_metrics("gen", gen_loss, top1_correct(g_logits, y), int(y.numel()))
            metrics.update({
                "disc_loss": float(disc_loss), "disc_acc": float((pred == tgt).float().mean()),
                "disc_replaced_recall": float(pred[tgt].float().mean()) if tgt.any() else 0.0,
                # mean P(replaced) on replaced vs original tokens: separation shows up here long before
                # any token crosses 0.5 (with ~14% replaced, the prior alone predicts "original")
                "disc_p_replaced": float(torch.sigmoid(d_logits[valid][tgt].float()).mean()) if tgt.any() else 0.0,
                "disc_p_original": float(torch.sigmoid(d_logits[valid][~tgt].float()).mean()) if (~tgt).any() else 0.0,
                "replaced_frac": float(tgt.float().mean()),
            })
        return loss, metrics
