"""Named architectures (``PRESETS``): real sizes of published models plus ``-tiny`` variants.

Presets are data: each entry is a dict of ``ModelConfig`` fields. ``plmkit.models.load(name)``
builds a randomly initialised model from one; ``load(name, **overrides)`` changes fields
(e.g. ``vocab_size=len(tok)``). Sizes follow the original releases:

- BERT (Devlin et al., 2019): bert-base / bert-large, post-LN, GELU, NSP pooler.
- RoBERTa (Liu et al., 2019): BERT shape, byte-level BPE vocab, positions offset by 2.
- ALBERT (Lan et al., 2020): factorised embeddings (E=128) and one shared layer, gelu_new.
- ELECTRA (Clark et al., 2020): small (E=128, H=256) generator + discriminator, base.
- GPT (Radford et al., 2018): post-LN decoder; GPT-2 (Radford et al., 2019): pre-LN, gelu_new.
- LLaMA (Touvron et al., 2023): RMSNorm, SwiGLU, rotary, GQA, no biases
  (``smollm2-135m`` is the architecture of SmolLM2-135M).

Tiny variants (hidden 32-64, 2 layers, vocab 1000) are for tests and quick experiments.
"""

from __future__ import annotations

from typing import Any

_ENCODER: dict[str, Any] = dict(
    causal=False, norm="layer", norm_position="post", embedding_norm=True, position="learned",
    head="mlm", tie_word_embeddings=True, hidden_dropout=0.1, attention_dropout=0.1,
    layer_norm_eps=1e-12, type_vocab_size=2, max_position_embeddings=512,
)
_BERT = dict(_ENCODER, family="bert", vocab_size=30522, activation="gelu", pooler=True,
             pad_token_id=0, mask_token_id=103)
_ROBERTA = dict(_ENCODER, family="roberta", vocab_size=50265, activation="gelu", pooler=False,
                type_vocab_size=1, layer_norm_eps=1e-5, max_position_embeddings=514, position_offset=2,
                pad_token_id=1, bos_token_id=0, eos_token_id=2, mask_token_id=50264)
_ALBERT = dict(_ENCODER, family="albert", vocab_size=30000, activation="gelu_new", pooler=True,
               share_layers=True, embedding_size=128, hidden_dropout=0.0, attention_dropout=0.0,
               pad_token_id=0, bos_token_id=2, eos_token_id=3, mask_token_id=4)
_ELECTRA = dict(_ENCODER, family="electra", vocab_size=30522, activation="gelu", pooler=False,
                pad_token_id=0, mask_token_id=103)
_GPT = dict(family="gpt", vocab_size=40478, causal=True, norm="layer", norm_position="post",
            embedding_norm=False, activation="gelu", position="learned", type_vocab_size=0,
            head="lm", tie_word_embeddings=True, pooler=False, hidden_dropout=0.1,
            attention_dropout=0.1, layer_norm_eps=1e-5, max_position_embeddings=512,
            pad_token_id=None)
_GPT2 = dict(_GPT, family="gpt2", vocab_size=50257, norm_position="pre", activation="gelu_new",
             max_position_embeddings=1024, bos_token_id=50256, eos_token_id=50256)
_LLAMA = dict(family="llama", causal=True, norm="rms", norm_position="pre", embedding_norm=False,
              activation="swiglu", position="rotary", type_vocab_size=0, head="lm", pooler=False,
              attention_bias=False, mlp_bias=False, hidden_dropout=0.0, attention_dropout=0.0,
              layer_norm_eps=1e-5, rope_theta=10000.0, pad_token_id=None)

PRESETS: dict[str, dict[str, Any]] = {
    # --- BERT
    "bert-base": dict(_BERT, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "bert-large": dict(_BERT, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    # --- RoBERTa
    "roberta-base": dict(_ROBERTA, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "roberta-large": dict(_ROBERTA, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    # --- ALBERT
    "albert-base-v2": dict(_ALBERT, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "albert-large-v2": dict(_ALBERT, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    # --- ELECTRA (discriminators have no MLM head; objectives attach the RTD head)
    "electra-small": dict(_ELECTRA, embedding_size=128, hidden_size=256, num_layers=12, num_heads=4,
                          intermediate_size=1024, head=None),
    "electra-small-generator": dict(_ELECTRA, embedding_size=128, hidden_size=256, num_layers=12,
                                    num_heads=4, intermediate_size=1024, head="mlm"),
    "electra-base": dict(_ELECTRA, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                         head=None),
    "electra-base-generator": dict(_ELECTRA, embedding_size=768, hidden_size=256, num_layers=12,
                                   num_heads=4, intermediate_size=1024, head="mlm"),
    # --- GPT / GPT-2
    "gpt": dict(_GPT, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "gpt2": dict(_GPT2, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "gpt2-medium": dict(_GPT2, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "gpt2-large": dict(_GPT2, hidden_size=1280, num_layers=36, num_heads=20, intermediate_size=5120),
    # --- LLaMA
    "llama-7b": dict(_LLAMA, vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
                     intermediate_size=11008, max_position_embeddings=2048, layer_norm_eps=1e-6,
                     tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "smollm2-135m": dict(_LLAMA, vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9,
                         num_kv_heads=3, intermediate_size=1536, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}

# --- tiny variants: same family shape, hidden 32-64, 2 layers, vocab 1000.
_TINY: dict[str, dict[str, Any]] = {
    "bert-tiny": dict(PRESETS["bert-base"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=256, mask_token_id=4),
    "roberta-tiny": dict(PRESETS["roberta-base"], vocab_size=1000, hidden_size=64, num_layers=2,
                         num_heads=4, intermediate_size=256, mask_token_id=4, max_position_embeddings=514),
    "albert-tiny": dict(PRESETS["albert-base-v2"], vocab_size=1000, embedding_size=32, hidden_size=64,
                        num_layers=2, num_heads=4, intermediate_size=256),
    "electra-tiny": dict(PRESETS["electra-small"], vocab_size=1000, embedding_size=32, hidden_size=64,
                         num_layers=2, num_heads=4, intermediate_size=256, mask_token_id=4),
    "electra-tiny-generator": dict(PRESETS["electra-small-generator"], vocab_size=1000, embedding_size=32,
                                   hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128,
                                   mask_token_id=4),
    "gpt-tiny": dict(PRESETS["gpt"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                     intermediate_size=256),
    "gpt2-tiny": dict(PRESETS["gpt2"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=256, bos_token_id=0, eos_token_id=0, max_position_embeddings=512),
    "llama-tiny": dict(_LLAMA, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=176, max_position_embeddings=512, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2),
}
PRESETS.update(_TINY)
# Every full-size preset also answers to "<name>-tiny" when a tiny variant of its family exists.
_ALIASES = {
    "bert-base-tiny": "bert-tiny", "bert-large-tiny": "bert-tiny", "roberta-base-tiny": "roberta-tiny",
    "albert-base-v2-tiny": "albert-tiny", "electra-small-tiny": "electra-tiny",
    "electra-small-generator-tiny": "electra-tiny-generator", "electra-base-tiny": "electra-tiny",
    "gpt2-medium-tiny": "gpt2-tiny", "smollm2-135m-tiny": "llama-tiny",
}
for _alias, _target in _ALIASES.items():
    PRESETS[_alias] = PRESETS[_target]


def preset_config(name: str, **overrides: Any):
    """The ``ModelConfig`` of preset ``name`` with ``overrides`` applied (KeyError if unknown)."""
    from plmkit.models.config import ModelConfig

    base = dict(PRESETS[name])
    return ModelConfig.from_dict({**base, **overrides}, source=f"preset {name!r}")
