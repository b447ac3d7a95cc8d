"""Model FLOPs counted from a :class:`ModelConfig`, for model-FLOPs utilisation (MFU).

Only matrix products are counted (2 FLOPs per multiply-add), as in the MFU convention of PaLM
(Chowdhery et al. 2022, appendix B): the linear layers of every block, the attention products
``Q K^T`` and ``P V``, the embedding projection (ALBERT), the pooler and the output head *at the
positions it is actually computed on* (an MLM step projects only the ~15% labelled positions; a
causal LM step all but the last). Norms, softmax, activations, the optimiser and embedding look-ups
are not counted. Attention products are counted over every key position (``T x T``), also for
causal models, which is what ``torch.utils.flop_counter`` counts for ``scaled_dot_product_attention``
and what the test checks this module against.

A training step costs 3x the forward (the backward computes two products per forward product);
``mfu = flops_per_token * tokens_per_s / peak_flops_per_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs of one call, split by where they are spent."""

    linear: float  # q|k|v, o, MLP and the embedding projection, over every position
    attention: float  # Q K^T and P V
    head: float  # output head (transform + decoder) at the computed positions, pooler
    tokens: int  # positions run through the stack

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.head

    @property
    def per_token(self) -> float:
        return self.total / max(self.tokens, 1)

    def training(self) -> float:
        """FLOPs of forward + backward (3x the forward)."""
        return 3.0 * self.total


def layer_linear_flops(config: ModelConfig) -> float:
    """Forward FLOPs of one block's linear layers for one position."""
    h, d = config.hidden_size, config.dim_per_head
    q, kv = config.num_heads * d, config.kv_heads * d
    attn = 2 * h * (q + 2 * kv) + 2 * q * h
    mats = 3 if config.activation == "swiglu" else 2
    return float(attn + 2 * mats * h * config.intermediate_size)


def head_flops_per_position(config: ModelConfig, head: str | None = None) -> float:
    """Forward FLOPs of the output head for one position (``head``: "mlm", "lm" or None = the config's)."""
    head = config.head if head is None else head
    if head == "mlm":  # transform H -> E, decoder E -> V
        return float(2 * config.hidden_size * config.embed_dim + 2 * config.embed_dim * config.vocab_size)
    if head == "lm":
        return float(2 * config.hidden_size * config.vocab_size)
    return 0.0


def forward_flops(config: ModelConfig, batch: int, seq_len: int, *, head_positions: int | None = None,
                  head: str | None = None, pooler: bool | None = None, past_len: int = 0) -> FlopCount:
    """FLOPs of one forward over ``batch`` sequences of ``seq_len`` new positions.

    head_positions: positions (over the whole batch) where the output head runs; None = every position
      when the config has a head (``head`` overrides the config's: "mlm", "lm", or "none").
    pooler: add the [CLS] pooler (H x H per sequence); None = the config's.
    past_len: cached positions each new position also attends to (generation with a KV cache).
    """
    n = batch * seq_len
    linear = config.num_layers * layer_linear_flops(config) * n
    if config.embed_dim != config.hidden_size:
        linear += 2.0 * config.embed_dim * config.hidden_size * n
    keys = past_len + seq_len
    attention = config.num_layers * 4.0 * config.num_heads * config.dim_per_head * keys * n
    head = config.head if head is None else (None if head == "none" else head)
    if head_positions is None:
        head_positions = n if head else 0
    out = head_flops_per_position(config, head) * head_positions
    if config.pooler if pooler is None else pooler:
        out += 2.0 * config.hidden_size * config.hidden_size * batch
    return FlopCount(linear=linear, attention=attention, head=out, tokens=n)


def generation_flops(config: ModelConfig, batch: int, prompt_len: int, new_tokens: int) -> float:
    """FLOPs of greedy generation with a KV cache: the prompt's prefill (LM head at its last position)
    plus ``new_tokens - 1`` one-position decode steps, each attending to everything before it."""
    total = forward_flops(config, batch, prompt_len, head_positions=batch, head="lm").total
    for i in range(1, new_tokens):
        total += forward_flops(config, batch, 1, head="lm", past_len=prompt_len + i - 1).total
    return total
