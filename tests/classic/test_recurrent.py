"""Tests for plmkit.classic.recurrent: FFNN / RNN / LSTM LMs, ELMo biLM, ScalarMix; their checkpoint
format (plmkit.interop.native) and the biLM loss (plmkit.objectives.bilm)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from plmkit.errors import UserError
from plmkit.models.heads import ScalarMix
from plmkit.classic.recurrent import PRESETS, ELMo, RecurrentConfig, build
from plmkit.interop.native import is_recurrent_dir
from plmkit.interop.native import load_recurrent as load_pretrained
from plmkit.objectives.bilm import bilm_loss

CAUSAL = ["ffnn-tiny", "rnn-tiny", "lstm-tiny"]
ALL = CAUSAL + ["elmo-tiny"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ALL)
def test_forward_contract_and_backward(name):
    m = build(name, vocab_size=50)
    ids = torch.randint(0, 50, (3, 9))
    out = m(ids, output_hidden_states=True)
    assert out.logits.shape == (3, 9, 50)
    assert out.last_hidden_state.shape[:2] == (3, 9)
    assert torch.allclose(m.head_logits(out.last_hidden_state), out.logits, atol=1e-6) or name == "elmo-tiny"
    sel = torch.zeros(3, 9, dtype=torch.bool)
    sel[0, 2] = sel[2, 8] = True
    m.eval()
    full, part = m(ids).logits, m(ids, labels_mask=sel).logits
    assert part.shape == (2, 50) and torch.allclose(part, full[sel], atol=1e-5)
    m.train()
    out.logits.sum().backward()
    groups = m.layer_groups()
    assert len(groups) == m.num_layers + 2
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat)) == len(list(m.parameters()))
    assert m.config.to_dict()["plmkit_family"] == m.config.family


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_and_cache_equivalence(name):
    m = build(name, vocab_size=40).eval()
    ids = torch.randint(0, 40, (2, 10))
    ids2 = ids.clone()
    ids2[:, 6] = (ids2[:, 6] + 1) % 40
    a, b = m(ids).logits, m(ids2).logits
    assert torch.allclose(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])
    o1 = m(ids[:, :4], use_cache=True)
    o2 = m(ids[:, 4:], past_key_values=o1.past_key_values, use_cache=True)
    assert torch.allclose(torch.cat([o1.logits, o2.logits], 1), a, atol=1e-5)
    g = m.generate(ids[:, :3], max_new_tokens=5)
    assert g.shape == (2, 8) and torch.equal(g[:, :3], ids[:, :3])
    assert torch.equal(g[:, 3], a[:, 2].argmax(-1))  # greedy step 1 = argmax of the prompt's last logits


def test_ffnn_window_equals_explicit_ngram_context():
    """The unfolded (B, T) FFNN gives at t the same logits as running on the last n-1 tokens alone."""
    m = build("ffnn-tiny", vocab_size=30, context_size=3, direct_connections=True).eval()
    ids = torch.randint(0, 30, (1, 8))
    full = m(ids).logits
    for t in range(2, 8):
        alone = m(ids[:, t - 2:t + 1]).logits[:, -1]
        assert torch.allclose(full[:, t], alone, atol=1e-5)
    assert m.output.in_features == 32 + 3 * 16  # [U W] over [tanh(d + Hx); x]


def test_tied_embeddings_and_projection():
    m = build("lstm-tiny", vocab_size=30, embedding_size=16, hidden_size=24)
    assert m.output.weight is m.embed.weight and m.proj is not None
    assert m(torch.randint(0, 30, (2, 5))).logits.shape == (2, 5, 30)


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(tmp_path, name):
    m = build(name, vocab_size=60).eval()
    if isinstance(m, ELMo):
        m.set_vocabulary([f"w{i}" for i in range(60)])
    m.save_pretrained(tmp_path / "ck")
    assert is_recurrent_dir(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["plmkit_family"] == m.config.family
    m2 = load_pretrained(tmp_path / "ck").eval()
    ids = torch.randint(0, 60, (2, 6))
    assert torch.equal(m(ids).logits, m2(ids).logits)
    m.save_pretrained(tmp_path / "ck")  # overwriting an existing checkpoint works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_elmo_backward_direction_and_padding():
    m = build("elmo-tiny", vocab_size=50).eval()
    ids = torch.randint(0, 50, (2, 8))
    out = m(ids)
    # backward logits at t depend only on tokens >= t
    ids2 = ids.clone()
    ids2[:, 2] = (ids2[:, 2] + 1) % 50
    out2 = m(ids2)
    assert torch.allclose(out.backward_logits[:, 3:], out2.backward_logits[:, 3:], atol=1e-6)
    assert not torch.allclose(out.backward_logits[:, :3], out2.backward_logits[:, :3])
    assert torch.allclose(out.logits[:, :2], out2.logits[:, :2], atol=1e-6)
    # right padding does not change the real positions (backward direction starts at the last real token)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    padded = ids.clone()
    padded[1, 5:] = 0
    reps_pad = m.layer_representations(padded, mask)
    reps_alone = m.layer_representations(ids[1:, :5])
    for a, b in zip(reps_pad, reps_alone):
        assert torch.allclose(a[1, :5], b[0], atol=1e-5)
    assert len(reps_pad) == 3 and reps_pad[0].shape == (2, 8, m.config.hidden_size)


def test_scalar_mix():
    mix = ScalarMix(3)
    layers = [torch.full((1, 2, 4), float(j)) for j in range(3)]
    assert torch.allclose(mix(layers), torch.full((1, 2, 4), 1.0))  # uniform weights: mean of 0, 1, 2
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 100.0]))
        mix.gamma.fill_(2.0)
    assert torch.allclose(mix(layers), torch.full((1, 2, 4), 4.0))
    assert torch.allclose(torch.softmax(mix.weights, 0).sum(), torch.tensor(1.0))
    assert ScalarMix(3, initial_weights=[0.0, 0.0, 100.0])(layers).allclose(torch.full((1, 2, 4), 2.0))
    # AllenNLP's layer_norm: each state standardised over its real positions before the mix
    ragged = [torch.randn(2, 3, 4) * (j + 1) + 5 * j for j in range(3)]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    ln = ScalarMix(3, layer_norm=True, initial_weights=[100.0, 0.0, 0.0])(ragged, mask)
    real = ln[mask.bool()]
    assert abs(real.mean().item()) < 1e-5 and abs(real.var(unbiased=False).item() - 1) < 1e-4
    with pytest.raises(ValueError, match="2 initial weights for 3 states"):
        ScalarMix(3, initial_weights=[0.0, 1.0])


def _text_ids(shared_data, n_lines: int):
    path = shared_data / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip(f"WikiText-2 not found at {path}")
    words = " ".join(path.read_text().splitlines()[:n_lines]).split()
    vocab = {w: i for i, w in enumerate(sorted(set(words)))}
    return torch.tensor([vocab[w] for w in words]), sorted(vocab, key=vocab.get)


def test_elmo_forward_and_backward_perplexity_fall(shared_data):
    ids, words = _text_ids(shared_data, 12)
    m = build("elmo-tiny", vocab_size=len(words))
    m.set_vocabulary(words)
    T = 24
    batch = ids[: (len(ids) // T) * T].view(-1, T)[:8]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    hist = []
    for _ in range(15):
        loss, met = bilm_loss(m, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(met)
    assert hist[-1]["fwd_ppl"] < 0.5 * hist[0]["fwd_ppl"]
    assert hist[-1]["bwd_ppl"] < 0.5 * hist[0]["bwd_ppl"]


@pytest.mark.parametrize("name", CAUSAL)
def test_lm_loss_falls_on_real_text(shared_data, name):
    ids, words = _text_ids(shared_data, 30)
    m = build(name, vocab_size=len(words))
    T = 32
    batch = ids[: (len(ids) // T) * T].view(-1, T)[:16]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        logits = m(batch).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, len(words)), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 1.0


def test_presets_and_bad_input(tmp_path):
    for name in PRESETS:
        assert RecurrentConfig.from_dict(PRESETS[name]).family in name
    with pytest.raises(UserError, match="did you mean"):
        build("lstm-smal")
    with pytest.raises(UserError, match="did you mean"):
        build("lstm-tiny", hidden_sise=3)
    with pytest.raises(UserError, match="family"):
        RecurrentConfig(family="gru")
    with pytest.raises(UserError, match="out of range"):
        build("rnn-tiny", vocab_size=10)(torch.tensor([[3, 12]]))
    with pytest.raises(UserError, match="bidirectional"):
        build("elmo-tiny").generate(torch.tensor([[1, 2]]))
    with pytest.raises(UserError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert not is_recurrent_dir(tmp_path)
    with pytest.raises(UserError, match="not a recurrent"):
        load_pretrained(tmp_path)
