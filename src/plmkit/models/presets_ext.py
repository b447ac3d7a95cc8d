"""Presets of the part-2 families (encoder-decoders, MoE, prefix-LM masks), real sizes + ``-tiny``.

``PRESETS[name]`` is ``(kind, fields)``: ``kind`` names the class that ``build`` instantiates
("seq2seq" -> ``EncoderDecoder`` over a ``Seq2SeqConfig``, "unilm" / "glm" ->
``plmkit.models.prefix_lm`` models over a ``ModelConfig``). ``plmkit.models.load(name, **overrides)``
reaches them through ``build``.

Sizes follow the releases:
- T5 (Raffel et al. 2020): t5-small (512/6+6/8 heads/2048, ReLU), t5-base (768/12+12/12/3072);
  tied head with d_model**-0.5 output scaling; 32 relative buckets up to distance 128.
- T5.1.1 (Shazeer 2020 GLU variants): t5-v1_1-small (512/8+8/6 heads/1024 gated-GELU), untied head.
- BART (Lewis et al. 2020): bart-base (768/6+6/12/3072), learned positions offset 2, post-LN,
  layernorm_embedding, final_logits_bias, forced EOS.
- MASS (Song et al. 2019): a BERT-base-shaped encoder-decoder (post-LN, learned positions, GELU),
  6 + 6 layers, BERT vocab.
- Switch (Fedus et al. 2022): switch-base-8 = T5-base shape with 8 experts in every other
  feed-forward, expert capacity 64, router jitter 0.01.
- DeBERTa (He et al. 2021): deberta-base (v1: 768/12/12, plain relative distances up to 512),
  deberta-v3-small (768/6 layers, 256 log buckets, shared keys, 128k vocab); both with the 2-layer
  enhanced mask decoder for MLM.
- XLNet (Yang et al. 2019): xlnet-base (768/12/12/3072, 32k SentencePiece vocab), two-stream.
- UniLM (Dong et al. 2019): BERT-large shape (unilm-base: BERT-base shape) with mask modes.
- GLM (Du et al. 2022): glm-base = 12 layers, 768, pre-LN, 2D positions.
"""

from __future__ import annotations

from typing import Any

from plmkit.errors import UserError

_T5 = dict(family="t5", vocab_size=32128, head_dim=64, max_position_embeddings=512, type_vocab_size=0,
           causal=False, norm="rms", norm_position="pre", embedding_norm=False, activation="relu",
           position="none", attention_bias=False, mlp_bias=False, head="lm", tie_word_embeddings=True,
           scale_decoder_outputs=True, hidden_dropout=0.1, attention_dropout=0.1, layer_norm_eps=1e-6,
           relative_attention_num_buckets=32, relative_attention_max_distance=128, attention_scale=1.0,
           pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_range=0.02)
_T511 = dict(_T5, activation="gelu_new", gated_mlp=True, tie_word_embeddings=False, scale_decoder_outputs=False)
_BART = dict(family="bart", vocab_size=50265, max_position_embeddings=1026, position_offset=2, type_vocab_size=0,
             causal=False, norm="layer", norm_position="post", embedding_norm=True, activation="gelu",
             position="learned", head="lm", tie_word_embeddings=True, final_logits_bias=True,
             hidden_dropout=0.1, attention_dropout=0.1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
             eos_token_id=2, decoder_start_token_id=2, extra={"forced_eos_token_id": 2})
_MASS = dict(family="mass", vocab_size=30522, max_position_embeddings=512, type_vocab_size=0, causal=False,
             norm="layer", norm_position="post", embedding_norm=True, activation="gelu", position="learned",
             head="lm", tie_word_embeddings=True, hidden_dropout=0.1, attention_dropout=0.1,
             layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=101, eos_token_id=102,
             decoder_start_token_id=101, mask_token_id=103)
_SWITCH = dict(_T5, family="switch", num_experts=8, moe_every=2, expert_capacity=64, router_jitter_noise=0.01)
_GLM = dict(family="glm", vocab_size=30592, max_position_embeddings=512, type_vocab_size=0, causal=False,
            norm="layer", norm_position="pre", embedding_norm=False, activation="gelu", position="learned",
            head="lm", tie_word_embeddings=True, pooler=False, hidden_dropout=0.1, attention_dropout=0.1,
            layer_norm_eps=1e-5, pad_token_id=0, mask_token_id=103)
_DEBERTA = dict(family="deberta", vocab_size=50265, max_position_embeddings=512, type_vocab_size=0, causal=False,
                norm="layer", norm_position="post", embedding_norm=True, activation="gelu", position="none",
                head="mlm", tie_word_embeddings=True, pooler=False, hidden_dropout=0.1, attention_dropout=0.1,
                layer_norm_eps=1e-7, pad_token_id=0, mask_token_id=50264, max_relative_positions=-1,
                pos_att_type="c2p|p2c", emd_layers=2)
_DEBERTA_V3 = dict(_DEBERTA, family="deberta-v2", vocab_size=128100, mask_token_id=128000, position_buckets=256,
                   pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd=True)
_TINY = dict(vocab_size=1000, hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=4,
             intermediate_size=128)

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "t5-small": ("seq2seq", dict(_T5, hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048)),
    "t5-base": ("seq2seq", dict(_T5, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)),
    "t5-v1_1-small": ("seq2seq", dict(_T511, hidden_size=512, num_layers=8, num_heads=6, intermediate_size=1024)),
    "bart-base": ("seq2seq", dict(_BART, hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072)),
    "mass-base": ("seq2seq", dict(_MASS, hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072)),
    "switch-base-8": ("seq2seq", dict(_SWITCH, hidden_size=768, num_layers=12, num_heads=12,
                                      intermediate_size=3072)),
}
from plmkit.models.presets import PRESETS as _BASE  # noqa: E402  (part-1 presets: UniLM is BERT-shaped)

PRESETS["unilm-base"] = ("unilm", dict(_BASE["bert-base"], extra={"preset": "unilm-base"}))
PRESETS["glm-base"] = ("glm", dict(_GLM, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
PRESETS["deberta-base"] = ("deberta", dict(_DEBERTA, hidden_size=768, num_layers=12, num_heads=12,
                                           intermediate_size=3072))
PRESETS["deberta-v3-small"] = ("deberta", dict(_DEBERTA_V3, hidden_size=768, num_layers=6, num_heads=12,
                                               intermediate_size=3072))
PRESETS["deberta-tiny"] = ("deberta", dict(_DEBERTA, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                           intermediate_size=128, mask_token_id=4, max_relative_positions=32))
PRESETS["deberta-v3-tiny"] = ("deberta", dict(_DEBERTA_V3, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                              intermediate_size=128, mask_token_id=4, position_buckets=16,
                                              max_relative_positions=64))
_XLNET = dict(family="xlnet", vocab_size=32000, max_position_embeddings=512, type_vocab_size=0, causal=False,
              norm="layer", norm_position="post", embedding_norm=False, activation="gelu", position="none",
              head="lm", tie_word_embeddings=True, pooler=False, hidden_dropout=0.1, attention_dropout=0.1,
              layer_norm_eps=1e-12, pad_token_id=5, bos_token_id=1, eos_token_id=2, mask_token_id=6,
              attn_type="bi", mem_len=None, bi_data=False, clamp_len=-1)
PRESETS["xlnet-base"] = ("xlnet", dict(_XLNET, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
PRESETS["xlnet-tiny"] = ("xlnet", dict(_XLNET, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                       intermediate_size=128))
PRESETS["unilm-tiny"] = ("unilm", dict(_BASE["bert-tiny"], extra={"preset": "unilm-tiny"}))
PRESETS["glm-tiny"] = ("glm", dict(_GLM, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                   intermediate_size=128, mask_token_id=4))
_TINY_OF = {
    "t5-tiny": ("t5-small", dict(_TINY, head_dim=16)),
    "t5-v1_1-tiny": ("t5-v1_1-small", dict(_TINY, head_dim=16)),
    "bart-tiny": ("bart-base", dict(_TINY, max_position_embeddings=514)),
    "mass-tiny": ("mass-base", dict(_TINY, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                    mask_token_id=4)),
    "switch-tiny": ("switch-base-8", dict(_TINY, head_dim=16, num_experts=4, expert_capacity=None,
                                          capacity_factor=1.25)),
}
for _name, (_base, _over) in _TINY_OF.items():
    _kind, _fields = PRESETS[_base]
    PRESETS[_name] = (_kind, dict(_fields, **_over))
ALIASES = {"t5-small-tiny": "t5-tiny", "t5-base-tiny": "t5-tiny", "t5-v1_1-small-tiny": "t5-v1_1-tiny",
           "bart-base-tiny": "bart-tiny", "mass-base-tiny": "mass-tiny", "switch-base-8-tiny": "switch-tiny",
           "unilm-base-tiny": "unilm-tiny", "glm-base-tiny": "glm-tiny", "deberta-base-tiny": "deberta-tiny",
           "deberta-v3-small-tiny": "deberta-v3-tiny", "xlnet-base-tiny": "xlnet-tiny"}
for _alias, _target in ALIASES.items():  # plmkit.models.load looks names up in PRESETS
    PRESETS[_alias] = PRESETS[_target]


def names() -> list[str]:
    return sorted(set(PRESETS) | set(ALIASES))


def config(name: str, **overrides: Any):
    """The config object of preset ``name`` with ``overrides`` (``UserError`` if unknown)."""
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        from plmkit.errors import suggest

        raise UserError(f"unknown part-2 preset {name!r}{suggest(name, names())}")
    kind, fields = PRESETS[name]
    merged = {**fields, **overrides}
    if kind == "seq2seq":
        from plmkit.models.seq2seq import Seq2SeqConfig

        return Seq2SeqConfig.from_dict(merged, source=f"preset {name!r}")
    if kind == "deberta":
        from plmkit.models.deberta import DebertaConfig

        return DebertaConfig.from_dict(merged, source=f"preset {name!r}")
    if kind == "xlnet":
        from plmkit.models.xlnet import XLNetConfig

        return XLNetConfig.from_dict(merged, source=f"preset {name!r}")
    from plmkit.models.config import ModelConfig

    return ModelConfig.from_dict(merged, source=f"preset {name!r}")


def build(name: str, **overrides: Any):
    """A randomly initialised model of preset ``name``."""
    kind = PRESETS[ALIASES.get(name, name)][0] if ALIASES.get(name, name) in PRESETS else None
    cfg = config(name, **overrides)
    if kind == "seq2seq":
        from plmkit.models.seq2seq import EncoderDecoder

        return EncoderDecoder(cfg)
    if kind == "deberta":
        from plmkit.models.deberta import DeBERTa

        return DeBERTa(cfg)
    if kind == "xlnet":
        from plmkit.models.xlnet import XLNet

        return XLNet(cfg)
    from plmkit.models import prefix_lm

    return prefix_lm.build(kind, cfg)


def has(name: str) -> bool:
    """Whether ``name`` is a part-2 preset (or alias)."""
    return name in PRESETS or name in ALIASES
