"""ROME / MEMIT / FT / FT+L / KN editing on tiny models: closed forms, exact undo, bounds, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from plmkit.errors import UserError
from plmkit.knowledge.edit import Request, common, covariance, edit, edit_each, load_hparams, memit, rome, undo
from plmkit.knowledge.structure import locate

import plmkit


def tiny(name, tok, seed=0, **kw):
    """A small random model of ``name`` for ``tok`` (as tests/knowledge/conftest.py builds them)."""
    torch.manual_seed(seed)
    return plmkit.load(name, vocab_size=len(tok), bos_token_id=None, eos_token_id=None, **kw).eval()

REQ = Request("Paris is located in", "Paris", "Japan", "France")
FAST_V = {"steps": 6, "lr": 0.5}
# random tiny models have tiny MLP outputs: the paper's decay / clamp (relative to them) would pin delta
STRONG_V = {"steps": 15, "weight_decay": 0.0, "clamp_norm_factor": 1e4}


@pytest.fixture()
def llama(bpe_tok):
    return tiny("llama-tiny", bpe_tok, seed=1, num_layers=4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, text_lines) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "text.txt"
    p.write_text("\n".join(text_lines * 3))
    return p


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model, snap) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), k


def covs(struct, tok, corpus, layers):
    return {x: covariance.compute(struct, tok, x, [corpus], samples=600, seq_len=32, progress=False)[0]
            for x in layers}


def test_rank_one_equals_constrained_least_squares_solved_independently():
    g = np.random.default_rng(0)
    H, I = 5, 7
    W = g.normal(size=(H, I))
    k = g.normal(size=I)
    v = g.normal(size=H)
    A = g.normal(size=(I, 3 * I))
    C = A @ A.T / (3 * I)
    upd = rome.rank_one(torch.tensor(W), torch.tensor(k), torch.tensor(v - W @ k), torch.tensor(C)).numpy()
    # independent: for each output row minimise d^T C d subject to d . k = r_i (KKT system)
    kkt = np.block([[2 * C, k[:, None]], [k[None, :], np.zeros((1, 1))]])
    for i in range(H):
        sol = np.linalg.solve(kkt, np.concatenate([np.zeros(I), [v[i] - W[i] @ k]]))
        np.testing.assert_allclose(upd[i], sol[:I], rtol=1e-9, atol=1e-12)
    # C = I: the plain projection r k^T / |k|^2
    eye = rome.rank_one(torch.tensor(W), torch.tensor(k), torch.tensor(v - W @ k), None).numpy()
    np.testing.assert_allclose(eye, np.outer(v - W @ k, k) / (k @ k), rtol=1e-12)


def test_rome_maps_the_key_to_v_star_leaves_orthogonal_keys_and_undoes_bit_for_bit(llama, bpe_tok, corpus):
    s = locate(llama)
    layer = 1
    C = covs(s, bpe_tok, corpus, [layer])
    hp = load_hparams("rome", {"layers": [layer], "n_context": 2, "context_length": 4, "v": FAST_V})
    snap = snapshot(llama)
    W0 = s.down(layer).weight.detach().double().clone()
    delta = edit(llama, [REQ], "rome", hp, tokenizer=bpe_tok, covariance=C)
    k, v_star = delta.info["k_star"][0], delta.info["v_star"][0]
    W1 = s.down(layer).weight.detach().double()
    torch.testing.assert_close(common.value_output(s, layer, k).double(), v_star.double(), rtol=1e-4, atol=1e-4)
    assert (v_star - (W0 @ k.double()).float()).norm() > 1e-3  # the edit moved it
    j = torch.randn(k.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ck = torch.linalg.solve(C[layer], k.double())
    j = j - (j @ ck) / (k.double() @ ck) * k.double()  # j^T C^-1 k* = 0
    torch.testing.assert_close(W1 @ j, W0 @ j, rtol=1e-4, atol=1e-5)
    assert (W1 @ k.double() - W0 @ k.double()).norm() > 1e-3
    assert [n for n in delta.original] == [common.param_name(llama, s.down(layer).weight)]
    undo(llama, delta)
    assert_same(llama, snap)


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
@pytest.mark.parametrize("site", ["mlp", "layer"])
def test_split_forward_equals_the_full_forward_with_the_shift(bpe_tok, name, site):
    """v*'s forwards run only from the subject's last token on, against the prefix's frozen keys /
    values: logits and the gradient w.r.t. delta equal a plain full forward with the same hook."""
    model = tiny(name, bpe_tok, seed=2, num_layers=3)
    s = locate(model)
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, len(bpe_tok), (n,), generator=g).tolist() for n in (9, 5, 7, 4)]
    split = [3, 0, 6, 2]  # different prefix lengths, one empty
    sel = [[3, 5, 8], [0, 4], [6], [3]]
    layer = 1

    def run(full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        delta = torch.randn(s.hidden_size, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        if full:
            ids, mask = common.pad_batch(rows)
            where = torch.zeros(ids.shape + (1,))
            where[torch.arange(len(rows)), torch.tensor(split)] = 1.0
        else:
            fwd = common.SplitForward(s, rows, split)
            where = torch.zeros(fwd.ids.shape + (1,))
            where[:, 0] = 1.0
        from plmkit.knowledge.structure import intervene

        with intervene(s, site, lambda i, out: out + where * delta, layers=[layer]):
            if full:
                m = torch.zeros_like(ids, dtype=torch.bool)
                for b, ps in enumerate(sel):
                    m[b, ps] = True
                lg = model(ids, attention_mask=mask, labels_mask=m).logits
            else:
                lg = fwd.logits(sel)
        (lg.log_softmax(-1)[:, 7].sum()).backward()
        return lg.detach(), delta.grad

    with common.frozen(model):
        full, g_full = run(True)
        split_lg, g_split = run(False)
    assert full.shape == split_lg.shape == (7, len(bpe_tok))
    torch.testing.assert_close(split_lg, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_split, g_full, rtol=1e-4, atol=1e-6)
    assert g_full.norm() > 0


def test_v_star_optimisation_lowers_the_new_target_nll(llama, bpe_tok):
    hp = load_hparams("rome", {"layers": [0], "n_context": 1, "context_length": 3, "v": STRONG_V}, covariance=False)
    d = edit(llama, [REQ], "rome", hp, tokenizer=bpe_tok)
    (curve,) = d.info["v_curve"]
    assert curve[-1]["nll"] < curve[0]["nll"] - 0.05
    undo(llama, d)


@pytest.mark.parametrize("name, site", [("llama-tiny", "layer"), ("llama-tiny", "mlp"), ("gpt2-tiny", "layer")])
def test_v_star_of_several_requests_at_once_equals_one_at_a_time(bpe_tok, name, site):
    """optimise_deltas (MEMIT's z_i in shared forwards): each request's delta, clean value and curve
    equal a separate optimise_delta call, including a request that stops early (NLL < nll_stop)
    while the others go on, and the norm clamp."""
    model = tiny(name, bpe_tok, seed=1, num_layers=3)
    s = locate(model)
    reqs = [REQ, Request("Bob Jones is a native speaker of", "Bob Jones", "German", "English"),
            Request("the native language of Alice Smith is", "Alice Smith", "French", "English")]
    templates = common.context_templates(s, bpe_tok, 1, 3)
    with common.frozen(model):
        free = common.VParams(steps=8, lr=0.5, weight_decay=0.1, clamp_norm_factor=1e4, nll_stop=0.0)
        probe = []
        common.optimise_delta(s, bpe_tok, reqs[1], site, 1, templates, free, probe)
        # a threshold that stops request 1 early, at the first step reaching its lowest NLL
        vp = common.VParams(steps=8, lr=0.5, weight_decay=0.1, clamp_norm_factor=1e4,
                            nll_stop=min(x["nll"] for x in probe[1:7]) + 1e-5)
        single = []
        for r in reqs:
            curve = []
            single.append((*common.optimise_delta(s, bpe_tok, r, site, 1, templates, vp, curve), curve))
        assert 1 < len(single[1][2]) < 8 and max(len(x[2]) for x in single) == 8  # stopped early; others go on
        curves = [[], [], []]
        deltas, cleans = common.optimise_deltas(s, bpe_tok, reqs, site, 1, templates, vp, curves)
    assert deltas.shape == cleans.shape == (3, s.hidden_size)
    for i, (d, c, curve) in enumerate(single):
        torch.testing.assert_close(deltas[i], d, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(cleans[i], c, rtol=1e-5, atol=1e-6)
        assert [x["step"] for x in curves[i]] == [x["step"] for x in curve]
        for a, b in zip(curves[i], curve):
            assert a["nll"] == pytest.approx(b["nll"], rel=1e-3, abs=1e-4)
            assert a["norm"] == pytest.approx(b["norm"], rel=1e-3, abs=1e-4)
    # the clamp: each delta held to clamp_norm_factor x its own clean norm
    tight = common.VParams(steps=4, lr=0.5, weight_decay=0.0, clamp_norm_factor=0.05, nll_stop=0.0)
    with common.frozen(model):
        deltas, cleans = common.optimise_deltas(s, bpe_tok, reqs, site, 1, templates, tight)
        one = common.optimise_delta(s, bpe_tok, reqs[2], site, 1, templates, tight)[0]
    assert torch.all(deltas.norm(dim=-1) <= 0.05 * cleans.norm(dim=-1) * (1 + 1e-5))
    torch.testing.assert_close(deltas[2], one, rtol=1e-3, atol=1e-5)


def test_memit_one_edit_one_layer_is_rome_scaled_by_q_over_lambda_plus_q(llama, bpe_tok, corpus):
    g = torch.Generator().manual_seed(0)
    K = torch.randn(1, 6, dtype=torch.float64, generator=g)
    r = torch.randn(1, 4, dtype=torch.float64, generator=g)
    A = torch.randn(6, 18, dtype=torch.float64, generator=g)
    C = A @ A.T / 18
    lam = 3.0
    q = K[0] @ torch.linalg.solve(C, K[0])
    torch.testing.assert_close(memit.layer_update(K, r, C, lam),
                               rome.rank_one(None, K[0], r[0], C) * q / (lam + q), rtol=1e-10, atol=1e-12)
    # several keys, lambda -> 0: every key gets exactly its residual (least squares with n < I)
    Kn = torch.randn(3, 6, dtype=torch.float64, generator=g)
    Rn = torch.randn(3, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(memit.layer_update(Kn, Rn, C, 1e-9) @ Kn.T, Rn.T, rtol=1e-6, atol=1e-6)
    # end to end: the same v* optimisation (no decay / clamp, which are relative to different norms)
    s = locate(llama)
    Cs = covs(s, bpe_tok, corpus, [1])
    v = {"steps": 5, "weight_decay": 0.0, "clamp_norm_factor": 1e6}
    snap = snapshot(llama)
    d_rome = edit(llama, [REQ], "rome", load_hparams("rome", {"layers": [1], "n_context": 1, "context_length": 3,
                                                                 "v": v}), tokenizer=bpe_tok, covariance=Cs)
    undo(llama, d_rome)
    lam = 50.0
    d_memit = edit(llama, [REQ], "memit", load_hparams("memit", {"layers": [1], "n_context": 1, "context_length": 3,
                                                                   "v": v, "mom2_weight": lam}),
                   tokenizer=bpe_tok, covariance=Cs)
    undo(llama, d_memit)
    assert_same(llama, snap)
    k = d_rome.info["k_star"][0].double()
    q = float(k @ torch.linalg.solve(Cs[1], k))
    (name,) = d_rome.delta
    torch.testing.assert_close(d_memit.delta[name].double(), d_rome.delta[name].double() * q / (lam + q),
                               rtol=2e-3, atol=1e-6)


def test_memit_batch_over_layers_writes_several_facts(llama, bpe_tok, corpus):
    s = locate(llama)
    C = covs(s, bpe_tok, corpus, [0, 1])
    reqs = [REQ, Request("Berlin is located in", "Berlin", "Spain", "Germany")]
    hp = load_hparams("memit", {"layers": [0, 1], "n_context": 1, "context_length": 3, "mom2_weight": 1.0,
                                "v": STRONG_V})
    snap = snapshot(llama)
    delta = edit(llama, reqs, "memit", hp, tokenizer=bpe_tok, covariance=C)
    assert len(delta.delta) == 2
    assert len(delta.info["v_curve"]) == 2
    undo(llama, delta)
    assert_same(llama, snap)


def test_memit_batch_of_100_edits_maps_every_key_to_its_target(bpe_tok, corpus, text_lines):
    """--batch-size 100: one MEMIT call writes 100 facts over two layers; with the bare prompt as the only
    context and a tiny lambda, each request's last-layer output at its subject reaches its z_i (read
    back independently from the edited model's hidden states)."""
    from plmkit.knowledge.structure import hidden_states

    model = tiny("llama-tiny", bpe_tok, seed=1, num_layers=4)  # z at block 2: block 3 carries it on
    s = locate(model)
    words = ["Paris", "Berlin", "Rome", "Madrid", "Tokyo", "France", "Germany", "Italy", "Spain", "Japan"]
    reqs = [Request(f"{a} {b} is located in", f"{a} {b}", words[5 + (i + j) % 5], None)
            for i, a in enumerate(words) for j, b in enumerate(words)]
    assert len(reqs) == 100
    C = covs(s, bpe_tok, corpus, [1, 2])
    hp = load_hparams("memit", {"layers": [1, 2], "n_context": 0, "mom2_weight": 1e-3,
                                "v": {"steps": 1, "weight_decay": 0.0, "clamp_norm_factor": 1e4}})
    snap = snapshot(model)
    delta = edit(model, reqs, "memit", hp, tokenizer=bpe_tok, covariance=C)
    assert len(delta.info["v_curve"]) == 100 and len(delta.delta) == 2
    Z = delta.info["z"]
    for r, z in zip(reqs, Z):
        e = common.encode(bpe_tok, r.prompt, r.subject)
        hs, _ = hidden_states(s, torch.tensor([e.ids]))
        torch.testing.assert_close(hs[3][0, e.subject_last], z, rtol=1e-3, atol=1e-3)  # block 2's output
    assert max(delta.info["z_left"]) < 1e-3
    undo(model, delta)
    assert_same(model, snap)


@pytest.mark.parametrize("bound", [1e-3, 2e-2])
def test_ft_l_never_exceeds_the_bound_while_ft_does(llama, bpe_tok, bound):
    s = locate(llama)
    W0 = s.down(1).weight.detach().clone()
    hp = load_hparams("ft-l", {"layers": [1], "steps": 10, "lr": 0.05, "norm_constraint": bound, "nll_stop": 0.0})
    delta = edit(llama, [REQ], "ft-l", hp, tokenizer=bpe_tok)
    dev = (s.down(1).weight.detach() - W0).abs().max().item()
    assert bound * 0.5 < dev <= bound * (1 + 1e-6)
    undo(llama, delta)
    assert torch.equal(s.down(1).weight, W0)
    d_ft = edit(llama, [REQ], "ft", load_hparams("ft", {"layers": [1], "steps": 10, "lr": 0.05, "nll_stop": 0.0}),
                tokenizer=bpe_tok)
    assert (s.down(1).weight.detach() - W0).abs().max().item() > 2 * bound
    undo(llama, d_ft)


def test_kn_edit_moves_value_vectors_and_undoes(llama, bpe_tok):
    s = locate(llama)
    snap = snapshot(llama)
    hp = load_hparams("kn", {"layers": [0, 1], "steps": 4, "n_context": 2, "context_length": 3})
    delta = edit(llama, [REQ], "kn", hp, tokenizer=bpe_tok)
    (neurons,) = delta.info["neurons"]
    assert neurons
    e = 8 * s.word_embeddings.weight[common.target_ids(bpe_tok, "Japan")[0]] - \
        s.word_embeddings.weight[common.target_ids(bpe_tok, "France")[0]]
    layer, i = neurons[0]
    name = common.param_name(llama, s.down(layer).weight)
    torch.testing.assert_close(delta.delta[name][:, i], e.detach().float() * sum(
        1 for n in neurons if n == [layer, i]), rtol=1e-5, atol=1e-5)
    undo(llama, delta)
    assert_same(llama, snap)


@pytest.mark.parametrize("req, match", [
    (Request("Paris is located in", "Rome", "Japan"), "not found in prompt"),
    (Request("Paris is located in", "Paris", "  "), "empty target"),
    (Request("Paris is located in", "Paris", "France", "France"), "true object already"),
])
def test_bad_requests_are_refused_and_nothing_changes(llama, bpe_tok, req, match):
    snap = snapshot(llama)
    with pytest.raises(UserError, match=match):
        edit(llama, [req], "rome", load_hparams("rome", {"layers": [0]}, covariance=False), tokenizer=bpe_tok)
    assert_same(llama, snap)


def test_layer_out_of_range_and_missing_covariance(llama, bpe_tok):
    with pytest.raises(UserError, match="out of range"):
        edit(llama, [REQ], "rome", load_hparams("rome", {"layers": [4]}), tokenizer=bpe_tok)
    with pytest.raises(UserError, match="no key covariance"):
        edit(llama, [REQ], "rome", load_hparams("rome", {"layers": [1]}), tokenizer=bpe_tok)
    with pytest.raises(UserError, match="unknown key"):
        load_hparams("rome", {"layer": 3})


def test_covariance_is_cached_on_disk_and_reused(llama, bpe_tok, corpus, tmp_path, monkeypatch):
    s = locate(llama)
    C1 = covariance.layer_stats(s, bpe_tok, 1, corpus, 300, tmp_path, seq_len=32, progress=False)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    ref, n = covariance.compute(s, bpe_tok, 1, [corpus], 300, 32, progress=False)
    assert n == 300
    torch.testing.assert_close(C1, ref.float().double())
    monkeypatch.setattr(covariance, "compute_many", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    torch.testing.assert_close(covariance.layer_stats(s, bpe_tok, 1, corpus, 300, tmp_path, seq_len=32), C1)
    # uncentred second moment of the keys: equals an explicit E[k k^T] over the same tokens
    wins = list(covariance.token_windows(bpe_tok, [corpus], 300, 32))
    ks = torch.cat([common.keys_at(s, 1, [w], [t]) for w, front in wins for t in range(front, len(w))])
    assert len(ks) == 300
    torch.testing.assert_close(ref, (ks.double().T @ ks.double()) / len(ks), rtol=1e-6, atol=1e-8)


def test_every_recipe_loads():
    root = Path(__file__).resolve().parents[2] / "recipes" / "editing"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        method = yaml.safe_load(f.read_text())["method"]
        assert f.name.startswith(method + "-") and f.name[len(method) + 1:].startswith(("llama", "gpt2"))
        hp = load_hparams(method, f)
        assert hp.layers


@pytest.mark.parametrize("method", ["rome", "ft", "ft-l", "kn"])
def test_edit_each_equals_one_edit_per_request_and_leaves_the_model(llama, bpe_tok, corpus, monkeypatch, method):
    """edit_each: every request's delta equals edit([request]) then undo; ROME computes the keys and v*
    of a group together, FT / FT+L tune the requests side by side (groups of 2 here, so 3 requests
    make a full and a partial group; FT stops one request early while the others go on)."""
    from plmkit.knowledge.edit import ft
    s = locate(llama)
    reqs = [REQ, Request("Berlin is located in", "Berlin", "Spain", "Germany"),
            Request("the native language of Bob Jones is", "Bob Jones", "French", "English")]
    if method == "rome":
        monkeypatch.setattr(rome, "V_GROUP", 2)
        hp = load_hparams("rome", {"layers": [1], "n_context": 1, "context_length": 3,
                                   "v": {"steps": 5, "weight_decay": 0.1, "clamp_norm_factor": 1e4, "nll_stop": 0.0}})
        C = covs(s, bpe_tok, corpus, [1])
    elif method == "kn":
        hp, C = load_hparams("kn", {"layers": [0, 1, 2], "steps": 4, "n_context": 0, "threshold": 0.1,
                                    "share": 0.5, "lambda2": 3.0}), None
    else:
        monkeypatch.setattr(ft, "GROUP", 2)
        hp, C = load_hparams(method, {"layers": [1, 2], "steps": 6, "lr": 0.05,
                                      **({"norm_constraint": 0.01} if method == "ft-l" else {})}), None
        if method == "ft":  # a stop that request 1 reaches early (its curve's lowest NLL after step 0)
            probe = edit(llama, [reqs[1]], method, hp, tokenizer=bpe_tok)
            undo(llama, probe)
            hp.nll_stop = min(probe.info["nll_curve"][1:5]) + 1e-5
    snap = snapshot(llama)
    got = edit_each(llama, reqs, method, hp, tokenizer=bpe_tok, covariance=C)
    assert_same(llama, snap)
    assert len(got) == 3
    for r, d in zip(reqs, got):
        want = edit(llama, [r], method, hp, tokenizer=bpe_tok, covariance=C)
        undo(llama, want)
        assert d.delta.keys() == want.delta.keys() and not d.original
        for k in want.delta:
            torch.testing.assert_close(d.delta[k], want.delta[k], rtol=2e-3, atol=1e-6)
            assert float(want.delta[k].norm()) > 0
        if method == "rome":
            assert len(d.info["v_curve"][0]) == 5
            torch.testing.assert_close(d.info["v_star"][0], want.info["v_star"][0], rtol=1e-4, atol=1e-6)
        if method in ("ft", "ft-l"):
            assert d.info["nll_curve"] == pytest.approx(want.info["nll_curve"], rel=1e-4, abs=1e-5)
            if method == "ft-l":
                assert all(float(x.abs().max()) <= 0.01 for x in d.delta.values())
    if method == "ft":
        lens = [len(d.info["nll_curve"]) for d in got]
        assert min(lens) < max(lens)  # one stopped early while another went on
    with pytest.raises(UserError, match="not found in prompt"):
        edit_each(llama, [Request("Paris is nice", "Berlin", "Spain")], method, hp, tokenizer=bpe_tok, covariance=C)
