"""Hugging Face <-> plmkit for XLNet (model_type ``xlnet``).

    model = load_xlnet("hf_dir")         # -> plmkit.models.xlnet.XLNet (eval mode)
    save_pretrained(model, "out_dir")    # XLNetLMHeadModel (or XLNetModel) format

HF stores the projections as (d_model, n_head, d_head) parameters used as ``einsum("ibh,hnd")``;
plmkit's ``nn.Linear`` weight is that tensor reshaped to (d_model, n_head * d_head) and transposed
(``o`` is used as ``einsum("ibnd,hnd->ibh")``: weight = reshape, no transpose); k and v are fused
into ``attn.kv``. ``mask_emb`` (1, 1, H) <-> (H,). ``lm_loss`` = the tied head with its bias.

References: transformers ``modeling_xlnet.py`` (v5).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import UserError
import plmkit.interop.files as _files

MODEL_TYPES = ("xlnet",)
_ACT = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_new", "silu": "silu", "swish": "silu"}


def config_from_hf(hf: dict, has_head: bool, where: str = "config.json"):
    from plmkit.models.xlnet import XLNetConfig

    act = _ACT.get(hf.get("ff_activation", "gelu"))
    if act is None:
        raise UserError(f"{where}: ff_activation {hf.get('ff_activation')!r} is not supported")
    return XLNetConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["d_model"], num_layers=hf["n_layer"], num_heads=hf["n_head"],
        head_dim=hf.get("d_head", hf["d_model"] // hf["n_head"]), intermediate_size=hf["d_inner"],
        max_position_embeddings=512, type_vocab_size=0, causal=False, norm="layer", norm_position="post",
        embedding_norm=False, activation=act, position="none", head="lm" if has_head else None, pooler=False,
        tie_word_embeddings=True, hidden_dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("dropout", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), initializer_range=hf.get("initializer_range", 0.02),
        pad_token_id=hf.get("pad_token_id", 5), bos_token_id=hf.get("bos_token_id", 1),
        eos_token_id=hf.get("eos_token_id", 2), attn_type=hf.get("attn_type", "bi"), mem_len=hf.get("mem_len"),
        reuse_len=hf.get("reuse_len"), bi_data=bool(hf.get("bi_data", False)), clamp_len=hf.get("clamp_len", -1),
        same_length=bool(hf.get("same_length", False)),
    )


def config_to_hf(cfg) -> dict:
    return dict(model_type="xlnet", architectures=["XLNetLMHeadModel" if cfg.head else "XLNetModel"],
                vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                d_head=cfg.dim_per_head, d_inner=cfg.intermediate_size, ff_activation=cfg.activation,
                dropout=cfg.hidden_dropout, layer_norm_eps=cfg.layer_norm_eps, initializer_range=cfg.initializer_range,
                pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                attn_type=cfg.attn_type, mem_len=cfg.mem_len, reuse_len=cfg.reuse_len, bi_data=cfg.bi_data,
                clamp_len=cfg.clamp_len, same_length=cfg.same_length)


def _to_ours(name: str, t: torch.Tensor) -> torch.Tensor:
    H = t.shape[0]
    w = t.reshape(H, -1)
    return w.contiguous() if name == "o" else w.t().contiguous()


def _to_hf(name: str, w: torch.Tensor, n: int, d: int) -> torch.Tensor:
    if name == "o":
        return w.reshape(w.shape[0], n, d).contiguous()
    return w.t().reshape(w.shape[1], n, d).contiguous()


def from_hf(hf_cfg: dict, hf_sd: dict[str, torch.Tensor], where: str = "checkpoint", dtype: Any = None,
            **overrides: Any):
    from plmkit.models.xlnet import XLNet

    if not any(k.startswith("transformer.") for k in hf_sd):
        hf_sd = {("transformer." + k if not k.startswith("lm_loss") else k): v for k, v in hf_sd.items()}
    cfg = config_from_hf(hf_cfg, "lm_loss.bias" in hf_sd, where)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = XLNet(cfg)
    ours = dict(model.named_parameters())

    def get(k: str) -> torch.Tensor:
        if k not in hf_sd:
            raise UserError(f"{where}: missing tensor {k!r}")
        return hf_sd[k]

    sd = {"word.weight": get("transformer.word_embedding.weight"),
          "mask_emb": get("transformer.mask_emb").reshape(-1)}
    for i in range(cfg.num_layers):
        a, o = f"transformer.layer.{i}.", f"layers.{i}."
        sd[o + "attn.q.weight"] = _to_ours("q", get(a + "rel_attn.q"))
        sd[o + "attn.kv.weight"] = torch.cat([_to_ours("k", get(a + "rel_attn.k")), _to_ours("v", get(a + "rel_attn.v"))])
        sd[o + "attn.r.weight"] = _to_ours("r", get(a + "rel_attn.r"))
        sd[o + "attn.o.weight"] = _to_ours("o", get(a + "rel_attn.o"))
        for b in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
            sd[o + "attn." + b] = get(a + "rel_attn." + b)
        for ours_n, hf_n in (("attn_norm", "rel_attn.layer_norm"), ("mlp_norm", "ff.layer_norm"),
                             ("mlp.up", "ff.layer_1"), ("mlp.down", "ff.layer_2")):
            sd[o + ours_n + ".weight"] = get(a + hf_n + ".weight")
            sd[o + ours_n + ".bias"] = get(a + hf_n + ".bias")
    if cfg.head is not None:
        sd["head.decoder.bias"] = get("lm_loss.bias")
    for k, t in sd.items():
        if k not in ours or tuple(t.shape) != tuple(ours[k].shape):
            raise UserError(f"{where}: tensor for plmkit {k} has shape {tuple(t.shape)}, expected "
                            f"{tuple(ours[k].shape) if k in ours else 'no such parameter'}")
    missing = sorted(set(ours) - set(sd))
    if missing:
        raise UserError(f"{where}: no weights for {', '.join(missing[:6])}")
    return _files.copy_weights(model, ours, sd, dtype)


def load_xlnet(path: str | Path, dtype: Any = None, **overrides: Any):
    """Load an HF-format XLNet directory."""
    p = _files.hf_model_dir(path)
    hf_cfg = _files.read_hf_config(p)
    sd, where = _files.read_hf_weights(p)
    return from_hf(hf_cfg, sd, where=where, dtype=dtype, **overrides)


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    cfg = model.config
    n, d = cfg.num_heads, cfg.dim_per_head
    p = {k: v.detach() for k, v in model.named_parameters()}
    out = {"transformer.word_embedding.weight": p["word.weight"],
           "transformer.mask_emb": p["mask_emb"].reshape(1, 1, -1).contiguous()}
    for i in range(cfg.num_layers):
        a, o = f"transformer.layer.{i}.", f"layers.{i}."
        k, v = p[o + "attn.kv.weight"].chunk(2, 0)
        for name, w in (("q", p[o + "attn.q.weight"]), ("k", k), ("v", v), ("r", p[o + "attn.r.weight"]),
                        ("o", p[o + "attn.o.weight"])):
            out[a + "rel_attn." + name] = _to_hf(name, w, n, d)
        for b in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
            out[a + "rel_attn." + b] = p[o + "attn." + b]
        for ours_n, hf_n in (("attn_norm", "rel_attn.layer_norm"), ("mlp_norm", "ff.layer_norm"),
                             ("mlp.up", "ff.layer_1"), ("mlp.down", "ff.layer_2")):
            out[a + hf_n + ".weight"] = p[o + ours_n + ".weight"]
            out[a + hf_n + ".bias"] = p[o + ours_n + ".bias"]
    if cfg.head is not None:
        out["lm_loss.bias"] = p["head.decoder.bias"]
        if not cfg.tie_word_embeddings:
            warnings.warn("save_pretrained: transformers ties XLNet's lm_loss to the embeddings; the untied "
                          "head weight is not written", stacklevel=3)
    else:
        out = {k[len("transformer."):]: v for k, v in out.items()}
    return out


def save_pretrained(model, out_dir: str | Path, dtype: Any = None) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    sd = to_hf_state_dict(model)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    out.mkdir(parents=True, exist_ok=True)
    _files.write_safetensors(out / _files.SAFE_WEIGHTS, sd)
    _files.remove_stale_weights(out)
    _files.write_json(out / "config.json", config_to_hf(model.config))
    return out
