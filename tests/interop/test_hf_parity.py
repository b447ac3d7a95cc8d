"""Parity with transformers on tiny random checkpoints of every family, both directions.

HF model (random) -> save_pretrained -> ``plmkit.load`` -> same hidden states / logits / pooled /
extra heads within 1e-4 (fp32, padded batch); plmkit ``save_pretrained`` -> transformers
``from_pretrained`` with no missing or unexpected keys -> the same outputs again.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="parity tests need transformers (plmkit[interop])")

import plmkit  # noqa: E402
from interop_cases import Case, cases, hf_outputs, make_inputs, max_diffs, our_outputs  # noqa: E402

TOL = 1e-4
CASES = cases()


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


def _save_hf(case: Case, path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = case.build().eval()
    # randomise norms and biases too, so that a swapped or skipped tensor cannot go unnoticed
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hf_to_plmkit_and_back(case: Case, tmp_path):
    hf_model = _save_hf(case, tmp_path / "hf")
    inputs = make_inputs(case)
    ref = hf_outputs(hf_model, inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without any warning
        ours = plmkit.load(tmp_path / "hf")
    got = our_outputs(ours, inputs)
    diffs = max_diffs(ref, got, inputs["attention_mask"])
    assert all(d < TOL for d in diffs.values()), diffs

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.save_pretrained(tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["architectures"] == [type(hf_model).__name__]
    cls = getattr(transformers, cfg["architectures"][0])
    back, info = cls.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    back.eval()
    diffs_back = max_diffs(ref, hf_outputs(back, inputs), inputs["attention_mask"])
    assert all(d < TOL for d in diffs_back.values()), diffs_back


def test_auto_model_classes_load_the_export(tmp_path):
    """AutoModelForMaskedLM / AutoModelForCausalLM pick the right class from plmkit's config.json."""
    case = next(c for c in CASES if c.name == "roberta-mlm")
    hf_model = _save_hf(case, tmp_path / "hf")
    plmkit.load(tmp_path / "hf").save_pretrained(tmp_path / "ours")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "ours")
    assert type(back) is type(hf_model)
    case = next(c for c in CASES if c.name == "llama-gqa")
    _save_hf(case, tmp_path / "hf2")
    plmkit.load(tmp_path / "hf2").save_pretrained(tmp_path / "ours2")
    assert type(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours2")).__name__ == "LlamaForCausalLM"
    gen = json.loads((tmp_path / "ours2" / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 1, "eos_token_id": 2}


def test_left_padded_decoder_matches_hf_with_explicit_positions(tmp_path):
    """Left padding (generation batches): positions counted from the first real token, as HF does
    when given position_ids."""
    case = next(c for c in CASES if c.name == "gpt2")
    hf_model = _save_hf(case, tmp_path / "hf")
    ours = plmkit.load(tmp_path / "hf")
    ids = torch.randint(3, 99, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = hf_model(ids, attention_mask=mask, position_ids=pos).logits
        b = ours(ids, attention_mask=mask, position_ids=pos).logits
    assert float((a - b)[mask.bool()].abs().max()) < TOL


def test_pytorch_bin_and_sharded_checkpoints(tmp_path):
    case = next(c for c in CASES if c.name == "bert-pretraining")
    torch.manual_seed(0)
    hf_model = case.build().eval()
    hf_model.save_pretrained(tmp_path / "bin")  # transformers 5 writes safetensors only: make the .bin
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    hf_model.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    assert (tmp_path / "shards" / "model.safetensors.index.json").is_file()
    inputs = make_inputs(case)
    ref = hf_outputs(hf_model, inputs)
    for sub in ("bin", "shards"):
        diffs = max_diffs(ref, our_outputs(plmkit.load(tmp_path / sub), inputs), inputs["attention_mask"])
        assert all(d < TOL for d in diffs.values()), (sub, diffs)


def test_plmkit_preset_round_trips_through_transformers(tmp_path):
    """A randomly initialised plmkit preset (not HF-born) exports and reloads identically."""
    for preset in ("bert-tiny", "roberta-tiny", "albert-tiny", "electra-tiny-generator", "gpt-tiny",
                   "gpt2-tiny", "llama-tiny"):
        torch.manual_seed(0)
        model = plmkit.load(preset).eval()
        out = tmp_path / preset
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.save_pretrained(out)
        cfg = json.loads((out / "config.json").read_text())
        cls = getattr(transformers, cfg["architectures"][0])
        hf, info = cls.from_pretrained(out, output_loading_info=True)
        # bert-tiny / albert-tiny have MLM head + pooler and no NSP/SOP head (objectives add those):
        # they are saved as *ForMaskedLM plus the pooler tensors, which that class does not use
        # (as with HF's own bert-base checkpoint); save_pretrained says so.
        unused = {k for k in info["unexpected_keys"] if ".pooler." in k}
        assert not info["missing_keys"] and set(info["unexpected_keys"]) == unused, (preset, info)
        assert bool(unused) == (model.config.pooler and "pooler" not in cfg["architectures"][0].lower()
                                and cls.__name__.endswith("ForMaskedLM")), preset
        assert bool(unused) == any("pooler" in str(w.message) for w in caught), preset
        case = Case(preset, lambda: None, pad_id=model.config.pad_token_id or 0,
                    causal=model.config.causal, token_types=model.config.type_vocab_size > 1)
        inputs = make_inputs(case)
        ref = hf_outputs(hf.eval(), inputs)
        got = our_outputs(model, inputs)
        got = {k: v for k, v in got.items() if k in ref}  # HF head classes without the pooler
        ref = {k: v for k, v in ref.items() if k in got}  # ... or with a head plmkit's model lacks
        diffs = max_diffs(ref, got, inputs["attention_mask"])
        assert all(d < TOL for d in diffs.values()), (preset, diffs)
        again = plmkit.load(out)
        assert again.config == model.config, preset


def test_legacy_layouts_load_without_warnings(tmp_path):
    """Base-model key names without prefix + causal-mask buffers (OpenAI's GPT-2 port, a .bin), and
    TF-era LayerNorm gamma/beta names (old BERT ports)."""
    case = next(c for c in CASES if c.name == "gpt2")
    hf_model = _save_hf(case, tmp_path / "gpt2")
    sd = {k[len("transformer."):]: v for k, v in hf_model.state_dict().items() if k.startswith("transformer.")}
    for i in range(2):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "gpt2" / "model.safetensors").unlink()
    torch.save(sd, tmp_path / "gpt2" / "pytorch_model.bin")
    inputs = make_inputs(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = plmkit.load(tmp_path / "gpt2")
    diffs = max_diffs(hf_outputs(hf_model, inputs), our_outputs(ours, inputs), inputs["attention_mask"])
    assert all(d < TOL for d in diffs.values()), diffs

    case = next(c for c in CASES if c.name == "bert-pretraining")
    hf_model = _save_hf(case, tmp_path / "bert")
    from safetensors.torch import save_file

    old = {}
    for k, v in hf_model.state_dict().items():
        if "LayerNorm" in k:
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        old[k] = v.clone()
    old.pop("cls.predictions.decoder.weight")  # tied to the word embeddings
    save_file(old, str(tmp_path / "bert" / "model.safetensors"), metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = plmkit.load(tmp_path / "bert")
    inputs = make_inputs(case)
    diffs = max_diffs(hf_outputs(hf_model, inputs), our_outputs(ours, inputs), inputs["attention_mask"])
    assert all(d < TOL for d in diffs.values()), diffs
