"""Hugging Face checkpoint names <-> plmkit parameter names, for every supported family.

This is the only place in plmkit that knows Hugging Face parameter and config names.
Each family is a ``FamilySpec``: a table of template ``Rule``s (``"layers.{i}.attn.qkv"`` <-
``"encoder.layer.{i}.attention.self.query" | ".key" | ".value"``) plus two config translators
(``config.json`` dict <-> ``ModelConfig`` fields). The rule engine is shared:

* ``concat``    several HF tensors are stacked along dim 0 into one of ours (fused q|k|v);
* ``transpose`` GPT/GPT-2 ``Conv1D`` weights are stored (in, out); ours are ``nn.Linear`` (out, in).

RoBERTa's position table reserves ``pad_token_id + 1`` leading rows (fairseq counts positions from
``padding_idx + 1``); the table is copied whole and ``ModelConfig.position_offset`` says so.

Rules name modules; the engine expands them to ``.weight`` / ``.bias`` as the plmkit model has them.
A rule belongs to a *part*: ``base`` (must be present), or a head (``mlm``, ``lm``, ``pooler``,
``nsp``, ``sop``, ``rtd``) that may be absent from a checkpoint.

References: transformers ``modeling_{bert,roberta,albert,electra,openai,gpt2,llama}.py`` (v4.45-5.x);
torchtitan ``StateDictAdapter``; litgpt ``scripts/convert_hf_checkpoint.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from plmkit.errors import UserError, suggest

# --------------------------------------------------------------------------------------------
# Rules and family specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One plmkit module (or parameter) <- one or more HF modules (or parameters)."""

    ours: str  # plmkit name template; "{i}" = layer index. A name ending in .weight/.bias is a parameter.
    hf: tuple[str, ...]  # HF name templates (several for "concat")
    part: str = "base"  # "base" or a head name
    transform: str = "copy"  # "copy" | "concat" | "transpose"
    prefixed: bool = True  # HF name lives under the base-model prefix ("bert.", "transformer.", "model.")
    per_layer: bool = False


def _r(ours: str, *hf: str, part: str = "base", transform: str = "copy", prefixed: bool | None = None) -> Rule:
    if prefixed is None:
        prefixed = part in ("base", "pooler")
    return Rule(ours, tuple(hf), part, transform, prefixed, per_layer="{i}" in ours)


@dataclass(frozen=True)
class FamilySpec:
    """Everything plmkit needs to read and write one HF ``model_type``."""

    model_type: str
    prefix: str  # base-model prefix in head-model checkpoints, e.g. "bert."
    rules: tuple[Rule, ...]
    # HF architecture class name -> the parts (heads) that class has
    architectures: dict[str, frozenset[str]]
    config_from_hf: Callable[[dict, frozenset[str]], dict]
    config_to_hf: Callable[[Any, frozenset[str]], dict]
    # alternative HF names (old checkpoints, tied duplicates) tried when the primary one is absent
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # HF keys that carry no weights (buffers) and are ignored when unused; matched as the whole
    # key or a dotted suffix ("attn.bias" matches "h.0.attn.bias", not "h.0.attn.c_attn.bias")
    ignore: tuple[str, ...] = ()
    generation_config: bool = False


def _need(hf: dict, name: str, model_type: str) -> Any:
    if name not in hf or hf[name] is None:
        raise UserError(f"config.json: model_type {model_type!r} needs the key {name!r}")
    return hf[name]


_ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_new",
    "gelu_fast": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",  # same tanh approximation as gelu_new (to ~1e-7)
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def _activation(name: str, model_type: str) -> str:
    if name not in _ACT_FROM_HF:
        raise UserError(
            f"config.json: activation {name!r} of model_type {model_type!r} is not supported; "
            f"expected one of {sorted(_ACT_FROM_HF)}"
        )
    return _ACT_FROM_HF[name]


def _check_absolute_positions(hf: dict, model_type: str) -> None:
    kind = hf.get("position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise UserError(
            f"config.json: position_embedding_type {kind!r} ({model_type}) is not supported; only 'absolute'"
        )


# ---- encoder families: BERT, RoBERTa, ALBERT, ELECTRA -------------------------------------


def _bert_like_config(hf: dict, parts: frozenset[str], family: str) -> dict:
    mt = hf.get("model_type", family)
    _check_absolute_positions(hf, mt)
    hidden = _need(hf, "hidden_size", mt)
    emb = hf.get("embedding_size") or hidden
    max_pos = _need(hf, "max_position_embeddings", mt)
    pad = hf.get("pad_token_id")
    cfg = dict(
        family=family,
        vocab_size=_need(hf, "vocab_size", mt),
        hidden_size=hidden,
        embedding_size=emb if emb != hidden or family in ("albert", "electra") else None,
        num_layers=_need(hf, "num_hidden_layers", mt),
        num_heads=_need(hf, "num_attention_heads", mt),
        intermediate_size=_need(hf, "intermediate_size", mt),
        max_position_embeddings=max_pos,
        # fairseq/RoBERTa positions start at padding_idx + 1 and skip pad tokens
        position_offset=(pad if pad is not None else 1) + 1 if family == "roberta" else 0,
        type_vocab_size=hf.get("type_vocab_size", 2),
        activation=_activation(hf.get("hidden_act", "gelu"), mt),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=pad,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        causal=False,
        norm="layer",
        norm_position="post",
        embedding_norm=True,
        position="learned",
        head="mlm" if "mlm" in parts else None,
        pooler="pooler" in parts,
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
    )
    if family == "albert":
        groups, inner = hf.get("num_hidden_groups", 1), hf.get("inner_group_num", 1)
        if groups != 1 or inner != 1:
            raise UserError(
                f"config.json: ALBERT with num_hidden_groups={groups}, inner_group_num={inner} is not "
                "supported; plmkit shares one layer across depth (expected 1 and 1)"
            )
        cfg["share_layers"] = True
    return cfg


def _bert_like_to_hf(cfg: Any, parts: frozenset[str], model_type: str) -> dict:
    act_to_hf = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
    if cfg.activation not in act_to_hf:
        raise UserError(f"save_pretrained: activation {cfg.activation!r} has no {model_type} equivalent")
    max_pos = cfg.max_position_embeddings
    pad = cfg.pad_token_id
    if model_type == "roberta" and cfg.position_offset != (pad if pad is not None else 1) + 1:
        raise UserError(f"save_pretrained: roberta needs position_offset = pad_token_id + 1, got {cfg.position_offset}")
    if model_type != "roberta" and cfg.position_offset:
        raise UserError(f"save_pretrained: {model_type} has no position offset, got {cfg.position_offset}")
    out = dict(
        model_type=model_type,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_act=act_to_hf[cfg.activation],
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=max_pos,
        type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=pad,
        position_embedding_type="absolute",
        tie_word_embeddings=bool(cfg.tie_word_embeddings),
    )
    if cfg.bos_token_id is not None:
        out["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        out["eos_token_id"] = cfg.eos_token_id
    if model_type in ("albert", "electra"):
        out["embedding_size"] = cfg.embedding_size or cfg.hidden_size
    if model_type == "albert":
        out.update(num_hidden_groups=1, inner_group_num=1, classifier_dropout_prob=cfg.hidden_dropout)
    return out


def _encoder_layer_rules(base: str) -> list[Rule]:
    L = base + "{i}."
    return [
        _r("layers.{i}.attn.qkv", L + "attention.self.query", L + "attention.self.key", L + "attention.self.value",
           transform="concat"),
        _r("layers.{i}.attn.o", L + "attention.output.dense"),
        _r("layers.{i}.attn_norm", L + "attention.output.LayerNorm"),
        _r("layers.{i}.mlp.up", L + "intermediate.dense"),
        _r("layers.{i}.mlp.down", L + "output.dense"),
        _r("layers.{i}.mlp_norm", L + "output.LayerNorm"),
    ]


def _embedding_rules() -> list[Rule]:
    return [
        _r("embeddings.word", "embeddings.word_embeddings"),
        _r("embeddings.position", "embeddings.position_embeddings"),
        _r("embeddings.token_type", "embeddings.token_type_embeddings"),
        _r("embeddings.norm", "embeddings.LayerNorm"),
    ]


def _mlm_rules(dense: str, norm: str, decoder: str, bias: str) -> list[Rule]:
    return [
        _r("head.transform.dense", dense, part="mlm"),
        _r("head.transform.norm", norm, part="mlm"),
        _r("head.decoder.weight", decoder + ".weight", part="mlm"),
        _r("head.decoder.bias", bias, part="mlm"),
    ]


BERT = FamilySpec(
    model_type="bert",
    prefix="bert.",
    rules=tuple(
        _embedding_rules()
        + _encoder_layer_rules("encoder.layer.")
        + [_r("pooler.dense", "pooler.dense", part="pooler")]
        + _mlm_rules("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                     "cls.predictions.decoder", "cls.predictions.bias")
        + [_r("heads.nsp.classifier", "cls.seq_relationship", part="nsp")]
    ),
    architectures={
        "BertModel": frozenset({"pooler"}),
        "BertForMaskedLM": frozenset({"mlm"}),
        "BertForPreTraining": frozenset({"mlm", "pooler", "nsp"}),
        "BertForNextSentencePrediction": frozenset({"pooler", "nsp"}),
    },
    config_from_hf=lambda hf, parts: _bert_like_config(hf, parts, "bert"),
    config_to_hf=lambda cfg, parts: _bert_like_to_hf(cfg, parts, "bert"),
    aliases={"cls.predictions.bias": ("cls.predictions.decoder.bias",)},
    ignore=("embeddings.position_ids",),
)

ROBERTA = FamilySpec(
    model_type="roberta",
    prefix="roberta.",
    rules=tuple(
        _embedding_rules()
        + _encoder_layer_rules("encoder.layer.")
        + [_r("pooler.dense", "pooler.dense", part="pooler")]
        + _mlm_rules("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder", "lm_head.bias")
    ),
    architectures={
        "RobertaModel": frozenset({"pooler"}),
        "RobertaForMaskedLM": frozenset({"mlm"}),
    },
    config_from_hf=lambda hf, parts: _bert_like_config(hf, parts, "roberta"),
    config_to_hf=lambda cfg, parts: _bert_like_to_hf(cfg, parts, "roberta"),
    aliases={"lm_head.bias": ("lm_head.decoder.bias",)},
    ignore=("embeddings.position_ids",),
)

_ALBERT_LAYER = "encoder.albert_layer_groups.0.albert_layers.0."
ALBERT = FamilySpec(
    model_type="albert",
    prefix="albert.",
    rules=tuple(
        _embedding_rules()
        + [
            _r("embeddings.project", "encoder.embedding_hidden_mapping_in"),
            # one shared layer: the "{i}" of ours is always 0 (share_layers)
            _r("layers.{i}.attn.qkv", _ALBERT_LAYER + "attention.query", _ALBERT_LAYER + "attention.key",
               _ALBERT_LAYER + "attention.value", transform="concat"),
            _r("layers.{i}.attn.o", _ALBERT_LAYER + "attention.dense"),
            _r("layers.{i}.attn_norm", _ALBERT_LAYER + "attention.LayerNorm"),
            _r("layers.{i}.mlp.up", _ALBERT_LAYER + "ffn"),
            _r("layers.{i}.mlp.down", _ALBERT_LAYER + "ffn_output"),
            _r("layers.{i}.mlp_norm", _ALBERT_LAYER + "full_layer_layer_norm"),
            _r("pooler.dense", "pooler", part="pooler"),
        ]
        + _mlm_rules("predictions.dense", "predictions.LayerNorm", "predictions.decoder", "predictions.bias")
        + [_r("heads.sop.classifier", "sop_classifier.classifier", part="sop")]
    ),
    architectures={
        "AlbertModel": frozenset({"pooler"}),
        "AlbertForMaskedLM": frozenset({"mlm"}),
        "AlbertForPreTraining": frozenset({"mlm", "pooler", "sop"}),
    },
    config_from_hf=lambda hf, parts: _bert_like_config(hf, parts, "albert"),
    config_to_hf=lambda cfg, parts: _bert_like_to_hf(cfg, parts, "albert"),
    aliases={"predictions.bias": ("predictions.decoder.bias",)},
    ignore=("embeddings.position_ids",),
)

ELECTRA = FamilySpec(
    model_type="electra",
    prefix="electra.",
    rules=tuple(
        _embedding_rules()
        + [_r("embeddings.project", "embeddings_project")]
        + _encoder_layer_rules("encoder.layer.")
        # generator (ElectraForMaskedLM): MLM head with an H -> E transform and a tied E -> V decoder
        + _mlm_rules("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head",
                     "generator_lm_head.bias")
        # discriminator (ElectraForPreTraining): replaced-token-detection head
        + [
            _r("heads.rtd.dense", "discriminator_predictions.dense", part="rtd"),
            _r("heads.rtd.prediction", "discriminator_predictions.dense_prediction", part="rtd"),
        ]
    ),
    architectures={
        "ElectraModel": frozenset(),
        "ElectraForMaskedLM": frozenset({"mlm"}),
        "ElectraForPreTraining": frozenset({"rtd"}),
    },
    config_from_hf=lambda hf, parts: _bert_like_config(hf, parts, "electra"),
    config_to_hf=lambda cfg, parts: _bert_like_to_hf(cfg, parts, "electra"),
    ignore=("embeddings.position_ids",),
)


# ---- decoder families: GPT, GPT-2, LLaMA ------------------------------------------------


def _gpt_config(hf: dict, parts: frozenset[str], family: str) -> dict:
    mt = hf.get("model_type", family)
    hidden = _need(hf, "n_embd", mt)
    if hf.get("scale_attn_by_inverse_layer_idx"):
        raise UserError("config.json: scale_attn_by_inverse_layer_idx=true is not supported")
    if hf.get("scale_attn_weights") is False:
        raise UserError("config.json: scale_attn_weights=false is not supported")
    act = hf.get("afn", "gelu") if family == "gpt" else hf.get("activation_function", "gelu_new")
    embd = hf.get("embd_pdrop", 0.1)
    return dict(
        family=family,
        vocab_size=_need(hf, "vocab_size", mt),
        hidden_size=hidden,
        num_layers=_need(hf, "n_layer", mt),
        num_heads=_need(hf, "n_head", mt),
        intermediate_size=hf.get("n_inner") or 4 * hidden,
        max_position_embeddings=_need(hf, "n_positions", mt),
        type_vocab_size=0,
        activation=_activation(act, mt),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        hidden_dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        # None means "same as hidden_dropout" in ModelConfig
        embedding_dropout=None if embd == hf.get("resid_pdrop", 0.1) else embd,
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        causal=True,
        norm="layer",
        norm_position="post" if family == "gpt" else "pre",
        embedding_norm=False,
        position="learned",
        head="lm" if "lm" in parts else None,
        pooler=False,
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
    )


def _gpt_to_hf(cfg: Any, parts: frozenset[str], model_type: str) -> dict:
    acts = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}
    if cfg.activation not in acts:
        raise UserError(f"save_pretrained: activation {cfg.activation!r} has no {model_type} equivalent")
    out = dict(
        model_type=model_type,
        vocab_size=cfg.vocab_size,
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_positions=cfg.max_position_embeddings,
        layer_norm_epsilon=cfg.layer_norm_eps,
        resid_pdrop=cfg.hidden_dropout,
        attn_pdrop=cfg.attention_dropout,
        embd_pdrop=cfg.hidden_dropout if cfg.embedding_dropout is None else cfg.embedding_dropout,
        tie_word_embeddings=bool(cfg.tie_word_embeddings),
    )
    if model_type == "openai-gpt":
        if cfg.intermediate_size != 4 * cfg.hidden_size:
            raise UserError("save_pretrained: openai-gpt needs intermediate_size == 4 * hidden_size")
        out["afn"] = acts[cfg.activation]
    else:
        out.update(activation_function=acts[cfg.activation], n_inner=cfg.intermediate_size)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(cfg, name, None) is not None:
            out[name] = getattr(cfg, name)
    return out


def _gpt_layer_rules(attn_norm: str, mlp_norm: str) -> list[Rule]:
    L = "h.{i}."
    return [
        _r("layers.{i}.attn.qkv", L + "attn.c_attn", transform="transpose"),
        _r("layers.{i}.attn.o", L + "attn.c_proj", transform="transpose"),
        _r("layers.{i}.attn_norm", L + attn_norm),
        _r("layers.{i}.mlp.up", L + "mlp.c_fc", transform="transpose"),
        _r("layers.{i}.mlp.down", L + "mlp.c_proj", transform="transpose"),
        _r("layers.{i}.mlp_norm", L + mlp_norm),
    ]


_LM_RULE = _r("head.decoder.weight", "lm_head.weight", part="lm")

GPT = FamilySpec(
    model_type="openai-gpt",
    prefix="transformer.",
    rules=tuple(
        [_r("embeddings.word", "tokens_embed"), _r("embeddings.position", "positions_embed")]
        # post-LN: ln_1 follows the attention residual, ln_2 the MLP residual
        + _gpt_layer_rules("ln_1", "ln_2")
        + [_LM_RULE]
    ),
    architectures={"OpenAIGPTModel": frozenset(), "OpenAIGPTLMHeadModel": frozenset({"lm"})},
    config_from_hf=lambda hf, parts: _gpt_config(hf, parts, "gpt"),
    config_to_hf=lambda cfg, parts: _gpt_to_hf(cfg, parts, "openai-gpt"),
    ignore=("position_ids", "attn.bias"),
    generation_config=True,
)

GPT2 = FamilySpec(
    model_type="gpt2",
    prefix="transformer.",
    rules=tuple(
        [_r("embeddings.word", "wte"), _r("embeddings.position", "wpe")]
        + _gpt_layer_rules("ln_1", "ln_2")
        + [_r("final_norm", "ln_f"), _LM_RULE]
    ),
    architectures={"GPT2Model": frozenset(), "GPT2LMHeadModel": frozenset({"lm"})},
    config_from_hf=lambda hf, parts: _gpt_config(hf, parts, "gpt2"),
    config_to_hf=lambda cfg, parts: _gpt_to_hf(cfg, parts, "gpt2"),
    ignore=("attn.bias", "attn.masked_bias"),
    generation_config=True,
)


def _rope_theta(hf: dict) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise UserError(f"config.json: rope scaling {kind!r} is not supported (only default RoPE)")
    return float(params.get("rope_theta") or hf.get("rope_theta") or 10000.0)


def _llama_config(hf: dict, parts: frozenset[str]) -> dict:
    mt = "llama"
    hidden = _need(hf, "hidden_size", mt)
    heads = _need(hf, "num_attention_heads", mt)
    head_dim = hf.get("head_dim") or hidden // heads
    kv_heads = hf.get("num_key_value_heads") or heads
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
        raise UserError(f"config.json: llama hidden_act {hf.get('hidden_act')!r} is not supported (expected 'silu')")
    if hf.get("mlp_bias"):
        raise UserError("config.json: llama mlp_bias=true is not supported")
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return dict(
        family="llama",
        vocab_size=_need(hf, "vocab_size", mt),
        hidden_size=hidden,
        num_layers=_need(hf, "num_hidden_layers", mt),
        num_heads=heads,
        num_kv_heads=kv_heads if kv_heads != heads else None,
        head_dim=head_dim if head_dim * heads != hidden else None,
        intermediate_size=_need(hf, "intermediate_size", mt),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        type_vocab_size=0,
        activation="swiglu",
        layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_rope_theta(hf),
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=False,
        pad_token_id=hf.get("pad_token_id"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos,
        causal=True,
        norm="rms",
        norm_position="pre",
        embedding_norm=False,
        position="rotary",
        head="lm" if "lm" in parts else None,
        pooler=False,
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
    )


def _llama_to_hf(cfg: Any, parts: frozenset[str]) -> dict:
    out = dict(
        model_type="llama",
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.dim_per_head,
        intermediate_size=cfg.intermediate_size,
        hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.layer_norm_eps,
        rope_theta=float(getattr(cfg, "rope_theta", 10000.0)),
        rope_parameters={"rope_type": "default", "rope_theta": float(getattr(cfg, "rope_theta", 10000.0))},
        attention_bias=bool(getattr(cfg, "attention_bias", False)),
        attention_dropout=cfg.attention_dropout,
        mlp_bias=False,
        tie_word_embeddings=bool(cfg.tie_word_embeddings),
    )
    if cfg.activation != "swiglu" or cfg.norm != "rms" or cfg.position != "rotary" or cfg.mlp_bias:
        raise UserError("save_pretrained: a llama checkpoint needs swiglu, rms norm, rotary positions, no MLP bias")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(cfg, name, None) is not None:
            out[name] = getattr(cfg, name)
    return out


_LL = "layers.{i}."
LLAMA = FamilySpec(
    model_type="llama",
    prefix="model.",
    rules=(
        _r("embeddings.word", "embed_tokens"),
        _r("layers.{i}.attn.qkv", _LL + "self_attn.q_proj", _LL + "self_attn.k_proj", _LL + "self_attn.v_proj",
           transform="concat"),
        _r("layers.{i}.attn.o", _LL + "self_attn.o_proj"),
        _r("layers.{i}.attn_norm", _LL + "input_layernorm"),
        _r("layers.{i}.mlp.gate", _LL + "mlp.gate_proj"),
        _r("layers.{i}.mlp.up", _LL + "mlp.up_proj"),
        _r("layers.{i}.mlp.down", _LL + "mlp.down_proj"),
        _r("layers.{i}.mlp_norm", _LL + "post_attention_layernorm"),
        _r("final_norm", "norm"),
        _LM_RULE,
    ),
    architectures={"LlamaModel": frozenset(), "LlamaForCausalLM": frozenset({"lm"})},
    config_from_hf=_llama_config,
    config_to_hf=_llama_to_hf,
    ignore=("rotary_emb.inv_freq",),
    generation_config=True,
)

FAMILIES: dict[str, FamilySpec] = {s.model_type: s for s in (BERT, ROBERTA, ALBERT, ELECTRA, GPT, GPT2, LLAMA)}
# plmkit family name -> HF model_type
MODEL_TYPE_OF_FAMILY = {"bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra",
                        "gpt": "openai-gpt", "gpt2": "gpt2", "llama": "llama"}


def family_spec(model_type: str | None, where: str = "config.json") -> FamilySpec:
    """Return the spec of an HF ``model_type`` or raise ``UserError`` naming the supported ones."""
    if model_type not in FAMILIES:
        raise UserError(
            f"{where}: unknown model_type {model_type!r}{suggest(str(model_type), FAMILIES)}; "
            f"supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


# --------------------------------------------------------------------------------------------
# The rule engine
# --------------------------------------------------------------------------------------------


def _normalise_hf_key(key: str) -> str:
    # TF-era checkpoints name LayerNorm parameters gamma/beta (transformers renames them too)
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def _expand(spec: FamilySpec, num_layers: int, share_layers: bool) -> list[Rule]:
    """Expand the "{i}" layer templates (one copy when layers are shared, as in ALBERT)."""
    out: list[Rule] = []
    layers = 1 if share_layers else num_layers
    for rule in spec.rules:
        if not rule.per_layer:
            out.append(rule)
            continue
        for i in range(layers):
            out.append(Rule(rule.ours.format(i=i), tuple(h.format(i=i) for h in rule.hf), rule.part,
                            rule.transform, rule.prefixed))
    return out


def _param_pairs(rule: Rule, ours_keys: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(our parameter, its HF parameters) for each suffix the plmkit model actually has."""
    if rule.ours.endswith((".weight", ".bias")):
        return [(rule.ours, rule.hf)] if rule.ours in ours_keys else []
    pairs = []
    for suffix in (".weight", ".bias"):
        if rule.ours + suffix in ours_keys:
            pairs.append((rule.ours + suffix, tuple(h + suffix for h in rule.hf)))
    return pairs


def rule_parts(spec: FamilySpec, hf_keys: set[str]) -> frozenset[str]:
    """Which head parts have at least one tensor in an HF state dict."""
    keys = {_normalise_hf_key(k) for k in hf_keys}
    stripped = {k[len(spec.prefix):] if k.startswith(spec.prefix) else k for k in keys}
    found = set()
    for rule in spec.rules:
        if rule.part == "base":
            continue
        for h in rule.hf:
            h0 = h.replace("{i}", "0")
            if any(k == h0 or k.startswith(h0 + ".") for k in stripped):
                found.add(rule.part)
    return frozenset(found)


@dataclass
class ImportReport:
    """What ``from_hf_state_dict`` did: heads left at their random init, HF tensors it did not use."""

    random_parts: set[str] = field(default_factory=set)
    random_keys: list[str] = field(default_factory=list)
    unused_hf_keys: list[str] = field(default_factory=list)


def from_hf_state_dict(
    spec: FamilySpec,
    hf_sd: dict[str, torch.Tensor],
    ours_shapes: dict[str, tuple[int, ...]],
    config: Any,
    where: str,
    tied: set[str] = frozenset(),
) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """Translate an HF state dict into plmkit names.

    Args:
        spec: the family.
        hf_sd: HF tensors (any prefix convention: with or without the base-model prefix).
        ours_shapes: plmkit parameter name -> expected shape (from the freshly built model; tied
            duplicates such as ``head.decoder.weight`` should be left out by the caller).
        config: the plmkit ``ModelConfig`` (for layer count, sharing, q/k/v sizes, pad id).
        where: file name used in error messages.
        tied: plmkit names that share their tensor with another parameter (``head.decoder.weight``
            when embeddings are tied); their HF copies, if any, are consumed without loading.

    Returns:
        (plmkit state dict, report). Base tensors that are missing or mis-shaped raise ``UserError``;
        missing head tensors are reported, not raised.
    """
    sd = {_normalise_hf_key(k): v for k, v in hf_sd.items()}
    has_prefix = any(k.startswith(spec.prefix) for k in sd)
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    report = ImportReport()

    def lookup(name: str, prefixed: bool) -> str | None:
        candidates = [name]
        candidates += list(spec.aliases.get(name, ()))
        hits = []
        for c in candidates:
            full = spec.prefix + c if (prefixed and has_prefix) else c
            if full in sd:
                hits.append(full)
            elif prefixed and c in sd:  # base-model checkpoint inside a head checkpoint's naming, or vice versa
                hits.append(c)
        used.update(hits[1:])  # tied duplicates saved by old checkpoints (decoder.bias == bias)
        return hits[0] if hits else None

    ours_keys = set(ours_shapes) | set(tied)
    for rule in _expand(spec, config.num_layers, bool(getattr(config, "share_layers", False))):
        for ours, hf_names in _param_pairs(rule, ours_keys):
            found = [lookup(h, rule.prefixed) for h in hf_names]
            if ours in tied:
                used.update(f for f in found if f is not None)
                continue
            if any(f is None for f in found):
                missing = [(spec.prefix if rule.prefixed and has_prefix else "") + h
                           for h, f in zip(hf_names, found) if f is None]
                if rule.part == "base":
                    raise UserError(f"{where}: missing tensor {missing[0]!r} (needed for {ours!r})")
                report.random_parts.add(rule.part)
                report.random_keys.append(ours)
                continue
            tensors = [sd[f] for f in found]
            used.update(found)
            tensor = _to_ours(rule.transform, tensors, config)
            want = tuple(ours_shapes[ours])
            if tuple(tensor.shape) != want:
                shapes = " + ".join(f"{f} {tuple(t.shape)}" for f, t in zip(found, tensors))
                raise UserError(f"{where}: tensor {shapes} does not fit {ours!r}: expected {want}")
            out[ours] = tensor
    for k in sd:
        if k not in used and not any(k == s or k.endswith("." + s) for s in spec.ignore):
            report.unused_hf_keys.append(k)
    return out, report


def _to_ours(transform: str, tensors: list[torch.Tensor], config: Any) -> torch.Tensor:
    if transform == "copy":
        return tensors[0]
    if transform == "concat":
        return torch.cat(tensors, dim=0)
    if transform == "transpose":
        t = tensors[0]
        return t.t().contiguous() if t.dim() == 2 else t
    raise AssertionError(transform)


def _to_hf(transform: str, tensor: torch.Tensor, n_out: int, config: Any) -> list[torch.Tensor]:
    if transform == "copy":
        return [tensor]
    if transform == "concat":
        q = config.num_heads * config.dim_per_head
        kv = config.kv_heads * config.dim_per_head
        assert n_out == 3 and tensor.shape[0] == q + 2 * kv, (tensor.shape, q, kv)
        return list(torch.split(tensor, [q, kv, kv], dim=0))
    if transform == "transpose":
        return [tensor.t().contiguous() if tensor.dim() == 2 else tensor]
    raise AssertionError(transform)


def to_hf_state_dict(
    spec: FamilySpec, ours_sd: dict[str, torch.Tensor], config: Any, prefixed: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Translate a plmkit state dict into HF names.

    Args:
        prefixed: write base tensors under the base-model prefix (head-model classes such as
            ``BertForMaskedLM``); ``False`` for base-model classes (``BertModel``), as HF saves them.

    Returns:
        (HF state dict, plmkit keys that have no HF counterpart).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for rule in _expand(spec, config.num_layers, bool(getattr(config, "share_layers", False))):
        for ours, hf_names in _param_pairs(rule, set(ours_sd)):
            parts = _to_hf(rule.transform, ours_sd[ours], len(hf_names), config)
            for name, t in zip(hf_names, parts):
                out[(spec.prefix if rule.prefixed and prefixed else "") + name] = t.contiguous()
            used.add(ours)
    leftover = [k for k in ours_sd if k not in used]
    return out, leftover


def pick_architecture(spec: FamilySpec, parts: frozenset[str]) -> tuple[str, frozenset[str]]:
    """The HF class that holds exactly ``parts`` or, failing that, the closest one.

    A class that would have to invent (randomly initialise) a head is avoided first; then the one
    that leaves the fewest of our parts unused (their tensors are still written: e.g. a BERT with
    MLM head and pooler is saved as ``BertForMaskedLM`` plus ``bert.pooler.*``, as HF's own
    bert-base checkpoints are). Ties go to the first class listed (the base model).

    Returns (architecture name, parts it has).
    """

    def score(item: tuple[str, frozenset[str]]) -> tuple[int, int]:
        _, have = item
        dropped = sum(1 if p == "pooler" else 2 for p in parts - have)  # a head matters more than the pooler
        return (len(have - parts), dropped)

    return min(spec.architectures.items(), key=score)
