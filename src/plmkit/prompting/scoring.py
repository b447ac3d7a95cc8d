"""Log-likelihood of continuations after a prompt, with a KV cache shared by a common prefix.

In-context evaluation scores every label continuation of every eval example after the same
demonstrations. ``continuation_logprobs(model, prefix, items)`` runs the common ``prefix`` once
(batch 1, ``use_cache=True``), then each batch of (query + continuation) rows attends to a copy of
those cached keys/values instead of re-encoding the prefix per row (``share_prefix=False`` does
the re-encoding, for checking and for measuring the speed-up).

Rows are right-padded without an attention mask: under causal attention no scored position sees a
padding token. The LM head runs only at the scored positions (``labels_mask``). When every
continuation of an item is one token, one row scores them all (one forward per eval example).

Precision (``scoring_model``): ``"bf16"`` scores with a copy of the model whose blocks' linear weights are
bfloat16, run under bf16 autocast (matrix products and KV cache bf16, residual stream and norms float32);
its final norm and LM head are the caller's float32 modules, so the label log-probabilities (final norm,
head, log-softmax over the vocabulary) are float32.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from plmkit.errors import UserError


PRECISIONS = ("fp32", "bf16")


class _Float32(nn.Module):
    """A float32 module (the caller's final norm or LM head) applied to its input cast to float32, autocast off."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def scoring_model(model, precision: str):
    """The model that scores for ``precision``: ``model`` itself for "fp32"; for "bf16" a copy whose
    blocks' ``nn.Linear`` weights are bfloat16 and whose backbone runs under bf16 autocast (every matrix
    product in bf16, the KV cache bf16; the residual stream, embeddings and norms float32), with the
    caller's float32 final norm and LM head run on float32 inputs, autocast off. Only the linear weights
    are copied (the embeddings, norms and head are the caller's, shared); the caller's model is not modified.

    (A whole-bf16 copy, residual stream included, is as fast on SmolLM2 but moves the label log-likelihoods
    1.7-5x more: docs/PROMPTING.md "Precision".)"""
    if precision == "fp32":
        return model
    if precision != "bf16":
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module) or not callable(getattr(model, "backbone", None)):
        raise UserError(f"--precision bf16: the {type(model).__name__} model has no backbone / LM head to run "
                        "in mixed precision; use --precision fp32")
    linear = {id(p) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name != "head"
              and not name.startswith("head.") for p in m.parameters(recurse=False)}
    memo = {id(p): p for p in model.parameters() if id(p) not in linear}  # shared, never cast
    fast = copy.deepcopy(model, memo)
    fast.head = _Float32(head)
    if isinstance(getattr(model, "final_norm", None), nn.Module):
        fast.final_norm = _Float32(model.final_norm)
    for name, m in fast.named_modules():
        if isinstance(m, nn.Linear) and not name.startswith("head."):
            m.to(torch.bfloat16)  # the copy's own weights (not in memo)
    backbone = fast.backbone  # the bound method; forward and generation both call model.backbone

    def autocast_backbone(*args: Any, **kwargs: Any):
        device = next(fast.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            return backbone(*args, **kwargs)

    fast.backbone = autocast_backbone
    return fast.eval()


def _expand_cache(model, prefix_kv: tuple[torch.Tensor, torch.Tensor], cache_type: type, batch: int,
                  extra: int) -> Any:
    """A fresh cache of ``batch`` rows already holding the (L, 1, Nkv, P, D) prefix keys/values."""
    k, v = prefix_kv
    P = k.shape[3]
    cache = cache_type.for_model(model, batch, P + extra)
    for layer in range(k.shape[0]):
        cache.update(layer, k[layer].expand(batch, -1, -1, -1), v[layer].expand(batch, -1, -1, -1))
    cache.advance(P)
    return cache


def encode_prefix(model, prefix: Sequence[int]) -> tuple[tuple[torch.Tensor, torch.Tensor], type] | None:
    """Run ``prefix`` once; return its cached (keys, values) and the cache class (None for an empty prefix)."""
    if not prefix:
        return None
    dev = next(model.parameters()).device
    out = model(torch.tensor([list(prefix)], device=dev), use_cache=True,
                labels_mask=torch.zeros(1, len(prefix), dtype=torch.bool, device=dev))
    cache = out.past_key_values
    n = len(cache)
    return (cache.k[:, :, :, :n].clone(), cache.v[:, :, :, :n].clone()), type(cache)


@torch.no_grad()
def continuation_logprobs(model, prefix: Sequence[int], items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                          batch_size: int = 8, share_prefix: bool = True,
                          encoded_prefix: Any = None) -> list[list[list[float]]]:
    """Per-token log-probabilities of each continuation.

    Args:
        prefix: token ids common to every item (demonstrations); may be empty.
        items: (query ids, [continuation ids, ...]) per item; the query must not be empty.
        share_prefix: encode ``prefix`` once and reuse its KV cache (else prepend it to every row).
        encoded_prefix: the result of ``encode_prefix(model, prefix)``, to reuse across calls.
    Returns:
        ``out[i][j]`` = the log-probabilities of the tokens of continuation j of item i.
    """
    prefix = list(prefix)
    rows = []  # (item, conts or None, ids, positions, targets per position)
    for i, (query, conts) in enumerate(items):
        query = list(query)
        if not query:
            raise UserError("continuation scoring needs a non-empty query after the prefix")
        if any(len(c) == 0 for c in conts):
            raise UserError("a continuation to score has no tokens")
        if all(len(c) == 1 for c in conts):
            rows.append((i, None, query, [len(query) - 1], [[c[0] for c in conts]]))
        else:
            for j, c in enumerate(conts):
                c = list(c)
                rows.append((i, j, query + c[:-1], list(range(len(query) - 1, len(query) - 1 + len(c))),
                             [[t] for t in c]))
    out: list[list[list[float]]] = [[[] for _ in conts] for _, conts in items]
    if not rows:
        return out
    dev = next(model.parameters()).device
    use_cache = share_prefix and bool(prefix)
    if use_cache and encoded_prefix is None:
        encoded_prefix = encode_prefix(model, prefix)
    lead = [] if use_cache else prefix
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][2]))
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    for s in range(0, len(order), batch_size):
        chunk = [rows[r] for r in order[s: s + batch_size]]
        T = len(lead) + max(len(r[2]) for r in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), T, dtype=torch.bool)
        for b, (_, _, seq, pos, _) in enumerate(chunk):
            full = lead + seq
            ids[b, : len(full)] = torch.tensor(full)
            mask[b, [len(lead) + p for p in pos]] = True
        cache = None
        if use_cache:
            kv, cache_type = encoded_prefix
            cache = _expand_cache(model, kv, cache_type, len(chunk), T)
        logits = model(ids.to(dev), labels_mask=mask.to(dev), past_key_values=cache).logits  # (N, V)
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        n = 0
        for item, j, _, pos, targets in chunk:
            for p_i, tgt in enumerate(targets):
                vals = logp[n, tgt].tolist()
                if j is None:  # all single-token: one value per continuation
                    for jj, v in enumerate(vals):
                        out[item][jj].append(v)
                else:
                    out[item][j].append(vals[0])
                n += 1
    return out


def aggregate(token_logprobs: Sequence[float], how: str) -> float:
    """``sum`` (log-likelihood of the continuation) or ``mean`` (per token)."""
    if how == "sum":
        return float(sum(token_logprobs))
    if how == "mean":
        return float(sum(token_logprobs) / len(token_logprobs))
    raise UserError(f"unknown aggregation {how!r}; expected sum or mean")
