"""Hugging Face <-> plmkit for encoder-decoder models: model_type ``t5`` (incl. v1.1 gated-GELU),
``bart`` and ``switch_transformers``.

    model = load_seq2seq("hf_dir")          # -> plmkit.models.seq2seq.EncoderDecoder (eval mode)
    save_pretrained(model, "out_dir")       # config.json + model.safetensors for transformers

Name maps (``key_pairs``): one plmkit tensor <- one or several HF tensors stacked on dim 0
(fused q|k|v and k|v). Config translation: ``config_from_hf`` / ``config_to_hf``.

Notes:
- transformers 5.x always ties T5's ``lm_head`` to ``shared`` and keeps "untied" only as
  ``scale_decoder_outputs=False``; plmkit keeps a separate ``lm_head.weight`` when a checkpoint
  has one and says ``tie_word_embeddings: false`` (T5.1.1 as released), else ties.
- BART's position table keeps its 2 leading rows (``position_offset=2``), so plmkit's
  ``max_position_embeddings`` is HF's + 2.

References: transformers ``modeling_t5.py``, ``modeling_bart.py``, ``modeling_switch_transformers.py`` (v5).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import UserError
import plmkit.interop.files as _files

MODEL_TYPES = ("t5", "bart", "switch_transformers")
FAMILY_OF = {"t5": "t5", "bart": "bart", "switch_transformers": "switch"}
MODEL_TYPE_OF = {v: k for k, v in FAMILY_OF.items()}
_ARCH = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration",
         "switch_transformers": "SwitchTransformersForConditionalGeneration"}


def _need(hf: dict, key: str, where: str) -> Any:
    if hf.get(key) is None:
        raise UserError(f"{where}: model_type {hf.get('model_type')!r} needs the key {key!r}")
    return hf[key]


def _ff_proj(hf: dict, where: str) -> tuple[str, bool]:
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    gated = parts[0] == "gated"
    act = parts[-1]
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise UserError(f"{where}: feed_forward_proj {proj!r}: expected 'ACT' or 'gated-ACT'")
    act = {"gelu": "gelu_new" if gated else "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "silu",
           "swish": "silu"}.get(act)
    if act is None:
        raise UserError(f"{where}: feed_forward_proj {proj!r} is not supported (relu, gelu, gated-gelu, gated-silu)")
    return act, gated


# ---------------------------------------------------------------------------- configs
def config_from_hf(hf: dict, has_lm_head: bool, where: str = "config.json"):
    """``Seq2SeqConfig`` for an HF ``config.json`` dict."""
    from plmkit.models.seq2seq import Seq2SeqConfig

    mt = hf.get("model_type")
    if mt in ("t5", "switch_transformers"):
        act, gated = _ff_proj(hf, where)
        tie = hf.get("tie_word_embeddings", True) is not False
        scale = hf.get("scale_decoder_outputs", tie)
        n_enc = _need(hf, "num_layers", where)
        n_dec = hf.get("num_decoder_layers") or n_enc
        fields: dict[str, Any] = dict(
            family=FAMILY_OF[mt], vocab_size=_need(hf, "vocab_size", where), hidden_size=_need(hf, "d_model", where),
            num_layers=n_enc, num_decoder_layers=n_dec, num_heads=_need(hf, "num_heads", where),
            head_dim=_need(hf, "d_kv", where), intermediate_size=_need(hf, "d_ff", where),
            max_position_embeddings=512, type_vocab_size=0, causal=False, norm="rms", norm_position="pre",
            embedding_norm=False, activation=act, gated_mlp=gated, position="none", attention_bias=False,
            mlp_bias=False, head="lm", tie_word_embeddings=tie or not has_lm_head,
            scale_decoder_outputs=bool(scale), hidden_dropout=hf.get("dropout_rate", 0.1),
            attention_dropout=hf.get("dropout_rate", 0.1), layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
            attention_scale=1.0, pad_token_id=hf.get("pad_token_id", 0),
            eos_token_id=_first(hf.get("eos_token_id", 1)),
            decoder_start_token_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)) or 0,
            initializer_range=0.02 * hf.get("initializer_factor", 1.0),
        )
        if mt == "switch_transformers":
            E = _need(hf, "num_experts", where)
            step_e, step_d = _sparse_step(hf, "encoder", n_enc), _sparse_step(hf, "decoder", n_dec)
            if step_e != step_d or step_e <= 0:
                raise UserError(f"{where}: switch_transformers with encoder_sparse_step={step_e} and "
                                f"decoder_sparse_step={step_d} is not supported (plmkit needs one positive step "
                                "shared by encoder and decoder)")
            if hf.get("router_bias"):
                raise UserError(f"{where}: router_bias=true is not supported")
            fields.update(num_experts=E, moe_every=step_e, expert_capacity=hf.get("expert_capacity", 64),
                          router_jitter_noise=float(hf.get("router_jitter_noise", 0.0)))
        return Seq2SeqConfig(**fields)
    if mt == "bart":
        for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
            if hf.get(a) != hf.get(b):
                raise UserError(f"{where}: {a}={hf.get(a)} != {b}={hf.get(b)} is not supported")
        if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
            raise UserError(f"{where}: pre-LN BART variants (normalize_before / add_final_layer_norm) are not supported")
        act = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_new", "silu": "silu", "swish": "silu"}.get(
            hf.get("activation_function", "gelu"))
        if act is None:
            raise UserError(f"{where}: activation_function {hf.get('activation_function')!r} is not supported")
        return Seq2SeqConfig(
            family="bart", vocab_size=_need(hf, "vocab_size", where), hidden_size=_need(hf, "d_model", where),
            num_layers=_need(hf, "encoder_layers", where), num_decoder_layers=_need(hf, "decoder_layers", where),
            num_heads=_need(hf, "encoder_attention_heads", where), intermediate_size=_need(hf, "encoder_ffn_dim", where),
            max_position_embeddings=_need(hf, "max_position_embeddings", where) + 2, position_offset=2,
            type_vocab_size=0, causal=False, norm="layer", norm_position="post", embedding_norm=True,
            activation=act, position="learned", scale_embeddings=bool(hf.get("scale_embedding", False)),
            head="lm", tie_word_embeddings=True, final_logits_bias=True,
            hidden_dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
            layer_norm_eps=1e-5, pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id", 0),
            eos_token_id=_first(hf.get("eos_token_id", 2)),
            decoder_start_token_id=hf.get("decoder_start_token_id", 2), initializer_range=hf.get("init_std", 0.02),
            extra={k: hf[k] for k in ("forced_bos_token_id", "forced_eos_token_id") if hf.get(k) is not None},
        )
    raise UserError(f"{where}: model_type {mt!r} is not an encoder-decoder plmkit reads "
                    f"(expected one of {', '.join(MODEL_TYPES)})")


def _sparse_step(hf: dict, side: str, n_layers: int) -> int:
    """The sparse step HF's ``SwitchTransformersStack`` uses: ``{side}_sparse_step`` when the config holds
    it (transformers writes it, and a value passed to the config overrides the one derived from
    ``num_sparse_{side}_layers``), else derived as ``SwitchTransformersConfig.__post_init__`` does."""
    if hf.get(f"{side}_sparse_step") is not None:
        return int(hf[f"{side}_sparse_step"])
    n_sparse = hf.get(f"num_sparse_{side}_layers", 3)
    return n_layers // n_sparse if n_sparse > 0 else n_layers


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, list) else x


def config_to_hf(cfg) -> dict:
    """HF ``config.json`` dict for a ``Seq2SeqConfig``."""
    mt = MODEL_TYPE_OF.get(cfg.family)
    if mt is None:
        raise UserError(f"save_pretrained: family {cfg.family!r} has no Hugging Face class "
                        f"(supported encoder-decoders: {', '.join(MODEL_TYPE_OF)})")
    if mt in ("t5", "switch_transformers"):
        if cfg.attention_scale != 1.0 or cfg.norm != "rms" or cfg.position != "none":
            raise UserError(f"save_pretrained: this {cfg.family} config is not T5-shaped (attention_scale=1, "
                            "rms norm, no absolute positions)")
        act = {"gelu_new": "gelu", "gelu": "gelu", "relu": "relu", "silu": "silu"}[cfg.activation] \
            if cfg.activation != "swiglu" else "silu"
        proj = f"gated-{act}" if cfg.gated_mlp else ("gelu_new" if cfg.activation == "gelu_new" else act)
        hf = dict(
            model_type=mt, architectures=[_ARCH[mt]], vocab_size=cfg.vocab_size, d_model=cfg.hidden_size,
            d_kv=cfg.dim_per_head, d_ff=cfg.intermediate_size, num_layers=cfg.num_layers,
            num_decoder_layers=cfg.decoder_layers, num_heads=cfg.num_heads,
            relative_attention_num_buckets=cfg.relative_attention_num_buckets,
            relative_attention_max_distance=cfg.relative_attention_max_distance,
            dropout_rate=cfg.hidden_dropout, layer_norm_epsilon=cfg.layer_norm_eps, feed_forward_proj=proj,
            tie_word_embeddings=cfg.tie_word_embeddings, scale_decoder_outputs=cfg.scale_decoder_outputs,
            pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id,
            decoder_start_token_id=cfg.decoder_start_token_id, is_encoder_decoder=True,
            initializer_factor=cfg.initializer_range / 0.02,
        )
        if mt == "switch_transformers":
            n_sparse = cfg.num_layers // cfg.moe_every if cfg.moe_every > 1 else cfg.num_layers
            n_sparse_d = cfg.decoder_layers // cfg.moe_every if cfg.moe_every > 1 else cfg.decoder_layers
            if cfg.expert_capacity is None:
                raise UserError("save_pretrained: HF Switch needs a fixed expert_capacity (capacity_factor only "
                                "exists in plmkit)")
            hf.update(num_experts=cfg.num_experts, expert_capacity=cfg.expert_capacity,
                      num_sparse_encoder_layers=n_sparse, num_sparse_decoder_layers=n_sparse_d,
                      # the steps the HF model reads (they override the ones derived from num_sparse_*)
                      encoder_sparse_step=cfg.moe_every, decoder_sparse_step=cfg.moe_every,
                      router_bias=False, router_jitter_noise=cfg.router_jitter_noise, router_dtype="float32",
                      router_ignore_padding_tokens=False)
        return hf
    if cfg.norm_position != "post" or cfg.position != "learned" or cfg.position_offset != 2:
        raise UserError("save_pretrained: this bart config is not BART-shaped (post-LN, learned positions offset 2)")
    hf = dict(
        model_type="bart", architectures=[_ARCH["bart"]], vocab_size=cfg.vocab_size, d_model=cfg.hidden_size,
        encoder_layers=cfg.num_layers, decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.num_heads,
        decoder_attention_heads=cfg.num_heads, encoder_ffn_dim=cfg.intermediate_size,
        decoder_ffn_dim=cfg.intermediate_size, max_position_embeddings=cfg.max_position_embeddings - 2,
        activation_function=cfg.activation, dropout=cfg.hidden_dropout, attention_dropout=cfg.attention_dropout,
        activation_dropout=0.0, init_std=cfg.initializer_range, scale_embedding=cfg.scale_embeddings,
        pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
        decoder_start_token_id=cfg.decoder_start_token_id, is_encoder_decoder=True,
        forced_eos_token_id=cfg.extra.get("forced_eos_token_id"),
    )
    if cfg.extra.get("forced_bos_token_id") is not None:
        hf["forced_bos_token_id"] = cfg.extra["forced_bos_token_id"]
    return hf


# ---------------------------------------------------------------------------- name maps
def key_pairs(cfg) -> list[tuple[str, tuple[str, ...]]]:
    """(plmkit module/parameter name, HF names) pairs; module names get .weight/.bias appended later."""
    pairs: list[tuple[str, tuple[str, ...]]] = [("shared", ("shared",))]
    if cfg.family in ("t5", "switch"):
        for side, n in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
            pairs.append((f"{side}.relative_bias", (f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias",)))
            pairs.append((f"{side}.final_norm", (f"{side}.final_layer_norm",)))
            for i in range(n):
                o, h = f"{side}.layers.{i}.", f"{side}.block.{i}.layer."
                a = h + "0.SelfAttention."
                pairs += [(o + "attn.qkv", (a + "q", a + "k", a + "v")), (o + "attn.o", (a + "o",)),
                          (o + "attn_norm", (h + "0.layer_norm",))]
                ff = 1
                if side == "decoder":
                    c = h + "1.EncDecAttention."
                    pairs += [(o + "cross_attn.q", (c + "q",)), (o + "cross_attn.kv", (c + "k", c + "v")),
                              (o + "cross_attn.o", (c + "o",)), (o + "cross_norm", (h + "1.layer_norm",))]
                    ff = 2
                pairs.append((o + "mlp_norm", (f"{h}{ff}.layer_norm",)))
                if cfg.is_sparse(i):
                    m = f"{h}{ff}.mlp."
                    pairs.append((o + "mlp.router", (m + "router.classifier",)))
                    for j in range(cfg.num_experts):
                        pairs += [(o + f"mlp.experts.{j}.up", (m + f"experts.expert_{j}.wi",)),
                                  (o + f"mlp.experts.{j}.down", (m + f"experts.expert_{j}.wo",))]
                        if cfg.gated_mlp:
                            raise UserError("switch_transformers with gated experts is not supported")
                else:
                    m = f"{h}{ff}.DenseReluDense." if cfg.family == "t5" else f"{h}{ff}.mlp."
                    if cfg.gated_mlp:
                        pairs += [(o + "mlp.gate", (m + "wi_0",)), (o + "mlp.up", (m + "wi_1",))]
                    else:
                        pairs.append((o + "mlp.up", (m + "wi",)))
                    pairs.append((o + "mlp.down", (m + "wo",)))
        if not cfg.tie_word_embeddings:
            pairs.append(("head.decoder", ("lm_head",)))
        return pairs
    # BART
    pairs = [("shared", ("model.shared",)), ("final_logits_bias", ("final_logits_bias",))]
    for side, n in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
        p = f"model.{side}."
        pairs += [(f"{side}.embeddings.position", (p + "embed_positions",)),
                  (f"{side}.embeddings.norm", (p + "layernorm_embedding",))]
        for i in range(n):
            o, h = f"{side}.layers.{i}.", f"{p}layers.{i}."
            a = h + "self_attn."
            pairs += [(o + "attn.qkv", (a + "q_proj", a + "k_proj", a + "v_proj")), (o + "attn.o", (a + "out_proj",)),
                      (o + "attn_norm", (h + "self_attn_layer_norm",)), (o + "mlp.up", (h + "fc1",)),
                      (o + "mlp.down", (h + "fc2",)), (o + "mlp_norm", (h + "final_layer_norm",))]
            if side == "decoder":
                c = h + "encoder_attn."
                pairs += [(o + "cross_attn.q", (c + "q_proj",)), (o + "cross_attn.kv", (c + "k_proj", c + "v_proj")),
                          (o + "cross_attn.o", (c + "out_proj",)), (o + "cross_norm", (h + "encoder_attn_layer_norm",))]
    return pairs


def _expand(pairs, ours_keys: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    for o, hs in pairs:
        if o in ours_keys:
            out.append((o, hs))
            continue
        for suf in (".weight", ".bias"):
            if o + suf in ours_keys:
                out.append((o + suf, tuple(h + suf for h in hs)))
    return out


def _our_tensors(model) -> dict[str, torch.Tensor]:
    d = dict(model.named_parameters())
    d.update({k: b for k, b in model.named_buffers() if k.endswith("final_logits_bias")})
    return d


# ---------------------------------------------------------------------------- load / save
def from_hf(hf_cfg: dict, hf_sd: dict[str, torch.Tensor], where: str = "checkpoint", dtype: Any = None,
            **overrides: Any):
    """``EncoderDecoder`` from an HF config dict and HF-named tensors (eval mode)."""
    from plmkit.models.seq2seq import EncoderDecoder

    mt = hf_cfg.get("model_type")
    if mt == "bart" and not any(k.startswith("model.") for k in hf_sd):
        hf_sd = {("model." + k if not k.startswith(("final_logits_bias", "lm_head")) else k): v
                 for k, v in hf_sd.items()}  # BartModel naming
    has_head = "lm_head.weight" in hf_sd
    cfg = config_from_hf(hf_cfg, has_head, where)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = EncoderDecoder(cfg)
    ours = _our_tensors(model)
    pairs = _expand(key_pairs(cfg), set(ours))
    sd: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for o, hs in pairs:
        missing = [h for h in hs if h not in hf_sd]
        if missing:
            if o == "final_logits_bias":
                continue
            if o == "head.decoder.weight":
                sd[o] = hf_sd["shared.weight"]
                continue
            alt = [h.replace("shared", "encoder.embed_tokens") for h in missing]
            if o == "shared.weight" and alt[0] in hf_sd:
                hs = tuple(alt)
            else:
                raise UserError(f"{where}: missing tensor {missing[0]!r} (for plmkit {o!r})")
        t = torch.cat([hf_sd[h] for h in hs], dim=0) if len(hs) > 1 else hf_sd[hs[0]]
        if o == "final_logits_bias":
            t = t.reshape(-1)
        if tuple(t.shape) != tuple(ours[o].shape):
            raise UserError(f"{where}: tensor {'+'.join(hs)} has shape {tuple(t.shape)}, plmkit {o} expects "
                            f"{tuple(ours[o].shape)}")
        sd[o] = t
        used.update(hs)
    not_loaded = sorted(set(ours) - set(sd))
    if not_loaded:
        raise UserError(f"{where}: no weights for {', '.join(not_loaded[:6])}")
    ignorable = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "model.encoder.embed_tokens.weight",
                 "model.decoder.embed_tokens.weight", "lm_head.weight")
    unused = sorted(k for k in hf_sd if k not in used and k not in ignorable)
    if unused:
        warnings.warn(f"{where}: {len(unused)} tensors not used: {', '.join(unused[:6])}", stacklevel=2)
    return _files.copy_weights(model, ours, sd, dtype)


def load_seq2seq(path: str | Path, dtype: Any = None, **overrides: Any):
    """Load an HF-format encoder-decoder directory (t5 / bart / switch_transformers)."""
    p = Path(path)
    if p.is_file() and p.name == "config.json":
        p = p.parent
    p = _files.hf_model_dir(p)
    hf_cfg = _files.read_hf_config(p)
    if hf_cfg.get("model_type") not in MODEL_TYPES:
        raise UserError(f"{p / 'config.json'}: model_type {hf_cfg.get('model_type')!r} is not one of "
                        f"{', '.join(MODEL_TYPES)}")
    sd, where = _files.read_hf_weights(p)
    return from_hf(hf_cfg, sd, where=where, dtype=dtype, **overrides)


def to_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """HF-named tensors of an ``EncoderDecoder``."""
    cfg = model.config
    ours = _our_tensors(model)
    out: dict[str, torch.Tensor] = {}
    for o, hs in _expand(key_pairs(cfg), set(ours)):
        t = ours[o].detach()
        if o == "final_logits_bias":
            out[hs[0]] = t.reshape(1, -1).contiguous()
            continue
        if len(hs) == 1:
            out[hs[0]] = t.contiguous()
        else:
            sizes = [t.shape[0] // len(hs)] * len(hs)
            if o.endswith("attn.qkv.weight") or o.endswith("attn.qkv.bias"):
                q = cfg.num_heads * cfg.dim_per_head
                kv = cfg.kv_heads * cfg.dim_per_head
                sizes = [q, kv, kv]
            for h, piece in zip(hs, t.split(sizes, dim=0)):
                out[h] = piece.contiguous()
    if cfg.family == "bart":  # HF re-ties these, but writes them; keep files self-contained
        out["model.encoder.embed_tokens.weight"] = out["model.shared.weight"]
        out["model.decoder.embed_tokens.weight"] = out["model.shared.weight"]
    return out


def save_pretrained(model, out_dir: str | Path, dtype: Any = None) -> Path:
    """Write config.json + model.safetensors (+ generation_config.json) that transformers loads."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    hf_cfg = config_to_hf(model.config)
    sd = to_hf_state_dict(model)
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    # safetensors refuses shared storage: clone duplicates
    seen: dict[int, str] = {}
    for k in list(sd):
        ptr = sd[k].data_ptr()
        if ptr in seen:
            sd[k] = sd[k].clone()
        seen[ptr] = k
    hf_cfg["torch_dtype"] = str(next(iter(sd.values())).dtype).replace("torch.", "")
    out.mkdir(parents=True, exist_ok=True)
    _files.write_safetensors(out / _files.SAFE_WEIGHTS, sd)
    _files.remove_stale_weights(out)
    _files.write_json(out / "config.json", hf_cfg)
    cfg = model.config
    gen = {k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
           if getattr(cfg, k) is not None}
    for k in ("forced_bos_token_id", "forced_eos_token_id"):
        if cfg.extra.get(k) is not None:
            gen[k] = cfg.extra[k]
    _files.write_json(out / "generation_config.json", gen)
    return out
