"""``PretrainedModel``: the one base class of every plmkit model, and the hooks that connect it to
the packages above ``models``.

Every model class (``Transformer`` and its subclasses, ``EncoderDecoder``, ``XLNet`` and the
classical LMs of ``plmkit.classic.recurrent``) derives from ``PretrainedModel``, which owns what
they share: the ``heads`` ModuleDict and ``add_head``, ``layer_groups`` (built from the class's
``embedding_parameters()`` and ``layer_modules()``), ``num_parameters``, ``device`` / ``dtype``,
and the thin ``save_pretrained`` / ``generate`` methods of the public API.

``save_pretrained`` and ``generate`` call the hooks of ``plmkit.models.hooks``: saving lives in
``plmkit.interop`` and decoding in ``plmkit.generation``, above this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from plmkit.models.hooks import hook

class PretrainedModel(nn.Module):
    """What every plmkit model shares (see the module docstring).

    Subclasses set ``self.config`` and ``self.heads = nn.ModuleDict()`` (``init_heads`` does it),
    implement ``init_weights(module=None)``, ``embedding_parameters()`` and ``layer_modules()``.
    """

    config: Any
    heads: nn.ModuleDict

    def init_heads(self) -> None:
        self.heads = nn.ModuleDict()

    # ------------------------------------------------------------------ structure
    def init_weights(self, module: nn.Module | None = None) -> None:  # pragma: no cover - per class
        raise NotImplementedError(f"{type(self).__name__}.init_weights")

    def embedding_parameters(self) -> Iterable[nn.Parameter]:  # pragma: no cover - per class
        raise NotImplementedError(f"{type(self).__name__}.embedding_parameters")

    def layer_modules(self) -> list[nn.Module]:  # pragma: no cover - per class
        raise NotImplementedError(f"{type(self).__name__}.layer_modules")

    def add_head(self, name: str, module: nn.Module, init: bool = True, replace: bool = False) -> nn.Module:
        """Attach an objective/task head as ``heads.<name>``, moved to the model's device (and dtype,
        for floating-point models). ``init`` applies the model's weight initialisation to it; an
        existing name raises unless ``replace``."""
        if name in self.heads and not replace:
            raise ValueError(f"model already has a head named {name!r} (pass replace=True to swap it)")
        if init:
            self.init_weights(module)
        p = next(self.parameters())
        module.to(device=p.device, dtype=p.dtype if p.is_floating_point() else None)
        self.heads[name] = module
        return module

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[embeddings, layer 0, ..., layer K-1, everything else (norms, output layer, heads)].

        The layers are ``layer_modules()`` (distinct modules: 1 with ALBERT sharing; encoder then
        decoder layers for encoder-decoders). Each parameter appears exactly once."""
        seen: set[int] = set()

        def take(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
            out = []
            for p in params:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
            return out

        groups = [take(self.embedding_parameters())]
        groups += [take(layer.parameters()) for layer in self.layer_modules()]
        groups.append(take(self.parameters()))
        return groups

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ public API (hooks)
    def save_pretrained(self, out_dir: str | Path, **kwargs: Any) -> Any:
        """Write the model to ``out_dir`` (``plmkit.interop``: HF format where transformers has the
        family, plmkit's own format otherwise)."""
        return hook("save_pretrained")(self, out_dir, **kwargs)

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
        """Decode (``plmkit.generation.generate`` / ``plmkit.generation.seq2seq.generate`` arguments)."""
        return hook("generate")(self, input_ids, attention_mask=attention_mask, **kwargs)
