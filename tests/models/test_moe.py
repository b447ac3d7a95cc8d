"""Switch MoE (plmkit.models.moe): counting, capacity overflow pass-through, the auxiliary losses
against their definitions (and transformers' functions), MoE in encoder, decoder and
encoder-decoder stacks, and a tiny Switch decoder whose loss falls on WikiText-2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from plmkit.models.config import ModelConfig
from plmkit.models.moe import (MoETransformer, SwitchFFN, collect_router_stats, load_balancing_loss,
                               router_z_loss)



H, E = 8, 4


def _ffn(**extra) -> SwitchFFN:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=H, num_heads=2, intermediate_size=16, num_layers=2, vocab_size=50,
                      activation="relu", extra=dict(num_experts=E, **extra))
    return SwitchFFN(cfg).eval()


def _route_to(ffn: SwitchFFN, experts: list[int]) -> torch.Tensor:
    """Inputs (1, T, H) that the router sends to ``experts`` (one-hot directions, router = 5 * identity)."""
    with torch.no_grad():
        ffn.router.weight.zero_()
        ffn.router.weight[:, :E] = 5.0 * torch.eye(E)
    x = torch.zeros(1, len(experts), H)
    for t, e in enumerate(experts):
        x[0, t, e] = 1.0
        x[0, t, E:] = torch.randn(H - E) * 0.1
    return x


def test_tokens_per_expert_are_counted():
    ffn = _ffn(expert_capacity=100)
    route = [0, 2, 2, 3, 2, 0, 1, 2]
    ffn(_route_to(ffn, route))
    assert ffn.stats.routed.tolist() == [2, 1, 4, 1]
    assert ffn.stats.kept.tolist() == [2, 1, 4, 1]


def test_capacity_factor_one_overflow_passes_through_unchanged():
    ffn = _ffn(capacity_factor=1.0)  # capacity = ceil(1.0 * 8 / 4) = 2 per expert
    route = [1, 1, 1, 1, 1, 0, 3, 1]
    x = _route_to(ffn, route)
    y = ffn(x)
    assert ffn.capacity(8) == 2
    assert ffn.stats.routed.tolist() == [1, 6, 0, 1] and ffn.stats.kept.tolist() == [1, 2, 0, 1]
    dropped = [2, 3, 4, 7]  # the 3rd.. tokens of expert 1 in position order
    assert torch.equal(y[0, dropped], torch.zeros(len(dropped), H))
    out = x + y  # the residual connection around the feed-forward
    assert torch.equal(out[0, dropped], x[0, dropped])
    # kept tokens: expert output scaled by the router probability of the chosen expert
    probs = F.linear(x, ffn.router.weight).softmax(-1)
    for t in (0, 1, 5, 6):
        e = route[t]
        torch.testing.assert_close(y[0, t], ffn.experts[e](x[0, t:t + 1])[0] * probs[0, t, e])


def test_aux_loss_matches_definition_on_hand_made_routing():
    # 1 group, 4 tokens, 2 experts: f = (3/4, 1/4)
    probs = torch.tensor([[[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]])
    index = torch.tensor([[0, 0, 0, 1]])
    P = probs.mean(1)[0]  # (0.65, 0.35)
    expected = 2 * (0.75 * P[0] + 0.25 * P[1])
    torch.testing.assert_close(load_balancing_loss(probs, index), expected)
    # perfectly balanced uniform routing gives exactly 1
    uni = torch.full((2, 6, 3), 1 / 3)
    idx = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)
    torch.testing.assert_close(load_balancing_loss(uni, idx), torch.tensor(1.0))
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    torch.testing.assert_close(router_z_loss(logits), torch.logsumexp(logits, -1).pow(2).mean())


def test_losses_equal_transformers_functions():
    hf = pytest.importorskip("transformers.models.switch_transformers.modeling_switch_transformers")
    torch.manual_seed(1)
    logits = torch.randn(3, 10, 5)
    probs = logits.softmax(-1)
    idx = probs.argmax(-1)
    torch.testing.assert_close(load_balancing_loss(probs, idx), hf.load_balancing_loss_func(probs, idx))
    torch.testing.assert_close(router_z_loss(logits), hf.router_z_loss_func(logits))


def test_stats_of_a_forward_use_the_router_probabilities():
    ffn = _ffn(expert_capacity=100)
    x = torch.randn(2, 6, H)
    ffn(x)
    logits = F.linear(x, ffn.router.weight)
    torch.testing.assert_close(ffn.stats.aux_loss, load_balancing_loss(logits.softmax(-1), logits.argmax(-1)))
    torch.testing.assert_close(ffn.stats.z_loss, router_z_loss(logits))


@pytest.mark.parametrize("causal", [False, True])
def test_moe_in_encoder_and_decoder_stacks(causal):
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2" if causal else "bert", vocab_size=100, hidden_size=16, num_layers=4,
                      num_heads=2, intermediate_size=32, causal=causal, head="lm" if causal else "mlm",
                      norm_position="pre" if causal else "post", type_vocab_size=0,
                      extra={"num_experts": 4, "moe_every": 2, "capacity_factor": 1.25})
    m = MoETransformer(cfg)
    assert [type(l.mlp).__name__ for l in m.layers] == ["MLP", "SwitchFFN", "MLP", "SwitchFFN"]
    out = m(torch.randint(0, 100, (2, 12)))
    assert out.logits.shape == (2, 12, 100)
    assert out.aux_loss.ndim == 0 and out.z_loss.ndim == 0
    assert out.expert_counts.shape == (2, 4) and int(out.expert_counts.sum()) <= 2 * 24
    (out.logits.float().mean() + out.aux_loss + out.z_loss).backward()
    assert m.layers[1].mlp.router.weight.grad.abs().sum() > 0


def test_moe_in_encoder_decoder():
    from plmkit.models import presets

    torch.manual_seed(0)
    m = presets.build("switch-tiny")
    out = m(torch.randint(5, 1000, (2, 10)), decoder_input_ids=torch.randint(5, 1000, (2, 6)))
    # switch-tiny: 2 + 2 layers, layer 1 of each stack sparse
    assert out.expert_counts.shape == (2, 4)
    assert math.isfinite(float(out.aux_loss.detach())) and float(out.aux_loss.detach()) > 0


def test_tiny_switch_decoder_trains_on_wikitext(shared_data: Path):
    path = shared_data / "wikitext-2" / "valid.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    data = torch.tensor(list(path.read_bytes()[:200_000]), dtype=torch.long)  # byte-level tokens
    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=256, hidden_size=64, num_layers=2, num_heads=4,
                      intermediate_size=128, causal=True, head="lm", norm_position="pre", type_vocab_size=0,
                      embedding_norm=False, activation="gelu_new", max_position_embeddings=128,
                      hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=None,
                      extra={"num_experts": 4, "moe_every": 1, "capacity_factor": 1.25})
    m = MoETransformer(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a shared machine
    try:
        _train(m, opt, data, g, losses)
    finally:
        torch.set_num_threads(threads)
    stats = m.layers[1].mlp.stats
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.5, (first, last)  # ~5.5 nats -> ~3.2 nats per byte
    assert int(stats.routed.sum()) == 16 * 64 and int(stats.kept.sum()) <= 16 * 64
    aux, z, _ = collect_router_stats(m)
    assert 0.0 < float(aux) <= 4.0 and float(z) > 0  # E * sum f P lies in (0, E]; 1 when balanced


def _train(m, opt, data, g, losses) -> None:
    for step in range(60):
        starts = torch.randint(0, len(data) - 65, (16,), generator=g)
        batch = torch.stack([data[s: s + 65] for s in starts])
        out = m(batch[:, :-1])
        lm = F.cross_entropy(out.logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        loss = lm + 0.01 * out.aux_loss + 0.001 * out.z_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(lm))


def test_trainer_adds_weighted_router_losses_to_the_objective_loss(tmp_path):
    """The Trainer adds ``model.auxiliary_losses()`` (coef * aux + coef * z) to each objective's loss
    and logs the raw router losses."""
    import json

    from plmkit.config import TrainConfig
    from plmkit.models.moe import ROUTER_AUX_LOSS_COEF, ROUTER_Z_LOSS_COEF
    from plmkit.training import Trainer

    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, causal=True, head="lm", norm_position="pre", type_vocab_size=0,
                      max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=None,
                      extra={"num_experts": 4, "moe_every": 1, "capacity_factor": 2.0})
    m = MoETransformer(cfg)
    terms = m.auxiliary_losses()
    assert terms == {}  # no forward yet
    m(torch.randint(0, 64, (2, 8)))
    terms = m.auxiliary_losses()
    assert terms["router_aux_loss"][1] == ROUTER_AUX_LOSS_COEF and terms["router_z_loss"][1] == ROUTER_Z_LOSS_COEF

    class LMObjective:  # plain next-token CE, so the router terms are the only extra
        example_kind = "window"

        def make_batch(self, examples):
            return {"input_ids": torch.tensor(examples)}

        def loss(self, model, batch):
            ids = batch["input_ids"]
            logits = model(ids[:, :-1]).logits
            ce = F.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1))
            self.last_ce = float(ce.detach())
            return ce, {}

    obj = LMObjective()
    data = [torch.randint(0, 64, (12,)).tolist() for _ in range(32)]
    tr = Trainer(m, obj, data, TrainConfig(max_steps=1, batch_size=4, log_every=1, eval_every=0, save_every=0,
                                           progress=False, tensorboard=False, plots=False, clip_grad_norm=0.0),
                 out_dir=tmp_path)
    tr.fit()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    aux, z = rec["router_aux_loss"], rec["router_z_loss"]
    assert 0 < aux <= 4 and z > 0
    expected = obj.last_ce + ROUTER_AUX_LOSS_COEF * aux + ROUTER_Z_LOSS_COEF * z
    assert abs(rec["loss"] - expected) < 1e-5, (rec["loss"], expected)


def test_decoder_only_moe_saves_and_loads_every_tensor(tmp_path):
    import plmkit

    torch.manual_seed(0)
    cfg = ModelConfig(family="gpt2", vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, causal=True, head="lm", norm_position="pre", type_vocab_size=0,
                      max_position_embeddings=32, pad_token_id=None,
                      extra={"num_experts": 4, "moe_every": 1, "capacity_factor": 2.0})
    m = MoETransformer(cfg).eval()
    m.save_pretrained(tmp_path / "moe")
    back = plmkit.load(str(tmp_path / "moe"))
    assert type(back).__name__ == "MoETransformer"
    ids = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(back(ids).logits, m(ids).logits)
