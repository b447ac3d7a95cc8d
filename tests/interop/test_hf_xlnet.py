"""Parity with transformers for XLNet: HF -> plmkit and plmkit -> HF (logits with padding and
segments, two-stream logits with perm_mask + target_mapping, memory), attn_type bi / uni, bi_data."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit.interop.xlnet import load_xlnet  # noqa: E402
from plmkit.models import presets  # noqa: E402




def _randomise(model) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_((0.0 if n.endswith("bias") else 1.0) + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)


def _compare(hf, ours, uni: bool) -> None:
    g = torch.Generator().manual_seed(2)
    B, T = 2, 7
    ids = torch.randint(3, 50, (B, T), generator=g)
    am = torch.ones(B, T)
    if not uni:
        am[1, 5:] = 0
    am_arg = None if uni else am  # transformers' uni path cannot combine its causal mask with any data mask
    tt = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * B)
    with torch.no_grad():
        r = hf(input_ids=ids, attention_mask=am_arg, token_type_ids=tt, use_mems=True)
        o = ours(ids, am_arg, tt, use_mems=True)
        real = am.bool()
        torch.testing.assert_close(o.logits[real], r.logits[real], atol=1e-4, rtol=1e-4)
        for a, b in zip(r.mems, o.mems):
            torch.testing.assert_close(b, a.transpose(0, 1), atol=1e-4, rtol=1e-4)
        r3 = hf(input_ids=ids, mems=r.mems)
        o3 = ours(ids, mems=o.mems)
        torch.testing.assert_close(o3.logits, r3.logits, atol=1e-4, rtol=1e-4)
        if not uni:
            perm = (torch.rand(B, T, T, generator=g) > 0.5).float()
            tm = torch.zeros(B, 3, T)
            tm[:, 0, 1] = tm[:, 1, 4] = tm[:, 2, 6] = 1
            r2 = hf(input_ids=ids, attention_mask=am, perm_mask=perm, target_mapping=tm, token_type_ids=tt)
            o2 = ours(ids, am, tt, perm_mask=perm, target_mapping=tm)
            torch.testing.assert_close(o2.logits, r2.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(), dict(attn_type="uni"), dict(bi_data=True, clamp_len=3)])
def test_hf_to_plmkit(kw, tmp_path):
    torch.manual_seed(0)
    cfg = transformers.XLNetConfig(vocab_size=50, d_model=16, n_layer=2, n_head=4, d_inner=32, dropout=0.0,
                                   mem_len=4, **kw)
    hf = transformers.XLNetLMHeadModel(cfg)
    _randomise(hf)
    hf.eval().save_pretrained(tmp_path)
    _compare(hf, load_xlnet(tmp_path), kw.get("attn_type") == "uni")


def test_plmkit_to_hf(tmp_path):
    torch.manual_seed(0)
    ours = presets.build("xlnet-tiny", vocab_size=50, hidden_dropout=0.0, attention_dropout=0.0, mem_len=4)
    _randomise(ours)
    ours.eval().save_pretrained(tmp_path)
    hf = transformers.XLNetLMHeadModel.from_pretrained(tmp_path).eval()
    _compare(hf, ours, False)
    back = load_xlnet(tmp_path)
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
