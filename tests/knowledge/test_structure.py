"""``plmkit.knowledge.structure``: sites found from the module tree, readout, hooks."""

from __future__ import annotations

import pytest
import torch

from plmkit.errors import UserError
from plmkit.knowledge.structure import hidden_states, intervene, locate
from plmkit.models import load


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_readout_of_last_block_is_the_model_output(name, request):
    model = request.getfixturevalue(name)
    s = locate(model)
    assert s.kind == ("mlm" if name == "bert" else "lm")
    assert (s.final_norm is None) == (name == "bert")  # post-LN BERT has no final norm
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        states, out = hidden_states(s, ids)
        assert len(states) == s.num_layers + 1
        torch.testing.assert_close(s.readout(states[-1]), out.logits)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_neuron_site_is_the_input_of_down(name, request):
    """For SwiGLU (llama) the neuron is the product silu(gate x) * up x; for GELU act(up x)."""
    model = request.getfixturevalue(name)
    s = locate(model)
    assert (s.gate(0) is not None) == (name == "llama")
    seen, mlp_in = {}, {}
    ids = torch.randint(5, 100, (1, 5))
    with torch.no_grad(), intervene(s, "neurons", lambda i, a: seen.__setitem__(i, a.clone())), \
            intervene(s, "mlp", lambda i, o: None):
        handles = [s.mlp(i).register_forward_pre_hook(lambda m, a, i=i: mlp_in.__setitem__(i, a[0]))
                   for i in range(s.num_layers)]
        model(ids)
        for h in handles:
            h.remove()
    for i in range(s.num_layers):
        torch.testing.assert_close(seen[i], s.key_activations(i, mlp_in[i]))
        assert seen[i].shape[-1] == s.intermediate_size


def test_shared_layers_are_counted_per_application(wordpiece_tok):
    torch.manual_seed(0)
    model = load("albert-tiny", vocab_size=len(wordpiece_tok)).eval()
    s = locate(model)
    assert s.layers[0] is s.layers[-1]
    calls = []
    with torch.no_grad(), intervene(s, "layer", lambda i, h: calls.append(i)):
        model(torch.randint(5, 50, (1, 4)))
        model(torch.randint(5, 50, (1, 4)))
    assert calls == list(range(s.num_layers)) * 2


def test_replacing_a_site_output_changes_the_result(gpt2):
    s = locate(gpt2)
    ids = torch.randint(5, 100, (1, 6))
    with torch.no_grad():
        ref = gpt2(ids).logits
        with intervene(s, "mlp", lambda i, o: torch.zeros_like(o), layers=[1]):
            zeroed = gpt2(ids).logits
        again = gpt2(ids).logits  # the hook is gone
    assert not torch.allclose(ref, zeroed)
    torch.testing.assert_close(ref, again)


def test_models_without_a_head_are_refused(wordpiece_tok):
    model = load("bert-tiny", vocab_size=len(wordpiece_tok), head=None)  # like all-MiniLM-L6-v2
    with pytest.raises(UserError, match="no LM/MLM head"):
        locate(model)
