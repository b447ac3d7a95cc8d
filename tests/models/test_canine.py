"""CANINE (plmkit.models.canine): hash embeddings, the local attention mask, down/up-sampling and the
residual against hand computations on a tiny config."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.models.canine import (CLS, PRIMES, SEP, Canine, CanineConfig, encode_text, hash_buckets,
                                  local_attention_mask)
from plmkit.models.config import ConfigError


def tiny(**kw) -> Canine:
    torch.manual_seed(0)
    cfg = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, num_hashes=4, num_buckets=97,
               downsampling_rate=4, local_window=8, upsampling_kernel_size=4, max_position_embeddings=64,
               hidden_dropout=0.0, attention_dropout=0.0)
    cfg.update(kw)
    return Canine(CanineConfig(**cfg)).eval()


def test_hash_embedding_is_the_concatenation_of_hashed_slices():
    model = tiny()
    text = "Zürich 北京 ok\u00e9"
    ids = torch.tensor([[ord(c) for c in text]])
    got = model.hash(ids)[0]
    for i, c in enumerate(text):
        x = ord(c)
        want = torch.cat([model.hash.tables[k].weight[((x + 1) * PRIMES[k]) % 97] for k in range(4)])
        torch.testing.assert_close(got[i], want)
    assert hash_buckets(torch.tensor([0, 1]), 2, 10).tolist() == [[31 % 10, 62 % 10], [43 % 10, 86 % 10]]


def test_local_attention_mask_definition():
    m = local_attention_mask(11, 4)
    for i in range(11):
        for j in range(11):
            assert bool(m[i, j]) == (i // 4 == j // 4)


def test_local_layer_only_reads_its_block():
    model = tiny()
    ids, mask = encode_text(["abcdefghijklmnopqrst"])
    a = ids.clone()
    a[0, 12] = ord("Q")  # block 1 (chars 8..15)
    with torch.no_grad():
        h0 = model(ids, mask).initial
        h1 = model(a, mask).initial
    torch.testing.assert_close(h0[:, :8], h1[:, :8])
    torch.testing.assert_close(h0[:, 16:], h1[:, 16:])
    assert (h0[:, 8:16] - h1[:, 8:16]).abs().amax() > 1e-4


def test_downsampling_is_a_strided_convolution_with_the_cls_molecule_first():
    model = tiny()
    torch.manual_seed(1)
    h = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        mol, mol_mask = model.downsample(h, mask)
    assert mol.shape == (2, 1 + 3, 32)  # 10 chars -> padded to 12 -> 3 molecules, + [CLS]
    assert mol_mask.tolist() == [[True] * 4, [True, True, True, False]]
    W, b = model.down.weight, model.down.bias  # (H, H, r)
    hp = torch.cat([h, torch.zeros(2, 2, 32)], dim=1)
    for bi in range(2):
        rows = [h[bi, 0]]
        for j in range(3):
            rows.append(F.gelu(b + sum(W[:, :, c] @ hp[bi, 4 * j + c] for c in range(4))))
        want = model.down_norm(torch.stack(rows))
        torch.testing.assert_close(mol[bi], want, atol=1e-5, rtol=1e-5)


def test_upsampling_repeats_molecules_and_concatenates_the_char_states():
    model = tiny()
    torch.manual_seed(2)
    h = torch.randn(1, 10, 32)
    mol = torch.randn(1, 4, 32)
    with torch.no_grad():
        up = model.upsample(mol, h)
    assert up.shape == (1, 10, 32)
    W, b = model.up.weight, model.up.bias  # (H, 2H, k=4)
    x = torch.stack([torch.cat([h[0, i], mol[0, 1 + i // 4]]) for i in range(10)])  # the residual + molecule
    xp = torch.cat([torch.zeros(1, 64), x, torch.zeros(2, 64)])  # "same": 1 left, 2 right
    want = torch.stack([F.gelu(b + sum(W[:, :, c] @ xp[i + c] for c in range(4))) for i in range(10)])
    torch.testing.assert_close(up[0], model.up_norm(want), atol=1e-5, rtol=1e-5)


def test_forward_shapes_and_inputs():
    model = tiny()
    ids, mask = encode_text(["hello world", "你好，世界"])
    assert ids[0, 0] == CLS and ids[0, 12] == SEP and mask[1].sum() == 7
    out = model(ids, mask, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 13, 32)
    assert out.molecules.shape == (2, 1 + 4, 32) and out.pooled.shape == (2, 32)
    assert len(out.hidden_states) == 1 + 2 + 1
    out.last_hidden_state.sum().backward()
    assert model.hash.tables[0].weight.grad is not None and model.down.weight.grad is not None
    with pytest.raises(UserError, match="code points"):
        model(torch.tensor([[0x110000]]))
    with pytest.raises(ConfigError, match="num_hashes"):
        CanineConfig(hidden_size=30, num_layers=1, num_heads=2, intermediate_size=8, num_hashes=4)
