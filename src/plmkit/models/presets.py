"""Named architectures: ONE table, ``PRESETS[name] = Preset(kind, fields)``, real sizes of published
models plus ``-tiny`` variants.

Presets are data. ``kind`` names what ``build`` makes of ``fields``:

- "transformer": ``Transformer`` over a ``ModelConfig``; "unilm": the same ``Transformer`` (UniLM's
  masks come from the objective); "glm": ``prefix_lm.GLM``;
- "seq2seq": ``EncoderDecoder`` over a ``Seq2SeqConfig``; "deberta": ``DeBERTa`` over a
  ``DebertaConfig``; "xlnet": ``XLNet`` over an ``XLNetConfig``;
- "canine": ``canine.Canine`` (character encoder) over a ``CanineConfig``;
- "recurrent": the classical LMs (FFNN, RNN, LSTM, ELMo) of ``plmkit.classic.recurrent``. ``models``
  cannot import ``classic`` (it sits above), so that package registers the builder of this kind
  (``plmkit.models.hooks.register_builder``, done by the composition root ``plmkit/__init__.py``).

``plmkit.models.load(name, **overrides)`` calls ``build``; ``overrides`` change fields
(e.g. ``vocab_size=len(tok)``); an unknown name raises ``UserError`` with a did-you-mean hint.
Every full-size preset also answers to ``<name>-tiny`` when its family has a tiny variant.

Sizes follow the original releases:

- BERT (Devlin et al., 2019): bert-base / bert-large, post-LN, GELU, NSP pooler.
- RoBERTa (Liu et al., 2019): BERT shape, byte-level BPE vocab, positions offset by 2.
- ALBERT (Lan et al., 2020): factorised embeddings (E=128) and one shared layer, gelu_new.
- ELECTRA (Clark et al., 2020): small (E=128, H=256) generator + discriminator, base.
- GPT (Radford et al., 2018): post-LN decoder; GPT-2 (Radford et al., 2019): pre-LN, gelu_new.
- LLaMA (Touvron et al., 2023): RMSNorm, SwiGLU, rotary, GQA, no biases
  (``smollm2-135m`` is the architecture of SmolLM2-135M).
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
- FFNN / RNN / LSTM LMs (Bengio et al. 2003; Mikolov et al. 2010; Zaremba et al. 2014) and ELMo
  (Peters et al. 2018): small research sizes (``-small``) and ``-tiny``.

Tiny variants (hidden 16-64, 2 layers, vocab 1000) are for tests and quick experiments.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from plmkit.errors import UserError, suggest
from plmkit.models.config import ModelConfig
from plmkit.models.hooks import builder


class Preset(NamedTuple):
    """One named architecture: which model ``kind`` to build and its config ``fields``."""

    kind: str
    fields: dict[str, Any]


KINDS = ("transformer", "unilm", "glm", "seq2seq", "deberta", "xlnet", "recurrent", "canine")

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

_TRANSFORMERS: dict[str, dict[str, Any]] = {
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
    "bert-tiny": dict(_TRANSFORMERS["bert-base"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=256, mask_token_id=4),
    "roberta-tiny": dict(_TRANSFORMERS["roberta-base"], vocab_size=1000, hidden_size=64, num_layers=2,
                         num_heads=4, intermediate_size=256, mask_token_id=4, max_position_embeddings=514),
    "albert-tiny": dict(_TRANSFORMERS["albert-base-v2"], vocab_size=1000, embedding_size=32, hidden_size=64,
                        num_layers=2, num_heads=4, intermediate_size=256),
    "electra-tiny": dict(_TRANSFORMERS["electra-small"], vocab_size=1000, embedding_size=32, hidden_size=64,
                         num_layers=2, num_heads=4, intermediate_size=256, mask_token_id=4),
    "electra-tiny-generator": dict(_TRANSFORMERS["electra-small-generator"], vocab_size=1000, embedding_size=32,
                                   hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128,
                                   mask_token_id=4),
    "gpt-tiny": dict(_TRANSFORMERS["gpt"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                     intermediate_size=256),
    "gpt2-tiny": dict(_TRANSFORMERS["gpt2"], vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=256, bos_token_id=0, eos_token_id=0, max_position_embeddings=512),
    "llama-tiny": dict(_LLAMA, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=176, max_position_embeddings=512, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2),
}
_TRANSFORMERS.update(_TINY)
# Every full-size preset also answers to "<name>-tiny" when a tiny variant of its family exists.
_TRANSFORMER_ALIASES = {
    "bert-base-tiny": "bert-tiny", "bert-large-tiny": "bert-tiny", "roberta-base-tiny": "roberta-tiny",
    "albert-base-v2-tiny": "albert-tiny", "electra-small-tiny": "electra-tiny",
    "electra-small-generator-tiny": "electra-tiny-generator", "electra-base-tiny": "electra-tiny",
    "gpt2-medium-tiny": "gpt2-tiny", "smollm2-135m-tiny": "llama-tiny",
}

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
_TINY_S2S = dict(vocab_size=1000, hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=4,
             intermediate_size=128)

_OTHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "t5-small": ("seq2seq", dict(_T5, hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048)),
    "t5-base": ("seq2seq", dict(_T5, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)),
    "t5-v1_1-small": ("seq2seq", dict(_T511, hidden_size=512, num_layers=8, num_heads=6, intermediate_size=1024)),
    "bart-base": ("seq2seq", dict(_BART, hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072)),
    "mass-base": ("seq2seq", dict(_MASS, hidden_size=768, num_layers=6, num_heads=12, intermediate_size=3072)),
    "switch-base-8": ("seq2seq", dict(_SWITCH, hidden_size=768, num_layers=12, num_heads=12,
                                      intermediate_size=3072)),
}

_OTHERS["unilm-base"] = ("unilm", dict(_TRANSFORMERS["bert-base"], extra={"preset": "unilm-base"}))
_OTHERS["glm-base"] = ("glm", dict(_GLM, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
_OTHERS["deberta-base"] = ("deberta", dict(_DEBERTA, hidden_size=768, num_layers=12, num_heads=12,
                                           intermediate_size=3072))
_OTHERS["deberta-v3-small"] = ("deberta", dict(_DEBERTA_V3, hidden_size=768, num_layers=6, num_heads=12,
                                               intermediate_size=3072))
_OTHERS["deberta-tiny"] = ("deberta", dict(_DEBERTA, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                           intermediate_size=128, mask_token_id=4, max_relative_positions=32))
_OTHERS["deberta-v3-tiny"] = ("deberta", dict(_DEBERTA_V3, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                              intermediate_size=128, mask_token_id=4, position_buckets=16,
                                              max_relative_positions=64))
_XLNET = dict(family="xlnet", vocab_size=32000, max_position_embeddings=512, type_vocab_size=0, causal=False,
              norm="layer", norm_position="post", embedding_norm=False, activation="gelu", position="none",
              head="lm", tie_word_embeddings=True, pooler=False, hidden_dropout=0.1, attention_dropout=0.1,
              layer_norm_eps=1e-12, pad_token_id=5, bos_token_id=1, eos_token_id=2, mask_token_id=6,
              attn_type="bi", mem_len=None, bi_data=False, clamp_len=-1)
_OTHERS["xlnet-base"] = ("xlnet", dict(_XLNET, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072))
_OTHERS["xlnet-tiny"] = ("xlnet", dict(_XLNET, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                       intermediate_size=128))
_OTHERS["unilm-tiny"] = ("unilm", dict(_TRANSFORMERS["bert-tiny"], extra={"preset": "unilm-tiny"}))
_OTHERS["glm-tiny"] = ("glm", dict(_GLM, vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                   intermediate_size=128, mask_token_id=4))
_CANINE = dict(family="canine", hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
               max_position_embeddings=2048, type_vocab_size=16, num_hashes=8, num_buckets=16384,
               downsampling_rate=4, local_window=128, upsampling_kernel_size=4, hidden_dropout=0.1,
               attention_dropout=0.1, layer_norm_eps=1e-12)
_OTHERS["canine-base"] = ("canine", _CANINE)  # Clark et al. 2022 (plmkit.models.canine)
_OTHERS["canine-tiny"] = ("canine", dict(_CANINE, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                                         max_position_embeddings=512, type_vocab_size=2, num_hashes=4,
                                         num_buckets=4096, local_window=32))
_TINY_OF = {
    "t5-tiny": ("t5-small", dict(_TINY_S2S, head_dim=16)),
    "t5-v1_1-tiny": ("t5-v1_1-small", dict(_TINY_S2S, head_dim=16)),
    "bart-tiny": ("bart-base", dict(_TINY_S2S, max_position_embeddings=514)),
    "mass-tiny": ("mass-base", dict(_TINY_S2S, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                    mask_token_id=4)),
    "switch-tiny": ("switch-base-8", dict(_TINY_S2S, head_dim=16, num_experts=4, expert_capacity=None,
                                          capacity_factor=1.25)),
}
for _name, (_base, _over) in _TINY_OF.items():
    _kind, _fields = _OTHERS[_base]
    _OTHERS[_name] = (_kind, dict(_fields, **_over))
_OTHER_ALIASES = {"t5-small-tiny": "t5-tiny", "t5-base-tiny": "t5-tiny", "t5-v1_1-small-tiny": "t5-v1_1-tiny",
           "bart-base-tiny": "bart-tiny", "mass-base-tiny": "mass-tiny", "switch-base-8-tiny": "switch-tiny",
           "unilm-base-tiny": "unilm-tiny", "glm-base-tiny": "glm-tiny", "deberta-base-tiny": "deberta-tiny",
           "deberta-v3-small-tiny": "deberta-v3-tiny", "xlnet-base-tiny": "xlnet-tiny"}

_RECURRENT: dict[str, dict[str, Any]] = {
    "ffnn-small": dict(family="ffnn", vocab_size=10000, embedding_size=128, hidden_size=256, context_size=4,
                       dropout=0.2),
    "rnn-small": dict(family="rnn", vocab_size=10000, embedding_size=256, hidden_size=256, num_layers=1,
                      dropout=0.3, tie_word_embeddings=True),
    "lstm-small": dict(family="lstm", vocab_size=10000, embedding_size=256, hidden_size=256, num_layers=2,
                       dropout=0.3, tie_word_embeddings=True),
    "elmo-small": dict(family="elmo", vocab_size=10000, hidden_size=256, lstm_size=512, num_layers=2,
                       char_filters=[[1, 32], [2, 32], [3, 64], [4, 128], [5, 128]], dropout=0.1),
    "ffnn-tiny": dict(family="ffnn", vocab_size=1000, embedding_size=16, hidden_size=32, context_size=3),
    "rnn-tiny": dict(family="rnn", vocab_size=1000, embedding_size=32, hidden_size=32, num_layers=1,
                     tie_word_embeddings=True),
    "lstm-tiny": dict(family="lstm", vocab_size=1000, embedding_size=32, hidden_size=32, num_layers=2,
                      tie_word_embeddings=True),
    "elmo-tiny": dict(family="elmo", vocab_size=1000, hidden_size=32, lstm_size=16, num_layers=2,
                      char_embedding_size=8, char_filters=[[1, 8], [2, 8], [3, 16]], num_highway=1,
                      max_chars_per_token=12),
    # CoVe's MT-LSTM (McCann et al. 2017: 2-layer biLSTM encoder, attentional 2-layer LSTM decoder)
    "cove-small": dict(family="cove", vocab_size=8000, embedding_size=128, hidden_size=128, num_layers=2,
                       dropout=0.2, head="lm"),
    "cove-tiny": dict(family="cove", vocab_size=1000, embedding_size=16, hidden_size=16, num_layers=2, head="lm",
                      initializer_range=0.3),  # at 0.1 a 32-wide toy copy task stalls at the marginal entropy
}


PRESETS: dict[str, Preset] = {}
PRESETS.update({name: Preset("transformer", fields) for name, fields in _TRANSFORMERS.items()})
PRESETS.update({name: Preset(kind, fields) for name, (kind, fields) in _OTHERS.items()})
PRESETS.update({name: Preset("recurrent", fields) for name, fields in _RECURRENT.items()})
for _alias, _target in {**_TRANSFORMER_ALIASES, **_OTHER_ALIASES}.items():
    PRESETS[_alias] = PRESETS[_target]


def names() -> list[str]:
    """Every preset name (aliases included), sorted."""
    return sorted(PRESETS)


def get(name: str) -> Preset:
    """The preset ``name`` (``UserError`` with a did-you-mean hint if unknown)."""
    preset = PRESETS.get(name)
    if preset is None:
        raise UserError(f"unknown model preset {name!r}{suggest(name, PRESETS)}: expected one of "
                        f"{', '.join(sorted(k for k in PRESETS if not k.endswith('-tiny'))[:8])}, ...")
    return preset


def _config_class(kind: str):
    if kind == "seq2seq":
        from plmkit.models.seq2seq import Seq2SeqConfig

        return Seq2SeqConfig
    if kind == "deberta":
        from plmkit.models.deberta import DebertaConfig

        return DebertaConfig
    if kind == "xlnet":
        from plmkit.models.xlnet import XLNetConfig

        return XLNetConfig
    if kind == "canine":
        from plmkit.models.canine import CanineConfig

        return CanineConfig
    return ModelConfig


def preset_config(name: str, **overrides: Any):
    """The config object of preset ``name`` with ``overrides`` applied (``UserError`` if unknown).

    Recurrent presets have their config class in ``plmkit.classic.recurrent``
    (``RecurrentConfig.from_dict(PRESETS[name].fields)``)."""
    kind, fields = get(name)
    if kind == "recurrent":
        raise UserError(f"preset {name!r} is a classical LM: its config is plmkit.classic.recurrent.RecurrentConfig")
    return _config_class(kind).from_dict({**fields, **overrides}, source=f"preset {name!r}")


def build(name: str, **overrides: Any):
    """A randomly initialised model of preset ``name`` (``UserError`` if unknown)."""
    kind = get(name).kind
    if kind == "recurrent":
        return builder("recurrent")(name, **overrides)
    cfg = preset_config(name, **overrides)
    if kind in ("transformer", "unilm"):
        from plmkit.models.transformer import Transformer

        return Transformer(cfg)
    if kind == "glm":
        from plmkit.models.prefix_lm import GLM

        return GLM(cfg)
    if kind == "seq2seq":
        from plmkit.models.seq2seq import EncoderDecoder

        return EncoderDecoder(cfg)
    if kind == "deberta":
        from plmkit.models.deberta import DeBERTa

        return DeBERTa(cfg)
    if kind == "canine":
        from plmkit.models.canine import Canine

        return Canine(cfg)
    from plmkit.models.xlnet import XLNet

    return XLNet(cfg)
