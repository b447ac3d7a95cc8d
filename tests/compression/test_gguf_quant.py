"""GGUF Q4_0 / Q4_1 blocks kept as int4: the codes / scales / zeros reproduce gguf's own de-quantization,
a tiny llama GGUF with Q4_1 linears runs through the int4 kernel with the de-quantized model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="GGUF reading needs the gguf package (plmkit[interop])")
from gguf.quants import dequantize, quantize  # noqa: E402

from plmkit.compression.gguf_quant import keep_gguf_quantized, load_gguf_quantized, q4_codes  # noqa: E402
from plmkit.errors import UserError  # noqa: E402

HEADS, KV_HEADS, HIDDEN, FFN, LAYERS, VOCAB = 4, 2, 64, 96, 2, 50


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_codes_reproduce_gguf_dequantize(kind):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 96)).astype(np.float32)
    w[1, :32] = 0.37  # a constant block: Q4_1 stores d = 0, m = 0.37
    w[2, 32:64] = 0.0
    t = getattr(gguf.GGMLQuantizationType, kind)
    raw = quantize(w, t)
    want = dequantize(raw, t).reshape(w.shape)  # gguf's reference de-quantization
    q, scale, zero = q4_codes(kind, raw)
    assert q.shape == w.shape and q.max() <= 15 and scale.shape == zero.shape == (6, 3)
    got = (q.reshape(6, 3, 32) - zero[..., None]) * scale[..., None]
    np.testing.assert_allclose(got.reshape(w.shape), want, rtol=0, atol=1e-6)
    assert np.abs(want - w).max() > 1e-3  # it really is 4-bit


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q / k row permutation (HF rotate-half -> interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write(path, linear_type):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    for add, v in (("add_block_count", LAYERS), ("add_context_length", 64), ("add_embedding_length", HIDDEN),
                   ("add_feed_forward_length", FFN), ("add_head_count", HEADS), ("add_head_count_kv", KV_HEADS),
                   ("add_layer_norm_rms_eps", 1e-5), ("add_rope_freq_base", 10000.0), ("add_vocab_size", VOCAB)):
        getattr(w, add)(v)
    hd = HIDDEN // HEADS

    def lin(name, out, inp, n_head=None):
        a = (rng.normal(size=(out, inp)) * 0.2).astype(np.float32)
        if n_head:
            a = _permute(a, n_head)
        if linear_type == "F32":
            w.add_tensor(name, a)
        else:
            t = getattr(gguf.GGMLQuantizationType, linear_type)
            w.add_tensor(name, quantize(a, t), raw_dtype=t)

    w.add_tensor("token_embd.weight", (rng.normal(size=(VOCAB, HIDDEN)) * 0.5).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for i in range(LAYERS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", (1 + 0.1 * rng.normal(size=HIDDEN)).astype(np.float32))
        w.add_tensor(b + "ffn_norm.weight", (1 + 0.1 * rng.normal(size=HIDDEN)).astype(np.float32))
        lin(b + "attn_q.weight", HIDDEN, HIDDEN, HEADS)
        lin(b + "attn_k.weight", KV_HEADS * hd, HIDDEN, KV_HEADS)
        lin(b + "attn_v.weight", KV_HEADS * hd, HIDDEN)
        lin(b + "attn_output.weight", HIDDEN, HIDDEN)
        lin(b + "ffn_gate.weight", FFN, HIDDEN)
        lin(b + "ffn_up.weight", FFN, HIDDEN)
        lin(b + "ffn_down.weight", HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("kind", ["Q4_1", "Q4_0"])
def test_kept_blocks_give_the_dequantized_models_logits(tmp_path, kind):
    from plmkit.compression.quantization import WeightInt4Linear, set_activations
    from plmkit.interop import load_pretrained

    path = _write(tmp_path / "tiny.gguf", kind)
    ref = load_pretrained(path).eval()
    model, record = load_gguf_quantized(path)
    assert len(record["modules"]) == 5 * LAYERS and set(record["kept"].values()) == {kind}
    assert isinstance(model.layers[1].attn.qkv, WeightInt4Linear) and record["max_abs_weight_diff"] < 1e-6
    ids = torch.tensor([[3, 17, 4, 41, 9, 0, 22, 8]])
    with torch.no_grad():
        want = ref(ids).logits
        torch.testing.assert_close(model(ids).logits, want, atol=1e-4, rtol=1e-4)  # the int4 kernel, fp32
        set_activations(model, "bfloat16")
        err = (model(ids).logits - want).abs().max() / want.abs().max()
    assert 0 < err < 0.03  # bf16 activations and scales: ~3 significant digits


def test_no_q4_tensors_is_refused(tmp_path):
    from plmkit.interop import load_pretrained

    path = _write(tmp_path / "f32.gguf", "F32")
    model = load_pretrained(path)
    with pytest.raises(UserError, match="no Q4_0 / Q4_1 linear weights"):
        keep_gguf_quantized(model, path)


def test_generate_gguf_int4_bad_input_exits_2(tmp_path, capsys):
    from plmkit.cli.main import main

    path = _write(tmp_path / "f32.gguf", "F32")
    assert main(["generate", str(path), "hello", "--gguf-int4", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Q4_0 / Q4_1 linear weights" in err, err
