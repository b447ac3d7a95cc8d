"""Every trainable objective x every tiny encoder/decoder preset: either ``prepare`` refuses with a
UserError naming the objective, or one training step runs (loss finite, gradients reach the backbone)."""

from __future__ import annotations

import math

import pytest
import torch

import plmkit
from plmkit.errors import UserError
from plmkit.objectives import build

from objective_fixtures import windows

PRESETS = ["bert-tiny", "roberta-tiny", "albert-tiny", "electra-tiny", "gpt-tiny", "gpt2-tiny", "llama-tiny"]
OBJECTIVES = ["clm", "mlm", "nsp", "sop", "rtd", "infoword", "tlm", "unilm"]
EXPECTED_OK = {
    "clm": {"gpt-tiny", "gpt2-tiny", "llama-tiny"},
    "mlm": {"bert-tiny", "roberta-tiny", "albert-tiny"},
    "nsp": {"bert-tiny", "albert-tiny", "electra-tiny"},
    "sop": {"bert-tiny", "albert-tiny", "electra-tiny"},
    "rtd": {"bert-tiny", "roberta-tiny", "albert-tiny", "electra-tiny"},
    "infoword": {"bert-tiny", "roberta-tiny", "albert-tiny", "electra-tiny"},
    "tlm": {"bert-tiny", "albert-tiny"},
    "unilm": {"bert-tiny", "roberta-tiny", "albert-tiny"},
}


def _examples(name, tok, wiki_ids):
    data = windows(wiki_ids, tok, T=20, n=4)
    if name == "tlm":
        return [{"src": d["input_ids"][:8], "tgt": d["input_ids"][8:16]} for d in data]
    return data


@pytest.mark.parametrize("preset", PRESETS)
def test_objective_backbone_matrix(tok, wiki_ids, preset):
    for name in OBJECTIVES:
        torch.manual_seed(0)
        model = plmkit.load(preset, vocab_size=len(tok))
        obj = build(name, tokenizer=tok)
        try:
            obj.prepare(model)
        except UserError as e:
            assert preset not in EXPECTED_OK[name], f"{name} refused {preset}: {e}"
            assert str(e).startswith(name), str(e)
            continue
        assert preset in EXPECTED_OK[name], f"{name} accepted {preset}"
        loss, metrics = obj.loss(model, obj.make_batch(_examples(name, tok, wiki_ids)))
        loss.backward()
        assert math.isfinite(loss.item()) and metrics
        grad = model.get_input_embeddings().weight.grad
        assert grad is not None and grad.abs().sum() > 0, (name, preset)
