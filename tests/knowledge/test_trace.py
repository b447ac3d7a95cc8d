"""Causal tracing: exact restoration, independence from untouched tokens, batched == unbatched, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.cli.main import main
from plmkit.errors import UserError
from plmkit.knowledge import trace as tr
from plmkit.knowledge.structure import locate
from plmkit.models.kernels import cpu_bf16

PROMPT, SUBJECT, TARGET = "the native language of Alice Smith is", "Alice Smith", "French"


@pytest.fixture(params=["gpt2", "llama"])
def setup(request, bpe_tok):
    model = request.getfixturevalue(request.param)
    s = locate(model)
    f = tr.prepare_fact(bpe_tok, PROMPT, SUBJECT, TARGET)
    return model, s, f


def test_subject_range_and_classes(bpe_tok):
    f = tr.prepare_fact(bpe_tok, PROMPT, SUBJECT, TARGET)
    lo, hi = f.subject_range
    assert bpe_tok.decode(f.ids[lo:hi]).strip() == SUBJECT
    assert f.target_id == bpe_tok.encode(" French", add_special_tokens=False)[0]
    cls = tr.token_classes((lo, hi), len(f.ids))
    assert cls["last token"] == [len(f.ids) - 1] == [hi]
    assert cls["first subsequent token"] == []  # "is" is the last token: it counts there only
    assert tr.token_classes((1, 4), 8) == {
        "first subject token": [1], "middle subject tokens": [2], "last subject token": [3],
        "first subsequent token": [4], "further tokens": [5, 6], "last token": [7]}
    assert tr.token_classes((2, 3), 6)["middle subject tokens"] == []
    with pytest.raises(UserError, match="not found in prompt"):
        tr.prepare_fact(bpe_tok, PROMPT, "Bob", TARGET)


def test_restoring_every_token_of_a_layer_gives_the_clean_probability(setup):
    model, s, f = setup
    t = tr.Tracer(s, noise=0.5, samples=3)
    with torch.no_grad():
        clean, probs = t.clean(f)
        p_corrupt = float(t.restored(f, clean, "layer", [], [[]])[0])
        assert abs(p_corrupt - float(probs[f.target_id])) > 1e-6  # the noise does something
        allpos = list(range(len(f.ids)))
        for layer in range(s.num_layers):
            p = t.restored(f, clean, "layer", [layer], [allpos])
            torch.testing.assert_close(p, probs[f.target_id].reshape(1), atol=1e-6, rtol=1e-5)
        # a token before the subject is untouched by the noise in a causal LM: restoring it does nothing
        before = t.restored(f, clean, "layer", [0], [[0]])
        torch.testing.assert_close(before, torch.tensor([p_corrupt]), atol=1e-7, rtol=0)


def test_batched_restoration_equals_an_unbatched_computation(setup):
    """One (layer, token) effect computed with inputs_embeds and a plain forward hook, sample by sample."""
    model, s, f = setup
    t = tr.Tracer(s, noise=0.7, samples=4, batch_size=8)
    res = t.trace(f, kinds=("hidden", "mlp_window"))
    L, T = s.num_layers, len(f.ids)
    assert len(res["effects"]["hidden"]) == L and len(res["effects"]["hidden"][0]) == T
    layer, tok_pos = L - 1, f.subject_range[1] - 1
    noise = t._noise(f)
    ids = torch.tensor([f.ids])
    with torch.no_grad():
        clean = {}
        h = s.layers[layer].register_forward_hook(lambda m, a, o: clean.setdefault("h", o.clone()))
        model(ids)
        h.remove()
        lo, hi = f.subject_range
        ps, pc = [], []
        for k in range(t.samples):
            emb = s.word_embeddings(ids).clone()
            emb[0, lo:hi] += noise[k]
            pc.append(model(inputs_embeds=emb).logits[0, -1].softmax(-1)[f.target_id])

            def put(m, a, o):
                o = o.clone()
                o[0, tok_pos] = clean["h"][0, tok_pos]
                return o

            h = s.layers[layer].register_forward_hook(put)
            ps.append(model(inputs_embeds=emb).logits[0, -1].softmax(-1)[f.target_id])
            h.remove()
    p_corrupt = float(torch.stack(pc).mean())
    assert res["p_corrupt"] == pytest.approx(p_corrupt, abs=1e-6)
    assert res["effects"]["hidden"][layer][tok_pos] == pytest.approx(float(torch.stack(ps).mean()) - p_corrupt, abs=1e-6)


def test_window_and_noise_std(bpe_tok, gpt2):
    assert tr._window(0, 10, 30) == list(range(0, 5)) and tr._window(15, 10, 30) == list(range(10, 20))
    assert tr._window(29, 10, 30) == list(range(24, 30)) and tr._window(1, 1, 2) == [1]
    s = locate(gpt2)
    ids = bpe_tok.encode("Alice Smith", add_special_tokens=False) + bpe_tok.encode("Paris", add_special_tokens=False)
    assert tr.embedding_std(s, bpe_tok, ["Alice Smith", "Paris"]) == pytest.approx(
        float(s.word_embeddings.weight[ids].std()))


def test_trace_cli(model_dirs, tmp_path, capsys):
    facts = [{"known_id": 7, "prompt": PROMPT, "subject": SUBJECT, "attribute": TARGET},
             {"known_id": 8, "prompt": "Paris is located in", "subject": "Paris", "attribute": "France"}]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    out = tmp_path / "trace"
    assert main(["trace", "--model", str(model_dirs["gpt2"]), "--facts", str(path), "--samples", "2",
                 "--window", "2", "--out", str(out)]) == 0
    summ = json.loads((out / "summary.json").read_text())
    assert summ["n_facts"] == 2 and set(summ["average"]) == set(tr.KINDS)
    assert set(summ["average"]["mlp"]) == set(tr.CLASSES) and len(summ["average"]["mlp"]["last token"]) == 2
    one = json.loads((out / "facts" / "7.json").read_text())
    assert one["tokens"][one["subject_range"][0]].strip() in SUBJECT
    assert (out / "facts" / "7.png").stat().st_size > 1000 and (out / "summary.png").is_file()
    assert "per fact" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x", "subject": "y"}]))
    assert main(["trace", "--model", str(model_dirs["gpt2"]), "--facts", str(bad), "--out", str(out)]) == 2
    assert "fact 0: missing or empty 'attribute'" in capsys.readouterr().err
    bad.write_text(json.dumps([facts[0], {"prompt": "Rome is in", "subject": "Paris", "attribute": "Italy"}]))
    assert main(["trace", "--model", str(model_dirs["gpt2"]), "--facts", str(bad), "--out", str(out)]) == 2
    assert "fact 1: subject 'Paris' not found in prompt 'Rome is in'" in capsys.readouterr().err
    assert main(["trace", "--model", str(model_dirs["bert"]), "--facts", str(path), "--out", str(out)]) == 2
    assert "needs a causal LM" in capsys.readouterr().err


def test_trace_known_only_keeps_the_facts_the_model_predicts(model_dirs, gpt2, bpe_tok, tmp_path, capsys):
    prompt = "Paris is located in"
    ids = [0] + bpe_tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        top = int(gpt2(torch.tensor([ids])).logits[0, -1].argmax())
    word = bpe_tok.decode([top]).strip()
    if not word or bpe_tok.encode(" " + word, add_special_tokens=False)[0] != top:
        pytest.skip("the tiny model's top-1 is not a word-start token")
    facts = [{"prompt": PROMPT, "subject": SUBJECT, "attribute": "zzz"},
             {"known_id": 9, "prompt": prompt, "subject": "Paris", "attribute": word}]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    out = tmp_path / "known"
    assert main(["trace", "--model", str(model_dirs["gpt2"]), "--facts", str(path), "--n", "1", "--known-only",
                 "--samples", "1", "--kinds", "hidden", "--no-plots", "--out", str(out)]) == 0
    summ = json.loads((out / "summary.json").read_text())
    assert summ["n_facts"] == summ["n_known"] == 1 and summ["n_scanned"] == 2
    assert (out / "facts" / "9.json").is_file()
    assert summ["precision"] == ("bf16-mixed" if cpu_bf16() else "fp32")  # --precision auto
    assert "plm trace: precision" in capsys.readouterr().err


def test_trace_precision_auto_follows_the_cpu(monkeypatch, capsys):
    import plmkit.models.kernels as kernels
    from plmkit.cli.trace import trace_precision

    monkeypatch.setattr(kernels, "cpu_bf16", lambda: "avx512_bf16")
    assert trace_precision("auto") == "bf16-mixed" and "native" in capsys.readouterr().err
    monkeypatch.setattr(kernels, "cpu_bf16", lambda: None)
    assert trace_precision("auto") == "fp32" and "no native bf16" in capsys.readouterr().err
    assert trace_precision("bf16-autocast") == "bf16-autocast" and trace_precision("fp32") == "fp32"


def test_fast_path_equals_the_reference_and_restores_clean_exactly(setup):
    """Fast path (corrupted run's cache, runs from the restored layer and token) == full forwards."""
    model, s, f = setup
    fast, ref = tr.Tracer(s, noise=0.6, samples=3, window=3), tr.Tracer(s, noise=0.6, samples=3, window=3, fast=False)
    assert fast.fast and not ref.fast
    assert f.subject_range[0] > 0  # tokens before the subject: their rows are skipped as no-ops
    a, b = fast.trace(f), ref.trace(f)
    assert a["p_corrupt"] == pytest.approx(b["p_corrupt"], abs=1e-6)
    for kind in tr.KINDS:
        torch.testing.assert_close(torch.tensor(a["effects"][kind]), torch.tensor(b["effects"][kind]),
                                   atol=1e-6, rtol=0)
    with torch.no_grad():
        clean, probs = fast.clean(f)
        corrupted = fast.corrupted(f)
        allpos = list(range(len(f.ids)))
        for site in ("layer", "mlp", "attn"):
            for layer in range(s.num_layers):
                layers = [layer] if site == "layer" else list(range(layer, s.num_layers))
                p = fast.restored_fast(f, clean, corrupted, site, [(layers, allpos), (layers, allpos[-1:])])
                if site == "layer":  # every position of one layer restored == the clean run
                    torch.testing.assert_close(p[:1], probs[f.target_id].reshape(1), atol=1e-6, rtol=1e-5)
                ref_p = ref.restored(f, clean, site, layers, [allpos, allpos[-1:]])
                torch.testing.assert_close(p, ref_p, atol=1e-6, rtol=0)


def test_stacked_restorations_equal_one_at_a_time_exactly(setup):
    """restored_fast on all (layer, token) restorations of a kind at once (rows of later layers joining
    the pass at their layer) == each restoration in its own pass, bit for bit in float32. 5 samples:
    the smallest product then has 5 rows (CPU BLAS takes another kernel below that, moving the last bit)."""
    model, s, f = setup
    t = tr.Tracer(s, noise=0.6, samples=5, window=3)
    T, L = len(f.ids), s.num_layers
    with torch.no_grad():
        clean, _ = t.clean(f)
        corrupted = t.corrupted(f)
        for site, sets in (("layer", [[i] for i in range(L)]), ("mlp", [tr._window(i, 3, L) for i in range(L)]),
                           ("attn", [[i] for i in range(L)])):
            rest = [(ls, [tk]) for ls in sets for tk in range(T)] + [(sets[0], list(range(T)))]
            together = t.restored_fast(f, clean, corrupted, site, rest)
            alone = torch.cat([t.restored_fast(f, clean, corrupted, site, [r]) for r in rest])
            assert torch.equal(together, alone), (site, (together - alone).abs().max())
            # several passes (batch_size below the rows of one token) give the same numbers too
            small = tr.Tracer(s, noise=0.6, samples=5, window=3, batch_size=12)
            assert torch.equal(small.restored_fast(f, clean, corrupted, site, rest), together)
            assert together[-1] != together[0]  # restorations differ


@pytest.mark.parametrize("precision", ["bf16", "bf16-mixed"])
def test_bf16_weights_close_to_fp32(setup, precision):
    """precision="bf16": the forwards run on a bfloat16 copy (clean states in bf16, the caller's model
    untouched); "bf16-mixed": only the blocks' matrices are bf16 (residual stream float32, under
    autocast); the probabilities come from a float32 head; effects close to fp32 (and to autocast)."""
    model, s, f = setup
    kw = dict(noise=0.6, samples=3, window=3)
    fp32, bf16, auto = (tr.Tracer(s, **kw), tr.Tracer(s, precision=precision, **kw),
                        tr.Tracer(s, precision="bf16-autocast", **kw))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    full = precision == "bf16"
    assert bf16.w.layers[0].mlp.down.weight.dtype == torch.bfloat16 and bf16.fast
    assert bf16.w.word_embeddings.weight.dtype == (torch.bfloat16 if full else torch.float32)
    with torch.no_grad():
        with bf16.autocast():
            clean, probs = bf16.clean(f)
            assert clean["mlp"][0].dtype == torch.bfloat16 and probs.dtype == torch.float32
            assert clean["layer"][-1].dtype == (torch.bfloat16 if full else torch.float32)
            # every token of a layer restored gives back the model's own clean probability
            allpos, L = list(range(len(f.ids))), s.num_layers
            p = bf16.restored_fast(f, clean, bf16.corrupted(f), "layer", [([i], allpos) for i in range(L)])
            torch.testing.assert_close(p, probs[f.target_id].expand(L), atol=1e-6, rtol=0)
        with auto.autocast():
            assert auto.clean(f)[0]["mlp"][0].dtype == torch.bfloat16
        assert fp32.clean(f)[0]["mlp"][0].dtype == torch.float32
    kinds = ("hidden", "mlp_window", "attn")
    a, b, c = fp32.trace(f, kinds), bf16.trace(f, kinds), auto.trace(f, kinds)
    assert b["p_clean"] == pytest.approx(a["p_clean"], rel=0.05)
    assert b["p_corrupt"] == pytest.approx(a["p_corrupt"], rel=0.05)
    for kind in kinds:
        ea, eb, ec = (torch.tensor(r["effects"][kind]) for r in (a, b, c))
        assert not torch.equal(ea, eb)  # really computed in another precision
        tol = 0.05 * float(ea.abs().max()) + 1e-4
        torch.testing.assert_close(eb, ea, atol=tol, rtol=0)
        torch.testing.assert_close(ec, ea, atol=tol, rtol=0)
    # the reference path (full forwards with hooks) in bf16 gives the fast path's numbers
    ref = tr.Tracer(s, precision=precision, fast=False, **kw)
    r = ref.trace(f, ("hidden",))
    torch.testing.assert_close(torch.tensor(r["effects"]["hidden"]), torch.tensor(b["effects"]["hidden"]),
                               atol=0.02 * float(torch.tensor(a["effects"]["hidden"]).abs().max()) + 1e-4, rtol=0)
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        tr.Tracer(s, noise=0.6, precision="fp16")
