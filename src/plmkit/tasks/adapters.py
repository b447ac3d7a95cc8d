"""Parameter-efficient adaptation modules and how they are attached to any backbone.

- :class:`LoRALinear` — LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
  Models"): ``y = (W + (alpha / r) * B A) x`` with W frozen, A ~ Kaiming, B = 0 at init, so the
  wrapped model starts exactly equal to the original. ``merge()`` folds BA into W.
- :class:`Adapter` / :func:`add_adapters` — Houlsby et al. 2019 ("Parameter-Efficient Transfer
  Learning for NLP") bottleneck ``h + up(gelu(down(h)))``, placed after the attention output
  projection and after the feed-forward output projection of every layer, i.e. before each
  residual add + layer norm, as in their Figure 2. Near-identity initialisation.
- :class:`ProjectedAttention` — PALs (Stickland & Murray 2019, "BERT and PALs: Projected Attention
  Layers for Efficient Adaptation in Multi-Task Learning"): a low-dimensional multi-head attention
  run in parallel to each layer's self-attention, ``LN(h + SA(h) + V_D MH(V_E h))``, with the
  encoder/decoder projections V_E, V_D shared across layers.

The backbone is found structurally, so this works for any model of the project's Transformer:
the transformer blocks are the ``nn.ModuleList`` with ``num_layers`` entries; inside a block the
``nn.Linear`` modules in registration order are [q, k, v | qkv], attention-out, ffn-in(, gate),
ffn-out. :func:`block_linears` names them and raises a ValueError if a block does not look like that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------
# finding the blocks and their linears
# ----------------------------------------------------------------------------------------------


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks (the one with ``num_layers`` entries holding Linears)."""
    n = getattr(model, "num_layers", None) or getattr(getattr(model, "config", None), "num_layers", None)
    heads = getattr(model, "heads", None)
    head_mods = set(id(m) for m in heads.modules()) if isinstance(heads, nn.Module) else set()
    cands = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and id(mod) not in head_mods and len(mod) > 0:
            if all(any(isinstance(x, nn.Linear) for x in blk.modules()) for blk in mod):
                cands.append((name, mod))
    if n is not None:
        exact = [(nm, m) for nm, m in cands if len(m) == n]
        if exact:
            return exact[0][1]
    if not cands:
        raise ValueError("could not find the transformer blocks (an nn.ModuleList of layers) in the model")
    return max(cands, key=lambda c: len(c[1]))[1]


@dataclass
class BlockLinears:
    """Qualified names (inside one block) of the projections adapters attach to."""

    query: str
    value: str
    attn_out: str
    ffn_out: str


def _fused_qkv(block: nn.Module, name: str, linear: nn.Linear) -> bool:
    """Whether ``linear`` is a fused q/k/v projection: its module declares split = (q, k, v) covering its rows."""
    parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
    split = getattr(parent, "split", None)
    return split is not None and len(split) == 3 and sum(split) == linear.out_features


def block_linears(block: nn.Module, hidden_size: int) -> BlockLinears:
    """Name the q / v / attention-out / ffn-out linears of one block by shape and order."""
    lins = [(n, m) for n, m in block.named_modules() if isinstance(m, nn.Linear)]
    if len(lins) < 4:
        raise ValueError(f"a transformer block has {len(lins)} Linear layers; expected at least 4")
    # ffn-out: the last linear projecting back to H from a wider input
    ffn_out = next((n for n, m in reversed(lins) if m.out_features == hidden_size and m.in_features > hidden_size), None)
    # attention-out: the last H->H linear registered before the first linear widening H (a fused qkv widens H
    # too: 3H, or H + 2 * kv_dim with grouped-query attention, which its module's ``split`` names)
    first_wide = next((i for i, (n, m) in enumerate(lins) if m.out_features > hidden_size and m.in_features == hidden_size
                       and m.out_features != 3 * hidden_size and not _fused_qkv(block, n, m)), None)
    if ffn_out is None or first_wide is None:
        raise ValueError("could not identify the feed-forward projections of a transformer block")
    before = lins[:first_wide]
    if len(before) < 2:
        raise ValueError("could not identify the attention projections of a transformer block")
    attn_out = before[-1][0]
    proj = before[:-1]  # [q, k, v] or [qkv]
    if len(proj) >= 3:
        query, value = proj[0][0], proj[2][0]
    else:
        query = value = proj[0][0]  # fused qkv: LoRA wraps the fused projection
    return BlockLinears(query, value, attn_out, ffn_out)


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


# ----------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) * B A``.

    The update is exposed through ``weight`` (= ``W + scaling * B A``, recomputed each access, so gradients
    reach A and B): plmkit's layers call ``linear(x, layer)`` on ``layer.weight`` / ``layer.bias``
    (oneDNN-fused), never the module's forward, so the wrapper must look like a Linear from outside.

    ``segments``: for a fused projection (e.g. qkv), a list of output row ranges ``(start, stop)``
    that each get their own (A, B) pair; other rows get no update (LoRA on W_q and W_v only).
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, segments: list[tuple[int, int]] | None = None):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.scaling = r, alpha / r
        self.segments = list(segments) if segments else [(0, base.out_features)]
        self.lora_a = nn.ParameterList()
        self.lora_b = nn.ParameterList()
        for start, stop in self.segments:
            a = nn.Parameter(torch.empty(r, base.in_features))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear / the LoRA reference code
            self.lora_a.append(a)
            self.lora_b.append(nn.Parameter(torch.zeros(stop - start, r)))
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) update ``scaling * B A`` placed in its row segments."""
        rows = []
        pos = 0
        for (start, stop), a, b in zip(self.segments, self.lora_a, self.lora_b):
            if start > pos:
                rows.append(a.new_zeros(start - pos, a.shape[1]))
            rows.append(b @ a)  # (stop - start, in)
            pos = stop
        if pos < self.out_features:
            rows.append(self.lora_a[0].new_zeros(self.out_features - pos, self.in_features))
        return torch.cat(rows, 0) * self.scaling

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.base.weight + self.delta_weight().to(self.base.weight.dtype)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Return the base Linear with ``W + scaling * B A`` folded in (no extra inference cost)."""
        self.base.weight += self.delta_weight()
        return self.base


def add_lora(model: nn.Module, hidden_size: int, r: int = 8, alpha: float = 16.0) -> list[nn.Parameter]:
    """Wrap the query and value projections of every block with LoRA; return the new parameters.

    With a fused qkv projection, the parent attention module's ``split`` = (q_dim, k_dim, v_dim)
    gives the rows of W_q and W_v, which get separate low-rank updates (W_k none, as in the paper).
    """
    new = []
    for blk in find_blocks(model):
        names = block_linears(blk, hidden_size)
        targets = [names.query] if names.query == names.value else [names.query, names.value]
        for t in targets:
            base = blk.get_submodule(t)
            if isinstance(base, LoRALinear):
                continue
            segments = None
            if names.query == names.value:
                parent = blk.get_submodule(t.rpartition(".")[0]) if "." in t else blk
                split = getattr(parent, "split", None)
                if split is None or len(split) != 3 or sum(split) != base.out_features:
                    raise ValueError(f"fused projection {t!r}: its module needs split=(q, k, v) sizes for LoRA")
                q, k, v = split
                segments = [(0, q), (q + k, q + k + v)]
            wrapped = LoRALinear(base, r, alpha, segments)
            _set_submodule(blk, t, wrapped)
            new += list(wrapped.lora_a) + list(wrapped.lora_b)
    return new


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by its merged Linear; returns how many were merged."""
    count = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, LoRALinear):
            _set_submodule(model, name, mod.merge())
            count += 1
    return count


# ----------------------------------------------------------------------------------------------
# Houlsby adapters
# ----------------------------------------------------------------------------------------------


class Adapter(nn.Module):
    """Bottleneck ``h + up(gelu(down(h)))`` with near-zero init (Houlsby et al. 2019, sec. 2.1)."""

    def __init__(self, hidden_size: int, bottleneck: int = 64, init_std: float = 1e-3):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        for lin in (self.down, self.up):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


def _sublayer(block: nn.Module, linear_name: str) -> nn.Module:
    """The module owning a projection (the attention or feed-forward sublayer); it is called as a module."""
    parent = linear_name.rpartition(".")[0]
    if not parent:
        raise ValueError(f"projection {linear_name!r} sits directly in the block; cannot find its sublayer")
    return block.get_submodule(parent)


def _apply_adapter(module: nn.Module, _inputs, output):
    return module.adapter(output)


def add_adapters(model: nn.Module, hidden_size: int, bottleneck: int = 64) -> list[nn.Parameter]:
    """Two adapters per block, on the outputs of the attention and feed-forward sublayers; returns their params.

    The sublayer output is its output projection's result, so ``adapter(sublayer(x))`` is Houlsby's
    placement (after the projection, before residual + layer norm). Each adapter is a child module
    ``<sublayer>.adapter`` (saved with the model) applied by a forward hook on the sublayer (plmkit's
    fused ``linear()`` reads projection weights directly, so the projections themselves cannot be wrapped).
    """
    new = []
    for blk in find_blocks(model):
        names = block_linears(blk, hidden_size)
        for t in (names.attn_out, names.ffn_out):
            sub = _sublayer(blk, t)
            if hasattr(sub, "adapter"):
                continue
            ad = Adapter(hidden_size, bottleneck)
            sub.add_module("adapter", ad)
            sub.register_forward_hook(_apply_adapter)
            new += list(ad.parameters())
    return new


# ----------------------------------------------------------------------------------------------
# PALs
# ----------------------------------------------------------------------------------------------


class ProjectedAttention(nn.Module):
    """Multi-head self-attention in a small space: ``V_D MH(V_E h)``; V_E, V_D are shared modules."""

    def __init__(self, encode: nn.Linear, decode: nn.Linear, num_heads: int = 12):
        super().__init__()
        p = encode.out_features
        if p % num_heads:
            raise ValueError(f"PAL size {p} is not divisible by {num_heads} heads")
        self.encode, self.decode, self.num_heads = encode, decode, num_heads
        self.qkv = nn.Linear(p, 3 * p)
        self.mask: torch.Tensor | None = None  # (B, T) set by the model pre-hook

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.encode(h)  # (B, T, P)
        B, T, P = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, P // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, d)
        attn_mask = None
        if self.mask is not None and self.mask.dim() == 2 and self.mask.shape == (B, T):
            attn_mask = self.mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nh, T, d)
        return self.decode(y.transpose(1, 2).reshape(B, T, P))


class _PALState(nn.Module):
    """Holds the shared V_E / V_D and per-layer PALs; its hooks route h and the padding mask."""

    def __init__(self, hidden_size: int, num_layers: int, size: int, num_heads: int):
        super().__init__()
        self.encode = nn.Linear(hidden_size, size, bias=False)
        self.decode = nn.Linear(size, hidden_size, bias=False)
        nn.init.zeros_(self.decode.weight)  # start as the original model
        self.pals = nn.ModuleList(ProjectedAttention(self.encode, self.decode, num_heads) for _ in range(num_layers))
        self._inputs: list[torch.Tensor | None] = [None] * num_layers


def add_pals(model: nn.Module, hidden_size: int, size: int = 204, num_heads: int = 12) -> list[nn.Parameter]:
    """Attach PALs in parallel to each block's self-attention (added to the attention sublayer's output).

    Hooks: a pre-hook on each block records its input h; a forward hook on the attention sublayer
    adds ``PAL(h)``; a pre-hook on the model records the (B, T) padding mask.
    The PAL modules are registered as ``model.pals`` so they are saved and counted.
    """
    if hasattr(model, "pals"):
        raise ValueError("PALs are already attached to this model")
    blocks = find_blocks(model)
    state = _PALState(hidden_size, len(blocks), size, num_heads)
    model.add_module("pals", state)

    def model_pre(_mod, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        for pal in state.pals:
            pal.mask = mask if (mask is not None and mask.dim() == 2) else None

    model.register_forward_pre_hook(model_pre, with_kwargs=True)
    for i, blk in enumerate(blocks):
        names = block_linears(blk, hidden_size)

        def block_pre(_mod, args, kwargs, i=i):
            h = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
            state._inputs[i] = h

        def attn_hook(_mod, _inp, output, i=i):
            return output + state.pals[i](state._inputs[i])

        blk.register_forward_pre_hook(block_pre, with_kwargs=True)
        _sublayer(blk, names.attn_out).register_forward_hook(attn_hook)
    return [p for p in state.parameters()]
