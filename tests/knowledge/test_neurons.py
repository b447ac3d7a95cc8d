"""Knowledge neurons: IG completeness, suppress == zeroed FFN, amplify == doubled values, selection, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.cli.main import main
from plmkit.errors import UserError
from plmkit.knowledge import neurons as kn
from plmkit.knowledge.structure import intervene, locate


@pytest.mark.parametrize("name,tokname,prompt", [
    ("bert", "wordpiece_tok", "the native language of Alice Smith is [Y] ."),
    ("gpt2", "bpe_tok", "the native language of Alice Smith is"),
    ("llama", "bpe_tok", "the native language of Alice Smith is")])
def test_ig_attributions_sum_to_the_output_difference(name, tokname, prompt, request):
    """Completeness: sum_i Attr(l, i) ~ P(y | l := w) - P(y | l := 0); the Riemann error shrinks with steps."""
    model, tok = request.getfixturevalue(name), request.getfixturevalue(tokname)
    model.requires_grad_(False)
    s = locate(model)
    p = kn.encode_prompt(s, tok, prompt, "French")
    base = kn.activations(s, p)
    layer = s.num_layers - 1

    def prob_with(a):
        def put(i, x):
            x = x.clone()
            x[:, p.pos] = a
            return x

        with torch.no_grad(), intervene(s, "neurons", put, layers=[layer]):
            return float(kn._target_prob(s, torch.tensor([p.ids]), p.pos, p.target)[0])

    diff = prob_with(base[layer]) - prob_with(torch.zeros_like(base[layer]))
    assert abs(diff) > 1e-6
    coarse = float(kn.integrated_gradients(s, p, layer, base[layer], steps=4).sum())
    fine = float(kn.integrated_gradients(s, p, layer, base[layer], steps=200).sum())
    assert abs(fine - diff) <= 0.02 * abs(diff) + 1e-6
    assert abs(fine - diff) <= abs(coarse - diff) + 1e-7
    full = kn.attribute(s, p, steps=2)
    assert full.shape == (s.num_layers, s.intermediate_size)
    part = kn.attribute(s, p, steps=2, layers=[layer])
    torch.testing.assert_close(part[layer], full[layer], rtol=1e-5, atol=1e-8)
    assert not part[0].any()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_stacked_attribution_equals_one_pass_per_layer(name, bpe_tok, request):
    """The one-pass attribution of a causal LM (scaled rows join at their own block, last position only)
    equals the full forward + backward per layer, for every layer and for a subset."""
    model = request.getfixturevalue(name)
    model.requires_grad_(False)
    s = locate(model)
    p = kn.encode_prompt(s, bpe_tok, "the native language of Alice Smith is", "French")
    slow = kn.attribute(s, p, steps=5, fast=False)
    fast = kn.attribute(s, p, steps=5)
    assert slow.abs().max() > 0
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-7)
    sub = kn.attribute(s, p, steps=5, layers=[s.num_layers - 1, 0])
    assert torch.equal(sub[1:-1], torch.zeros_like(sub[1:-1])) if s.num_layers > 2 else True
    torch.testing.assert_close(sub[[0, -1]], slow[[0, -1]], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_suppressing_all_neurons_of_a_layer_equals_a_zeroed_ffn(name, request):
    model = request.getfixturevalue(name)
    s = locate(model)
    ids = torch.randint(5, 100, (2, 6))
    everything = [(1, i) for i in range(s.intermediate_size)]
    with torch.no_grad():
        with kn.scale_neurons(s, everything, 0.0):
            suppressed = model(ids).logits
        w = s.down(1).weight
        saved = w.clone()
        w.zero_()  # the FFN's value matrix zeroed: the layer's FFN adds only its output bias
        zeroed = model(ids).logits
        w.copy_(saved)
        # amplifying some neurons = doubling their value vectors (the FFN is linear in them)
        some = [(0, 3), (0, 7), (1, 5)]
        with kn.scale_neurons(s, some, 2.0):
            amplified = model(ids).logits
        for layer, i in some:
            s.down(layer).weight[:, i] *= 2
        doubled = model(ids).logits
        for layer, i in some:
            s.down(layer).weight[:, i] /= 2
        after = model(ids).logits
    torch.testing.assert_close(suppressed, zeroed)
    torch.testing.assert_close(amplified, doubled)
    assert not torch.allclose(suppressed, after)


def test_select_threshold_share_and_adapt():
    a1 = torch.zeros(2, 4)
    a2 = torch.zeros(2, 4)
    a1[0, 1], a1[1, 2], a1[1, 3] = 1.0, 0.5, 0.1  # 0.1 < 0.2 x max
    a2[0, 1], a2[1, 3] = 2.0, 1.0
    chosen, share = kn.select([a1, a2], 0.2, 0.7, adapt=False)
    assert chosen == [(0, 1)] and share == 0.7
    chosen, share = kn.select([a1, a2], 0.2, 0.7, adapt=True)  # 1 < 2 neurons: p drops to 0.5 (2 x 0.5 = 1 prompt)
    assert chosen == [(0, 1), (1, 2), (1, 3)] and share == pytest.approx(0.5)


def test_value_edits_are_undone(gpt2, bpe_tok):
    s = locate(gpt2)
    before = s.down(0).weight.clone()
    with kn.set_values(s, [(0, 2), (0, 4)], new=torch.ones(s.hidden_size)):
        assert torch.equal(s.down(0).weight[:, 2], torch.ones(s.hidden_size))
    with kn.set_values(s, [(0, 2)], delta=kn.word_embedding(s, bpe_tok, "France")):
        assert not torch.equal(s.down(0).weight, before)
    assert torch.equal(s.down(0).weight, before)


def test_read_facts_layouts(tmp_path):
    p = tmp_path / "f.json"
    p.write_text(json.dumps([{"case_id": 3, "prompt": "A, by", "rephrase_prompt": "A is owned by",
                              "ground_truth": "B", "target_new": "C"},
                             {"known_id": 4, "prompt": "X is in", "attribute": "Y", "relation_id": "P1"},
                             {"id": "z", "prompts": ["p [Y] ."], "target": "T", "relation": "R"}]))
    f = kn.read_facts(p)
    assert [x.prompts for x in f] == [["A, by", "A is owned by"], ["X is in"], ["p [Y] ."]]
    assert [x.target for x in f] == ["B", "Y", "T"] and f[0].target_new == "C" and f[1].relation == "P1"
    p.write_text(json.dumps([{"prompts": ["a"]}]))
    with pytest.raises(UserError, match="fact 0: missing or empty target"):
        kn.read_facts(p)


def test_neurons_cli_find_and_edit(model_dirs, tmp_path, capsys):
    facts = [{"id": "a", "prompts": ["the native language of Alice Smith is", "Alice Smith speaks"],
              "target": "French", "relation": "P103", "target_new": "German"},
             {"id": "b", "prompts": ["Paris is located in", "Paris is in"], "target": "France", "relation": "P17"},
             {"id": "c", "prompts": ["Rome is located in", "Rome is in"], "target": "Italy", "relation": "P17"}]
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    out = tmp_path / "kn"
    assert main(["neurons", "find", "--model", str(model_dirs["gpt2"]), "--facts", str(path), "--steps", "4",
                 "--out", str(out)]) == 0
    found = json.loads((out / "neurons.json").read_text())
    assert [r["id"] for r in found["facts"]] == ["a", "b", "c"]
    assert all(r["neurons"] and len(r["top_attributions"]) == 2 for r in found["facts"])
    for mode in ("suppress", "amplify", "erase", "update"):
        argv = ["neurons", "edit", "--model", str(model_dirs["gpt2"]), "--neurons", str(out / "neurons.json"),
                f"--{mode}", "--out", str(out)]
        if mode == "update":
            assert main(argv) == 2 and "has no target_new" in capsys.readouterr().err  # facts b, c lack one
            continue
        assert main(argv) == 0
        res = json.loads((out / f"edit_{mode}.json").read_text())
        assert res["n_facts"] == 3 and res["own_change_pct"] is not None
        first = res["facts"][0]
        assert first["n_control_prompts"] == 4  # the two P17 facts are the other relation's facts
        if mode == "suppress":
            sup = res
    assert sup["facts"][0]["own_after"] != sup["facts"][0]["own_before"]
    assert main(["neurons", "find", "--model", str(model_dirs["gpt2"]), "--facts", str(path), "--layers", "1-5",
                 "--out", str(out)]) == 2
    assert "the model has layers 0..1" in capsys.readouterr().err
    assert main(["neurons", "find", "--model", str(model_dirs["gpt2"]), "--facts", str(tmp_path / "none.json"),
                 "--out", str(out)]) == 2
    assert "facts file not found" in capsys.readouterr().err
