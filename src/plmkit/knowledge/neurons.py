"""Knowledge neurons (Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers").

*Neuron* (l, i): entry i of the FFN intermediate activation of layer l at the position where the
object is predicted (the mask for MLMs, the last prompt token for causal LMs); for LLaMA's SwiGLU
it is the product ``silu(gate x)_i * (up x)_i`` before ``down`` (``plmkit.knowledge.structure``).

*Attribution* (integrated gradients, baseline 0): with w the clean activations of layer l at that
position and P(y | l := a) the probability of the correct object when layer l's activations there
are set to ``a``,

    Attr(l, i) = w_i * (1/m) * sum_{k=1..m} dP(y | l := (k/m) w) / da_i        (m = 20 Riemann steps)

so sum_i Attr(l, i) ~ P(y | l := w) - P(y | l := 0) (completeness). One batched forward + backward of
m rows per layer and prompt.

*Selection*: per prompt keep the neurons with Attr > t * (max attribution of that prompt over all
layers) (t = 0.2); then keep those kept by at least p% of the fact's prompts (p = 0.7), and, as in
the paper, move p by 0.05 until 2..5 neurons remain (``adapt``; bounded to p in [0, 1]).

*Edits*: ``suppress`` sets the neurons' activations to 0 and ``amplify`` doubles them (at every
position, so suppressing all neurons of a layer equals zeroing that FFN's value matrix);
``erase`` sets their value vectors (columns of ``down``) to the embedding of the tokenizer's
unknown token (zero when it has none); ``update`` adds ``-lambda1 e(old) + lambda2 e(new)`` to
them (lambda1 = 1, lambda2 = 8), e the word embeddings of the objects' first tokens.
"""

from __future__ import annotations

import contextlib
import math
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.blocks import PrefixCache, attention_context, fast_path_ok, run_kept
from plmkit.knowledge.lama import causal_ids
from plmkit.knowledge.structure import ModelStructure, intervene


@dataclass
class KFact:
    """A fact asked by several prompts (each with ``[Y]`` at the object, or ending before it)."""

    id: str
    prompts: list[str]
    target: str
    relation: str | None = None
    target_new: str | None = None
    neurons: list[tuple[int, int]] = field(default_factory=list)


def read_facts(path: str | Path, n: int | None = None) -> list[KFact]:
    """JSON list or JSONL of facts: ``{"prompts", "target", "relation"?, "id"?}``, or ROME's
    known_1000 layout (prompt, attribute, relation_id) or CounterFact's EasyEdit layout (prompt +
    rephrase_prompt, ground_truth, target_new)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: facts file not found")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(x) for x in text.splitlines() if x.strip()]
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON / JSONL ({e})") from None
    out = []
    for k, r in enumerate(rows[:n] if n else rows):
        where = f"{path}: fact {k}"
        if not isinstance(r, dict):
            raise UserError(f"{where}: expected an object")
        if "prompts" in r:
            prompts, target = r["prompts"], r.get("target")
        elif "rephrase_prompt" in r:
            prompts, target = [r.get("prompt"), r.get("rephrase_prompt")], r.get("ground_truth")
        else:
            prompts, target = [r.get("prompt")], r.get("attribute", r.get("target"))
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise UserError(f"{where}: expected non-empty prompt strings")
        if not isinstance(target, str) or not target.strip():
            raise UserError(f"{where}: missing or empty target (target / attribute / ground_truth)")
        rid = r.get("id", r.get("known_id", r.get("case_id", k)))
        out.append(KFact(str(rid), prompts, target.strip(), r.get("relation", r.get("relation_id")),
                         r.get("target_new") if isinstance(r.get("target_new"), str) else None))
    return out


@dataclass
class Prompt:
    ids: list[int]
    pos: int
    target: int


def encode_prompt(struct: ModelStructure, tok: Any, prompt: str, target: str) -> Prompt:
    """Token ids, the prediction position and the target's (first) token for an MLM or a causal LM."""
    slot = "[Y]" if "[Y]" in prompt else "[MASK]" if "[MASK]" in prompt else None
    tgt = list(tok.encode(" " + target.strip(), add_special_tokens=False))
    if struct.kind == "mlm":
        mask_id = getattr(tok, "mask_token_id", None)
        if mask_id is None:
            raise UserError("the tokenizer has no mask token; an MLM needs one")
        text = prompt.replace(slot, tok.convert_ids_to_tokens(mask_id)) if slot else \
            prompt.rstrip() + " " + tok.convert_ids_to_tokens(mask_id)
        ids = list(tok.encode(text, add_special_tokens=True))
        if ids.count(mask_id) != 1:
            raise UserError(f"prompt {prompt!r}: expected exactly one object slot")
        tgt = list(tok.encode(target.strip(), add_special_tokens=False)) or tgt
        return Prompt(ids, ids.index(mask_id), tgt[0])
    text = prompt[: prompt.index(slot)].rstrip() if slot else prompt.rstrip()
    ids = causal_ids(tok, text)
    if not ids:
        raise UserError(f"prompt {prompt!r}: nothing before the object")
    return Prompt(ids, len(ids) - 1, tgt[0])


# ------------------------------------------------------------------------------------------ attribution
def _target_prob(struct: ModelStructure, ids: Tensor, pos: int, target: int) -> Tensor:
    sel = torch.zeros_like(ids, dtype=torch.bool)
    sel[:, pos] = True
    return struct.model(ids, labels_mask=sel).logits.float().softmax(-1)[:, target]  # (B,)


def activations(struct: ModelStructure, p: Prompt) -> Tensor:
    """Clean intermediate activations (L, I) at the prediction position."""
    acts: list[Tensor] = [None] * struct.num_layers
    with torch.no_grad(), intervene(struct, "neurons", lambda i, a: acts.__setitem__(i, a[0, p.pos].clone())):
        struct.model(torch.tensor([p.ids]))
    return torch.stack(acts)


def integrated_gradients(struct: ModelStructure, p: Prompt, layer: int, base: Tensor, steps: int = 20) -> Tensor:
    """Attr (I,) of every neuron of ``layer`` for the prompt (see the module docstring)."""
    alphas = torch.arange(1, steps + 1, dtype=base.dtype) / steps
    scaled = (alphas[:, None] * base[None]).detach().requires_grad_(True)  # (m, I)

    def put(i: int, a: Tensor) -> Tensor:
        a = a.clone()
        a[:, p.pos] = scaled.to(a.dtype)
        return a

    ids = torch.tensor([p.ids]).expand(steps, -1)
    with torch.enable_grad(), intervene(struct, "neurons", put, layers=[layer]):
        prob = _target_prob(struct, ids, p.pos, p.target)
        (grad,) = torch.autograd.grad(prob.sum(), scaled)
    return base * grad.mean(0)


def attribute(struct: ModelStructure, p: Prompt, steps: int = 20, layers: list[int] | None = None,
              fast: bool = True) -> Tensor:
    """Attributions (L, I) of every FFN neuron for one prompt (rows outside ``layers`` stay 0).

    ``fast`` (plmkit causal LMs, the object predicted after the last prompt token): :func:`attribute_stacked`,
    the same attributions from one pass that computes only what the scaled activations change; otherwise one
    full forward + backward of ``steps`` rows per layer (:func:`integrated_gradients`)."""
    todo = list(range(struct.num_layers)) if layers is None else list(layers)
    if fast and fast_path_ok(struct) and p.pos == len(p.ids) - 1:
        return attribute_stacked(struct, p, steps, todo)
    base = activations(struct, p)
    out = torch.zeros_like(base, dtype=torch.float32)
    for layer in todo:
        out[layer] = integrated_gradients(struct, p, layer, base[layer], steps)
    return out


def attribute_stacked(struct: ModelStructure, p: Prompt, steps: int, layers: list[int]) -> Tensor:
    """``attribute`` for a causal LM whose prediction position is the prompt's last token, in one pass.

    Scaling layer l's activations at the last position changes nothing before that position (causal
    attention) and nothing below block l. So the clean prompt runs once (every block's input and the KV
    cache are kept); then the ``steps`` scaled rows of every requested layer l join one batch at block l,
    from the kept input of block l at the last position, attending to the kept keys / values of the earlier
    positions, and one backward gives every layer's gradients. Per layer this computes ``steps`` x (L - l)
    block applications of one position instead of ``steps`` x L of the whole prompt; the result equals
    :func:`integrated_gradients` up to float rounding (tested)."""
    order = sorted(set(layers))
    L, T = struct.num_layers, len(p.ids)
    acts: dict[int, Tensor] = {}
    with torch.no_grad(), intervene(struct, "neurons", lambda i, a: acts.__setitem__(i, a[0, -1].clone()),
                                    layers=order):
        inputs, cache, _ = run_kept(struct, torch.tensor([p.ids]))
    out = torch.zeros(L, struct.intermediate_size, dtype=torch.float32)
    if not order:
        return out
    dtype = inputs[0].dtype
    alphas = torch.arange(1, steps + 1, dtype=acts[order[0]].dtype) / steps
    scaled = {i: (alphas[:, None] * acts[i][None]).detach().requires_grad_(True) for i in order}  # (m, I) each

    def put(i: int, a: Tensor) -> Tensor:  # the rows of layer i joined last, at this block
        a = a.clone()
        a[a.shape[0] - steps:, 0] = scaled[i].to(a.dtype)
        return a

    ctx = attention_context(struct, 1, T - 1, PrefixCache(cache, T - 1, 1), dtype)
    with torch.enable_grad(), intervene(struct, "neurons", put, layers=order):
        x = inputs[order[0]][:0, T - 1:]
        for i in range(order[0], L):
            if i in scaled:
                x = torch.cat([x, inputs[i][:, T - 1:].expand(steps, -1, -1)])
            x = struct.layers[i](x, ctx, i)
        prob = struct.readout(x[:, -1]).float().softmax(-1)[:, p.target]
        grads = torch.autograd.grad(prob.sum(), [scaled[i] for i in order])
    for i, g in zip(order, grads):
        out[i] = (acts[i] * g.mean(0)).float()
    return out


def select(attrs: list[Tensor], threshold: float = 0.2, share: float = 0.7, adapt: bool = True,
           lo: int = 2, hi: int = 5) -> tuple[list[tuple[int, int]], float]:
    """(knowledge neurons [(layer, index)], the share finally used) from per-prompt (L, I) attributions."""
    per = [a > threshold * a.max() for a in attrs]  # (L, I) bool each
    counts = torch.stack(per).sum(0)  # (L, I)
    n = len(attrs)

    def pick(s: float) -> list[tuple[int, int]]:
        need = max(1, math.ceil(round(s * n, 6)))  # round: 0.6 * 5 must not become 3.0000000000000004
        return [tuple(map(int, x)) for x in (counts >= need).nonzero().tolist()]

    chosen = pick(share)
    for _ in range(20):
        if not adapt or lo <= len(chosen) <= hi:
            break
        new = share + 0.05 if len(chosen) > hi else share - 0.05
        if not 0.0 <= new <= 1.0 + 1e-9:
            break
        share = new
        chosen = pick(share)
    return chosen, round(share, 4)


# ------------------------------------------------------------------------------------------ edits
@contextlib.contextmanager
def scale_neurons(struct: ModelStructure, neurons: list[tuple[int, int]], factor: float) -> Iterator[None]:
    """Multiply the neurons' activations by ``factor`` at every position (0: suppress, 2: amplify)."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(layer, []).append(i)

    def fn(layer: int, a: Tensor) -> Tensor:
        a = a.clone()
        a[..., by_layer[layer]] *= factor
        return a

    with intervene(struct, "neurons", fn, layers=list(by_layer)):
        yield


@contextlib.contextmanager
def set_values(struct: ModelStructure, neurons: list[tuple[int, int]], new: Tensor | None = None,
               delta: Tensor | None = None) -> Iterator[None]:
    """Temporarily set (``new``, (H,)) or shift (``delta``) the value vectors of ``neurons``."""
    saved = []
    with torch.no_grad():
        for layer, i in neurons:
            w = struct.down(layer).weight  # (H, I): column i is neuron i's value vector
            saved.append((w, i, w[:, i].clone()))
            if new is not None:
                w[:, i] = new.to(w.dtype)
            if delta is not None:
                w[:, i] += delta.to(w.dtype)
    try:
        yield
    finally:
        with torch.no_grad():
            for w, i, col in reversed(saved):
                w[:, i] = col


@torch.no_grad()
def probs(struct: ModelStructure, prompts: list[Prompt], targets: list[int] | None = None) -> list[float]:
    """P(target) at each prompt's prediction position (``targets`` overrides the prompts' own)."""
    out = []
    for k, p in enumerate(prompts):
        t = p.target if targets is None else targets[k]
        out.append(float(_target_prob(struct, torch.tensor([p.ids]), p.pos, t)[0]))
    return out


def relative_change(before: list[float], after: list[float]) -> float | None:
    """Mean of (after - before) / before, in percent."""
    pairs = [(b, a) for b, a in zip(before, after) if b > 0]
    return 100.0 * sum((a - b) / b for b, a in pairs) / len(pairs) if pairs else None


def word_embedding(struct: ModelStructure, tok: Any, text: str | None) -> Tensor:
    """Embedding (H,) of the first token of " " + text (of the unknown token when ``text`` is None;
    zeros when the tokenizer has none)."""
    if text is None:
        unk = getattr(tok, "unk_token_id", None)
        if unk is None:
            return torch.zeros(struct.hidden_size)
        return struct.word_embeddings.weight[unk].detach().float()
    ids = tok.encode(" " + text.strip(), add_special_tokens=False)
    e = struct.word_embeddings.weight[ids[0]].detach().float()
    if e.shape[0] != struct.hidden_size:
        raise UserError(f"word embeddings ({e.shape[0]}) and hidden states ({struct.hidden_size}) differ in "
                        "width (factorised embeddings); value-vector edits need them equal")
    return e
