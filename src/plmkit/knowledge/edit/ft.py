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


GROUP = 16
"""Requests that ``each`` fine-tunes side by side in shared forwards."""


def each(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: FTParams) -> list[common.Delta]:
    """Each request's own FT / FT+L edit of the current weights (not applied), as ``Delta``s with
    ``original`` empty and ``info["nll_curve"]``.

    A group of requests is tuned side by side: request c's change ΔW_c of each edited ``down`` is its
    own parameter, added to its own row only (a forward hook: ``W x + ΔW_c x``), and the loss is the sum
    of the requests' NLLs, so each ΔW_c gets exactly its own gradient and Adam (element-wise, started
    together) moves it as it would move W alone. A request below ``nll_stop`` is frozen while the others
    go on. FT+L clips ΔW_c into [-δ, δ] after every step, and the final W + ΔW_c is projected as in
    ``apply`` so the float difference never exceeds δ. Equal to ``apply`` per request up to float
    rounding (tested)."""
    out: list[common.Delta] = []
    for g in range(0, len(requests), GROUP):
        out += _each_group(struct, tok, requests[g: g + GROUP], hp)
    return out


def _each_group(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: FTParams) -> list[common.Delta]:
    n = len(requests)
    mods = [struct.down(layer) for layer in hp.layers]
    names = [common.param_name(struct.model, m.weight) for m in mods]
    D = [torch.zeros((n,) + tuple(m.weight.shape), requires_grad=True) for m in mods]
    prompts = [common.encode(tok, r.prompt).ids for r in requests]
    targets = [common.target_ids(tok, r.target_new) for r in requests]
    lens = torch.tensor([len(t) for t in targets], dtype=torch.float32)
    opt = torch.optim.Adam(D, lr=hp.lr)
    curves: list[list[float]] = [[] for _ in requests]
    done = torch.zeros(n, dtype=torch.bool)

    def hook(d: torch.Tensor):
        def add(mod: torch.nn.Module, args: tuple, y: torch.Tensor) -> torch.Tensor:
            return y + torch.bmm(args[0], d.transpose(1, 2).to(args[0].dtype)).to(y.dtype)
        return add

    handles = [m.register_forward_hook(hook(d)) for m, d in zip(mods, D)]
    try:
        for _ in range(hp.steps):
            opt.zero_grad()
            nll = -common.target_logprobs(struct, prompts, targets) / lens
            for c in range(n):
                if not done[c]:
                    curves[c].append(round(float(nll[c].detach()), 5))
                    if float(nll[c].detach()) < hp.nll_stop:
                        done[c] = True
            if bool(done.all()):
                break
            keep = [d.detach()[done].clone() for d in D]
            nll[~done].sum().backward()
            opt.step()
            with torch.no_grad():
                for d, k in zip(D, keep):
                    if hp.norm_constraint > 0:
                        d.clamp_(-hp.norm_constraint, hp.norm_constraint)
                    d[done] = k
    finally:
        for h in handles:
            h.remove()
    out = []
    with torch.no_grad():
        for c in range(n):
            delta = {}
            for m, name, d in zip(mods, names, D):
                W = m.weight.detach()
                new = W.clone()
                common.add_(new, d[c].detach())
                if hp.norm_constraint > 0:
                    project_(new, W, hp.norm_constraint)
                delta[name] = new.float() - W.float()
            out.append(common.Delta(delta=delta, info={"nll_curve": curves[c]}))
    return out
