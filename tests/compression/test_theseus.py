"""BERT-of-Theseus: the mixed forward at p = 1 / p = 0 against the pure successor / predecessor, the
curriculum values, the replacement frequency, and ``plm distill --method theseus`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.compression.theseus import TheseusModel, linear_curriculum


def _predecessor():
    import plmkit

    torch.manual_seed(0)
    return plmkit.load("bert-tiny", num_layers=4, hidden_dropout=0.0, attention_dropout=0.0)


def _inputs():
    ids = torch.randint(5, 1000, (2, 6))
    am = torch.ones(2, 6, dtype=torch.long)
    am[1, 4:] = 0
    return ids, am


def test_p1_is_the_pure_successor_and_p0_the_predecessor():
    pred = _predecessor()
    ids, am = _inputs()
    with torch.no_grad():
        want_pred = pred(ids, attention_mask=am).last_hidden_state
    th = TheseusModel(pred, 2, slope=0.0, base=0.0)
    assert th.k == 2
    # perturb the successor layers so that "successor" and "predecessor" outputs differ
    with torch.no_grad():
        for layer in th.successor_layers:
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    th.detach()
    with torch.no_grad():
        want_succ = th.successor_model(ids, attention_mask=am).last_hidden_state
    mixed = th.attach().train()
    th.p = 0.0
    with torch.no_grad():
        got0 = mixed(ids, attention_mask=am).last_hidden_state
    th.p = 1.0
    with torch.no_grad():
        got1 = mixed(ids, attention_mask=am).last_hidden_state
    torch.testing.assert_close(got0, want_pred, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got1, want_succ, atol=1e-6, rtol=1e-6)
    assert (got0 - got1).abs().max() > 1e-3
    assert th.draws == 4 and th.replaced == 2  # 2 modules x 2 forwards; only the p = 1 ones replaced


def test_successor_init_freezing_and_detach():
    pred = _predecessor()
    th = TheseusModel(pred, 2, slope=0.1)
    for i in range(2):  # the paper's init: the predecessor's first S layers
        for a, b in zip(th.successor_layers[i].parameters(), pred.layers[i].parameters()):
            assert torch.equal(a, b) and a is not b
    mixed = th.attach()
    trainable = {id(p) for p in mixed.parameters() if p.requires_grad}
    assert trainable == {id(p) for layer in th.successor_layers for p in layer.parameters()}
    assert not any(p.requires_grad for p in pred.parameters())
    m = th.detach()
    assert m.num_layers == 2 and len(m.layers) == 2 and all(p.requires_grad for p in m.parameters())


def test_curriculum_values():
    assert linear_curriculum(0, 0.01, 0.3) == pytest.approx(0.3)
    assert linear_curriculum(10, 0.01, 0.3) == pytest.approx(0.4)
    assert linear_curriculum(70, 0.01, 0.3) == pytest.approx(1.0)
    assert linear_curriculum(500, 0.01, 0.3) == 1.0
    th = TheseusModel(_predecessor(), 1, slope=0.05, base=0.2)
    assert [round(th.set_step(t), 6) for t in (0, 4, 16, 100)] == [0.2, 0.4, 1.0, 1.0]


def test_replacement_frequency_over_many_draws():
    th = TheseusModel(_predecessor(), 2, slope=0.0, base=0.3, seed=3)
    n = 20000
    hits = sum(th.draw() for _ in range(n))
    assert th.draws == n and th.replaced == hits
    assert abs(hits / n - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # within 4 standard errors


def test_bad_layer_counts():
    from plmkit.errors import UserError

    with pytest.raises(UserError, match="divisor"):
        TheseusModel(_predecessor(), 3, slope=0.1)
    with pytest.raises(UserError, match="divisor"):
        TheseusModel(_predecessor(), 4, slope=0.1)


def test_plm_distill_theseus_writes_a_checkpoint_plm_evaluate_reads(cls_run, workdir):
    from plmkit.cli.main import main
    from plmkit.tasks.evaluation import evaluate_checkpoints

    out = workdir / "student_theseus"
    argv = ["distill", "--teacher", str(workdir / "cls"), "--data", str(workdir), "--out", str(out),
            "--epochs", "2", "--lr", "2e-3", "--batch-size", "16", "--student-layers", "1", "--method", "theseus"]
    assert main(argv) == 0
    res = json.loads((out / "eval.json").read_text())
    th = res["theseus"]
    assert res["student_layers"] == 1 and res["teacher_layers"] == 2
    assert th["replacing_steps"] + th["successor_steps"] == res["train_steps"]
    assert th["replacing_steps"] == round(0.5 * res["train_steps"])
    assert th["draws"] == th["replacing_steps"]  # one module, one draw per step
    assert 0.3 < th["replaced_fraction"] <= 1.0 and th["final_p"] == pytest.approx(1.0 - th["slope"])
    cfg = json.loads((out / "model_config.json").read_text())
    assert cfg["num_layers"] == 1
    again = evaluate_checkpoints([str(out)], str(workdir))
    assert again["accuracy"] == pytest.approx(res["accuracy"])
