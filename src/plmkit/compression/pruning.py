"""Pruning: attention heads and feed-forward neurons by importance (removed, so the matrices shrink), and
unstructured magnitude pruning (weights set to zero; the matrices keep their shape).

Importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): every head h of layer l gets
a gate ``xi_{l,h} = 1`` multiplying its output before the output projection; its importance is the mean
over examples of ``|dL / d xi_{l,h}|`` (L the task loss), normalised per layer by the L2 norm over that
layer's heads (their Sec. 4.1). FFN neurons get the same treatment with a gate on each intermediate unit
(before ``mlp.down``). The least important units are removed globally; every layer keeps at least one
head and one neuron, so no layer has empty matrices.

:func:`prune_heads` / :func:`prune_neurons` remove units physically (rows of ``attn.qkv`` / columns of
``attn.o``; rows of ``mlp.up`` / ``mlp.gate`` and columns of ``mlp.down``), so the model is smaller and
faster with the same outputs as the gated model with those gates at 0. :func:`magnitude_prune` zeroes
the smallest weights of the blocks' linear layers, globally or per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from plmkit.errors import UserError


def check_fraction(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
        raise UserError(f"{name} {value!r}: expected a fraction in [0, 1)")
    return float(value)


class HeadGates:
    """Gates (ones, requires_grad) on every head's output and every FFN neuron, as forward pre-hooks on
    ``attn.o`` and ``mlp.down``. ``heads[l]`` (Nh,), ``neurons[l]`` (I,). ``remove()`` detaches them."""

    def __init__(self, model: nn.Module, heads: bool = True, neurons: bool = False):
        self.heads, self.neurons, self.handles = [], [], []
        for layer in model.layers:
            attn, mlp = layer.attn, layer.mlp
            if heads:
                g = torch.ones(attn.num_heads, requires_grad=True)
                self.heads.append(g)
                self.handles.append(attn.o.register_forward_pre_hook(self._head_hook(g, attn.head_dim)))
            if neurons:
                g = torch.ones(mlp.down.in_features, requires_grad=True)
                self.neurons.append(g)
                self.handles.append(mlp.down.register_forward_pre_hook(self._neuron_hook(g)))

    @staticmethod
    def _head_hook(gate: Tensor, D: int):
        def hook(module, args):
            x = args[0]  # (B, T, Nh * D)
            return (x * gate.repeat_interleave(D).to(x.dtype),)
        return hook

    @staticmethod
    def _neuron_hook(gate: Tensor):
        def hook(module, args):
            return (args[0] * gate.to(args[0].dtype),)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def importance(model: nn.Module, loss_fn: Callable[[nn.Module, dict], Tensor], batches: Iterable[dict],
               heads: bool = True, neurons: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """(head importance per layer, neuron importance per layer): mean |dL/d gate| over ``batches``,
    normalised per layer (L2). ``loss_fn(model, batch)`` is the task loss; the model runs in eval mode."""
    was_training = model.training
    model.eval()
    gates = HeadGates(model, heads, neurons)
    h_acc = [torch.zeros_like(g) for g in gates.heads]
    n_acc = [torch.zeros_like(g) for g in gates.neurons]
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        n = 0
        for batch in batches:
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, gates.heads + gates.neurons)
            for acc, g in zip(h_acc + n_acc, grads):
                acc += g.abs()
            n += 1
        if n == 0:
            raise UserError("importance: no batches to score (give examples)")
    finally:
        gates.remove()
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
    norm = [a / n / (a / n).norm().clamp_min(1e-12) for a in h_acc]
    norm_n = [a / n / (a / n).norm().clamp_min(1e-12) for a in n_acc]
    return norm, norm_n


def lowest(scores: list[Tensor], fraction: float) -> dict[int, list[int]]:
    """The ``fraction`` of all units with the lowest scores, per layer, keeping >= 1 unit in every layer."""
    check_fraction("fraction", fraction)
    total = sum(len(s) for s in scores)
    k = int(round(fraction * total))
    order = sorted(((float(v), layer, i) for layer, s in enumerate(scores) for i, v in enumerate(s.tolist())))
    left = {layer: len(s) for layer, s in enumerate(scores)}
    out: dict[int, list[int]] = {layer: [] for layer in range(len(scores))}
    for _, layer, i in order:
        if k == 0:
            break
        if left[layer] > 1:
            out[layer].append(i)
            left[layer] -= 1
            k -= 1
    return {layer: sorted(v) for layer, v in out.items()}


def _keep(n: int, remove: list[int]) -> Tensor:
    bad = [i for i in remove if not 0 <= i < n]
    if bad:
        raise UserError(f"unit {bad[0]} out of range: expected 0..{n - 1}")
    drop = set(remove)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _linear_from(old: nn.Linear, weight: Tensor, bias: Tensor | None) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    return new


def prune_heads(model: nn.Module, remove: dict[int, list[int]]) -> list[int]:
    """Remove heads ``remove[layer]`` physically; returns the heads left per layer."""
    for layer, heads in remove.items():
        if not heads:
            continue
        attn = model.layers[layer].attn
        if attn.num_kv_heads != attn.num_heads:
            raise UserError("head pruning supports multi-head attention only (this model uses grouped-query heads)")
        Nh, D = attn.num_heads, attn.head_dim
        keep = _keep(Nh, heads)
        if len(keep) == 0:
            raise UserError(f"layer {layer}: cannot remove all {Nh} heads")
        cols = (keep[:, None] * D + torch.arange(D)).flatten()  # channels of the kept heads
        rows = torch.cat([cols + part * Nh * D for part in range(3)])  # q | k | v
        w, b = attn.qkv.weight.detach(), attn.qkv.bias
        attn.qkv = _linear_from(attn.qkv, w[rows], None if b is None else b.detach()[rows])
        attn.o = _linear_from(attn.o, attn.o.weight.detach()[:, cols],
                              None if attn.o.bias is None else attn.o.bias.detach())
        attn.num_heads = attn.num_kv_heads = len(keep)
        attn.split = (len(keep) * D,) * 3
    return [layer.attn.num_heads for layer in model.layers]


def prune_neurons(model: nn.Module, remove: dict[int, list[int]]) -> list[int]:
    """Remove FFN neurons ``remove[layer]`` physically; returns the inner width per layer."""
    for layer, units in remove.items():
        if not units:
            continue
        mlp = model.layers[layer].mlp
        keep = _keep(mlp.down.in_features, units)
        for name in ("gate", "up"):
            if hasattr(mlp, name):
                lin = getattr(mlp, name)
                setattr(mlp, name, _linear_from(lin, lin.weight.detach()[keep],
                                                None if lin.bias is None else lin.bias.detach()[keep]))
        mlp.down = _linear_from(mlp.down, mlp.down.weight.detach()[:, keep],
                                None if mlp.down.bias is None else mlp.down.bias.detach())
    return [layer.mlp.down.in_features for layer in model.layers]


def block_linears(model: nn.Module) -> list[tuple[int, str, nn.Linear]]:
    """(layer, name, module) of every ``nn.Linear`` inside the Transformer blocks."""
    return [(i, n, m) for i, layer in enumerate(model.layers) for n, m in layer.named_modules()
            if isinstance(m, nn.Linear)]


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "global") -> dict:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights of the blocks' linear layers, over all of
    them at once (``global``) or in each layer separately (``layer``). Returns the achieved sparsity."""
    check_fraction("--sparsity", sparsity)
    if scope not in ("global", "layer"):
        raise UserError(f"--scope {scope!r}: expected global or layer")
    linears = block_linears(model)
    groups: dict = {}
    for i, n, m in linears:
        groups.setdefault("all" if scope == "global" else i, []).append(m)
    for mods in groups.values():
        flat = torch.cat([m.weight.detach().abs().flatten() for m in mods])
        k = int(sparsity * flat.numel())
        if k == 0:
            continue
        threshold = flat.kthvalue(k).values
        for m in mods:
            m.weight.masked_fill_(m.weight.abs() <= threshold, 0.0)
    zeros = sum(int((m.weight == 0).sum()) for _, _, m in linears)
    total = sum(m.weight.numel() for _, _, m in linears)
    return {"target": sparsity, "scope": scope, "achieved": zeros / total}


# ---------------------------------------------------------------------------- gradual magnitude pruning
def cubic_sparsity(step: int, final: float, initial: float = 0.0, start: int = 0, n: int = 1, every: int = 1
                   ) -> float:
    """Zhu & Gupta (2017), eq. 1: ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3`` at the pruning steps
    ``t = t0, t0 + dt, ..., t0 + n dt``; ``s_i`` before ``t0``, held between pruning steps, ``s_f`` after."""
    if step < start:
        return initial
    t = start + (min(step - start, n * every) // every) * every
    return final + (initial - final) * (1.0 - (t - start) / (n * every)) ** 3


class GradualPruner:
    """Gradual magnitude pruning of the blocks' linear weights on the cubic schedule, during training.

    At every pruning step the masks are recomputed: the ``s_t`` fraction of smallest-magnitude weights of each
    group (all blocks at once for ``global``, one group per layer for ``layer``) is masked, weights masked
    earlier counting as the smallest, so masks only grow and the count is exact (``round(s_t * size)``).
    :meth:`apply` zeroes the masked weights; :meth:`attached` does that after every optimizer step (an
    optimizer step post-hook, so Adam's moments cannot revive a pruned weight) and advances the schedule."""

    def __init__(self, model: nn.Module, final: float, initial: float = 0.0, start: int = 0, n: int = 10,
                 every: int = 1, scope: str = "global"):
        check_fraction("--sparsity", final)
        check_fraction("--initial-sparsity", initial)
        if initial > final:
            raise UserError(f"--initial-sparsity {initial} is above --sparsity {final}; expected initial <= final")
        if scope not in ("global", "layer"):
            raise UserError(f"--scope {scope!r}: expected global or layer")
        if n < 1 or every < 1 or start < 0:
            raise UserError(f"pruning schedule: expected n >= 1, every >= 1, start >= 0 (got {n}, {every}, {start})")
        self.final, self.initial, self.start, self.n, self.every, self.scope = final, initial, start, n, every, scope
        self.groups: dict = {}
        for i, _, m in block_linears(model):
            self.groups.setdefault("all" if scope == "global" else i, []).append(m)
        self.masks = {id(m): torch.ones_like(m.weight, dtype=torch.bool) for ms in self.groups.values() for m in ms}
        self.step = 0
        self.history: list[dict] = []

    def target(self, step: int) -> float:
        return cubic_sparsity(step, self.final, self.initial, self.start, self.n, self.every)

    def is_pruning_step(self, step: int) -> bool:
        return self.start <= step <= self.start + self.n * self.every and (step - self.start) % self.every == 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        """New masks for the sparsity of ``step`` (only at pruning steps)."""
        if not self.is_pruning_step(step):
            return
        s = self.target(step)
        for mods in self.groups.values():
            scores = torch.cat([torch.where(self.masks[id(m)], m.weight.detach().abs(), -1.0).flatten()
                                for m in mods])
            k = round(s * scores.numel())
            keep = torch.ones_like(scores, dtype=torch.bool)
            if k:
                keep[torch.argsort(scores, stable=True)[:k]] = False
            offset = 0
            for m in mods:
                n = m.weight.numel()
                self.masks[id(m)] = keep[offset:offset + n].view_as(m.weight)
                offset += n
        self.history.append({"step": step, "target": s, "achieved": self.sparsity()})

    @torch.no_grad()
    def apply(self) -> None:
        for mods in self.groups.values():
            for m in mods:
                m.weight.mul_(self.masks[id(m)].to(m.weight.dtype))

    def sparsity(self) -> float:
        """Fraction of masked weights over all pruned matrices."""
        masked = sum(int((~mk).sum()) for mk in self.masks.values())
        return masked / sum(mk.numel() for mk in self.masks.values())

    def on_optimizer_step(self) -> None:
        self.step += 1
        self.update(self.step)
        self.apply()

    def attached(self):
        """Context manager: masks of step 0 now, then :meth:`on_optimizer_step` after every optimizer step."""
        import contextlib

        from torch.optim.optimizer import register_optimizer_step_post_hook

        @contextlib.contextmanager
        def ctx():
            self.update(self.step)
            self.apply()
            handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: self.on_optimizer_step())
            try:
                yield self
            finally:
                handle.remove()
        return ctx()
