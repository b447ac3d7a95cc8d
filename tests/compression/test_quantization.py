"""Quantization: outputs within stated tolerances of fp32, checkpoints reload without re-quantizing (same
outputs, int8 tensors in the file), quantizing twice is refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from plmkit.compression.quantization import QUANTIZED, Int8Embedding, WeightInt4Linear, quantize_model

# Tolerances, relative to the largest |output|: int8 per-channel weights ~0.4% of a weight's range;
# dynamic int8 also rounds the activations (7-bit, FBGEMM's reduce_range); int4 groups of 32 ~7%.
TOL = {"weight-int8": 0.01, "dynamic-int8": 0.05, "weight-int4": 0.15}


@pytest.mark.parametrize("method", list(TOL))
def test_linear_within_tolerance_of_fp32(method):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(3, 5, 64)
    q = WeightInt4Linear.from_linear(lin, 32) if method == "weight-int4" else QUANTIZED[method].from_linear(lin)
    ref = lin(x)
    with torch.no_grad():
        err = float((q(x) - ref).abs().max() / ref.abs().max())
    assert err < TOL[method], err
    assert err > 0  # it really is quantized


def test_int8_embedding():
    emb = torch.nn.Embedding(50, 16)
    q = Int8Embedding.from_embedding(emb)
    ids = torch.tensor([[1, 2, 49]])
    assert float((q(ids) - emb(ids)).abs().max()) <= float(emb.weight.abs().max()) / 127


def test_model_quantization_and_refusing_twice():
    import plmkit

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", head=None).eval()
    ids = torch.randint(5, 1000, (2, 8))
    with torch.no_grad():
        ref = model(ids).last_hidden_state
        record = quantize_model(model, "dynamic-int8")
        out = model(ids).last_hidden_state
    assert len(record["modules"]) == 2 * 4  # qkv, o, up, down in each of 2 layers
    assert float((out - ref).abs().max()) < 0.1  # post-LN hidden states are O(1)
    from plmkit.errors import UserError

    with pytest.raises(UserError, match="already quantized"):
        quantize_model(model, "weight-int8")


@pytest.fixture(scope="module")
def run_quantize(cls_run, workdir):
    from plmkit.cli.main import main

    def run(src, out, *flags):
        return main(["quantize", "--model", str(workdir / src), "--out", str(workdir / out), *flags])
    return run


@pytest.mark.parametrize("method", ["dynamic-int8", "weight-int8", "weight-int4"])
def test_quantized_checkpoint_reloads_without_requantizing(run_quantize, workdir, method, monkeypatch):
    from plmkit.compression import quantization
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.evaluation import evaluate_checkpoints

    out = f"q_{method}"
    assert run_quantize("cls", out, "--method", method, "--embeddings", "--group-size", "16") == 0
    with safe_open(str(workdir / out / "weights.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["layers.0.attn.qkv.weight_" + ("uint4x2" if method == "weight-int4" else "int8")] in ("I8", "U8")
    assert dtypes["embeddings.word.weight_int8"] == "I8"
    assert (workdir / out / "weights.safetensors").stat().st_size < (workdir / "cls" / "weights.safetensors").stat().st_size
    for name in ("quantize_model", "_int8_per_row"):  # loading must not quantize anything again
        monkeypatch.setattr(quantization, name, lambda *a, **k: pytest.fail("re-quantized on load"))
    model, obj, info, tok = load_checkpoint(workdir / out)
    fp, *_ = load_checkpoint(workdir / "cls")
    ids = torch.tensor([tok.encode("a dull and boring plot it was")])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    model.eval(), fp.eval()
    with torch.no_grad():
        a, b = obj.forward(model, batch)[1], obj.forward(fp, batch)[1]
    assert float((a - b).abs().max()) < 0.25 * float(b.abs().max())
    q_acc = evaluate_checkpoints([str(workdir / out)], str(workdir))["accuracy"]
    fp_acc = evaluate_checkpoints([str(workdir / "cls")], str(workdir))["accuracy"]
    assert q_acc >= fp_acc - 0.05


def test_quantizing_twice_exits_2(run_quantize, workdir, capsys):
    assert run_quantize("cls", "q_once", "--method", "weight-int8") == 0
    capsys.readouterr()
    assert run_quantize("q_once", "q_twice", "--method", "dynamic-int8") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already quantized" in err, err


def test_fake_quant_straight_through():
    from plmkit.compression.quantization import fake_quant_int8

    x = torch.tensor([0.1, -0.5, 1.27], requires_grad=True)
    y = fake_quant_int8(x)
    assert y.tolist() == pytest.approx([0.1, -0.5, 1.27], abs=0.01 / 2 + 1e-6)  # scale 1.27 / 127 = 0.01
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_qat_int8_trains_and_stores_dynamic_int8(run_quantize, workdir):
    from plmkit.tasks.checkpoint import load_checkpoint

    assert run_quantize("cls", "q_qat", "--method", "qat-int8", "--data", str(workdir), "--epochs", "1",
                        "--lr", "1e-3", "--batch-size", "16") == 0
    res = json.loads((workdir / "q_qat" / "eval.json").read_text())
    assert res["train_steps"] == 10 and 0 <= res["accuracy"] <= 1
    model, _, info, _ = load_checkpoint(workdir / "q_qat")
    assert info["compression"]["quantization"]["qat"] and type(model.layers[0].attn.qkv).__name__ == "DynamicInt8Linear"


def test_int4_kernel_matches_the_dequantized_weight():
    torch.manual_seed(0)
    q = WeightInt4Linear.from_linear(torch.nn.Linear(128, 64), 32)
    x = torch.randn(2, 3, 128)
    with torch.no_grad():
        want = torch.nn.functional.linear(x, q.dequantized_weight(), q.bias)
        torch.testing.assert_close(q(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(q(x.double()), want.double(), atol=1e-5, rtol=1e-5)  # the dequantized path


@pytest.mark.parametrize("method", ["weight-int8", "weight-int4"])
def test_bf16_activations_close_to_the_dequantized_weight_and_recorded(method):
    """bf16 inputs / scales for the weight-only kernels: within bf16 rounding of the fp32 result; the record
    carries it and ``swap_in_empty`` restores it; dynamic-int8 refuses it."""
    import plmkit
    from plmkit.compression.quantization import swap_in_empty
    from plmkit.errors import UserError

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", head=None).eval()
    ids = torch.randint(5, 1000, (2, 8))
    record = quantize_model(model, method, group_size=32)
    with torch.no_grad():
        fp = model(ids).last_hidden_state
        m = model.layers[0].mlp.up
        x = torch.randn(5, m.in_features)
        want = m(x)
        record = quantize_model(plmkit.load("bert-tiny", head=None), method, 32, activations="bfloat16")
        m.activations = "bfloat16"
        got = m(x)
    err = float((got - want).abs().max() / want.abs().max())
    assert 0 < err < 0.02, err
    assert record["activations"] == "bfloat16"
    fresh = plmkit.load("bert-tiny", head=None).eval()
    swap_in_empty(fresh, record)
    fresh.load_state_dict(model.state_dict())
    assert fresh.layers[1].attn.qkv.activations == "bfloat16"
    with torch.no_grad():
        assert float((fresh(ids).last_hidden_state - fp).abs().max()) < 0.1
    with pytest.raises(UserError, match="--activations"):
        quantize_model(plmkit.load("bert-tiny", head=None), "dynamic-int8", activations="bfloat16")


def test_qat_control_arm_trains_in_fp32(cls_run, workdir):
    from plmkit.compression.checkpoints import qat_checkpoint
    from plmkit.tasks.checkpoint import load_checkpoint

    res = qat_checkpoint(str(workdir / "cls"), str(workdir / "q_ctl"), str(workdir), epochs=1, lr=1e-3,
                         batch_size=16, fake_quant=False)
    assert res["train_steps"] == 10 and not res["compression"].get("quantization")
    model, _, info, _ = load_checkpoint(workdir / "q_ctl")
    assert type(model.layers[0].attn.qkv) is torch.nn.Linear
    assert info["compressed_from"][-1]["finetune"] == "fp32 (qat control)"
