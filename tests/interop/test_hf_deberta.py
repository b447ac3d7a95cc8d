"""Parity with transformers for DeBERTa v1 (model_type deberta), v2 and v3 (deberta-v2):
HF -> plmkit and plmkit -> HF, every hidden state and the MLM logits within 1e-4."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit.interop.deberta import load_deberta  # noqa: E402
from plmkit.models import presets  # noqa: E402




def _randomise(model) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "norm" in n:
                p.copy_((0.0 if n.endswith("bias") else 1.0) + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)


COMMON = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
              relative_attention=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CASES = {
    "v3": lambda: transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(
        **COMMON, pos_att_type=["p2c", "c2p"], position_buckets=4, max_relative_positions=16,
        norm_rel_ebd="layer_norm", share_att_key=True, legacy=False, position_biased_input=False, type_vocab_size=0)),
    "v2": lambda: transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(
        **COMMON, pos_att_type=["c2p", "p2c"], max_relative_positions=6, position_biased_input=True,
        type_vocab_size=2)),
    "v1": lambda: transformers.DebertaForMaskedLM(transformers.DebertaConfig(
        **COMMON, pos_att_type=["c2p", "p2c"], max_relative_positions=5, position_biased_input=False)),
    "v2-c2p-only": lambda: transformers.DebertaV2Model(transformers.DebertaV2Config(
        **COMMON, pos_att_type=["c2p"], position_buckets=8, max_relative_positions=32)),
}


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (2, 11), generator=g)
    am = torch.ones(2, 11, dtype=torch.long)
    am[1, 7:] = 0
    return ids, am


def _compare(hf, ours):
    ids, am = _inputs()
    real = am.bool()
    with torch.no_grad():
        r = hf(input_ids=ids, attention_mask=am, output_hidden_states=True)
        o = ours(ids, am, output_hidden_states=True)
    for a, b in zip(r.hidden_states, o.hidden_states):
        torch.testing.assert_close(b[real], a[real], atol=1e-4, rtol=1e-4)
    if getattr(r, "logits", None) is not None:
        torch.testing.assert_close(o.logits[real], r.logits[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_hf_to_plmkit(case, tmp_path):
    torch.manual_seed(0)
    hf = CASES[case]()
    _randomise(hf)
    hf.eval().save_pretrained(tmp_path)
    ours = load_deberta(tmp_path)
    _compare(hf, ours)


@pytest.mark.parametrize("name", ["deberta-tiny", "deberta-v3-tiny"])
def test_plmkit_to_hf(name, tmp_path):
    torch.manual_seed(0)
    ours = presets.build(name, vocab_size=60, hidden_dropout=0.0, attention_dropout=0.0, emd_layers=0)
    _randomise(ours)
    if name == "deberta-tiny":  # v1 has no key bias / pos_proj bias
        with torch.no_grad():
            for layer in ours.layers:
                layer.attn.qkv.bias[64:128].zero_()
                layer.attn.pos_key_proj.bias.zero_()
    ours.eval().save_pretrained(tmp_path)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    _compare(hf, ours)
    back = load_deberta(tmp_path)
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)


def test_plmkit_load_dispatches_deberta_dirs(tmp_path):
    from plmkit.models import load

    hf = CASES["v3"]()
    hf.save_pretrained(tmp_path)
    m = load(tmp_path)
    assert type(m).__name__ == "DeBERTa" and m.config.family == "deberta-v2"
