"""Hugging Face <-> plmkit for DeBERTa: model_type ``deberta`` (v1) and ``deberta-v2`` (v2 / v3).

    model = load_deberta("hf_dir")       # -> plmkit.models.deberta.DeBERTa (eval mode, emd_layers=0)
    save_pretrained(model, "out_dir")    # DebertaForMaskedLM / DebertaV2ForMaskedLM (or *Model) format

v1 fuses q|k|v per head in ``in_proj`` (rows ordered head by head: q_h, k_h, v_h) with separate
``q_bias`` / ``v_bias`` and no key bias; plmkit's ``attn.qkv`` is q|k|v with a zero key bias. v1's
``pos_proj`` has no bias (plmkit's ``pos_key_proj.bias`` stays 0). The MLM head is BERT's
(``cls.predictions``; v2 with ``legacy=false``: ``lm_predictions.lm_head``), tied to the word
embeddings. The enhanced mask decoder has no HF counterpart: its position table is not written
(a warning says so) and imported models have ``emd_layers=0``.

References: transformers ``modeling_deberta.py`` / ``modeling_deberta_v2.py`` (v5).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import UserError
import plmkit.interop.files as _files
from plmkit.interop.seq2seq import _expand

MODEL_TYPES = ("deberta", "deberta-v2")
_ACT = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "gelu_python": "gelu", "silu": "silu"}


def _kinds(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return "|".join(k.strip() for k in v.lower().split("|") if k.strip() and k.strip() != "none")
    return "|".join(v)


def config_from_hf(hf: dict, has_mlm: bool, where: str = "config.json"):
    from plmkit.models.deberta import DebertaConfig

    mt = hf.get("model_type")
    if mt not in MODEL_TYPES:
        raise UserError(f"{where}: model_type {mt!r} is not DeBERTa")
    if not hf.get("relative_attention", False):
        raise UserError(f"{where}: DeBERTa without relative_attention is a BERT; not supported here")
    if hf.get("conv_kernel_size", 0):
        raise UserError(f"{where}: DeBERTa-v2 conv layer (conv_kernel_size > 0) is not supported")
    if hf.get("talking_head"):
        raise UserError(f"{where}: talking_head attention is not supported")
    H, Nh = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("attention_head_size") not in (None, H // Nh) or hf.get("embedding_size") not in (None, H):
        raise UserError(f"{where}: attention_head_size / embedding_size different from hidden_size is not supported")
    act = _ACT.get(hf.get("hidden_act", "gelu"))
    if act is None:
        raise UserError(f"{where}: hidden_act {hf.get('hidden_act')!r} is not supported")
    v2 = mt == "deberta-v2"
    return DebertaConfig(
        family=mt, vocab_size=hf["vocab_size"], hidden_size=H, num_layers=hf["num_hidden_layers"], num_heads=Nh,
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 0), causal=False, norm="layer", norm_position="post",
        embedding_norm=True, activation=act,
        position="learned" if hf.get("position_biased_input", True) else "none",
        head="mlm" if has_mlm else None, pooler=False, tie_word_embeddings=True,
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1), attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-7), initializer_range=hf.get("initializer_range", 0.02),
        pad_token_id=hf.get("pad_token_id", 0),
        max_relative_positions=hf.get("max_relative_positions", -1),
        position_buckets=hf.get("position_buckets", -1) if v2 else -1,
        pos_att_type=_kinds(hf.get("pos_att_type")), share_att_key=bool(hf.get("share_att_key", False)) if v2 else False,
        norm_rel_ebd="layer_norm" in _kinds(hf.get("norm_rel_ebd", "none")) if v2 else False,
        emd_layers=0, extra={"legacy": bool(hf.get("legacy", True))} if v2 else {},
    )


def config_to_hf(cfg) -> dict:
    kinds = [k for k in cfg.pos_att_type.split("|") if k]
    hf = dict(model_type=cfg.family, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              intermediate_size=cfg.intermediate_size, hidden_act=cfg.activation,
              hidden_dropout_prob=cfg.hidden_dropout, attention_probs_dropout_prob=cfg.attention_dropout,
              max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
              layer_norm_eps=cfg.layer_norm_eps, initializer_range=cfg.initializer_range,
              relative_attention=True, max_relative_positions=cfg.max_relative_positions, pos_att_type=kinds,
              position_biased_input=cfg.position == "learned", pad_token_id=cfg.pad_token_id)
    if cfg.family == "deberta-v2":
        hf.update(position_buckets=cfg.position_buckets, share_att_key=cfg.share_att_key,
                  norm_rel_ebd="layer_norm" if cfg.norm_rel_ebd else "none", legacy=cfg.extra.get("legacy", True))
        arch = "DebertaV2ForMaskedLM" if cfg.head == "mlm" else "DebertaV2Model"
    else:
        if cfg.position_buckets > 0 or cfg.share_att_key or cfg.norm_rel_ebd:
            raise UserError("save_pretrained: DeBERTa v1 has no position buckets / shared keys / rel-embedding norm; "
                            "use family 'deberta-v2'")
        arch = "DebertaForMaskedLM" if cfg.head == "mlm" else "DebertaModel"
    hf["architectures"] = [arch]
    return hf


def key_pairs(cfg) -> list[tuple[str, tuple[str, ...]]]:
    """(plmkit name, HF names) for everything except v1's fused attention (handled separately)."""
    d = "deberta."
    pairs = [("embeddings.word", (d + "embeddings.word_embeddings",)),
             ("embeddings.position", (d + "embeddings.position_embeddings",)),
             ("embeddings.token_type", (d + "embeddings.token_type_embeddings",)),
             ("embeddings.norm", (d + "embeddings.LayerNorm",)),
             ("rel_embeddings", (d + "encoder.rel_embeddings",)), ("rel_norm", (d + "encoder.LayerNorm",))]
    for i in range(cfg.num_layers):
        o, h = f"layers.{i}.", f"{d}encoder.layer.{i}."
        a = h + "attention.self."
        if cfg.family == "deberta-v2":
            pairs += [(o + "attn.qkv", (a + "query_proj", a + "key_proj", a + "value_proj")),
                      (o + "attn.pos_key_proj", (a + "pos_key_proj",)),
                      (o + "attn.pos_query_proj", (a + "pos_query_proj",))]
        else:
            pairs += [(o + "attn.pos_query_proj", (a + "pos_q_proj",))]
        pairs += [(o + "attn.o", (h + "attention.output.dense",)), (o + "attn_norm", (h + "attention.output.LayerNorm",)),
                  (o + "mlp.up", (h + "intermediate.dense",)), (o + "mlp.down", (h + "output.dense",)),
                  (o + "mlp_norm", (h + "output.LayerNorm",))]
    if cfg.head == "mlm":
        if cfg.family == "deberta-v2" and not cfg.extra.get("legacy", True):
            p = "lm_predictions.lm_head."
            pairs += [("head.transform.dense", (p + "dense",)), ("head.transform.norm", (p + "LayerNorm",)),
                      ("head.decoder.bias", (p + "bias",))]
        else:
            p = "cls.predictions."
            pairs += [("head.transform.dense", (p + "transform.dense",)), ("head.transform.norm", (p + "transform.LayerNorm",)),
                      ("head.decoder.bias", (p + "bias",))]
    return pairs


def _v1_attention(cfg, i: int) -> tuple[str, str, str, str, str, str]:
    a = f"deberta.encoder.layer.{i}.attention.self."
    return (f"layers.{i}.attn.", a + "in_proj.weight", a + "q_bias", a + "v_bias", a + "pos_proj.weight", "")


def from_hf(hf_cfg: dict, hf_sd: dict[str, torch.Tensor], where: str = "checkpoint", dtype: Any = None,
            **overrides: Any):
    from plmkit.models.deberta import DeBERTa

    if not any(k.startswith("deberta.") for k in hf_sd):  # DebertaModel naming
        hf_sd = {("deberta." + k if not k.startswith(("cls.", "lm_predictions.")) else k): v for k, v in hf_sd.items()}
    has_mlm = any(k.startswith(("cls.predictions.", "lm_predictions.")) for k in hf_sd)
    cfg = config_from_hf(hf_cfg, has_mlm, where)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = DeBERTa(cfg)
    ours = dict(model.named_parameters())
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for o, hs in _expand(key_pairs(model.config), set(ours)):
        missing = [h for h in hs if h not in hf_sd]
        if missing:
            raise UserError(f"{where}: missing tensor {missing[0]!r} (for plmkit {o!r})")
        t = torch.cat([hf_sd[h] for h in hs], 0) if len(hs) > 1 else hf_sd[hs[0]]
        sd[o] = t
        used.update(hs)
    if cfg.family == "deberta":
        Nh, D, H = cfg.num_heads, cfg.dim_per_head, cfg.hidden_size
        for i in range(cfg.num_layers):
            o, w, qb, vb, pk, _ = _v1_attention(cfg, i)
            for k in (w, qb, vb):
                if k not in hf_sd:
                    raise UserError(f"{where}: missing tensor {k!r}")
            sd[o + "qkv.weight"] = hf_sd[w].view(Nh, 3, D, H).transpose(0, 1).reshape(3 * Nh * D, H)
            sd[o + "qkv.bias"] = torch.cat([hf_sd[qb], torch.zeros_like(hf_sd[qb]), hf_sd[vb]])
            used.update((w, qb, vb))
            if o + "pos_key_proj.weight" in ours:
                sd[o + "pos_key_proj.weight"] = hf_sd[pk]
                sd[o + "pos_key_proj.bias"] = torch.zeros(Nh * D)
                used.add(pk)
    for k, t in sd.items():
        if tuple(t.shape) != tuple(ours[k].shape):
            raise UserError(f"{where}: tensor for plmkit {k} has shape {tuple(t.shape)}, expected {tuple(ours[k].shape)}")
    missing = sorted(set(ours) - set(sd))
    if missing:
        raise UserError(f"{where}: no weights for {', '.join(missing[:6])}")
    unused = sorted(k for k in hf_sd if k not in used and not k.endswith(("decoder.weight", "position_ids"))
                    and "cls.predictions.decoder" not in k)
    if unused:
        warnings.warn(f"{where}: {len(unused)} tensors not used: {', '.join(unused[:6])}", stacklevel=2)
    return _files.copy_weights(model, ours, sd, dtype)


def load_deberta(path: str | Path, dtype: Any = None, **overrides: Any):
    """Load an HF-format DeBERTa (v1 / v2 / v3) directory."""
    p = _files.hf_model_dir(path)
    hf_cfg = _files.read_hf_config(p)
    sd, where = _files.read_hf_weights(p)
    return from_hf(hf_cfg, sd, where=where, dtype=dtype, **overrides)


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    cfg = model.config
    ours = {k: v.detach() for k, v in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    q = cfg.num_heads * cfg.dim_per_head
    for o, hs in _expand(key_pairs(cfg), set(ours)):
        t = ours[o]
        pieces = t.split([q, q, q], 0) if len(hs) == 3 else (t,)
        for h, piece in zip(hs, pieces):
            out[h] = piece.contiguous()
    if cfg.family == "deberta":
        Nh, D, H = cfg.num_heads, cfg.dim_per_head, cfg.hidden_size
        for i in range(cfg.num_layers):
            o, w, qb, vb, pk, _ = _v1_attention(cfg, i)
            out[w] = ours[o + "qkv.weight"].view(3, Nh, D, H).transpose(0, 1).reshape(3 * Nh * D, H).contiguous()
            bq, bk, bv = ours[o + "qkv.bias"].split([q, q, q])
            if bk.abs().max() > 0 or (o + "pos_key_proj.bias" in ours and ours[o + "pos_key_proj.bias"].abs().max() > 0):
                warnings.warn("save_pretrained: DeBERTa v1 has no key / pos_proj bias; the trained biases are dropped",
                              stacklevel=3)
            out[qb], out[vb] = bq.contiguous(), bv.contiguous()
            if o + "pos_key_proj.weight" in ours:
                out[pk] = ours[o + "pos_key_proj.weight"].contiguous()
    if cfg.head == "mlm":
        legacy = cfg.family == "deberta" or cfg.extra.get("legacy", True)
        if legacy:
            out["cls.predictions.decoder.weight"] = ours["embeddings.word.weight"].clone()
            out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].clone()
    else:
        out = {k[len("deberta."):]: v for k, v in out.items()}
    return out


def save_pretrained(model, out_dir: str | Path, dtype: Any = None) -> Path:
    """config.json + model.safetensors that transformers' DeBERTa classes load."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    hf_cfg = config_to_hf(model.config)
    if model.config.emd_layers:
        warnings.warn("save_pretrained: transformers has no enhanced mask decoder; emd_position is not written and "
                      "HF's MLM logits come from the last encoder layer", stacklevel=2)
    sd = to_hf_state_dict(model)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    out.mkdir(parents=True, exist_ok=True)
    _files.write_safetensors(out / _files.SAFE_WEIGHTS, sd)
    _files.remove_stale_weights(out)
    _files.write_json(out / "config.json", hf_cfg)
    return out
