"""Pruning: a head / neuron whose gate is 0 removed physically leaves outputs unchanged; pruned checkpoints
save and reload with the same outputs; magnitude pruning hits its sparsity; bad fractions are refused."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.compression.pruning import HeadGates, block_linears, importance, lowest, magnitude_prune, prune_heads, \
    prune_neurons


def _model():
    import plmkit

    torch.manual_seed(0)
    return plmkit.load("bert-tiny", num_heads=4, head=None).eval()


def test_removing_a_zero_gated_head_or_neuron_leaves_outputs_unchanged():
    model = _model()
    ids = torch.randint(5, 1000, (2, 9))
    gates = HeadGates(model, heads=True, neurons=True)
    with torch.no_grad():
        gates.heads[0][2] = 0.0
        gates.heads[1][0] = 0.0
        gates.neurons[1][[3, 7, 11]] = 0.0
        want = model(ids).last_hidden_state
        full = model(ids).last_hidden_state
    gates.remove()
    with torch.no_grad():
        assert (model(ids).last_hidden_state - want).abs().max() > 1e-4  # the gates did something
    assert prune_heads(model, {0: [2], 1: [0]}) == [3, 3]
    assert prune_neurons(model, {1: [3, 7, 11]})[1] == model.config.intermediate_size - 3
    assert model.layers[0].attn.qkv.weight.shape[0] == 3 * 3 * model.layers[0].attn.head_dim
    with torch.no_grad():
        torch.testing.assert_close(model(ids).last_hidden_state, full, atol=1e-5, rtol=1e-5)


def test_importance_and_lowest():
    model = _model()
    batches = [{"input_ids": torch.randint(5, 1000, (4, 6))}]

    def loss_fn(m, b):
        return m(b["input_ids"]).last_hidden_state.pow(2).mean()

    h, n = importance(model, loss_fn, batches, heads=True, neurons=True)
    assert [t.shape[0] for t in h] == [4, 4] and all(abs(float(t.norm()) - 1) < 1e-5 for t in h)
    assert all(p.requires_grad for p in model.parameters())
    scores = [torch.tensor([0.1, 0.9, 0.5, 0.2]), torch.tensor([0.05, 0.04, 0.8, 0.7])]
    assert lowest(scores, 0.5) == {0: [0, 3], 1: [0, 1]}
    assert lowest([torch.tensor([0.1, 0.2]), torch.tensor([0.3])], 0.99) == {0: [0], 1: []}  # >= 1 head kept


def test_magnitude_prune_global_and_per_layer():
    model = _model()
    res = magnitude_prune(model, 0.5, "global")
    assert res["achieved"] == pytest.approx(0.5, abs=0.01)
    model = _model()
    magnitude_prune(model, 0.7, "layer")
    for layer in model.layers:
        w = torch.cat([m.weight.flatten() for m in layer.modules() if isinstance(m, torch.nn.Linear)])
        assert float((w == 0).float().mean()) == pytest.approx(0.7, abs=0.01)


@pytest.fixture(scope="module")
def run_prune(cls_run, workdir):
    from plmkit.cli.main import main

    def run(out, *flags):
        return main(["prune", "--model", str(workdir / "cls"), "--out", str(workdir / out), *flags])
    return run


@pytest.mark.parametrize("flags", [("--method", "heads", "--amount", "0.5"), ("--method", "ffn", "--amount", "0.4"),
                                   ("--method", "magnitude", "--sparsity", "0.6", "--scope", "layer")])
def test_pruned_checkpoint_reloads_identically(run_prune, workdir, flags):
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.evaluation import evaluate_checkpoints

    out = f"pruned_{flags[1]}"
    assert run_prune(out, *flags) == 0
    model, obj, info, tok = load_checkpoint(workdir / out)
    assert info["compression"] and info["compressed_from"][0]["prune"] == flags[1]
    if flags[1] == "heads":
        assert sum(info["compression"]["heads"]) == 4  # bert-tiny: 2 layers x 4 heads, half removed
    ids = torch.tensor([tok.encode("the movie was good")])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    model.eval()
    again, *_ = load_checkpoint(workdir / out)
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(obj.forward(model, batch)[1], obj.forward(again, batch)[1])
    res = evaluate_checkpoints([str(workdir / out)], str(workdir))
    assert 0.0 <= res["accuracy"] <= 1.0


def test_bad_fractions_exit_2(run_prune, capsys):
    for flags in (("--method", "magnitude", "--sparsity", "1.0"), ("--method", "heads", "--amount", "-0.1"),
                  ("--method", "magnitude")):
        assert run_prune("bad", *flags) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("[0, 1)" in err or "required" in err), err


def test_cubic_schedule_values_by_hand():
    from plmkit.compression.pruning import cubic_sparsity

    # s_f = 0.8, s_i = 0.1, t0 = 2, n = 4, dt = 3: pruning at t = 2, 5, 8, 11, 14
    want = {0: 0.1, 1: 0.1, 2: 0.1, 5: 0.8 - 0.7 * 0.75 ** 3, 8: 0.8 - 0.7 * 0.5 ** 3, 11: 0.8 - 0.7 * 0.25 ** 3,
            14: 0.8, 20: 0.8}
    for t, s in want.items():
        assert cubic_sparsity(t, 0.8, 0.1, 2, 4, 3) == pytest.approx(s), t
    assert cubic_sparsity(7, 0.8, 0.1, 2, 4, 3) == pytest.approx(want[5])  # held between pruning steps


def test_gradual_pruner_masks_grow_final_exact_and_stay_zero_through_adamw():
    import plmkit
    from plmkit.compression.pruning import GradualPruner, block_linears

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny", head=None)
    linears = [m for _, _, m in block_linears(model)]
    total = sum(m.weight.numel() for m in linears)
    pruner = GradualPruner(model, 0.75, 0.0, start=1, n=4, every=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(5, 1000, (2, 8))
    previous = {k: v.clone() for k, v in pruner.masks.items()}
    with pruner.attached():
        for step in range(12):
            opt.zero_grad()
            model(ids).last_hidden_state.pow(2).mean().backward()
            opt.step()  # the post-hook advances the schedule and re-applies the masks
            for m in linears:
                mask = pruner.masks[id(m)]
                assert not (mask & ~previous[id(m)]).any()  # masks only grow
                assert float((m.weight.detach() * ~mask).abs().sum()) == 0.0  # pruned weights stay exactly 0
                previous[id(m)] = mask.clone()
            masked = sum(int((~pruner.masks[id(m)]).sum()) for m in linears)
            assert masked == round(pruner.target(pruner.step) * total)
    assert pruner.step == 12
    assert [h["step"] for h in pruner.history] == [1, 3, 5, 7, 9]  # t0 + j dt
    assert sum(int((m.weight == 0).sum()) for m in linears) == round(0.75 * total)  # exact final sparsity
    # step 13 after detaching: no hook any more, so AdamW's moments move pruned weights again
    opt.zero_grad()
    model(ids).last_hidden_state.pow(2).mean().backward()
    opt.step()
    assert pruner.step == 12


def test_plm_prune_cubic_schedule_end_to_end(run_prune, workdir, capsys):
    from plmkit.tasks.checkpoint import load_checkpoint
    from plmkit.tasks.evaluation import evaluate_checkpoints

    assert run_prune("gradual", "--method", "magnitude", "--sparsity", "0.6", "--schedule", "cubic", "--data",
                     str(workdir), "--epochs", "1", "--lr", "1e-3", "--batch-size", "16") == 0
    res = json.loads((workdir / "gradual" / "eval.json").read_text())
    model, obj, info, tok = load_checkpoint(workdir / "gradual")
    linears = [m for _, _, m in block_linears(model)]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    assert zeros == round(0.6 * sum(m.weight.numel() for m in linears))
    assert info["compression"]["sparsity"]["schedule"] == "cubic"
    assert res["train_steps"] == 10 and evaluate_checkpoints([str(workdir / "gradual")], str(workdir))["accuracy"] \
        == pytest.approx(res["accuracy"])
    capsys.readouterr()
    assert run_prune("bad", "--method", "heads", "--amount", "0.2", "--schedule", "cubic") == 2
    assert "--schedule cubic" in capsys.readouterr().err
