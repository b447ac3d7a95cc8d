"""Soft prompts for any plmkit ``Transformer``: prompt tuning, P-tuning and prefix tuning.

- ``PromptTuning`` (Lester et al. 2021): k trainable virtual-token embeddings prepended to the input
  embeddings; initialised (``init``) from k vocabulary rows of the model's own embedding matrix
  (``vocab``, seeded), from the class-label words' token embeddings followed by vocabulary rows
  (``labels``, Lester et al.'s "class label" initialisation) or uniformly in [-0.5, 0.5] (``random``).
- ``PTuning`` (Liu et al. 2021, "GPT understands, too"): the k virtual tokens are the output of a
  small prompt encoder (bidirectional LSTM + MLP, or an MLP) over k trainable input vectors.
- ``PrefixTuning`` (Li & Liang 2021): trainable key/value prefixes of length k at every layer,
  produced by a reparametrising MLP (embedding k x H -> MLP -> L x 2 x Nkv x D per position).

How they attach: ``attach(model, module)`` puts the module at ``model.soft_prompt`` and wraps the
instance's ``backbone`` method (which ``forward`` and ``plmkit.generation`` both call):

- virtual tokens (prompt / P-tuning) are prepended to the embeddings on the first pass (no cache, or
  an empty one); their positions are 0..k-1 and the real tokens' move up by k; padding masks get k
  leading ones; the returned hidden states drop the k virtual positions, so heads and callers see the
  original length. With a KV cache the virtual tokens' keys/values stay in the cache and later steps
  shift their positions and masks by k.
- prefixes (prefix tuning) are concatenated to every layer's keys/values through a thin cache view
  (``PrefixCache``): queries attend to the prefix, the real tokens keep positions 0..T-1 and nothing
  is written to a cache for the prefix, so cached decoding equals uncached decoding.

Only the soft-prompt parameters train (``plmkit.tasks.modes`` freezes the rest).
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.errors import UserError


def _word_embeddings(model) -> nn.Embedding:
    emb = getattr(getattr(model, "embeddings", None), "word", None)
    if not isinstance(emb, nn.Embedding):
        raise UserError(f"soft prompts need a plmkit Transformer with token embeddings; "
                        f"{type(model).__name__} has none at embeddings.word")
    return emb


class PromptTuning(nn.Module):
    """k trainable virtual-token embeddings (E = the model's embedding size)."""

    kind = "virtual"

    def __init__(self, model, num_tokens: int, seed: int = 0, init: str = "vocab",
                 label_token_ids: list[int] | None = None) -> None:
        super().__init__()
        emb = _word_embeddings(model)
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, emb.num_embeddings, (num_tokens,), generator=g)
        if init == "labels":
            if not label_token_ids:
                raise UserError("--prompt-init labels needs the label words: give --verbalizer FILE.yaml")
            lab = torch.tensor(list(label_token_ids)[:num_tokens])
            rows = torch.cat([lab, rows[len(lab):]])  # label words first, then vocabulary rows
        if init == "random":
            value = torch.rand(num_tokens, emb.embedding_dim, generator=g) - 0.5
        elif init in ("vocab", "labels"):
            value = emb.weight.detach()[rows].clone()
        else:
            raise UserError(f"--prompt-init {init!r}: expected vocab, labels or random")
        self.prompt = nn.Parameter(value.to(emb.weight.dtype))  # (k, E)

    @property
    def num_tokens(self) -> int:
        return self.prompt.shape[0]

    def virtual(self) -> Tensor:
        return self.prompt  # (k, E)


class PTuning(nn.Module):
    """Virtual tokens from a prompt encoder (``lstm``: bi-LSTM + 2-layer MLP as in P-tuning; ``mlp``)."""

    kind = "virtual"

    def __init__(self, model, num_tokens: int, encoder: str = "lstm", hidden: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        E = _word_embeddings(model).embedding_dim
        hidden = hidden or E
        g = torch.Generator().manual_seed(seed)
        self.inputs = nn.Parameter(torch.randn(num_tokens, E, generator=g) * 0.02)
        self.encoder = encoder
        if encoder == "lstm":
            self.lstm = nn.LSTM(E, hidden // 2 if hidden >= 2 else 1, num_layers=2, bidirectional=True,
                                batch_first=True)
            inner = 2 * (hidden // 2 if hidden >= 2 else 1)
        elif encoder == "mlp":
            inner = E
        else:
            raise UserError(f"--prompt-encoder {encoder!r}: expected lstm or mlp")
        self.mlp = nn.Sequential(nn.Linear(inner, hidden), nn.ReLU(), nn.Linear(hidden, E))

    @property
    def num_tokens(self) -> int:
        return self.inputs.shape[0]

    def virtual(self) -> Tensor:
        x = self.inputs[None]
        if self.encoder == "lstm":
            x = self.lstm(x)[0]
        return self.mlp(x)[0]  # (k, E)


class PrefixTuning(nn.Module):
    """Per-layer key/value prefixes (L, 2, Nkv, k, D) through a reparametrising MLP.

    ``drop_reparametrisation()`` (after training) replaces the MLP and its inputs by the prefixes they
    produce, as Li & Liang do: the saved checkpoint holds only ``prefix`` (``reparam=False`` rebuilds it).
    """

    kind = "prefix"

    def __init__(self, model, num_tokens: int, hidden: int = 512, seed: int = 0, reparam: bool = True) -> None:
        super().__init__()
        cfg = model.config
        self.shape = (cfg.num_layers, 2, cfg.kv_heads, cfg.dim_per_head)
        self.k = num_tokens
        if not reparam:
            self.prefix = nn.Parameter(torch.zeros(*self.shape[:3], num_tokens, self.shape[3]))
            return
        g = torch.Generator().manual_seed(seed)
        H = cfg.hidden_size
        self.inputs = nn.Parameter(torch.randn(num_tokens, H, generator=g) * 0.02)
        out = cfg.num_layers * 2 * cfg.kv_heads * cfg.dim_per_head
        self.mlp = nn.Sequential(nn.Linear(H, hidden), nn.Tanh(), nn.Linear(hidden, out))

    @property
    def num_tokens(self) -> int:
        return self.k

    @property
    def reparam(self) -> bool:
        return not hasattr(self, "prefix")

    def prefixes(self) -> Tensor:
        if not self.reparam:
            return self.prefix
        L, two, N, D = self.shape
        x = self.mlp(self.inputs)  # (k, L*2*N*D)
        return x.view(-1, L, two, N, D).permute(1, 2, 3, 0, 4)  # (L, 2, Nkv, k, D)

    @torch.no_grad()
    def drop_reparametrisation(self) -> None:
        """Keep only the prefixes the MLP produces now (the same outputs, far fewer saved parameters)."""
        if not self.reparam:
            return
        value = self.prefixes().detach().clone()
        del self.mlp, self.inputs
        self.prefix = nn.Parameter(value)


class PrefixCache:
    """A cache view that puts per-layer prefix keys/values in front of ``inner`` (a KV cache or None)."""

    def __init__(self, prefix: Tensor, batch: int, inner: Any = None) -> None:
        self.prefix, self.batch, self.inner = prefix, batch, inner
        self.P = prefix.shape[3]
        self._mask: Tensor | None = None

    def __len__(self) -> int:
        return self.P + (len(self.inner) if self.inner is not None else 0)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.inner is not None:
            k, v = self.inner.update(layer, k, v)
        pk = self.prefix[layer, 0].to(k.dtype).expand(k.shape[0], -1, -1, -1)
        pv = self.prefix[layer, 1].to(v.dtype).expand(v.shape[0], -1, -1, -1)
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)

    def advance(self, T: int) -> None:
        if self.inner is not None:
            self.inner.advance(T)

    @property
    def key_mask(self) -> Tensor | None:
        return self.inner.key_mask if self.inner is not None else self._mask

    def set_key_mask(self, mask: Tensor, start: int) -> Tensor:
        ones = mask.new_ones(mask.shape[0], self.P)
        if start == 0 and mask.shape[1] >= self.P:  # a mask over prefix + keys
            mask, start = mask[:, self.P:], self.P
        rest = start - self.P
        if self.inner is not None:
            return torch.cat([ones, self.inner.set_key_mask(mask, rest)], dim=1)
        self._mask = mask if self._mask is None else torch.cat([self._mask[:, :rest], mask], dim=1)
        return torch.cat([ones, self._mask], dim=1)


def _extend_mask(mask: Tensor | None, k: int, S: int) -> Tensor | None:
    """A (B, S - k) padding mask over real keys -> (B, S) with k leading ones (other shapes unchanged)."""
    if mask is None or mask.dim() != 2 or mask.shape[1] != S - k:
        return mask
    return torch.cat([mask.new_ones(mask.shape[0], k), mask], dim=1)


def attach(model, module: nn.Module) -> None:
    """Register ``module`` as ``model.soft_prompt`` and route the model's backbone through it (a bound
    method on the instance, so ``copy.deepcopy(model)`` gets a copy routed through its own prompt)."""
    if hasattr(model, "soft_prompt"):
        raise UserError("this model already has a soft prompt attached")
    if not callable(getattr(model, "backbone", None)):
        raise UserError(f"soft prompts need a plmkit Transformer; {type(model).__name__} has no backbone()")
    model.soft_prompt = module
    model.backbone = types.MethodType(_soft_backbone, model)


def _soft_backbone(model, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                   output_hidden_states=False, past_key_values=None, use_cache=False, inputs_embeds=None,
                   attention_bias=None):
    module = model.soft_prompt
    original = functools.partial(type(model).backbone, model)
    ref = input_ids if input_ids is not None else inputs_embeds
    B, T = ref.shape[0], ref.shape[1]
    k = module.num_tokens
    cache = past_key_values
    if module.kind == "prefix":
        if isinstance(cache, PrefixCache):
            cache = cache.inner
        if cache is None and use_cache:
            cache = _new_cache(model, B, T)
        past = len(cache) if cache is not None else 0
        if position_ids is None:
            position_ids = model.default_position_ids(input_ids, T, past, ref.device)
        view = PrefixCache(module.prefixes(), B, cache)
        attention_mask = _extend_mask(attention_mask, k, k + past + T)
        hidden, states, _ = original(input_ids, attention_mask, token_type_ids, position_ids,
                                     output_hidden_states, view, use_cache, inputs_embeds, attention_bias)
        return hidden, states, (cache if cache is not None else None)
    # virtual tokens
    past = len(cache) if cache is not None else 0
    if past == 0:
        if cache is None and use_cache:
            cache = _new_cache(model, B, k + T)
        if position_ids is None:
            position_ids = model.default_position_ids(input_ids, T, 0, ref.device)
        if position_ids.shape[0] != B:
            position_ids = position_ids.expand(B, -1)
        position_ids = torch.cat([torch.arange(k, device=ref.device).expand(B, -1) + model.config.position_offset,
                                  position_ids + k], dim=1)
        if inputs_embeds is None:
            inputs_embeds = _word_embeddings(model)(input_ids)
        virt = module.virtual().to(inputs_embeds.dtype)[None].expand(B, -1, -1)
        inputs_embeds = torch.cat([virt, inputs_embeds], dim=1)
        if token_type_ids is not None:
            token_type_ids = torch.cat([token_type_ids[:, :1].expand(-1, k), token_type_ids], dim=1)
        if attention_mask is not None and attention_mask.dim() == 2:
            attention_mask = torch.cat([attention_mask.new_ones(B, k), attention_mask], dim=1)
        elif attention_mask is not None:
            raise UserError("prompt tuning supports (B, T) padding masks only")
        if attention_bias is not None:
            raise UserError("prompt tuning does not combine with an attention bias")
        hidden, states, cache = original(None, attention_mask, token_type_ids, position_ids,
                                         output_hidden_states, cache, use_cache, inputs_embeds, None)
        hidden = hidden[:, k:]
        if states is not None:
            states = tuple(h[:, k:] for h in states)
        return hidden, states, cache
    # later decoding steps: the virtual tokens are in the cache
    if position_ids is None:
        position_ids = model.default_position_ids(input_ids, T, past - k, ref.device)
    attention_mask = _extend_mask(attention_mask, k, past + T)
    return original(input_ids, attention_mask, token_type_ids, position_ids + k, output_hidden_states,
                    cache, use_cache, inputs_embeds, attention_bias)


def _new_cache(model, batch: int, length: int):
    try:
        from plmkit.models.cache import KVCache
    except ImportError:  # before the caches moved to models/
        from plmkit.generation.cache import KVCache
    return KVCache.for_model(model, batch, length)


def build_soft_prompt(model, mode: str, num_tokens: int, encoder: str = "lstm", hidden: int | None = None,
                      seed: int = 0, reparam: bool = True, init: str = "vocab",
                      label_token_ids: list[int] | None = None) -> nn.Module:
    if num_tokens <= 0:
        raise UserError(f"--prompt-tokens must be positive, got {num_tokens}")
    if init != "vocab" and mode != "prompt-tuning":
        raise UserError(f"--prompt-init {init} applies to --mode prompt-tuning, not {mode}")
    if mode == "prompt-tuning":
        return PromptTuning(model, num_tokens, seed, init, label_token_ids)
    if mode == "p-tuning":
        return PTuning(model, num_tokens, encoder, hidden, seed)
    if mode == "prefix-tuning":
        return PrefixTuning(model, num_tokens, hidden or 512, seed, reparam)
    raise UserError(f"unknown soft-prompt mode {mode!r}")
