"""GGUF (llama.cpp) files -> Hugging Face-named tensors + config, for llama and gpt2 models.

A GGUF file is read with the ``gguf`` package (memory-mapped ``GGUFReader``); quantized tensors
(Q4_0, Q4_1, Q8_0, K-quants, F16, BF16, ...) are de-quantized to float32 with
``gguf.quants.dequantize``. Tensor names are translated with gguf's own ``TensorNameMap``
(``blk.3.attn_q`` <-> ``model.layers.3.self_attn.q_proj``), so the result is an HF llama state dict
that ``plmkit.interop.hf`` loads like any other checkpoint.

llama.cpp's converter permutes the rows of q and k (``LlamaModel.permute`` in
``convert_hf_to_gguf.py``) to interleave the two rotary halves; ``_unpermute`` undoes it, exactly as
transformers' ``LlamaTensorProcessor._reverse_permute_weights`` does (k uses the kv-head count).

The tokenizer is rebuilt from the GGUF metadata by transformers (``AutoTokenizer.from_pretrained(
dir, gguf_file=...)``, the optional ``interop`` extra): ``load_gguf_tokenizer`` returns that HF
tokenizer, ``gguf_tokenizer`` a plmkit ``Tokenizer``.

References: GGUF spec https://github.com/ggml-org/ggml/blob/master/docs/gguf.md;
transformers ``modeling_gguf_pytorch_utils.py``; llama.cpp ``convert_hf_to_gguf.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from plmkit.errors import UserError

SUPPORTED_ARCHITECTURES = ("llama", "gpt2")


def _reader(path: str | Path):
    try:
        from gguf import GGUFReader
    except ImportError as e:  # pragma: no cover - gguf is a declared extra
        raise UserError(f"{path}: reading GGUF files needs the 'gguf' package (pip install 'plmkit[interop]')") from e
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such GGUF file")
    try:
        return GGUFReader(str(p))
    except Exception as e:  # the reader raises ValueError / struct errors on corrupt files
        raise UserError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (n_head, 2, d/2) interleaved -> HF rotate-half rows."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def gguf_config(path: str | Path, reader=None) -> dict:
    """An HF ``config.json``-style dict (model_type llama) from a GGUF file's metadata."""
    reader = reader or _reader(path)
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{path}: GGUF architecture {arch!r} is not supported; expected one of {SUPPORTED_ARCHITECTURES}"
        )
    a = arch + "."

    def need(key: str) -> Any:
        v = _field(reader, a + key)
        if v is None:
            raise UserError(f"{path}: GGUF metadata key {a + key!r} is missing")
        return v

    scaling = _field(reader, a + "rope.scaling.type")
    if scaling not in (None, "none"):
        raise UserError(f"{path}: rope scaling {scaling!r} is not supported (only plain RoPE)")
    tensor_names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in tensor_names:
        raise UserError(f"{path}: tensor 'rope_freqs.weight' (llama-3 rope scaling) is not supported")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _field(reader, a + "vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None:
        raise UserError(f"{path}: no {a}vocab_size and no tokenizer.ggml.tokens to count the vocabulary")
    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, a + "attention.head_count_kv") or heads),
        "head_dim": int(_field(reader, a + "rope.dimension_count") or hidden // heads),
        "intermediate_size": int(need("feed_forward_length")),
        "max_position_embeddings": int(_field(reader, a + "context_length") or 2048),
        "rms_norm_eps": float(_field(reader, a + "attention.layer_norm_rms_epsilon") or 1e-6),
        "rope_theta": float(_field(reader, a + "rope.freq_base") or 10000.0),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
    }
    if arch == "gpt2":  # llama.cpp's gpt2: learned positions, LayerNorm, tanh GELU
        cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": int(vocab),
               "n_embd": hidden, "n_layer": int(need("block_count")), "n_head": heads,
               "n_inner": int(need("feed_forward_length")), "n_positions": int(need("context_length")),
               "activation_function": "gelu_new",
               "layer_norm_epsilon": float(_field(reader, a + "attention.layer_norm_epsilon") or 1e-5),
               "tie_word_embeddings": "output.weight" not in tensor_names}
    for ours, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        v = _field(reader, "tokenizer.ggml." + key)
        if v is not None:
            cfg[ours] = int(v)
    return cfg


def read_gguf(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a llama or gpt2 GGUF file (``gguf_export`` writes them).

    Returns:
        (HF-style config dict, HF llama state dict of float32 tensors named ``model.layers.0...``).
    """
    from gguf.quants import dequantize

    reader = _reader(path)
    cfg = gguf_config(path, reader)
    gpt2 = cfg["model_type"] == "gpt2"
    gguf_to_hf = _hf_module_names(cfg)
    sd: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        module, _, suffix = t.name.rpartition(".")
        if module not in gguf_to_hf:
            raise UserError(f"{path}: unexpected GGUF tensor {t.name!r} (shape {tuple(int(x) for x in t.shape)})")
        hf_name = f"{gguf_to_hf[module]}.{suffix}"
        try:
            w = dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise UserError(f"{path}: tensor {t.name!r} uses quantization {t.tensor_type.name}, "
                            f"which gguf cannot de-quantize ({e})") from e
        # GGUF shapes are (ne0, ne1, ...) with ne0 the fastest axis: torch order is reversed
        want = tuple(int(x) for x in reversed(t.shape))
        w = np.asarray(w, dtype=np.float32).reshape(want)
        if gpt2:
            if w.ndim == 2 and module.rpartition(".")[2] in ("attn_qkv", "attn_output", "ffn_up", "ffn_down"):
                w = w.T  # llama.cpp stores HF's Conv1D (in, out) weights as (out, in)
        else:
            w = _unpermute_qk(w, module, cfg)
        if not w.flags.writeable or not w.flags.c_contiguous:  # F32 tensors are views of the mmap (or transposed)
            w = np.array(w, dtype=np.float32, order="C", copy=True)
        sd[hf_name] = torch.from_numpy(w)
    return cfg, sd


def _unpermute_qk(w: np.ndarray, module: str, cfg: dict) -> np.ndarray:
    """llama: undo the q / k row permutation (rows are whole quantization blocks, so raw blocks work too)."""
    if module.endswith(".attn_q"):
        return _unpermute(w, cfg["num_attention_heads"])
    if module.endswith(".attn_k"):
        return _unpermute(w, cfg["num_key_value_heads"])
    return w


def _hf_module_names(cfg: dict) -> dict[str, str]:
    """GGUF module name -> HF module name (``blk.3.attn_q`` -> ``model.layers.3.self_attn.q_proj``)."""
    from gguf import MODEL_ARCH, get_tensor_name_map

    from plmkit.interop.hf import FAMILIES, _expand

    gpt2 = cfg["model_type"] == "gpt2"
    spec = FAMILIES[cfg["model_type"]]  # the family's HF rule table
    n_layers = cfg["n_layer" if gpt2 else "num_hidden_layers"]
    name_map = get_tensor_name_map(MODEL_ARCH.GPT2 if gpt2 else MODEL_ARCH.LLAMA, n_layers)
    # GGUF module name -> HF module name, from our own llama rule table
    gguf_to_hf: dict[str, str] = {}

    for rule in _expand(spec, n_layers, share_layers=False):
        for hf_name in rule.hf:
            module = hf_name[: -len(".weight")] if hf_name.endswith(".weight") else hf_name
            full = (spec.prefix if rule.prefixed else "") + module
            g = name_map.get_name(full)
            if g is not None:
                gguf_to_hf[g] = full
    return gguf_to_hf


def read_gguf_blocks(path: str | Path, types: tuple[str, ...] = ("Q4_0", "Q4_1")) -> dict[str, tuple[str, np.ndarray]]:
    """The raw quantization blocks of a llama GGUF file's 2-D tensors stored in one of ``types``, not
    de-quantized: ``{hf_name: (type name, uint8 array (rows, bytes per row))}``, rows in HF order (q / k
    rows un-permuted like :func:`read_gguf`). ``plmkit.compression.gguf_quant`` turns them into kernels."""
    reader = _reader(path)
    cfg = gguf_config(path, reader)
    if cfg["model_type"] != "llama":
        raise UserError(f"{path}: keeping GGUF weights quantized is supported for llama files only")
    gguf_to_hf = _hf_module_names(cfg)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for t in reader.tensors:
        module, _, suffix = t.name.rpartition(".")
        if t.tensor_type.name not in types or len(t.shape) != 2 or module not in gguf_to_hf:
            continue
        raw = np.asarray(t.data, dtype=np.uint8)
        raw = raw.reshape(int(t.shape[1]), -1)  # one row per output unit (ne1), its blocks along ne0
        out[f"{gguf_to_hf[module]}.{suffix}"] = (t.tensor_type.name, np.ascontiguousarray(_unpermute_qk(raw, module, cfg)))
    return out


def load_gguf_tokenizer(path: str | Path):
    """Build a ``transformers`` fast tokenizer from a GGUF file's metadata (needs ``transformers``).

    Returns a ``PreTrainedTokenizerFast``; ``tok.backend_tokenizer`` is the HF ``tokenizers.Tokenizer``
    and ``tok.save_pretrained(dir)`` writes ``tokenizer.json`` + ``tokenizer_config.json``.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise UserError(
            f"{path}: building a tokenizer from GGUF metadata needs transformers (pip install 'plmkit[interop]')"
        ) from e
    p = Path(path).resolve()
    _reader(p)  # clear error for a missing / corrupt file
    try:
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as e:  # transformers raises ValueError/KeyError for unsupported tokenizer models
        raise UserError(f"{path}: transformers could not build a tokenizer from the GGUF metadata ({e})") from e


def gguf_tokenizer(path: str | Path):
    """A plmkit ``Tokenizer`` for a GGUF file: transformers rebuilds it from the metadata
    (``load_gguf_tokenizer``), it is written as ``tokenizer.json`` + config to a temp dir and read
    back with ``plmkit.load_tokenizer`` (so special tokens and the chat template come along)."""
    import tempfile

    from plmkit.tokenization.tokenizer import load_tokenizer

    hf_tok = load_gguf_tokenizer(path)
    with tempfile.TemporaryDirectory(prefix="plmkit-gguf-tok-") as d:
        hf_tok.save_pretrained(d)
        return load_tokenizer(d)
