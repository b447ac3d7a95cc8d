"""``output_attentions``: the explicit-softmax path returns the probabilities SDPA uses and the same outputs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from plmkit.errors import UserError
from plmkit.models import load
from plmkit.models.layers import SelfAttention


def _manual(model, ids, am):
    """Every layer's attention probabilities recomputed from its own q/k (captured by a forward hook on the
    fused projection), with plain loops over heads; rotary / GQA as in the model's config."""
    cfg = model.config
    got = []

    def hook(mod, inp, out):
        got.append(out.detach())

    hs = [layer.attn.qkv.register_forward_hook(hook) for layer in model.layers]
    with torch.no_grad():
        model(ids, attention_mask=am)
    for h in hs:
        h.remove()
    Nh, Nkv, D = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    B, T = ids.shape
    probs = []
    for qkv in got:
        q = qkv[..., : Nh * D].view(B, T, Nh, D)
        k = qkv[..., Nh * D : (Nh + Nkv) * D].view(B, T, Nkv, D)
        if hasattr(model, "rotary"):
            from plmkit.models.layers import apply_rotary

            cos, sin = model.rotary(torch.arange(T)[None], q.dtype)
            q = apply_rotary(q.transpose(1, 2), cos, sin).transpose(1, 2)
            k = apply_rotary(k.transpose(1, 2), cos, sin).transpose(1, 2)
        p = torch.zeros(B, Nh, T, T)
        for b in range(B):
            for n in range(Nh):
                s = q[b, :, n] @ k[b, :, n // (Nh // Nkv)].T / math.sqrt(D)  # (T, T)
                allowed = am[b].bool()[None, :].expand(T, T).clone()
                if cfg.causal:
                    allowed &= torch.ones(T, T, dtype=torch.bool).tril()
                allowed[~allowed.any(-1)] = True  # padding queries attend everywhere (as the model does)
                p[b, n] = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
        probs.append(p)
    return probs


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny", "llama-tiny"])
def test_attention_probabilities_match_a_manual_computation_and_leave_outputs_unchanged(preset):
    torch.manual_seed(0)
    model = load(preset).eval()
    ids = torch.randint(5, 900, (2, 7))
    am = torch.ones(2, 7, dtype=torch.long)
    am[1, 5:] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=am, output_hidden_states=True)
        out = model(ids, attention_mask=am, output_hidden_states=True, output_attentions=True)
    assert ref.attentions is None
    assert len(out.attentions) == model.config.num_layers
    for a, m in zip(out.attentions, _manual(model, ids, am)):
        assert a.shape == (2, model.config.num_heads, 7, 7)
        torch.testing.assert_close(a, m, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5, rtol=0)
    keep = am.bool()
    for x, y in zip(ref.hidden_states, out.hidden_states):
        torch.testing.assert_close(x[keep], y[keep], atol=1e-5, rtol=1e-4)


def test_attentions_causal_without_padding_and_unsupported_attention():
    torch.manual_seed(0)
    model = load("gpt2-tiny").eval()
    ids = torch.randint(5, 900, (1, 6))
    with torch.no_grad():
        a = model(ids, output_attentions=True).attentions[0]
    assert torch.all(a[0, :, 0, 1:] == 0) and torch.allclose(a[0, :, 0, 0], torch.ones(4))
    assert torch.all(a.triu(1) == 0)

    class NoProbs(SelfAttention):  # an attention class that ignores ctx.attentions (as DeBERTa's does)
        def forward(self, x, ctx, layer_idx):
            return super().forward(x, dataclasses.replace(ctx, attentions=None), layer_idx)

    old = model.layers[1].attn
    new = NoProbs(model.config)
    new.load_state_dict(old.state_dict())
    model.layers[1].attn = new
    with pytest.raises(UserError, match="NoProbs.*does not return attention probabilities"):
        model(ids, output_attentions=True)
    model(ids)  # the ordinary path is unaffected
