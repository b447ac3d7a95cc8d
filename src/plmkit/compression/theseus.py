"""BERT-of-Theseus module replacing (Xu et al. 2020): compress a fine-tuned predecessor by progressively
replacing its modules with smaller successor modules.

The predecessor's ``L`` layers are split into ``S`` modules of ``k = L / S`` consecutive layers; successor
module ``i`` is one layer, initialised (as in the paper's code) from the predecessor's layer ``i`` (the
first ``S`` layers). During the *replacing* phase every forward pass draws, for each module independently,
``r_i ~ Bernoulli(p)`` and runs the successor layer where ``r_i = 1``, the predecessor's ``k`` layers
otherwise. ``p`` follows the linear curriculum ``p_t = min(1, slope * t + base)`` (``t`` = optimizer steps
done). The predecessor's layers are frozen, and so (here) are the embeddings and the task head, which the
successor shares with the predecessor in that phase: only the successor layers learn. Then the
*successor fine-tuning* phase trains the successor model (embeddings + ``S`` layers + head) alone.

:class:`TheseusModel` does the mixing in place: :meth:`TheseusModel.attach` puts a
:class:`ReplacedModule` in each of the successor model's ``S`` layer slots; :meth:`TheseusModel.detach`
puts the bare successor layers back, leaving a normal ``S``-layer model that saves as a normal checkpoint.
In eval mode (no Bernoulli draws) a replaced module runs its successor, as the compressed model will.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from plmkit.errors import UserError


def linear_curriculum(step: int, slope: float, base: float) -> float:
    """Replacement probability ``min(1, slope * step + base)`` (never below 0)."""
    return max(0.0, min(1.0, slope * step + base))


class ReplacedModule(nn.Module):
    """One successor layer standing in for ``k`` predecessor layers, chosen per forward by a Bernoulli draw."""

    def __init__(self, predecessor: list[nn.Module], successor: nn.Module, first: int, owner: TheseusModel):
        super().__init__()
        self.predecessor = nn.ModuleList(predecessor)
        self.successor = successor
        self.first = first  # index of the first predecessor layer (for layer-indexed state: caches, biases)
        self._owner = [owner]  # a list, so the owner is not registered as a submodule

    def forward(self, x, ctx, i):
        owner = self._owner[0]
        use_successor = owner.draw() if self.training else True
        if use_successor:
            return self.successor(x, ctx, i)
        for j, layer in enumerate(self.predecessor):
            x = layer(x, ctx, self.first + j)
        return x


class TheseusModel:
    """The successor model (a copy of the predecessor with its first ``S`` layers) and the replacing machinery.

    ``successor_model``: the compressed model (train it, save it); ``attach()`` / ``detach()`` switch its layer
    slots between replaced modules and the bare successor layers. ``p`` is the current replacement
    probability (set by :meth:`set_step` from the curriculum, or directly); ``draws`` / ``replaced`` count the
    Bernoulli draws and how many chose the successor."""

    def __init__(self, predecessor: nn.Module, successor_layers: int, slope: float, base: float = 0.3,
                 seed: int = 0):
        L, S = predecessor.num_layers, successor_layers
        if predecessor.config.share_layers:
            raise UserError("module replacing needs distinct predecessor layers; this model shares its layers (ALBERT)")
        if not 1 <= S < L or L % S:
            raise UserError(f"--student-layers {S}: module replacing needs a divisor of the predecessor's {L} "
                            f"layers below {L} (each successor layer replaces L / S of them)")
        self.k = L // S
        self.slope, self.base = float(slope), float(base)
        self.p = linear_curriculum(0, self.slope, self.base)
        self.generator = torch.Generator().manual_seed(seed)
        self.draws = self.replaced = 0
        succ = copy.deepcopy(predecessor)
        succ.layers = nn.ModuleList(succ.layers[i] for i in range(S))  # the paper's init: first S layers
        succ.config = succ.config.replace(num_layers=S)
        self.successor_model = succ
        self.successor_layers = list(succ.layers)
        pred_layers = list(predecessor.layers)
        for p in predecessor.parameters():
            p.requires_grad_(False)
        self.modules = [ReplacedModule(pred_layers[i * self.k:(i + 1) * self.k], self.successor_layers[i],
                                       i * self.k, self) for i in range(S)]

    def draw(self) -> bool:
        """One Bernoulli(p) draw: True = run the successor module."""
        self.draws += 1
        hit = bool(torch.rand((), generator=self.generator) < self.p)
        self.replaced += hit
        return hit

    def set_step(self, step: int) -> float:
        self.p = linear_curriculum(step, self.slope, self.base)
        return self.p

    def attach(self) -> nn.Module:
        """Replacing phase: layer slots hold the replaced modules; only successor layers train."""
        m = self.successor_model
        m.layers = nn.ModuleList(self.modules)
        for p in m.parameters():
            p.requires_grad_(False)
        for layer in self.successor_layers:
            for p in layer.parameters():
                p.requires_grad_(True)
        return m

    def detach(self) -> nn.Module:
        """Successor fine-tuning / saving: the bare successor layers, everything trainable."""
        m = self.successor_model
        m.layers = nn.ModuleList(self.successor_layers)
        for p in m.parameters():
            p.requires_grad_(True)
        return m
