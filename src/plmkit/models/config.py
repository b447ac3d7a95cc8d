"""``ModelConfig``: the one serialisable description of every Transformer in plmkit.

A config is plain data (ints, floats, strings, bools) so that it round-trips through
JSON (``to_dict`` / ``from_dict``) and YAML recipes. The module tree it builds is fixed
in ``docs/CONTRACTS.md`` and ``plmkit.models.transformer``; family differences are
expressed only through the fields below (litgpt's flat ``Config`` is the model).

Field names follow Hugging Face where HF has a name (``hidden_size``,
``intermediate_size``, ``max_position_embeddings``, ``rope_theta``, ...). One deliberate
merge: ``layer_norm_eps`` is the epsilon of whichever norm ``norm`` selects (HF llama
calls it ``rms_norm_eps``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from plmkit.errors import UserError, suggest


class ConfigError(UserError, ValueError):
    """An invalid model configuration (a ``UserError`` that is also a ``ValueError``)."""


NORMS = ("layer", "rms")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_new", "relu", "swiglu", "silu")
POSITIONS = ("learned", "sinusoidal", "rotary", "none")
HEADS = ("mlm", "lm", None)


@dataclass(kw_only=True)
class ModelConfig:
    """Architecture of one Transformer (encoder or decoder stack + optional head)."""

    family: str = "bert"
    """Model family ("bert", "roberta", "albert", "electra", "gpt", "gpt2", "llama", ...): used
    for family-specific initialisation and by interop to pick the HF model_type."""

    vocab_size: int = 30522
    """Number of token embeddings (and LM/MLM output classes)."""
    hidden_size: int = 768
    """Width H of the residual stream."""
    num_layers: int = 12
    """Number of Transformer blocks applied (with ``share_layers`` one block is applied this many times)."""
    num_heads: int = 12
    """Number of query heads."""
    num_kv_heads: int | None = None
    """Number of key/value heads (grouped-query attention); None means ``num_heads`` (MHA)."""
    head_dim: int | None = None
    """Per-head width; None means ``hidden_size // num_heads``."""
    intermediate_size: int = 3072
    """Feed-forward inner width I."""
    max_position_embeddings: int = 512
    """Size of the position table (learned / sinusoidal); longer inputs raise an error."""
    type_vocab_size: int = 2
    """Number of token-type (segment) embeddings; 0 disables them."""
    embedding_size: int | None = None
    """Embedding width E when factorised (ALBERT, ELECTRA-small); None means ``hidden_size``.
    When E != H, ``embeddings.project`` maps E -> H."""
    share_layers: bool = False
    """ALBERT cross-layer sharing: a single ``layers.0`` reused ``num_layers`` times."""

    causal: bool = False
    """Decoder (causal self-attention) when True, bidirectional encoder when False."""
    norm: Literal["layer", "rms"] = "layer"
    """LayerNorm or RMSNorm (weight only)."""
    norm_position: Literal["pre", "post"] = "post"
    """Post-LN (BERT, GPT) or pre-LN (GPT-2, LLaMA; adds ``final_norm``)."""
    embedding_norm: bool = True
    """LayerNorm after summing the embeddings (BERT / RoBERTa / ALBERT / ELECTRA)."""
    activation: Literal["gelu", "gelu_new", "relu", "swiglu", "silu"] = "gelu"
    """Feed-forward activation; "swiglu" adds ``mlp.gate`` (LLaMA)."""
    position: Literal["learned", "sinusoidal", "rotary", "none"] = "learned"
    """Position encoding: learned table, fixed sinusoids (Vaswani et al.), rotary (RoFormer)."""
    position_offset: int = 0
    """Index of the first real position in the table (RoBERTa: padding_idx + 1 = 2). When > 0 and
    ``pad_token_id`` is set, default position ids skip pad tokens as RoBERTa does."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(E) (original Transformer)."""
    attention_bias: bool = True
    """Biases in ``attn.qkv`` and ``attn.o`` (False for LLaMA)."""
    mlp_bias: bool = True
    """Biases in ``mlp.up`` / ``mlp.gate`` / ``mlp.down`` (False for LLaMA)."""

    head: Literal["mlm", "lm"] | None = "mlm"
    """Output head: "mlm" (transform + decoder with bias), "lm" (decoder without bias) or None."""
    pooler: bool = False
    """BERT-style tanh pooler over the first token (``pooler.dense``)."""
    tie_word_embeddings: bool = True
    """Tie ``head.decoder.weight`` to ``embeddings.word.weight``."""

    hidden_dropout: float = 0.1
    """Dropout on embeddings output and on attention / feed-forward outputs before the residual add."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    embedding_dropout: float | None = None
    """Dropout after the embeddings; None means ``hidden_dropout`` (GPT-2's embd_pdrop)."""
    layer_norm_eps: float = 1e-12
    """Epsilon of every norm (LayerNorm or RMSNorm)."""
    initializer_range: float = 0.02
    """Std of the normal initialisation of Linear / Embedding weights."""

    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    mask_token_id: int | None = None

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form, JSON-serialisable settings for extensions (kept through to_dict/from_dict)."""

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> None:
            raise ConfigError(f"ModelConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                bad(name, "a positive integer")
        for name in ("num_kv_heads", "head_dim", "embedding_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                bad(name, "a positive integer or null")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            bad("type_vocab_size", "an integer >= 0")
        if not isinstance(self.position_offset, int) or self.position_offset < 0:
            bad("position_offset", "an integer >= 0")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            bad("num_heads", f"a divisor of hidden_size={self.hidden_size} (or set head_dim)")
        if self.num_heads % self.kv_heads:
            bad("num_kv_heads", f"a divisor of num_heads={self.num_heads}")
        if self.norm not in NORMS:
            bad("norm", f"one of {NORMS}")
        if self.norm_position not in NORM_POSITIONS:
            bad("norm_position", f"one of {NORM_POSITIONS}")
        if self.activation not in ACTIVATIONS:
            bad("activation", f"one of {ACTIVATIONS}")
        if self.position not in POSITIONS:
            bad("position", f"one of {POSITIONS}")
        if self.head not in HEADS:
            bad("head", f"one of {HEADS}")
        if self.position == "rotary" and self.dim_per_head % 2:
            bad("head_dim", "an even head dimension for rotary positions")
        for name in ("hidden_dropout", "attention_dropout", "embedding_dropout"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                bad(name, "a probability in [0, 1)")
        if not (isinstance(self.layer_norm_eps, (int, float)) and self.layer_norm_eps > 0):
            bad("layer_norm_eps", "a positive float")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            bad("rope_theta", "a positive float")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < self.vocab_size):
                bad(name, f"null or a token id in [0, vocab_size={self.vocab_size})")
        if self.position == "learned" and self.position_offset >= self.max_position_embeddings:
            bad("position_offset", f"< max_position_embeddings={self.max_position_embeddings}")
        if self.head == "lm" and self.tie_word_embeddings and self.embed_dim != self.hidden_size:
            bad("tie_word_embeddings", "False when embedding_size != hidden_size with an LM head")
        if not isinstance(self.extra, dict):
            bad("extra", "a mapping")

    # ------------------------------------------------------------------ derived values
    @property
    def kv_heads(self) -> int:
        """Number of key/value heads actually used."""
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        """Per-head width actually used."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def embed_dim(self) -> int:
        """Embedding width E (``embedding_size`` or ``hidden_size``)."""
        return self.embedding_size or self.hidden_size

    @property
    def num_layer_modules(self) -> int:
        """Number of distinct block modules (1 with ``share_layers``)."""
        return 1 if self.share_layers else self.num_layers

    @property
    def embedding_scale(self) -> float:
        return math.sqrt(self.embed_dim) if self.scale_embeddings else 1.0

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict (JSON/YAML serialisable)."""
        d = dataclasses.asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        """Build from a dict; unknown keys raise a ``ConfigError`` naming the key (with a suggestion)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of ModelConfig fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in names:
                raise ConfigError(f"{source}: unknown ModelConfig field {k!r}{suggest(k, names)}")
        return cls(**d)

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with some fields changed (validated; unknown names raise ``ConfigError``)."""
        d = self.to_dict()
        names = {f.name for f in dataclasses.fields(self)}
        for k in overrides:
            if k not in names:
                raise ConfigError(f"unknown ModelConfig field {k!r}{suggest(k, names)}")
        d.update(overrides)
        return type(self)(**d)
