"""Fine-tuning baselines: FT and FT+L (constrained fine-tuning, Zhu et al. 2020).

Both minimise the NLL of the new target's tokens after the prompt (summed over the requests of a
batch) with Adam, updating only the FFN value matrices ``down`` of the chosen layers (the papers'
FT baseline tunes one MLP output matrix).

- FT: unconstrained, ``steps`` steps (stops early when the mean NLL < ``nll_stop``).
- FT+L: projected gradient descent: after every step each entry is clipped back into
  [theta_0 - delta, theta_0 + delta], so ||theta - theta_0||_inf <= delta always holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import plmkit.knowledge.edit.common as common
from plmkit.knowledge.structure import ModelStructure


@dataclass
class FTParams:
    layers: list[int] | None = None
    steps: int = 25
    lr: float = 5e-4
    nll_stop: float = 0.01
    norm_constraint: float = 0.0
    """delta of FT+L (> 0); 0 = unconstrained FT."""


def project_(w: torch.Tensor, w0: torch.Tensor, bound: float) -> None:
    """Clip ``w`` in place into [w0 - bound, w0 + bound] so that the float difference |w - w0| <= bound
    holds exactly (w0 +- bound rounds; entries it pushes past the bound step one ulp back towards w0)."""
    w.copy_(torch.maximum(torch.minimum(w, w0 + bound), w0 - bound))
    for _ in range(4):
        over = (w - w0).abs() > bound
        if not bool(over.any()):
            return
        w[over] = torch.nextafter(w[over], w0[over])


def apply(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: FTParams,
          rec: common.Recorder, info: dict[str, Any]) -> None:
    weights = [rec.watch(struct.down(layer).weight) for layer in hp.layers]
    theta0 = [w.detach().clone() for w in weights]
    prompts = [common.encode(tok, r.prompt).ids for r in requests]
    targets = [common.target_ids(tok, r.target_new) for r in requests]
    ntok = sum(len(t) for t in targets)
    for w in weights:
        w.requires_grad_(True)
    opt = torch.optim.Adam(weights, lr=hp.lr)
    curve = []
    try:
        for step in range(hp.steps):
            opt.zero_grad()
            nll = -common.target_logprobs(struct, prompts, targets).sum() / ntok
            curve.append(round(float(nll.detach()), 5))
            if float(nll.detach()) < hp.nll_stop:
                break
            nll.backward()
            opt.step()
            if hp.norm_constraint > 0:
                with torch.no_grad():
                    for w, w0 in zip(weights, theta0):
                        project_(w, w0, hp.norm_constraint)
    finally:
        for w in weights:
            w.requires_grad_(False)
            w.grad = None
    info["nll_curve"] = curve
