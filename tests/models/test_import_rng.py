"""Importing plmkit's model code must not advance torch's global RNG (seeded runs stay reproducible)."""

import subprocess
import sys


def test_importing_layers_leaves_the_global_rng_alone():
    code = ("import torch\ntorch.manual_seed(5)\nimport plmkit.models.layers\nx = torch.randn(4)\n"
            "torch.manual_seed(5)\nprint(torch.equal(x, torch.randn(4)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
