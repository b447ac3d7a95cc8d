"""An HF-format llama or gpt2 directory -> a GGUF (llama.cpp) file, written with the ``gguf`` package.

``plm convert SRC_DIR OUT.gguf --to gguf [--dtype float32|float16|q8_0]``. The model goes through
plmkit (``load_pretrained`` then the family's HF name map), so what is written is what plmkit would
save as HF; tensor names come from gguf's own ``TensorNameMap`` (``model.layers.3.self_attn.q_proj``
-> ``blk.3.attn_q``), and the layout follows llama.cpp's ``convert_hf_to_gguf.py``:

* llama: the rows of q and k are permuted to interleave the two rotary halves (``LlamaModel.permute``;
  k with the kv-head count); ``gguf.read_gguf`` undoes it on the way back.
* gpt2: HF's ``Conv1D`` weights (in, out) are transposed to (out, in) like every other linear layer.
* A tied output layer is not written (``output.weight`` absent means "use token_embd", as in llama.cpp).
* dtype: 1-D tensors (norms, biases) stay F32 as llama.cpp writes them; ``float16`` stores the
  matrices as F16; ``q8_0`` stores each matrix whose rows are a multiple of 32 values as Q8_0 (the
  others as F16), like llama.cpp's ``--outtype q8_0``.

The tokenizer (byte-level BPE only: ``tokenizer.ggml.model = "gpt2"``) is written from the
directory's tokenizer: tokens in id order (ids the tokenizer does not use, up to the model's
vocabulary size, become ``[PAD{id}]`` of type UNUSED), special added tokens as CONTROL, other added
tokens as USER_DEFINED, the merges, the pre-tokenizer name llama.cpp knows it by, the bos / eos /
pad / unk ids, ``add_bos_token`` / ``add_eos_token`` and the chat template when there is one.
transformers' GGUF loader (``from_pretrained(dir, gguf_file=...)``) and plmkit's ``read_gguf`` read
the result back (transformers reads ``gpt2.context_length`` into ``n_ctx`` and keeps its default
``n_positions=1024``, so it loads gpt2 files of 1024 positions only, and it has no llama
``attention_bias``, so it drops q/k/v biases; plmkit and llama.cpp read both).

References: GGUF spec https://github.com/ggml-org/ggml/blob/master/docs/gguf.md; llama.cpp
``convert_hf_to_gguf.py`` (``LlamaModel``, ``GPT2Model``, ``_set_vocab_gpt2``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import UserError

DTYPES = ("float32", "float16", "q8_0")
FAMILIES = ("llama", "gpt2")

# tokenizer.ggml.token_type values (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5

# the Split regex that llama.cpp calls "llama-bpe" (llama 3 and the byte-level BPEs built like it)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation: HF rotate-half rows -> (n_head, 2, d/2) interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------- tokenizer
def _pre_tokenizer_name(pre: dict | None, where: str) -> str:
    """The ``tokenizer.ggml.pre`` name of a byte-level BPE pre-tokenizer (tokenizers JSON)."""
    def byte_level(p: dict, use_regex: bool) -> bool:
        if p.get("type") != "ByteLevel":
            return False
        if p.get("add_prefix_space"):
            raise UserError(f"{where}: ByteLevel add_prefix_space=true has no GGUF equivalent")
        return bool(p.get("use_regex", True)) == use_regex

    if pre is None:
        raise UserError(f"{where}: the tokenizer has no pre-tokenizer; GGUF export writes byte-level BPE tokenizers")
    if byte_level(pre, True):
        return "gpt-2"  # llama.cpp LLAMA_VOCAB_PRE_TYPE_GPT2 (it rejects "gpt2")
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2:
        a, b = steps
        if a.get("type") == "Digits" and a.get("individual_digits") and byte_level(b, True):
            return "smollm"  # llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM: digits one by one, then the GPT-2 regex
        if (a.get("type") == "Split" and (a.get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT
                and byte_level(b, False)):
            return "llama-bpe"
    raise UserError(f"{where}: pre-tokenizer {json.dumps(pre)[:200]} has no llama.cpp name (GGUF export knows "
                    "GPT-2's ByteLevel, SmolLM's Digits+ByteLevel and llama 3's split); pass --no-tokenizer")


def _adds_special(post: dict | None) -> tuple[bool, bool]:
    """(adds a token before, adds a token after) a single sequence, from a tokenizers post-processor."""
    if post is None:
        return False, False
    if post.get("type") == "Sequence":
        flags = [_adds_special(p) for p in post.get("processors", [])]
        return any(f[0] for f in flags), any(f[1] for f in flags)
    if post.get("type") in ("RobertaProcessing", "BertProcessing"):
        return True, True
    if post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        return bool(single) and "SpecialToken" in single[0], bool(single) and "SpecialToken" in single[-1]
    return False, False


def _chat_template(src: Path, config: dict) -> str | None:
    t = config.get("chat_template")
    if isinstance(t, str) and t:
        return t
    if (src / "chat_template.jinja").is_file():
        return (src / "chat_template.jinja").read_text(encoding="utf-8")
    return None


def tokenizer_metadata(src: str | Path, vocab_size: int, model_ids: dict[str, int | None]) -> dict[str, Any]:
    """The ``tokenizer.*`` GGUF fields for the byte-level BPE tokenizer in directory ``src``.

    ``vocab_size`` is the model's (the token list is padded to it); ``model_ids`` holds the model
    config's ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id``, which win over the tokenizer's."""
    from plmkit.tokenization import load_tokenizer

    src = Path(src)
    tok = load_tokenizer(src)
    spec = json.loads(tok.backend.to_str())
    where = f"{src}/tokenizer.json"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(f"{where}: a {model.get('type')} tokenizer; GGUF export writes byte-level BPE tokenizers "
                        "only (pass --no-tokenizer to write the model alone)")
    if spec.get("normalizer") is not None:
        raise UserError(f"{where}: a normalizer ({spec['normalizer'].get('type')}) has no GGUF equivalent for a "
                        "byte-level BPE; pass --no-tokenizer")
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"), where)
    by_id: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in model["vocab"].items()}
    for a in spec.get("added_tokens") or []:
        by_id[a["id"]] = (a["content"], CONTROL if a.get("special") else USER_DEFINED)
    n = max(by_id) + 1
    if n > vocab_size:
        raise UserError(f"{where}: the tokenizer has ids up to {n - 1} but the model's vocabulary has {vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):
        t, kind = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(t)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    cfg_path = src / "tokenizer_config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    add_bos, add_eos = _adds_special(spec.get("post_processor"))
    add_bos = bool(config.get("add_bos_token", add_bos))
    add_eos = bool(config.get("add_eos_token", add_eos))

    def tid(role: str, key: str) -> int | None:
        if model_ids.get(key) is not None:
            return int(model_ids[key])
        token = getattr(tok, f"{role}_token", None)
        return tok.backend.token_to_id(token) if isinstance(token, str) else None

    meta: dict[str, Any] = {"model": "gpt2", "pre": pre, "tokens": tokens, "token_types": types, "merges": merges,
                            "add_bos_token": add_bos, "add_eos_token": add_eos,
                            "bos_token_id": tid("bos", "bos_token_id"), "eos_token_id": tid("eos", "eos_token_id"),
                            "pad_token_id": tid("pad", "pad_token_id"), "unk_token_id": tid("unk", "unk_token_id"),
                            "chat_template": _chat_template(src, config)}
    return meta


# ---------------------------------------------------------------------------- model
def _hf_tensors(model) -> tuple[dict, dict[str, torch.Tensor]]:
    """(HF config dict, HF-named float32 state dict) of a plmkit causal LM, as ``save_pretrained`` names them."""
    from plmkit.interop import _hf, hf_config_of

    hf_cfg, arch, parts = hf_config_of(model)
    if hf_cfg["model_type"] not in FAMILIES:
        raise UserError(f"GGUF export: model_type {hf_cfg['model_type']!r} is not supported "
                        f"(expected one of {', '.join(FAMILIES)})")
    if "lm" not in parts:
        raise UserError("GGUF export: the model has no language-model head (GGUF holds causal LMs)")
    spec = _hf.FAMILIES[hf_cfg["model_type"]]
    sd = {k: v.detach().float() for k, v in model.named_parameters()}
    hf_sd, leftover = _hf.to_hf_state_dict(spec, sd, model.config, prefixed=arch != next(iter(spec.architectures)))
    if leftover:
        raise UserError(f"GGUF export: tensors with no Hugging Face name: {', '.join(leftover[:6])}")
    return hf_cfg, hf_sd


def _metadata(w, hf: dict, cfg) -> None:
    """The architecture's hyper-parameters (llama.cpp's names)."""
    if hf["model_type"] == "llama":
        w.add_context_length(int(hf["max_position_embeddings"]))
        w.add_embedding_length(int(hf["hidden_size"]))
        w.add_block_count(int(hf["num_hidden_layers"]))
        w.add_feed_forward_length(int(hf["intermediate_size"]))
        w.add_head_count(int(hf["num_attention_heads"]))
        w.add_head_count_kv(int(hf["num_key_value_heads"]))
        w.add_layer_norm_rms_eps(float(hf["rms_norm_eps"]))
        w.add_rope_freq_base(float(hf["rope_theta"]))
        w.add_rope_dimension_count(int(hf["head_dim"]))
        if int(hf["head_dim"]) * int(hf["num_attention_heads"]) != int(hf["hidden_size"]):
            w.add_key_length(int(hf["head_dim"]))
            w.add_value_length(int(hf["head_dim"]))
    else:
        if cfg.activation != "gelu_new":
            raise UserError(f"GGUF export: gpt2 with activation {cfg.activation!r}; llama.cpp's gpt2 uses the tanh "
                            "GELU (gelu_new)")
        w.add_context_length(int(hf["n_positions"]))
        w.add_embedding_length(int(hf["n_embd"]))
        w.add_block_count(int(hf["n_layer"]))
        w.add_feed_forward_length(int(hf.get("n_inner") or 4 * hf["n_embd"]))
        w.add_head_count(int(hf["n_head"]))
        w.add_layer_norm_eps(float(hf["layer_norm_epsilon"]))
    w.add_vocab_size(int(hf["vocab_size"]))


def _gguf_tensors(hf: dict, hf_sd: dict[str, torch.Tensor]):
    """Yield (GGUF name, float32 numpy array in torch order) for every tensor to write."""
    import gguf

    mt = hf["model_type"]
    arch = gguf.MODEL_ARCH.LLAMA if mt == "llama" else gguf.MODEL_ARCH.GPT2
    n_layers = int(hf["num_hidden_layers"] if mt == "llama" else hf["n_layer"])
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    for key, t in hf_sd.items():
        module, _, suffix = key.rpartition(".")
        name = name_map.get_name(module)
        if name is None:
            raise UserError(f"GGUF export: no GGUF name for tensor {key!r}")
        arr = t.numpy()
        if mt == "llama" and name.endswith(".attn_q"):
            arr = _permute(arr, int(hf["num_attention_heads"]))
        elif mt == "llama" and name.endswith(".attn_k"):
            arr = _permute(arr, int(hf["num_key_value_heads"]))
        elif mt == "gpt2" and arr.ndim == 2 and name.rpartition(".")[2] in ("attn_qkv", "attn_output", "ffn_up",
                                                                              "ffn_down"):
            arr = arr.T  # Conv1D (in, out) -> (out, in)
        yield f"{name}.{suffix}", np.ascontiguousarray(arr, dtype=np.float32)


def _add_tensor(w, name: str, arr: np.ndarray, dtype: str) -> None:
    import gguf

    Q = gguf.GGMLQuantizationType
    if arr.ndim == 1 or dtype == "float32":
        w.add_tensor(name, arr)
    elif dtype == "q8_0" and arr.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        q = gguf.quants.quantize(arr, Q.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
    else:
        w.add_tensor(name, arr.astype(np.float16))


def export_gguf(src: str | Path, out: str | Path, dtype: str = "float32", overwrite: bool = False,
                tokenizer: bool = True) -> dict:
    """Write the llama / gpt2 model in HF-format directory ``src`` as the GGUF file ``out``.

    The file is written next to ``out`` and renamed into place when complete. Returns a summary
    dict: ``out``, ``model_type``, ``dtype``, ``num_tensors``, ``num_parameters``, ``bytes``,
    ``seconds``, ``tokenizer`` (bool), ``chat_template`` (bool)."""
    try:
        import gguf
    except ImportError as e:  # pragma: no cover - gguf is a declared extra
        raise UserError("GGUF export needs the 'gguf' package (pip install 'plmkit[interop]')") from e
    from plmkit.interop import load_pretrained

    t0 = time.perf_counter()
    src_p, out_p = Path(src), Path(out)
    if dtype not in DTYPES:
        raise UserError(f"GGUF export: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if not src_p.is_dir():
        raise UserError(f"{src}: GGUF export reads an HF-format model directory (config.json + weights)")
    if out_p.suffix.lower() != ".gguf":
        raise UserError(f"{out}: the output of --to gguf is a file named *.gguf")
    if out_p.exists() and not overwrite:
        raise UserError(f"{out}: exists (pass --overwrite to replace it)")
    model = load_pretrained(src_p)
    hf, hf_sd = _hf_tensors(model)
    tok = None
    if tokenizer:
        ids = {k: hf.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        tok = tokenizer_metadata(src_p, int(hf["vocab_size"]), ids)

    out_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_p.with_name(f".{out_p.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), hf["model_type"])
    n_tensors = 0
    try:
        w.add_name(src_p.resolve().name)
        ftype = {"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
        w.add_file_type(int(ftype))
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _metadata(w, hf, model.config)
        if tok is not None:
            w.add_tokenizer_model(tok["model"])
            w.add_tokenizer_pre(tok["pre"])
            w.add_token_list(tok["tokens"])
            w.add_token_types(tok["token_types"])
            w.add_token_merges(tok["merges"])
            for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
                if tok[key] is not None:
                    getattr(w, f"add_{key}")(int(tok[key]))
            w.add_add_bos_token(tok["add_bos_token"])
            w.add_add_eos_token(tok["add_eos_token"])
            if tok["chat_template"]:
                w.add_chat_template(tok["chat_template"])
        for name, arr in _gguf_tensors(hf, hf_sd):
            _add_tensor(w, name, arr, dtype)
            n_tensors += 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out_p)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"out": str(out_p), "model_type": hf["model_type"], "dtype": dtype, "num_tensors": n_tensors,
            "num_parameters": sum(p.numel() for p in model.parameters()), "bytes": out_p.stat().st_size,
            "seconds": time.perf_counter() - t0, "tokenizer": tok is not None,
            "chat_template": bool(tok and tok["chat_template"])}
