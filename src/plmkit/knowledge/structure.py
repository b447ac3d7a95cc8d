"""Where the knowledge sites of a plmkit model are: layers, attention, MLP, final norm, LM/MLM head.

Every method in ``plmkit.knowledge`` (LAMA probing, causal tracing, knowledge neurons, FFN
memories) reads and edits a model through a ``ModelStructure`` built here from the model's own
config and module tree (plmkit's ``Block`` / ``SelfAttention`` / ``MLP`` modules), never from Hugging
Face parameter names::

    embeddings.word ─► layers[i] = Block: attn (self-attention), mlp: down( act(up(x)) )
                                                               or down( silu(gate(x)) * up(x) )  SwiGLU
                 ─► final_norm (pre-LN models only) ─► head (LM decoder or MLM transform + decoder)

Conventions used by the methods:
- *hidden state of layer i*: the output of block i (the residual stream after it); index 0 of a
  layer curve is the embedding output, index i+1 the output of block i.
- *MLP output* / *attention output*: what the sub-module returns, before the residual addition.
- *FFN intermediate neuron j of layer i* (Dai et al. 2022; Geva et al. 2021): entry j of the input
  of ``mlp.down``, i.e. ``act(up(x))_j`` for GELU/ReLU MLPs and the SwiGLU product
  ``silu(gate(x))_j * up(x)_j`` for LLaMA-style MLPs. Its *key* is row j of ``up`` (and ``gate``),
  its *value* is column j of ``down``.
- ``readout(h, i)``: the model's own final norm + LM/MLM head applied to a layer's hidden state
  (for post-LN models such as BERT every block already ends in a norm, so only the head is applied).

Hooks: ``intervene(struct, site, fn)`` registers forward hooks that call ``fn(layer, tensor)`` at
every application of the site and use its return value (if not None) instead of the tensor. A
model with shared layers (ALBERT) applies one module several times; the hooks count the calls of
each forward pass, so ``layer`` is always the application index 0..L-1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from plmkit.errors import UserError

SITES = ("layer", "attn", "mlp", "neurons")
"""Hook sites: block output, attention output, MLP output, FFN intermediate activations (input of ``down``)."""


@dataclass
class ModelStructure:
    """The knowledge-relevant modules of one model (see the module docstring)."""

    model: nn.Module
    kind: str
    """"mlm" (bidirectional encoder + MLM head) or "lm" (causal decoder + LM head)."""
    layers: list[nn.Module]
    """Block applied at each layer 0..L-1 (the same module repeated with shared layers)."""
    word_embeddings: nn.Embedding
    final_norm: nn.Module | None
    head: nn.Module
    num_layers: int
    hidden_size: int
    intermediate_size: int

    def attn(self, i: int) -> nn.Module:
        return self.layers[i].attn

    def mlp(self, i: int) -> nn.Module:
        return self.layers[i].mlp

    def down(self, i: int) -> nn.Linear:
        """The value matrix of layer i's FFN (its input holds the intermediate neurons)."""
        return _ffn_part(self, i, "down")

    def up(self, i: int) -> nn.Linear:
        """The (ungated) key matrix of layer i's FFN."""
        return _ffn_part(self, i, "up")

    def gate(self, i: int) -> nn.Linear | None:
        """The SwiGLU gate matrix of layer i's FFN (None for GELU/ReLU MLPs)."""
        self.down(i)
        mlp = self.mlp(i)
        return mlp.gate if getattr(mlp, "gated", False) else None

    def readout(self, hidden: Tensor) -> Tensor:
        """Logits (..., V) of the model's final norm + head on a block's output (..., H)."""
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        return self.head(hidden)

    def key_activations(self, i: int, x: Tensor) -> Tensor:
        """Intermediate activations (..., I) of layer i's FFN for its input ``x`` (..., H)."""
        mlp = self.mlp(i)
        if getattr(mlp, "gated", False):
            return torch.nn.functional.silu(mlp.gate(x)) * mlp.up(x)
        from plmkit.models.kernels import ACTIVATIONS

        return ACTIVATIONS[mlp.activation](mlp.up(x))


def _ffn_part(struct: ModelStructure, i: int, name: str) -> nn.Linear:
    mlp = struct.mlp(i)
    part = getattr(mlp, name, None)
    if not isinstance(part, nn.Linear):
        raise UserError(f"layer {i}: the feed-forward module {type(mlp).__name__} has no dense {name!r} "
                        "projection (FFN neurons need a dense MLP, not e.g. a mixture of experts)")
    return part


SEQ2SEQ_REFUSAL = ("causal tracing, knowledge neurons, FFN memories and editing read the subject and the "
                   "object in one stack; in an encoder-decoder the encoder reads the subject and the decoder "
                   "writes the object, so those methods are defined here for MLMs and causal LMs only "
                   "(LAMA probing, plm probe lama, supports T5 and BART)")


def locate(model: nn.Module, allow_seq2seq: bool = False) -> ModelStructure:
    """Find the layers, attention, MLP, final norm and head of a plmkit Transformer.

    ``allow_seq2seq`` (LAMA probing only): an encoder-decoder with an LM head gives a structure of
    kind "seq2seq" whose ``layers`` / ``final_norm`` are the decoder's.

    Raises:
        UserError: the model has no LM/MLM head (e.g. a sentence encoder such as all-MiniLM-L6-v2),
            is an encoder-decoder (unless allowed), or does not have plmkit's block structure.
    """
    cfg = getattr(model, "config", None)
    name = type(model).__name__
    if cfg is None or not hasattr(cfg, "num_layers"):
        raise UserError(f"{name}: not a plmkit Transformer (no ModelConfig); knowledge methods need one")
    if getattr(cfg, "is_encoder_decoder", False) or hasattr(model, "encoder") or hasattr(model, "decoder"):
        if not allow_seq2seq:
            raise UserError(f"{name} ({cfg.family}): encoder-decoder models are not supported here: "
                            + SEQ2SEQ_REFUSAL)
        return _locate_seq2seq(model)
    head = getattr(model, "head", None)
    if getattr(cfg, "head", None) not in ("mlm", "lm") or head is None:
        raise UserError(f"the {cfg.family!r} model has no LM/MLM head (config.head={getattr(cfg, 'head', None)!r}, "
                        "e.g. a sentence encoder such as all-MiniLM-L6-v2); probing needs a masked or causal LM")
    blocks = getattr(model, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise UserError(f"{name}: no block list 'layers' in the module tree")
    shared = bool(getattr(cfg, "share_layers", False))
    layers = [blocks[0 if shared else i] for i in range(cfg.num_layers)]
    for i, b in enumerate(layers):
        if not (isinstance(getattr(b, "attn", None), nn.Module) and isinstance(getattr(b, "mlp", None), nn.Module)):
            raise UserError(f"{name}: layer {i} ({type(b).__name__}) has no 'attn' and 'mlp' sub-modules")
    kind = cfg.head
    if kind == "lm" and not cfg.causal:
        raise UserError(f"the {cfg.family!r} model has an LM head but bidirectional attention; "
                        "expected a causal LM or an MLM")
    embeddings = getattr(getattr(model, "embeddings", None), "word", None)
    if not isinstance(embeddings, nn.Embedding):
        raise UserError(f"{name}: no token embedding table 'embeddings.word'")
    return ModelStructure(model=model, kind=kind, layers=layers, word_embeddings=embeddings,
                          final_norm=getattr(model, "final_norm", None), head=head,
                          num_layers=cfg.num_layers, hidden_size=cfg.hidden_size,
                          intermediate_size=cfg.intermediate_size)


def _locate_seq2seq(model: nn.Module) -> ModelStructure:
    cfg = model.config
    dec = getattr(model, "decoder", None)
    head = getattr(model, "head", None)
    if cfg.family not in ("t5", "bart") or head is None or not isinstance(getattr(dec, "layers", None), nn.ModuleList):
        raise UserError(f"the {cfg.family!r} encoder-decoder: LAMA probing supports T5 (sentinel) and BART "
                        "(mask token) models with an LM head")
    return ModelStructure(model=model, kind="seq2seq", layers=list(dec.layers), word_embeddings=model.shared,
                          final_norm=getattr(dec, "final_norm", None), head=head,
                          num_layers=len(dec.layers), hidden_size=cfg.hidden_size,
                          intermediate_size=cfg.intermediate_size)


def _site_module(struct: ModelStructure, site: str, i: int) -> nn.Module:
    if site == "layer":
        return struct.layers[i]
    if site == "attn":
        return struct.attn(i)
    if site == "mlp":
        return struct.mlp(i)
    if site == "neurons":
        return struct.down(i)
    raise ValueError(f"unknown site {site!r}; expected one of {SITES}")


@contextlib.contextmanager
def intervene(struct: ModelStructure, site: str, fn: Callable[[int, Tensor], Tensor | None],
              layers: list[int] | None = None) -> Iterator[None]:
    """Call ``fn(layer, tensor)`` at every application of ``site`` (see ``SITES``) during forwards.

    ``tensor`` is the site's output (B, T, H) for "layer" / "attn" / "mlp" and the FFN intermediate
    activations (B, T, I) for "neurons". A non-None return value replaces it. ``layers`` limits the
    layers where ``fn`` is called (default: all).
    """
    wanted = set(range(struct.num_layers)) if layers is None else set(layers)
    # module -> the layer indices it serves, in call order (one entry per layer without sharing)
    serves: dict[int, list[int]] = {}
    modules: dict[int, nn.Module] = {}
    for i in range(struct.num_layers):
        m = _site_module(struct, site, i)
        serves.setdefault(id(m), []).append(i)
        modules[id(m)] = m
    calls = {k: 0 for k in serves}
    handles = []

    def reset(*_: Any) -> None:
        for k in calls:
            calls[k] = 0

    handles.append(struct.model.register_forward_pre_hook(reset))
    for key, module in modules.items():
        idx = serves[key]

        def which(key=key, idx=idx) -> int:
            layer = idx[calls[key] % len(idx)]
            calls[key] += 1
            return layer

        if site == "neurons":
            def pre(mod, args, which=which):
                layer = which()
                if layer in wanted:
                    new = fn(layer, args[0])
                    if new is not None:
                        return (new,) + tuple(args[1:])
                return None

            handles.append(module.register_forward_pre_hook(pre))
        else:
            def post(mod, args, out, which=which):
                layer = which()
                if layer in wanted:
                    return fn(layer, out)
                return None

            handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def hidden_states(struct: ModelStructure, input_ids: Tensor, attention_mask: Tensor | None = None
                  ) -> tuple[list[Tensor], Any]:
    """([embedding output, block 0 output, ..., block L-1 output], model output) in one forward.

    The block outputs are taken before any final norm (the model itself reports the normed last state).
    """
    blocks: list[Tensor] = []
    with intervene(struct, "layer", lambda i, h: blocks.append(h)):
        out = struct.model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return [out.hidden_states[0]] + blocks, out
