"""Checkpoints written before the one-way refactor (tests/fixtures/ckpt_v0, made by make_ckpt_v0.py at
commit d526c06) still load, with the same state-dict keys and the logits stored then."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import plmkit

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "ckpt_v0"


@pytest.mark.parametrize("name", ["bert", "gpt2", "t5", "mass", "lstm"])
def test_v0_checkpoint_loads_with_stored_logits(name, tmp_path):
    expected = load_file(str(FIX / "expected.safetensors"))
    ids = expected["input_ids"]
    model = plmkit.load(str(FIX / name)).eval()
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=ids[:, :4]) if name in ("t5", "mass") else model(ids)
    torch.testing.assert_close(out.logits, expected[f"{name}.logits"], rtol=1e-5, atol=1e-5)
    # saving again writes the same tensor names as the old code did
    model.save_pretrained(tmp_path / name)
    old, new = load_file(str(FIX / name / "model.safetensors")), load_file(str(tmp_path / name / "model.safetensors"))
    assert sorted(old) == sorted(new)
    for k in old:
        torch.testing.assert_close(new[k], old[k])
