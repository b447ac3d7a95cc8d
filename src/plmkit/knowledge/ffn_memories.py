"""Feed-forward layers as key-value memories (Geva et al. 2021).

An FFN computes ``down(f(keys x))``: row i of the first matrix is a *key* (with SwiGLU, the pair of
rows of ``gate`` and ``up``), its activation ``m_i`` (the intermediate neuron, see
``plmkit.knowledge.structure``) is the memory coefficient, and column i of ``down`` is the *value*
added to the residual stream with weight ``m_i``.

For a sample of keys of a layer this module finds

- *trigger prefixes*: the corpus prefixes on whose last token the key's activation is largest. The
  corpus is tokenised into one stream, cut into windows of ``context`` tokens, and a prefix is the
  window up to the token. Only a running top-k per key is kept (memory O(keys x k), not O(tokens)),
  and the forward stops after the deepest requested layer.
- *value projection*: the value vector read out through the model's own final norm + LM/MLM head
  (``ModelStructure.readout``), i.e. which tokens the memory promotes; the top tokens are listed.

The report says "key i fires on <prefixes> and its value promotes <tokens>", with the token that
followed each trigger prefix in the corpus and whether it is among the value's top tokens (Geva et
al. found that agreement grows in the upper layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.structure import ModelStructure, intervene


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the needed layers have run."""


@dataclass
class TopK:
    """Running top-k (value, token index) per key."""

    values: Tensor  # (K, k)
    index: Tensor  # (K, k) positions in the token stream

    @classmethod
    def empty(cls, keys: int, k: int) -> "TopK":
        return cls(torch.full((keys, k), -float("inf")), torch.full((keys, k), -1, dtype=torch.long))

    def update(self, acts: Tensor, positions: Tensor) -> None:
        """acts (N, K) at stream positions (N,)."""
        k = self.values.shape[1]
        vals = torch.cat([self.values, acts.T.float()], dim=1)  # (K, k + N)
        idx = torch.cat([self.index, positions[None].expand(acts.shape[1], -1)], dim=1)
        top = vals.topk(min(k, vals.shape[1]), dim=1)
        self.values, self.index = top.values, idx.gather(1, top.indices)


def token_stream(tok: Any, lines: list[str], max_tokens: int | None = None) -> Tensor:
    """All lines tokenised into one 1-D stream (no special tokens), cut at ``max_tokens``."""
    out: list[int] = []
    for line in lines:
        if line.strip():
            out.extend(tok.encode(line.strip() + " ", add_special_tokens=False))
            if max_tokens and len(out) >= max_tokens:
                break
    if not out:
        raise UserError("the corpus has no tokens")
    return torch.tensor(out[:max_tokens] if max_tokens else out)


@torch.no_grad()
def top_triggers(struct: ModelStructure, stream: Tensor, keys: dict[int, list[int]], k: int = 10,
                 context: int = 64, batch_size: int = 16,
                 progress: Callable[[int], None] | None = None) -> dict[int, TopK]:
    """For each layer and its key indices, the running top-k activations over the stream."""
    tops = {layer: TopK.empty(len(ids), k) for layer, ids in keys.items()}
    deepest = max(keys)
    n_win = max(1, stream.numel() // context)
    windows = stream[: n_win * context].view(n_win, context) if stream.numel() >= context else stream[None]
    T = windows.shape[1]
    for b0 in range(0, windows.shape[0], batch_size):
        batch = windows[b0: b0 + batch_size]
        pos = (torch.arange(b0, b0 + batch.shape[0])[:, None] * T + torch.arange(T)[None]).reshape(-1)

        def grab(layer: int, a: Tensor) -> None:
            tops[layer].update(a.reshape(-1, a.shape[-1])[:, keys[layer]], pos)

        def stop(layer: int, h: Tensor) -> None:
            raise _Stop

        try:
            with intervene(struct, "neurons", grab, layers=list(keys)), \
                    intervene(struct, "layer", stop, layers=[deepest]):
                struct.model(batch)
        except _Stop:
            pass
        if progress:
            progress(batch.numel())
    return tops


@torch.no_grad()
def value_tokens(struct: ModelStructure, layer: int, ids: list[int], k: int = 10) -> tuple[Tensor, Tensor]:
    """(top-k token ids, their probabilities) of each value vector read out through final norm + head."""
    values = struct.down(layer).weight[:, ids].T  # (K, H)
    probs = struct.readout(values).float().softmax(-1)  # (K, V)
    top = probs.topk(k, dim=-1)
    return top.indices, top.values


def memories(struct: ModelStructure, tok: Any, stream: Tensor, keys: dict[int, list[int]], k: int = 10,
             context: int = 64, batch_size: int = 16, top_tokens: int = 10,
             progress: Callable[[int], None] | None = None) -> list[dict]:
    """One record per (layer, key): trigger prefixes with activations and next tokens, value top tokens."""
    for layer, ids in keys.items():
        if not 0 <= layer < struct.num_layers:
            raise UserError(f"layer {layer} does not exist: the model has layers 0..{struct.num_layers - 1}")
        bad = [i for i in ids if not 0 <= i < struct.intermediate_size]
        if bad:
            raise UserError(f"key {bad[0]} does not exist: layer {layer} has keys 0..{struct.intermediate_size - 1}")
    tops = top_triggers(struct, stream, keys, k, context, batch_size, progress)
    T = min(context, stream.numel())
    out = []
    for layer, ids in keys.items():
        vt, vp = value_tokens(struct, layer, ids, top_tokens)
        for j, key in enumerate(ids):
            promoted = [int(t) for t in vt[j]]
            triggers = []
            for val, idx in zip(tops[layer].values[j].tolist(), tops[layer].index[j].tolist()):
                if idx < 0:
                    continue
                start = idx - idx % T
                nxt = int(stream[idx + 1]) if idx + 1 < stream.numel() else None
                triggers.append({"prefix": tok.decode(stream[start: idx + 1].tolist()), "activation": round(val, 5),
                                 "next_token": tok.decode([nxt]) if nxt is not None else None,
                                 "next_in_value_top": nxt in promoted if nxt is not None else False})
            out.append({"layer": layer, "key": key, "triggers": triggers,
                        "value_top_tokens": [{"token": tok.decode([t]), "prob": round(float(p), 5)}
                                             for t, p in zip(promoted, vp[j].tolist())]})
    return out


def agreement(records: list[dict]) -> dict[int, float]:
    """Per layer: fraction of trigger prefixes whose next token is among the value's top tokens."""
    by: dict[int, list[bool]] = {}
    for r in records:
        by.setdefault(r["layer"], []).extend(t["next_in_value_top"] for t in r["triggers"])
    return {layer: sum(v) / len(v) for layer, v in by.items() if v}


def markdown(records: list[dict], n_prefixes: int = 3, width: int = 60) -> str:
    """The human-readable report: per memory, what the key fires on and what the value promotes."""
    lines = ["# FFN memories", ""]
    for r in records:
        lines.append(f"## layer {r['layer']}, key {r['key']}")
        lines.append("fires on (activation; next token in the corpus):")
        for t in r["triggers"][:n_prefixes]:
            text = t["prefix"].replace("\n", " ")
            text = ("..." + text[-width:]) if len(text) > width else text
            lines.append(f"- `{text}` ({t['activation']:.3f}; next {t['next_token']!r})")
        toks = ", ".join(repr(v["token"]) for v in r["value_top_tokens"][:8])
        lines.append(f"value promotes: {toks}")
        lines.append("")
    return "\n".join(lines)
