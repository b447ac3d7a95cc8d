"""``PretrainedModel``: one base (heads, add_head, layer_groups, device/dtype) for every model class,
and the hooks through which models reach saving / decoding without importing upward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import plmkit
from plmkit.models import hooks
from plmkit.models.base import PretrainedModel
from plmkit.models.presets import PRESETS

# one tiny preset of every kind of the preset table
ONE_PER_KIND = ["bert-tiny", "unilm-tiny", "glm-tiny", "t5-tiny", "deberta-tiny", "xlnet-tiny", "lstm-tiny",
                "elmo-tiny", "ffnn-tiny", "canine-tiny"]


def test_every_preset_kind_is_covered():
    assert {PRESETS[n].kind for n in ONE_PER_KIND} == {p.kind for p in PRESETS.values()}


@pytest.mark.parametrize("name", ONE_PER_KIND)
def test_one_base_and_one_add_head(name):
    torch.manual_seed(0)
    m = plmkit.load(name)
    assert isinstance(m, PretrainedModel)
    for attr in ("add_head", "layer_groups", "num_parameters", "save_pretrained"):
        assert getattr(type(m), attr) is getattr(PretrainedModel, attr), (name, attr)
    # layer_groups: every parameter exactly once, embeddings first, one group per layer module
    groups = m.layer_groups()
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat)) == len(list(m.parameters()))
    assert len(groups) == len(m.layer_modules()) + 2 and groups[0]
    assert m.num_parameters() == sum(p.numel() for p in m.parameters())
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    # add_head: moved to the model's dtype, duplicate names refused unless replace=True
    m.to(torch.bfloat16)
    head = m.add_head("probe", nn.Linear(4, 2))
    assert m.heads["probe"] is head and head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="already has a head named 'probe'"):
        m.add_head("probe", nn.Linear(4, 2))
    other = m.add_head("probe", nn.Linear(4, 3), replace=True)
    assert m.heads["probe"] is other
    assert id(other.weight) in {id(p) for p in m.layer_groups()[-1]}


def test_recurrent_add_head_keeps_the_heads_own_initialisation():
    torch.manual_seed(0)
    m = plmkit.load("lstm-tiny")
    head = nn.Linear(4, 2)
    before = head.weight.detach().clone()
    m.add_head("probe", head)
    assert torch.equal(head.weight, before)


def test_save_and_generate_go_through_the_registered_hooks(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(hooks._HOOKS, "save_pretrained", lambda model, out, **kw: calls.append(("save", out, kw)))
    monkeypatch.setitem(hooks._HOOKS, "generate", lambda model, ids, attention_mask=None, **kw: calls.append(
        ("generate", ids.shape, kw)))
    m = plmkit.load("gpt2-tiny")
    m.save_pretrained(tmp_path, dtype="bf16")
    m.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=2)
    assert calls == [("save", tmp_path, {"dtype": "bf16"}), ("generate", (1, 3), {"max_new_tokens": 2})]


def test_unknown_hooks_and_missing_registrations_are_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown model hook 'sav'"):
        hooks.register_hook("sav", print)
    monkeypatch.delitem(hooks._BUILDERS, "recurrent")
    with pytest.raises(plmkit.UserError, match="no builder for 'recurrent' presets registered"):
        plmkit.load("lstm-tiny")
