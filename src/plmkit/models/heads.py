"""Output heads: LM (tied decoder), MLM (transform + decoder), pooler, NSP/SOP, ELECTRA RTD.

The backbone owns ``head`` (LM or MLM, chosen by ``config.head``) and ``pooler``; pretraining
objectives and fine-tuning tasks attach the others with ``model.add_head(name, module)``
(they then live in ``model.heads``). Heads return logits; losses belong to objectives.

``MLMHead`` is applied by the model only to the rows selected by ``labels_mask``, so on CPU the
(N, V) logits cost ~15% of the full (B, T, V) ones (the main MLM training speed-up).

References: Devlin et al. 2019 (BERT MLM head with transform, NSP, pooler); Lan et al. 2020
(ALBERT SOP); Clark et al. 2020 (ELECTRA discriminator head); Radford et al. 2019 (tied LM head).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.models.config import ModelConfig
from plmkit.models.layers import ACTIVATIONS


class HeadTransform(nn.Module):
    """dense(H -> E) -> activation -> LayerNorm(E): BERT's ``cls.predictions.transform``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embed_dim)
        act = "gelu" if config.activation == "swiglu" else config.activation
        self.act = ACTIVATIONS[act]
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.act(self.dense(x)))


class MLMHead(nn.Module):
    """Masked-LM head: ``transform`` then ``decoder`` Linear(E, V) with bias (tied weight)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(config)
        self.decoder = nn.Linear(config.embed_dim, config.vocab_size, bias=True)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden))  # (..., V)


class LMHead(nn.Module):
    """Causal-LM head: ``decoder`` Linear(H, V) without bias (tied to the input embeddings)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(hidden)  # (..., V)


class Pooler(nn.Module):
    """BERT pooler: tanh(dense(h[:, 0])) -> (B, H)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class SentencePairHead(nn.Module):
    """NSP (BERT) / SOP (ALBERT) classifier: dropout -> Linear(H, num_classes) on the pooled output.

    Input: the pooled (B, H) vector (``out.pooled``; for models without a pooler pass
    ``last_hidden_state[:, 0]``). Output: (B, num_classes) logits.
    """

    def __init__(self, hidden_size: int, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.classifier(self.dropout(pooled))


class DiscriminatorHead(nn.Module):
    """ELECTRA replaced-token-detection head: dense(H, H) -> act -> prediction(H, 1).

    Input (B, T, H) or (N, H); output (B, T) / (N,) logits, > 0 meaning "replaced".
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        act = "gelu" if config.activation == "swiglu" else config.activation
        self.act = ACTIVATIONS[act]
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)


def build_head(config: ModelConfig) -> nn.Module | None:
    """The backbone head selected by ``config.head``."""
    if config.head == "mlm":
        return MLMHead(config)
    if config.head == "lm":
        return LMHead(config)
    return None
