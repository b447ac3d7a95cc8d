"""GGUF in: a tiny llama written to GGUF here (llama.cpp's q/k permutation, Q8_0 + F32 tensors,
a byte-level BPE tokenizer in the metadata) -> ``plmkit.load`` == transformers' GGUF loader;
``plm convert`` of it -> an HF directory transformers loads, with a working tokenizer.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="GGUF parity needs transformers (plmkit[interop])")
gguf = pytest.importorskip("gguf", reason="GGUF reading needs the gguf package (plmkit[interop])")

import plmkit  # noqa: E402
from plmkit.cli.main import main as plm  # noqa: E402
from plmkit.errors import UserError  # noqa: E402

HEADS, KV_HEADS, HIDDEN, FFN, LAYERS = 4, 2, 64, 96, 2


def _byte_tokens() -> list[str]:
    """GPT-2 byte-level symbols of printable ASCII, plus specials and one merge."""
    # GPT-2's bytes_to_unicode keeps printable ASCII as is and maps the space to "Ġ" (U+0120)
    return ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "\u0120"] + [chr(b) for b in range(33, 127)] + ["he"]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half -> interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(path to tiny.gguf, the HF LlamaForCausalLM it was written from)."""
    tokens = _byte_tokens()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tokens), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=FFN,
                                   max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_block_count(LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, LAYERS)
    for name, t in hf.state_dict().items():
        module, suffix = name.rsplit(".", 1)
        arr = t.numpy().astype(np.float32)
        if module.endswith("q_proj"):
            arr = _permute(arr, HEADS)
        elif module.endswith("k_proj"):
            arr = _permute(arr, KV_HEADS)
        gname = f"{name_map.get_name(module)}.{suffix}"
        if arr.ndim == 2 and arr.shape[1] % 32 == 0:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, hf


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


def _batch():
    ids = torch.randint(3, 99, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def test_gguf_matches_transformers_gguf_loader(tiny_gguf):
    path, hf_src = tiny_gguf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = plmkit.load(path)
    c = ours.config
    assert (c.family, c.num_layers, c.hidden_size, c.num_heads, c.kv_heads, c.intermediate_size) == (
        "llama", LAYERS, HIDDEN, HEADS, KV_HEADS, FFN)
    assert not c.tie_word_embeddings and (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 0)
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    ids, mask = _batch()
    with torch.no_grad():
        a = ref(ids, attention_mask=mask).logits
        b = ours(ids, attention_mask=mask).logits
        src = hf_src(ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (a - b)[keep].abs().max().item() < 1e-4
    # and close to the unquantized source: the q/k permutation was undone (a wrong one gives O(1) errors)
    assert (src - b)[keep].abs().max().item() < 0.05


def test_convert_gguf_to_hf_dir_with_tokenizer(tiny_gguf, tmp_path, capsys):
    path, _ = tiny_gguf
    out = tmp_path / "hf"
    assert plm(["convert", str(path), str(out)]) == 0
    msg = capsys.readouterr().out
    assert "LlamaForCausalLM" in msg and "tokenizer.json" in msg
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] == KV_HEADS
    ref = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask = _batch()
    with torch.no_grad():
        d = (ref(ids, attention_mask=mask).logits - back.eval()(ids, attention_mask=mask).logits)[mask.bool()]
    assert d.abs().max().item() < 1e-5
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "hello there, he said"
    assert tok(text).input_ids == ref_tok(text).input_ids
    assert tok.decode(tok(text).input_ids) == text
    # plmkit's own tokenizer loader reads the converted directory too, and the GGUF directly
    assert plmkit.load_tokenizer(out).encode(text, add_special_tokens=False) == ref_tok(text).input_ids
    from plmkit.interop.gguf import gguf_tokenizer

    ptok = gguf_tokenizer(path)
    assert ptok.encode(text, add_special_tokens=False) == ref_tok(text).input_ids
    assert ptok.decode(ptok.encode(text, add_special_tokens=False)) == text
    # plmkit.load_tokenizer dispatches a .gguf file to interop (tokenization reads tokenizer files only)
    assert plmkit.load_tokenizer(path).encode(text, add_special_tokens=False) == ref_tok(text).input_ids
    from plmkit.tokenization import load_tokenizer as files_only

    with pytest.raises(plmkit.UserError, match="GGUF file; load its tokenizer with plmkit.load_tokenizer"):
        files_only(path)

    # a non-empty OUT_DIR is refused (exit 2, one line) unless --overwrite
    capsys.readouterr()
    assert plm(["convert", str(path), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert plm(["convert", str(path), str(out), "--overwrite", "--dtype", "bfloat16", "--no-tokenizer"]) == 0
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert not (out / "tokenizer.json").exists()  # replaced as a whole


def test_gguf_bad_input(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match="bad.gguf: not a readable GGUF file"):
        plmkit.load(bad)
    other = tmp_path / "falcon.gguf"
    w = gguf.GGUFWriter(str(other), "falcon")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="architecture 'falcon' is not supported"):
        plmkit.load(other)
