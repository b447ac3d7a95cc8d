"""Switch Transformers configs as the installed transformers writes them.

transformers' ``SwitchTransformersStack`` reads ``encoder_sparse_step`` / ``decoder_sparse_step``; the config
derives them from ``num_sparse_*_layers`` unless they are passed, and ``save_pretrained`` writes both (with
the default ``num_sparse_*_layers: 3`` even when the step was given). Every config here is written by
``SwitchTransformersConfig(...).save_pretrained`` or by a real tiny model's ``save_pretrained``."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit.errors import UserError  # noqa: E402
from plmkit.interop.seq2seq import config_from_hf, load_seq2seq  # noqa: E402

V = 60
TINY = dict(vocab_size=V, d_model=16, d_kv=4, d_ff=32, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=20, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
            dropout_rate=0.0, num_experts=4, expert_capacity=64, router_jitter_noise=0.0)


def _saved_hf_model(tmp_path, **cfg):
    torch.manual_seed(0)
    hf = transformers.SwitchTransformersForConditionalGeneration(
        transformers.SwitchTransformersConfig(**TINY, **cfg)).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if "router" in n:
                p.normal_(0.0, 1.0)  # make routing decisive so a wrong expert placement shows in the logits
    hf.save_pretrained(tmp_path)
    return hf


def _check_parity(hf, ours):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (2, 7), generator=g)
    dec = torch.randint(3, V, (2, 5), generator=g)
    am = torch.ones_like(ids)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=am, decoder_input_ids=dec).logits
        got = ours(ids, am, dec).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _sparse_flags(model, side):
    return [b.is_sparse for b in getattr(model, side).block]


@pytest.mark.parametrize("layers,step", [(2, 1), (4, 2), (3, 1)])
def test_explicit_sparse_step_written_by_transformers_loads_with_parity(tmp_path, layers, step):
    """The issue's config: encoder_sparse_step=1 with the default num_sparse_encoder_layers=3."""
    hf = _saved_hf_model(tmp_path, num_layers=layers, num_decoder_layers=layers, encoder_sparse_step=step,
                         decoder_sparse_step=step)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["encoder_sparse_step"] == step and saved["num_sparse_encoder_layers"] == 3  # as transformers wrote it
    ours = load_seq2seq(tmp_path).eval()
    assert ours.config.moe_every == step
    assert [ours.config.is_sparse(i) for i in range(layers)] == _sparse_flags(hf, "encoder")
    assert [ours.config.is_sparse(i) for i in range(layers)] == _sparse_flags(hf, "decoder")
    _check_parity(hf, ours)


def test_sparse_step_derived_from_num_sparse_layers(tmp_path):
    """Configs that only give num_sparse_*_layers (the published checkpoints' style) still load."""
    hf = _saved_hf_model(tmp_path, num_layers=4, num_decoder_layers=4, num_sparse_encoder_layers=2,
                         num_sparse_decoder_layers=2)
    assert _sparse_flags(hf, "encoder") == [False, True, False, True]
    ours = load_seq2seq(tmp_path).eval()
    assert ours.config.moe_every == 2
    _check_parity(hf, ours)
    # an older config.json without the derived step fields: derived the same way as transformers does
    cfg = json.loads((tmp_path / "config.json").read_text())
    for k in ("encoder_sparse_step", "decoder_sparse_step"):
        cfg.pop(k)
    assert config_from_hf(cfg, has_lm_head=True).moe_every == 2


def test_unsupported_steps_name_the_fields(tmp_path):
    transformers.SwitchTransformersConfig(**TINY, num_layers=2, num_decoder_layers=2, encoder_sparse_step=1,
                                          decoder_sparse_step=2).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(UserError, match="encoder_sparse_step=1 and decoder_sparse_step=2"):
        config_from_hf(cfg, has_lm_head=True)
    # the default num_sparse_*_layers=3 with 2 layers gives step 0: a model with no experts at all
    transformers.SwitchTransformersConfig(**TINY, num_layers=2, num_decoder_layers=2).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(UserError, match="encoder_sparse_step=0"):
        config_from_hf(cfg, has_lm_head=True)


def test_plmkit_save_is_read_by_transformers_with_the_same_sparse_layers(tmp_path):
    """moe_every=2 with 3 layers had no num_sparse_* equivalent; the written step fields make it exact."""
    from plmkit.models import presets

    torch.manual_seed(0)
    ours = presets.build("switch-tiny", vocab_size=V, hidden_dropout=0.0, attention_dropout=0.0,
                             router_jitter_noise=0.0, expert_capacity=64, num_layers=3, num_decoder_layers=3,
                             moe_every=2).eval()
    ours.save_pretrained(tmp_path)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert _sparse_flags(hf, "encoder") == [ours.config.is_sparse(i) for i in range(3)] == [False, True, False]
    _check_parity(hf, ours)
