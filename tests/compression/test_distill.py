"""Distillation: losses against hand computations, zero loss for a student identical to its teacher, the
recomputed attention against the layer's own output, ``plm distill`` end to end and its bad input."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from plmkit.compression import losses as L


def test_kd_loss_is_temperature_scaled_kl():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0
    want = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        ps = np.exp(np.array(si) / T) / np.exp(np.array(si) / T).sum()
        pt = np.exp(np.array(ti) / T) / np.exp(np.array(ti) / T).sum()
        want += float((pt * np.log(pt / ps)).sum())
    want = want / 2 * T * T
    assert float(L.kd_loss(s, t, T)) == pytest.approx(want, rel=1e-5)


def test_cosine_mse_pkd_attention_by_hand():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])  # (1, 3, 2); last token is padding
    t = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # cos: token 0 orthogonal (1 - 0), token 1 parallel (1 - 1) -> mean 0.5
    assert float(L.cosine_loss(s, t, mask)) == pytest.approx(0.5)
    # mse: token 0 ((1)^2 + (1)^2)/2 = 1, token 1 (1 + 1)/2 = 1 -> 1
    assert float(L.mse_loss(s, t, mask)) == pytest.approx(1.0)
    proj = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # swaps channels: token 0 matches exactly
    assert float(L.mse_loss(s, t, mask, proj).detach()) == pytest.approx((0 + 1) / 2)
    # pkd: normalised [1,0] vs [0,1] -> squared distance 2
    assert float(L.pkd_loss([s[:, 0]], [t[:, 0]])) == pytest.approx(2.0)
    p1 = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (1, 1, 2, 2)
    p2 = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert float(L.attention_mse(p1, p2, torch.tensor([[1, 1]]))) == pytest.approx((0.25 + 0.25) / 2 / 2)


def test_minilm_relations_by_hand():
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (B=1, N=1, T=2, D=2)
    rel = L.value_relation(v, None, 1)
    e = math.exp(1 / math.sqrt(2))
    assert rel[0, 0, 0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], rel=1e-6)
    pt = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    ps = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    att, vr = L.minilm_loss((ps, v), (pt, v))
    want = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 2  # row 0 KL, row 1 is 0; mean over 2 rows
    assert float(att) == pytest.approx(want, rel=1e-5)
    assert float(vr) == pytest.approx(0.0, abs=1e-7)


def test_attention_internals_reproduce_the_layer():
    import plmkit

    torch.manual_seed(0)
    model = plmkit.load("bert-tiny").eval()
    ids = torch.randint(5, 1000, (2, 7))
    am = torch.ones(2, 7, dtype=torch.long)
    am[1, 5:] = 0
    tap = L.AttentionTap(model, [0, 1])
    seen = {}
    h = model.layers[1].attn.register_forward_hook(lambda m, a, out: seen.setdefault("y", out))
    model(ids, attention_mask=am)
    h.remove()
    probs, v = tap.internals(1)
    tap.remove()
    attn = model.layers[1].attn
    y = (probs @ v).transpose(1, 2).reshape(2, 7, -1)
    torch.testing.assert_close(attn.o(y), seen["y"], atol=1e-5, rtol=1e-5)
    assert float(probs[1, :, :, 5:].abs().max()) == 0.0  # padded keys get no attention


@pytest.fixture(scope="module")
def teacher(cls_run, workdir):
    from plmkit.tasks.checkpoint import load_checkpoint

    return load_checkpoint(workdir / "cls")


def test_identical_student_gets_zero_distillation_loss(teacher):
    from plmkit.compression.distill import METHODS, WEIGHTS, DistillObjective

    model, obj, info, tok = teacher
    student = copy.deepcopy(model)
    weights = {k: 1.0 for k in WEIGHTS} | {"alpha_ce": 0.0}
    dobj = DistillObjective(obj, model, weights, 2.0, list(range(1, model.num_layers + 1)))
    feats = [{"input_ids": tok.encode(t), "token_type_ids": [0] * len(tok.encode(t)), "label": 1}
             for t in ("the movie was good", "a dull and boring plot it was")]
    student.eval()
    terms, _ = dobj.terms(student, obj.make_batch(feats))
    assert set(terms) == {"kd", "cos", "emb", "hid", "att", "pkd", "minilm"}
    for name, value in terms.items():
        assert abs(float(value)) < 1e-5, name
    # ... and a different student does not
    torch.manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    terms, _ = dobj.terms(student, obj.make_batch(feats))
    assert all(float(terms[k]) > 1e-6 for k in terms), {k: float(v) for k, v in terms.items()}
    assert set(METHODS) >= {"distilbert", "tinybert", "pkd", "minilm", "none"}


def test_distilbert_layers():
    from plmkit.compression.distill import default_layer_map, distilbert_layers

    assert distilbert_layers(6, 3) == [0, 2, 4]
    assert distilbert_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert default_layer_map(6, 3) == [2, 4, 6]


def _distill(workdir, out, *flags):
    from plmkit.cli.main import main

    argv = ["distill", "--teacher", str(workdir / "cls"), "--data", str(workdir), "--out", str(workdir / out),
            "--epochs", "2", "--lr", "2e-3", "--batch-size", "16", *flags]
    return main(argv)


@pytest.mark.parametrize("method", ["distilbert", "tinybert", "pkd", "minilm"])
def test_plm_distill_writes_a_checkpoint_plm_evaluate_reads(cls_run, workdir, method):
    from plmkit.tasks.evaluation import evaluate_checkpoints

    assert _distill(workdir, f"student_{method}", "--student-layers", "1", "--method", method) == 0
    res = json.loads((workdir / f"student_{method}" / "eval.json").read_text())
    assert res["student_layers"] == 1 and res["teacher_layers"] == 2
    assert res["student_params"] < res["teacher_params"]
    again = evaluate_checkpoints([str(workdir / f"student_{method}")], str(workdir))
    assert again["accuracy"] == pytest.approx(res["accuracy"])


def test_tinybert_student_of_another_width_uses_projections(cls_run, workdir, tmp_path):
    import plmkit

    tok = plmkit.load_tokenizer(str(workdir / "model"))
    narrow = plmkit.load("bert-tiny", vocab_size=len(tok), hidden_size=32, num_heads=2, intermediate_size=64,
                         num_layers=1, head=None)
    narrow.save_pretrained(tmp_path / "narrow")
    assert _distill(workdir, "student_narrow", "--student", str(tmp_path / "narrow"), "--method", "tinybert",
                    "--alpha-att", "0") == 0
    cfg = json.loads((workdir / "student_narrow" / "model_config.json").read_text())
    assert cfg["hidden_size"] == 32


def test_bad_input_is_one_line_exit_2(cls_run, workdir, tmp_path, capsys):
    import plmkit

    other = plmkit.load("bert-tiny", vocab_size=999, head=None)
    other.save_pretrained(tmp_path / "other")
    cases = [(["--student", str(tmp_path / "other")], "vocabulary"),
             (["--student-layers", "1", "--layer-map", "5"], "out of range"),
             (["--student-layers", "1", "--layer-map", "1,2"], "expected 1 teacher layers"),
             (["--student-layers", "9"], "--student-layers 9"),
             ([], "--student-layers N")]
    for flags, words in cases:
        assert _distill(workdir, "bad", *flags) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err


def test_teacher_cache_gives_the_uncached_terms_in_any_batch_order(teacher):
    from plmkit.compression.distill import WEIGHTS, DistillObjective

    model, obj, info, tok = teacher
    student = copy.deepcopy(model).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    weights = {k: 1.0 for k in WEIGHTS} | {"alpha_att": 0.0, "alpha_minilm": 0.0}
    texts = ["the movie was good", "a dull and boring plot it was", "fine", "great great fun and a good cast"]
    feats = [{"input_ids": tok.encode(t), "token_type_ids": [0] * len(tok.encode(t)), "label": i % 2}
             for i, t in enumerate(texts)]
    plain = DistillObjective(obj, model, weights, 2.0, [1, 2])
    cached = DistillObjective(obj, model, weights, 2.0, [1, 2], cache_teacher=True)
    for batch_feats in (feats[:2], feats[2:], [feats[3], feats[0]], [feats[2], feats[1], feats[0]]):
        batch = obj.make_batch(batch_feats)
        want, _ = plain.terms(student, batch)
        got, _ = cached.terms(student, batch)
        assert set(got) == set(want) == {"ce", "kd", "cos", "emb", "hid", "pkd"}
        for k in want:
            # the same examples padded to another width: equal up to float rounding (~1e-7)
            assert float(got[k].detach()) == pytest.approx(float(want[k].detach()), rel=1e-4, abs=1e-6), k
    assert (cached.cache_misses, cached.cache_hits, len(cached.cache)) == (2, 2, 4)


def test_cached_distillation_trains_like_uncached(cls_run, workdir):
    def losses(name):
        lines = (workdir / name / "logs").glob("*.jsonl")
        return [json.loads(x)["loss"] for f in sorted(lines) for x in f.read_text().splitlines()
                if json.loads(x).get("loss") is not None]

    assert _distill(workdir, "cache_off", "--student-layers", "1", "--method", "pkd", "--epochs", "3") == 0
    assert _distill(workdir, "cache_on", "--student-layers", "1", "--method", "pkd", "--epochs", "3",
                    "--cache-teacher") == 0
    off, on = losses("cache_off"), losses("cache_on")
    assert len(off) == len(on) >= 3
    assert on == pytest.approx(off, rel=1e-4)
    res = json.loads((workdir / "cache_on" / "eval.json").read_text())
    cache = res["teacher_cache"]
    assert cache["examples"] == res["train_examples"] == 160
    assert cache["batches_computed"] == 10 and cache["batches_from_cache"] == res["train_steps"] - 10
    assert res["accuracy"] == pytest.approx(json.loads((workdir / "cache_off" / "eval.json").read_text())["accuracy"])


def test_hard_label_only_distillation_never_runs_the_teacher(teacher):
    from plmkit.compression.distill import METHODS, WEIGHTS, DistillObjective

    model, obj, info, tok = teacher
    student = copy.deepcopy(model)  # before the counting hook, so the copy does not carry it
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        dobj = DistillObjective(obj, model, {k: 0.0 for k in WEIGHTS} | METHODS["none"], 2.0, [1])
        ids = tok.encode("the movie was good")
        batch = obj.make_batch([{"input_ids": ids, "token_type_ids": [0] * len(ids), "label": 1}])
        terms, _ = dobj.terms(student, batch)
        assert set(terms) == {"ce"} and calls == []
        assert float(terms["ce"]) == pytest.approx(float(obj.task_loss(obj.forward(student, batch)[1], batch)))
    finally:
        h.remove()
