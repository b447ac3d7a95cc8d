"""ROME: rank-one model editing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

For one request at layer l (value matrix W = down(l).weight, H x I):

1. k* = the mean FFN key at the subject's last token over the prompt in ``n_context`` sampled
   context prefixes plus the bare prompt (``common.subject_key``).
2. v* = W k* (+ bias) + delta, where delta is optimised on the MLP output at the subject's last token
   (``common.optimise_delta``: NLL of the new target, KL "essence" term, weight decay, norm clamp).
3. The rank-one update (the paper's eq. 2) with C = E[k k^T] over a corpus::

       W' = W + (v* - W k*) (C^{-1} k*)^T / (k*^T C^{-1} k*)

   W' k* = v* exactly, and W' j = W j for every key j with j^T C^{-1} k* = 0. With ``covariance``
   off, C = I (the variant some reimplementations use for LLaMA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import plmkit.knowledge.edit.common as common
from plmkit.knowledge.edit.covariance import solve
from plmkit.knowledge.structure import ModelStructure


@dataclass
class ROMEParams(common.KeyValueParams):
    """ROME's hyper-parameters: exactly the shared key / value ones (``layers`` holds one layer)."""


def rank_one(W: Tensor, k: Tensor, r: Tensor, C: Tensor | None) -> Tensor:
    """The update r u^T with u = C^{-1} k / (k^T C^{-1} k): float64 (H, I)."""
    ck = solve(C, k)
    u = ck / (k.double() @ ck)
    return torch.outer(r.double(), u)


def apply(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: ROMEParams,
          cov: dict[int, Tensor] | None, rec: common.Recorder, info: dict[str, Any]) -> None:
    (layer,) = hp.layers
    templates = common.context_templates(struct, tok, hp.n_context, hp.context_length, hp.context_seed)
    info["v_curve"] = []
    for req in requests:  # several requests: applied one after the other
        k = common.subject_key(struct, tok, layer, req, templates)
        curve: list[dict] = []
        delta, _ = common.optimise_delta(struct, tok, req, "mlp", layer, templates, hp.v, curve)
        info["v_curve"].append(curve)
        W = rec.watch(struct.down(layer).weight)
        v_star = common.value_output(struct, layer, k) + delta
        r = delta  # = v* - W k*
        C = cov.get(layer) if (hp.covariance and cov) else None
        common.add_(W, rank_one(W, k, r, C))
        info.setdefault("k_star", []).append(k)
        info.setdefault("v_star", []).append(v_star)


V_GROUP = 16
"""Requests whose k* and v* ``each`` computes in shared forwards."""


def each(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: ROMEParams,
         cov: dict[int, Tensor] | None) -> list[common.Delta]:
    """Each request's own ROME edit of the current weights (not applied): what ``apply`` on that request
    alone would change, as a ``Delta`` (new - old of the value matrix, in its dtype; ``original`` empty;
    ``info``: v_curve, k_star, v_star). The keys and v* of a group of requests share forwards
    (``common.subject_keys``, ``common.optimise_deltas``)."""
    (layer,) = hp.layers
    templates = common.context_templates(struct, tok, hp.n_context, hp.context_length, hp.context_seed)
    down = struct.down(layer)
    W = down.weight.detach()
    name = common.param_name(struct.model, down.weight)
    C = cov.get(layer) if (hp.covariance and cov) else None
    out = []
    for g in range(0, len(requests), V_GROUP):
        part = requests[g: g + V_GROUP]
        K = common.subject_keys(struct, tok, layer, part, templates)
        curves: list[list[dict]] = [[] for _ in part]
        deltas, _ = common.optimise_deltas(struct, tok, part, "mlp", layer, templates, hp.v, curves)
        for k, delta, curve in zip(K, deltas, curves):
            new = W.clone()
            common.add_(new, rank_one(W, k, delta, C))
            v_star = common.value_output(struct, layer, k) + delta
            out.append(common.Delta(delta={name: new.float() - W.float()},
                                    info={"v_curve": [curve], "k_star": [k], "v_star": [v_star]}))
    return out
