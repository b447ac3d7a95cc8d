"""MEMIT: mass-editing memory in a transformer (Meng et al. 2023).

For a batch of n requests and a range of layers R = [l_1 .. l_L]:

1. For each request, z_i = h_i + delta_i: the block output of the last layer l_L at the subject's last
   token, shifted by a delta optimised exactly like ROME's (``common.optimise_delta`` on the "layer"
   site; the clamp and decay are relative to the residual's norm).
2. For each layer l in R, in order: K = the requests' keys k*_i at l (rows, averaged over the context
   templates as in ROME) under the weights edited so far; the residual still missing at l_L,
   D = z - h(l_L), is spread over the remaining layers, R_l = D / (number of layers left); then::

       W_l' = W_l + R_l^T K (lambda C_l + K^T K)^{-1}

   with C_l = E[k k^T] over a corpus (the identity with ``covariance`` off) and lambda =
   ``mom2_weight`` (the paper's mom2_update_weight).

One request on one layer: D = delta, and by Sherman-Morrison the update is ROME's rank-one update
scaled by q / (lambda + q), q = k*^T C^{-1} k*: ROME is the lambda -> 0 limit (tested).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import plmkit.knowledge.edit.common as common
from plmkit.knowledge.structure import ModelStructure, intervene


@dataclass
class MEMITParams(common.KeyValueParams):
    """The shared key / value hyper-parameters (``layers``: the critical range) and MEMIT's own."""

    mom2_weight: float = 1500.0
    """lambda: weight of the corpus keys against the edited keys (MEMIT's 15,000-20,000 were for
    GPT-J / GPT-2 XL keys of width 16,384 / 6,400; q = k^T C^{-1} k grows with the width I)."""


V_GROUP = 16
"""Requests whose z_i are optimised in shared forwards (``common.optimise_deltas``)."""


def layer_update(K: Tensor, R: Tensor, C: Tensor | None, lam: float) -> Tensor:
    """R^T K (lambda C + K^T K)^{-1}: float64 (H, I) for keys K (n, I) and residuals R (n, H)."""
    K, R = K.double(), R.double()
    A = K.T @ K + lam * (C.double() if C is not None else torch.eye(K.shape[1], dtype=torch.float64))
    return R.T @ torch.linalg.solve(A, K.T).T


@torch.no_grad()
def _residuals(struct: ModelStructure, tok: Any, layer: int, requests: list[common.Request],
               rows_per_forward: int = 64) -> Tensor:
    """The block output of ``layer`` at each request's subject's last token in its bare prompt (n, H)."""
    encs = [common.encode(tok, r.prompt, r.subject) for r in requests]
    got: list[Tensor] = []
    for i in range(0, len(encs), rows_per_forward):
        part = encs[i: i + rows_per_forward]

        def read(_: int, h: Tensor, part=part) -> None:
            got.append(h[torch.arange(len(part)), torch.tensor([e.subject_last for e in part])].float())

        ids, mask = common.pad_batch([e.ids for e in part])
        with intervene(struct, "layer", read, layers=[layer]):
            struct.model(ids, attention_mask=mask, labels_mask=torch.zeros_like(ids, dtype=torch.bool))
    return torch.cat(got)


def apply(struct: ModelStructure, tok: Any, requests: list[common.Request], hp: MEMITParams,
          cov: dict[int, Tensor] | None, rec: common.Recorder, info: dict[str, Any]) -> None:
    layers = sorted(hp.layers)
    last = layers[-1]
    templates = common.context_templates(struct, tok, hp.n_context, hp.context_length, hp.context_seed)
    # z_i: each request's own delta, optimised on the unedited weights as in the paper; the requests of
    # a group share the forwards (``optimise_deltas``: the same result as one at a time, faster)
    t0 = time.process_time()
    zs, ds, info["v_curve"] = [], [], []
    for g in range(0, len(requests), V_GROUP):
        part = requests[g: g + V_GROUP]
        curves: list[list[dict]] = [[] for _ in part]
        delta, clean = common.optimise_deltas(struct, tok, part, "layer", last, templates, hp.v, curves)
        info["v_curve"] += curves
        zs.append(clean + delta)
        ds.append(delta.norm(dim=-1))
    Z = torch.cat(zs)  # (n, H)
    info["z"] = Z
    info["v_cpu_seconds"] = round(time.process_time() - t0, 3)
    for idx, layer in enumerate(layers):
        K = common.subject_keys(struct, tok, layer, requests, templates)  # (n, I)
        D = Z - _residuals(struct, tok, last, requests)
        R = D / (len(layers) - idx)
        C = cov.get(layer) if (hp.covariance and cov) else None
        W = rec.watch(struct.down(layer).weight)
        common.add_(W, layer_update(K, R, C, hp.mom2_weight))
    # what is left of each z_i - h_i at the last layer after the updates, relative to |delta_i| (0: reached)
    left = (Z - _residuals(struct, tok, last, requests)).norm(dim=-1) / torch.cat(ds).clamp(min=1e-12)
    info["z_left"] = [round(float(x), 4) for x in left]
