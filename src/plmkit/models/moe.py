"""Switch Transformer mixture-of-experts feed-forward (Fedus et al. 2022) for every plmkit stack.

``SwitchFFN`` replaces a ``Block``'s ``mlp``: a float32 router ``router`` Linear(H, E, no bias)
picks one expert per token (top-1); each expert is the stack's ordinary feed-forward
(``plmkit.models.layers.MLP`` or the gated variant). Tokens are grouped per sequence (as HF
``SwitchTransformersTop1Router``): within a sequence, the first ``capacity`` tokens that chose
expert e (in position order) are processed, capacity = ``expert_capacity`` or
ceil(``capacity_factor`` * T / E). Overflow ("dropped") tokens get a zero feed-forward output, so
the residual connection passes them through unchanged. Kept tokens' expert outputs are scaled by
their router probability.

Losses (exposed, never added by the model; the trainer/objective weights them):
- load balancing (Switch eq. 4-6): aux = E * sum_e f_e * P_e per sequence, averaged over sequences,
  where f_e is the fraction of the sequence's tokens whose argmax is e (before capacity dropping)
  and P_e the mean router probability of e;
- router z-loss (Zoph et al. 2022, ST-MoE): mean over tokens of logsumexp(router logits)^2.
A model averages them over its sparse layers (``collect_router_stats``).

Where: encoder-decoder models (``plmkit.models.seq2seq``, ``Seq2SeqConfig.num_experts``) and the
shared encoder / decoder ``Transformer`` via ``MoETransformer`` (settings in
``config.extra``: ``num_experts``, ``moe_every``, ``expert_capacity``, ``capacity_factor``,
``router_jitter_noise``). Their outputs carry ``aux_loss``, ``z_loss`` and ``expert_counts``.

References: Fedus, Zoph & Shazeer 2022 (Switch Transformers); Zoph et al. 2022 (ST-MoE router
z-loss); transformers ``modeling_switch_transformers.py`` (v5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.models.config import ConfigError, ModelConfig
from plmkit.models.layers import MLP_TYPES

_DEFAULTS = dict(num_experts=0, moe_every=2, expert_capacity=None, capacity_factor=1.0, router_jitter_noise=0.0)


def moe_settings(config: ModelConfig) -> dict[str, Any]:
    """MoE settings from ``Seq2SeqConfig`` fields or ``ModelConfig.extra`` keys."""
    out = {}
    for k, d in _DEFAULTS.items():
        out[k] = getattr(config, k) if hasattr(config, k) else config.extra.get(k, d)
    if not isinstance(out["num_experts"], int) or out["num_experts"] < 0 or out["num_experts"] == 1:
        raise ConfigError(f"num_experts: expected 0 (dense) or an integer >= 2, got {out['num_experts']!r}")
    if not isinstance(out["moe_every"], int) or out["moe_every"] < 1:
        raise ConfigError(f"moe_every: expected an integer >= 1, got {out['moe_every']!r}")
    if not (isinstance(out["capacity_factor"], (int, float)) and out["capacity_factor"] > 0):
        raise ConfigError(f"capacity_factor: expected a positive number, got {out['capacity_factor']!r}")
    cap = out["expert_capacity"]
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"expert_capacity: expected a positive integer or null, got {cap!r}")
    return out


@dataclass
class RouterStats:
    """Per-forward statistics of one ``SwitchFFN``."""

    aux_loss: Tensor  # scalar load-balancing loss
    z_loss: Tensor  # scalar router z-loss
    routed: Tensor  # (E,) tokens whose argmax is each expert
    kept: Tensor  # (E,) tokens each expert processed (after the capacity limit)


def load_balancing_loss(probs: Tensor, expert_index: Tensor) -> Tensor:
    """Switch aux loss: E * sum_e f_e P_e per group, averaged over groups.

    Args:
        probs: (G, T, E) router probabilities; expert_index: (G, T) argmax expert of each token.
    """
    E = probs.shape[-1]
    f = F.one_hot(expert_index, E).to(probs.dtype).mean(dim=1)  # (G, E) fraction of tokens per expert
    P = probs.mean(dim=1)  # (G, E) mean router probability
    return E * (f * P).sum(-1).mean()


def router_z_loss(logits: Tensor) -> Tensor:
    """Mean over tokens of logsumexp(router logits)^2; ``logits`` (..., E)."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


class SwitchFFN(nn.Module):
    """Top-1 routed mixture of ``num_experts`` feed-forwards (see module docstring).

    Input / output (B, T, H). After each forward ``self.stats`` holds a ``RouterStats``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        s = moe_settings(config)
        if s["num_experts"] < 2:
            raise ConfigError(f"SwitchFFN needs num_experts >= 2, got {s['num_experts']}")
        self.num_experts = s["num_experts"]
        self.expert_capacity, self.capacity_factor = s["expert_capacity"], float(s["capacity_factor"])
        self.jitter = float(s["router_jitter_noise"])
        self.router = nn.Linear(config.hidden_size, self.num_experts, bias=False)
        mlp_cls = MLP_TYPES[config.extra.get("mlp", "dense")]
        self.experts = nn.ModuleList(mlp_cls(config) for _ in range(self.num_experts))
        self.stats: RouterStats | None = None

    def capacity(self, T: int) -> int:
        """Tokens per expert per sequence of length ``T``."""
        if self.expert_capacity is not None:
            return self.expert_capacity
        return max(1, math.ceil(self.capacity_factor * T / self.num_experts))

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(logits (B, T, E) fp32, probs (B, T, E), expert index (B, T), kept (B, T) bool)."""
        h = x.float()
        if self.training and self.jitter > 0:
            h = h * torch.empty_like(h).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(h, self.router.weight.float())  # router in float32 ("selective precision")
        probs = logits.softmax(-1)
        index = probs.argmax(-1)  # (B, T)
        onehot = F.one_hot(index, self.num_experts)  # (B, T, E)
        priority = (onehot.cumsum(dim=1) * onehot).sum(-1)  # (B, T): 1-based rank of the token at its expert
        kept = priority <= self.capacity(x.shape[1])
        return logits, probs, index, kept

    def forward(self, x: Tensor) -> Tensor:
        B, T, H = x.shape
        logits, probs, index, kept = self.route(x)
        gate = probs.gather(-1, index[..., None]).squeeze(-1)  # (B, T) probability of the chosen expert
        flat_x, flat_idx = x.reshape(-1, H), index.reshape(-1)
        flat_kept, flat_gate = kept.reshape(-1), gate.reshape(-1)
        out = torch.zeros_like(flat_x)
        target = torch.where(flat_kept, flat_idx, torch.full_like(flat_idx, self.num_experts))  # E = dropped
        order = torch.argsort(target, stable=True)
        counts = torch.bincount(target, minlength=self.num_experts + 1)
        bounds = counts.tolist()
        start = 0
        for e in range(self.num_experts):
            n = bounds[e]
            if n:
                rows = order[start: start + n]
                y = self.experts[e](flat_x[rows]) * flat_gate[rows, None].to(x.dtype)
                out.index_copy_(0, rows, y.to(out.dtype))
            start += n
        self.stats = RouterStats(
            aux_loss=load_balancing_loss(probs, index),
            z_loss=router_z_loss(logits),
            routed=torch.bincount(flat_idx, minlength=self.num_experts),
            kept=counts[: self.num_experts],
        )
        return out.view(B, T, H)


MLP_TYPES.setdefault("switch", SwitchFFN)


def reset_router_stats(model: nn.Module) -> None:
    """Forget the statistics of the previous forward."""
    for m in model.modules():
        if isinstance(m, SwitchFFN):
            m.stats = None


def collect_router_stats(model: nn.Module) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(mean aux loss, mean z-loss, (num_sparse_layers_run, E) kept-token counts) of the last forward,
    or (None, None, None) for a dense model."""
    stats = [m.stats for m in model.modules() if isinstance(m, SwitchFFN) and m.stats is not None]
    if not stats:
        return None, None, None
    aux = torch.stack([s.aux_loss for s in stats]).mean()
    z = torch.stack([s.z_loss for s in stats]).mean()
    return aux, z, torch.stack([s.kept for s in stats])


ROUTER_AUX_LOSS_COEF = 0.01  # alpha of the Switch Transformer paper (Fedus et al. 2021, sec. 2.2)
ROUTER_Z_LOSS_COEF = 0.001  # ST-MoE (Zoph et al. 2022, sec. 3.1)


def auxiliary_losses(model: nn.Module) -> dict[str, tuple[Tensor, float]]:
    """The router losses of the last forward with their weights, for the trainer to add to the
    objective's loss: ``{"router_aux_loss": (aux, coef), "router_z_loss": (z, coef)}`` ({} when dense).
    Coefficients come from ``router_aux_loss_coef`` / ``router_z_loss_coef`` in the config (fields or
    ``extra``), defaulting to the papers' 0.01 and 0.001."""
    aux, z, _ = collect_router_stats(model)
    if aux is None:
        return {}
    cfg = getattr(model, "config", None)

    def coef(name: str, default: float) -> float:
        if cfg is None:
            return default
        if hasattr(cfg, name):
            return float(getattr(cfg, name))
        return float(getattr(cfg, "extra", {}).get(name, default))

    return {"router_aux_loss": (aux, coef("router_aux_loss_coef", ROUTER_AUX_LOSS_COEF)),
            "router_z_loss": (z, coef("router_z_loss_coef", ROUTER_Z_LOSS_COEF))}


def sparse_layer(index: int, every: int) -> bool:
    """HF's rule (``SwitchTransformersStack``): layer ``index`` is sparse when index % every == 1
    (every layer when every == 1)."""
    return every == 1 or index % every == 1


# ---------------------------------------------------------------------------- shared Transformer + MoE
def _moe_transformer_classes():
    from plmkit.models.transformer import Transformer, TransformerOutput

    @dataclass
    class MoEOutput(TransformerOutput):
        """``TransformerOutput`` + the router losses of the forward."""

        aux_loss: Tensor | None = None
        z_loss: Tensor | None = None
        expert_counts: Tensor | None = None

    class MoETransformer(Transformer):
        """The shared encoder/decoder ``Transformer`` with Switch feed-forwards in every
        ``moe_every``-th layer (settings in ``config.extra``, see the module docstring)."""

        def __init__(self, config: ModelConfig) -> None:
            s = moe_settings(config)
            if s["num_experts"] < 2:
                raise ConfigError("MoETransformer: set config.extra['num_experts'] >= 2")
            if config.share_layers:
                raise ConfigError("MoETransformer: share_layers is not supported")
            super().__init__(config)
            for i, layer in enumerate(self.layers):
                if sparse_layer(i, s["moe_every"]):
                    layer.mlp = SwitchFFN(config)
                    self.init_weights(layer.mlp)
                    if config.family == "gpt2":  # GPT-2's 1/sqrt(2L) residual-projection scaling
                        with torch.no_grad():
                            for expert in layer.mlp.experts:
                                expert.down.weight.normal_(0.0, config.initializer_range
                                                           / math.sqrt(2 * config.num_layers))

        def auxiliary_losses(self) -> dict[str, tuple[Tensor, float]]:
            """Router losses of the last forward with their coefficients; the Trainer adds ``coef * loss``."""
            return auxiliary_losses(self)

        def forward(self, *args: Any, **kwargs: Any) -> "MoEOutput":
            reset_router_stats(self)
            out = super().forward(*args, **kwargs)
            aux, z, counts = collect_router_stats(self)
            base = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
            return MoEOutput(**base, aux_loss=aux, z_loss=z, expert_counts=counts)

    return MoEOutput, MoETransformer


def __getattr__(name: str):  # lazy, so that layers / seq2seq can import this module cheaply
    if name in ("MoETransformer", "MoEOutput"):
        out, tr = _moe_transformer_classes()
        globals().update(MoEOutput=out, MoETransformer=tr)
        return globals()[name]
    raise AttributeError(name)
