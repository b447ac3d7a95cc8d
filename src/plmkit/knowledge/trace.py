"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME §2).

For a prompt that asks for a fact ("Vinson Massif is located in the continent of" -> " Antarctica"):

1. *clean run*: record every site's output: block outputs ("hidden"), MLP outputs, attention outputs.
2. *corrupted runs*: add Gaussian noise N(0, nu^2) to the token embeddings of the subject tokens
   (``nu`` = 3 x the std of the token-embedding entries over a corpus, as in the paper: by default
   the subjects of the facts file, ROME's own choice), ``samples`` draws per fact; p* = mean P(o).
3. *restored runs*: the corrupted run with one site's output at (layer l, token t) set back to its
   clean value; the **indirect effect** IE(l, t) = P_restored(o) - p*. With a window W (the paper's
   Figure 2 MLP/attention panels use 10), the site is restored at the W layers centred on l.

Kinds: ``hidden``, ``mlp``, ``attn`` (single layer) and ``mlp_window``, ``attn_window``. All the
(layer, token) restorations of one kind are batched: those restoring the same token share one pass
over the blocks (from that token on), a restoration's rows joining the pass at its first layer
(``Tracer.restored_fast``); only the last position's logits are read.

Token classes for averages over facts (the paper's Figure 2/3 rows): first subject token, middle
subject tokens, last subject token, first subsequent token, further tokens (after it, before the
last), last token. A one-token subject counts as first and last subject token; tokens before the
subject belong to no class.

Precision: ``precision="bf16-mixed"`` runs the blocks' matrix products in bfloat16 (a copy of the
model with bf16 block matrices, under autocast; residual stream, norms and head in float32),
``"bf16"`` a whole bfloat16 copy (float32 head), ``"bf16-autocast"`` the float32 model under
autocast. With the restorations stacked, all three take ~1.55x less CPU than float32 per fact for
SmolLM2 on an AVX512-BF16 CPU; the effects move by up to ~0.02 (absolute; "bf16": ~0.03) from
float32 (docs/KNOWLEDGE.md has the figures).

The object token is the first token of " " + attribute; a fact is *known* when it is the clean
run's top-1 prediction (ROME traces facts the model knows; averages are reported for both sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import contextlib
import copy

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.blocks import PrefixCache, attention_context, fast_path_ok, run_kept
from plmkit.knowledge.lama import causal_ids, front_specials
from plmkit.knowledge.structure import ModelStructure, _site_module, intervene, locate
from plmkit.models.cache import KVCache

PRECISIONS = ("fp32", "bf16", "bf16-mixed", "bf16-autocast")
KINDS = ("hidden", "mlp", "attn", "mlp_window", "attn_window")
SITE = {"hidden": "layer", "mlp": "mlp", "attn": "attn", "mlp_window": "mlp", "attn_window": "attn"}
CLASSES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
           "further tokens", "last token")


@dataclass
class TraceFact:
    prompt: str
    subject: str
    target: str
    ids: list[int] = field(default_factory=list)
    subject_range: tuple[int, int] = (0, 0)  # token positions [start, end)
    target_id: int = -1


def subject_token_range(tok: Any, ids: list[int], n_front: int, prompt: str, subject: str) -> tuple[int, int]:
    """Token positions [start, end) of ``subject`` in ``prompt`` (``ids`` = front specials + prompt tokens)."""
    start = prompt.find(subject)
    if start < 0:
        raise UserError(f"subject {subject!r} not found in prompt {prompt!r}")
    end = start + len(subject)
    body = ids[n_front:]
    first = last = None
    for i in range(len(body)):
        lo, hi = len(tok.decode(body[:i])), len(tok.decode(body[: i + 1]))
        if hi > start and lo < end:
            first = i if first is None else first
            last = i
    if first is None:
        raise UserError(f"subject {subject!r} covers no token of prompt {prompt!r}")
    return n_front + first, n_front + last + 1


def prepare_fact(tok: Any, prompt: str, subject: str, target: str) -> TraceFact:
    f = TraceFact(prompt, subject, target)
    n_front = len(front_specials(tok))
    f.ids = causal_ids(tok, prompt)
    f.subject_range = subject_token_range(tok, f.ids, n_front, prompt, subject)
    tgt = list(tok.encode(" " + target.strip(), add_special_tokens=False))
    if not tgt:
        raise UserError(f"empty target for prompt {prompt!r}")
    f.target_id = tgt[0]
    return f


def embedding_std(struct: ModelStructure, tok: Any, texts: list[str]) -> float:
    """Std of all token-embedding entries of the tokens of ``texts`` (ROME's ``collect_embedding_std``)."""
    ids = [i for t in texts for i in tok.encode(t, add_special_tokens=False)]
    if not ids:
        raise UserError("no tokens to measure the embedding std on")
    with torch.no_grad():
        emb = struct.word_embeddings(torch.tensor(ids)).float()  # (N, E)
    return float(emb.std())


def _window(layer: int, window: int, num_layers: int) -> list[int]:
    lo = max(0, layer - window // 2)
    return list(range(lo, min(num_layers, layer - window // 2 + window)))


@dataclass
class _Corrupted:
    """The ``samples`` corrupted runs of one fact, kept for the restored runs."""

    inputs: list[Tensor]  # input of block i, (S, T, H)
    cache: KVCache  # keys / values of every layer, (L, S, Nkv, T, D)
    p: Tensor  # (S,) P(target)


class Tracer:
    """Runs the clean, corrupted and restored forwards of one fact (see the module docstring).

    ``fast`` (default; plmkit ``Transformer`` causal LMs): the corrupted run is computed once per
    fact and kept (every block's input and its KV cache). A restoration of tokens ``toks`` at layers
    ``layers`` changes nothing below block ``min(layers)`` and nothing before position ``min(toks)``
    (causal attention), so its run starts at that block from the kept corrupted input, computes
    only the positions ``>= min(toks)`` (the earlier ones' keys and values come from the kept
    cache) and only the last position goes through the head. The restorations of one kind are
    batched (``restored_fast``): those with the same first token share one pass over the blocks, and
    a restoration's rows join that pass at its first layer, so each block runs once per (kind,
    token) on all the rows started so far. Restoring a token before the first subject token is a
    no-op (its clean and corrupted states are the same) and gives ``p_corrupt`` without a forward.
    ``fast=False``: one full batched forward of the model per restoration set, with hooks (the
    reference implementation, ``restored``).

    ``precision``: ``"fp32"``; ``"bf16"``: every forward runs on a bfloat16 copy of the model
    (weights, activations, noise, clean states and KV cache in bf16, no casts), and the final norm
    + head that give the probabilities run in float32 on the original weights (bf16 logits would
    move P(o) by several percent); ``"bf16-mixed"``: a copy whose blocks' matrices are bf16 and whose
    embeddings, norms and head stay float32, run under bf16 autocast (products in bf16, residual
    stream, norms and head in float32; no weight casts); ``"bf16-autocast"``: the float32 model under
    bf16 autocast (as "bf16-mixed" but every product casts its weights, and the head is bf16).
    ``batch_size``: most rows (restorations x samples) per batched pass.
    """

    def __init__(self, struct: ModelStructure, noise: float, samples: int = 10, window: int = 10,
                 seed: int = 0, batch_size: int = 1024, fast: bool = True, precision: str = "fp32") -> None:
        if struct.kind != "lm":
            raise UserError("causal tracing needs a causal LM (the object is read from the next-token distribution)")
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.s, self.noise, self.samples, self.window, self.seed = struct, noise, samples, window, seed
        # self.s: the caller's model (its final norm + head give the probabilities); self.w: the model
        # the forwards run on (a bf16 copy for precision "bf16")
        self.w = struct
        if precision == "bf16":
            self.w = locate(copy.deepcopy(struct.model).to(torch.bfloat16))
        elif precision == "bf16-mixed":  # the blocks' matrices in bf16, the rest float32 (run under autocast)
            self.w = locate(copy.deepcopy(struct.model))
            for layer in self.w.layers:
                for mod in layer.modules():
                    if isinstance(mod, torch.nn.Linear):
                        mod.to(torch.bfloat16)
        self.batch_size = batch_size
        self.fast = fast and fast_path_ok(struct)

    # -------------------------------------------------------------- pieces
    def _noise(self, f: TraceFact) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        lo, hi = f.subject_range
        e = self.w.word_embeddings.weight
        return (torch.randn(self.samples, hi - lo, e.shape[1], generator=g) * self.noise).to(e.dtype)

    def _target_prob(self, last: Tensor, target: int) -> Tensor:
        """P(target) (B,) from block outputs (B, H) at the last position: the final norm + head in
        chunks of rows (the head is the largest product), in float32 for bf16 weights."""
        return torch.cat([self._readout(c).softmax(-1)[:, target] for c in last.split(256)])

    def _readout(self, h: Tensor) -> Tensor:
        """Float32 logits of the caller's final norm + head on block outputs; for "bf16" / "bf16-mixed"
        in float32 (autocast off), for "bf16-autocast" under autocast as its forwards."""
        if self.w is self.s:
            return self.s.readout(h).float()
        with torch.autocast(h.device.type, enabled=False):
            return self.s.readout(h.float()).float()

    def _prob(self, ids: Tensor, target: int) -> Tensor:
        sel = torch.zeros_like(ids, dtype=torch.bool)
        sel[:, -1] = True
        if self.w is self.s:
            logits = self.s.model(ids, labels_mask=sel).logits  # (B, V)
            return logits.float().softmax(-1)[:, target]
        last: list[Tensor] = []  # bf16 weights: the last block's output, read out in float32
        h = self.w.layers[-1].register_forward_hook(lambda m, a, o: last.append(o[:, -1]))
        try:
            self.w.model(ids, labels_mask=sel)
        finally:
            h.remove()
        return self._target_prob(last[-1], target)

    def clean(self, f: TraceFact) -> tuple[dict[str, list[Tensor]], Tensor]:
        """({site: [output (T, H) per layer]}, probabilities (V,) at the last position) of the clean run."""
        rec: dict[str, list[Tensor]] = {k: [None] * self.s.num_layers for k in ("layer", "mlp", "attn")}
        ids = torch.tensor([f.ids])
        with intervene(self.w, "layer", lambda i, h: rec["layer"].__setitem__(i, h[0].clone())), \
                intervene(self.w, "mlp", lambda i, h: rec["mlp"].__setitem__(i, h[0].clone())), \
                intervene(self.w, "attn", lambda i, h: rec["attn"].__setitem__(i, h[0].clone())):
            logits = self.w.model(ids).logits[0, -1]
        if self.w is not self.s:
            logits = self._readout(rec["layer"][-1][-1:])[0]
        return rec, logits.float().softmax(-1)

    def restored(self, f: TraceFact, clean: dict[str, list[Tensor]], site: str, layers: list[int],
                 tokens: list[list[int]]) -> Tensor:
        """P(target) averaged over the noise samples, for each entry of ``tokens`` (a list of token
        positions restored at ``site`` in every layer of ``layers``) -> (len(tokens),)."""
        noise = self._noise(f)
        S, lo, hi = self.samples, *f.subject_range
        out = []
        per = max(1, self.batch_size // S)
        for c0 in range(0, len(tokens), per):
            chunk = tokens[c0: c0 + per]
            B = len(chunk) * S
            ids = torch.tensor([f.ids]).expand(B, -1)
            # row r = k * S + s restores chunk[k] with noise sample s
            mask = torch.zeros(B, len(f.ids), dtype=torch.bool)
            for k, toks in enumerate(chunk):
                mask[k * S: (k + 1) * S, toks] = True
            rep = noise.repeat(len(chunk), 1, 1)

            def corrupt(i: int, emb: Tensor) -> Tensor:
                emb = emb.clone()
                emb[:, lo:hi] += rep
                return emb

            def restore(i: int, out_: Tensor) -> Tensor:
                return torch.where(mask[..., None], clean[site][i][None].to(out_.dtype), out_)

            with _embedding_hook(self.w, corrupt), intervene(self.w, site, restore, layers=layers):
                p = self._prob(ids, f.target_id)  # (B,)
            out.append(p.view(len(chunk), S).mean(1))
        return torch.cat(out)

    # -------------------------------------------------------------- fast path
    def corrupted(self, f: TraceFact) -> _Corrupted:
        """The ``samples`` corrupted runs (fast path): block inputs, KV cache and P(target)."""
        lo, hi = f.subject_range
        noise = self._noise(f)

        def corrupt(i: int, emb: Tensor) -> Tensor:
            emb = emb.clone()
            emb[:, lo:hi] += noise
            return emb

        with _embedding_hook(self.w, corrupt):
            inputs, cache, x = run_kept(self.w, torch.tensor([f.ids]).expand(self.samples, -1))
        return _Corrupted(inputs, cache, self._target_prob(x[:, -1], f.target_id))

    def restored_fast(self, f: TraceFact, clean: dict[str, list[Tensor]], corrupted: _Corrupted, site: str,
                      restorations: list[tuple[list[int], list[int]]]) -> Tensor:
        """``restored`` for many restorations at once, computed from the kept corrupted run.

        ``restorations``: (layers, tokens) pairs, each restoring ``site``'s output at ``tokens`` in
        every layer of ``layers`` -> P(target) averaged over the noise samples, (len(restorations),).
        The restorations whose first restored token is t0 share one pass over the blocks that
        computes positions t0..T-1 only (``_stacked``); at most ``batch_size`` rows per pass.
        """
        S, lo, T = self.samples, f.subject_range[0], len(f.ids)
        out = torch.full((len(restorations),), float(corrupted.p.mean()))
        groups: dict[int, list[int]] = {}  # first restored position -> restorations
        for k, (layers, toks) in enumerate(restorations):
            live = [t for t in toks if t >= lo]
            if live and layers:
                groups.setdefault(min(live), []).append(k)
        per = max(1, self.batch_size // S)
        lasts: list[Tensor] = []
        order: list[int] = []
        for t0, ks in sorted(groups.items()):
            ks.sort(key=lambda k: min(restorations[k][0]))
            n = -(-len(ks) // per)
            for c in range(n):
                chunk = ks[c * len(ks) // n: (c + 1) * len(ks) // n]
                lasts.append(self._stacked(clean, corrupted, site, t0, T, lo, [restorations[k] for k in chunk]))
                order += chunk
        if order:  # the head on every row of every pass, in chunks
            out[order] = self._target_prob(torch.cat(lasts), f.target_id).view(len(order), S).mean(1)
        return out

    def _stacked(self, clean: dict[str, list[Tensor]], corrupted: _Corrupted, site: str, t0: int, T: int, lo: int,
                 chunk: list[tuple[list[int], list[int]]]) -> Tensor:
        """Last-position block outputs (len(chunk) x S, H) of the restorations ``chunk`` (sorted by
        first layer; first restored token t0). Restoration j's S rows (j * S + sample) join the batch
        at block min(layers_j), from the corrupted input of that block at positions t0..T-1; a block
        runs once on all the rows that have joined (none of the restorations of a later layer)."""
        S, L = self.samples, self.s.num_layers
        n = len(chunk)
        starts = [min(layers) for layers, _ in chunk]
        lay = torch.zeros(L, n * S, 1, dtype=torch.bool)  # restoration of row r active at layer i
        tok = torch.zeros(n * S, T - t0, dtype=torch.bool)  # ... at position t0 + p
        for j, (layers, toks) in enumerate(chunk):
            lay[layers, j * S: (j + 1) * S] = True
            tok[j * S: (j + 1) * S, [t - t0 for t in toks if t >= lo]] = True
        where = lay & tok  # (L, n x S, T - t0)
        active = lay.flatten(1).any(1).tolist()
        state = {"layer": 0}

        def put(i: int, h: Tensor) -> Tensor:
            if not active[i]:
                return h
            return torch.where(where[i, : h.shape[0], :, None], clean[site][i][t0:][None].to(h.dtype), h)

        handles = []
        if site != "layer":
            mods = {id(_site_module(self.w, site, i)): _site_module(self.w, site, i) for i in range(L) if active[i]}
            handles = [mod.register_forward_hook(lambda mod_, a, h: put(state["layer"], h)) for mod in mods.values()]
        try:
            x = corrupted.inputs[starts[0]][:0, t0:]
            ctx = attention_context(self.w, T - t0, t0, PrefixCache(corrupted.cache, t0, S), x.dtype)
            j = 0
            for i in range(starts[0], L):
                new = 0
                while j < n and starts[j] == i:
                    new, j = new + 1, j + 1
                if new:
                    x = torch.cat([x, corrupted.inputs[i][:, t0:].repeat(new, 1, 1)])
                state["layer"] = i
                x = self.w.layers[i](x, ctx, i)
                if site == "layer":
                    x = put(i, x)
        finally:
            for h in handles:
                h.remove()
        return x[:, -1]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of ``precision`` (a no-op for "fp32" and "bf16")."""
        if self.precision not in ("bf16-autocast", "bf16-mixed"):
            return contextlib.nullcontext()
        return torch.autocast(self.s.word_embeddings.weight.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def trace(self, f: TraceFact, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
        """All arrays of one fact: p_clean, p_corrupt, top-1, and per kind an (L, T) effect matrix."""
        with self.autocast():
            return self._trace(f, kinds)

    def _trace(self, f: TraceFact, kinds: tuple[str, ...]) -> dict[str, Any]:
        for kind in kinds:
            if kind not in KINDS:
                raise UserError(f"unknown trace kind {kind!r}: expected one of {', '.join(KINDS)}")
        clean, probs = self.clean(f)
        p_clean = float(probs[f.target_id])
        T, L = len(f.ids), self.s.num_layers
        if self.fast:
            corrupted = self.corrupted(f)
            p_corrupt = float(corrupted.p.mean())
        else:
            p_corrupt = float(self.restored(f, clean, "layer", [], [[]])[0])
        res: dict[str, Any] = {"p_clean": p_clean, "p_corrupt": p_corrupt, "top1_id": int(probs.argmax()),
                               "known": int(probs.argmax()) == f.target_id, "effects": {}}
        for kind in kinds:
            sets = [_window(layer, self.window, L) if kind.endswith("_window") else [layer] for layer in range(L)]
            if self.fast:
                p = self.restored_fast(f, clean, corrupted, SITE[kind], [(ls, [t]) for ls in sets for t in range(T)])
                p = p.view(L, T)
            else:
                p = torch.stack([self.restored(f, clean, SITE[kind], ls, [[t] for t in range(T)]) for ls in sets])
            res["effects"][kind] = (p - p_corrupt).tolist()  # (L, T): indirect effect of restoring (layer, token)
        return res


class _embedding_hook:
    """Context manager: ``fn(0, output)`` replaces the token-embedding output (B, T, E)."""

    def __init__(self, struct: ModelStructure, fn) -> None:
        self.module, self.fn, self.handle = struct.word_embeddings, fn, None

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda m, a, o: self.fn(0, o))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def token_classes(subject_range: tuple[int, int], T: int) -> dict[str, list[int]]:
    """Positions of each class in ``CLASSES`` for a prompt of T tokens."""
    lo, hi = subject_range
    return {CLASSES[0]: [lo], CLASSES[1]: list(range(lo + 1, hi - 1)), CLASSES[2]: [hi - 1],
            CLASSES[3]: [hi] if hi < T - 1 else [], CLASSES[4]: list(range(hi + 1, T - 1)), CLASSES[5]: [T - 1]}


def average_by_class(traces: list[dict[str, Any]], kind: str, num_layers: int) -> dict[str, list[float | None]]:
    """Mean indirect effect per class and layer over facts (a class a fact lacks does not count)."""
    out = {}
    for c in CLASSES:
        curve = []
        for layer in range(num_layers):
            vals = []
            for t in traces:
                pos = token_classes(tuple(t["subject_range"]), len(t["tokens"]))[c]
                if pos:
                    vals.append(sum(t["effects"][kind][layer][p] for p in pos) / len(pos))
            curve.append(sum(vals) / len(vals) if vals else None)
        out[c] = curve
    return out


def plot_fact(path, trace: dict[str, Any]) -> None:
    """One heatmap per kind: tokens (rows, subject marked *) x layers, colour = P(o) after restoring."""
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    kinds = list(trace["effects"])
    lo, hi = trace["subject_range"]
    labels = [f"{t}*" if lo <= i < hi else t for i, t in enumerate(trace["tokens"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 0.3 * len(labels) + 1.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        m = torch.tensor(trace["effects"][kind]).T + trace["p_corrupt"]  # (T, L) restored probability
        im = ax.imshow(m.numpy(), aspect="auto", cmap={"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
                       [kind.split("_")[0]], vmin=min(trace["p_corrupt"], float(m.min())))
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if ax is axes[0][0] else [""] * len(labels), fontsize=7)
        ax.set_xlabel("layer")
        ax.set_title(kind.replace("_", " "), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(f"p({trace['target'].strip()!r}) clean {trace['p_clean']:.3f}, corrupted {trace['p_corrupt']:.3f}",
                 fontsize=9)
    save_figure(fig, path)


def plot_summary(path, averages: dict[str, dict[str, list[float | None]]], title: str) -> None:
    """One panel per kind: average indirect effect by layer, one line per token class."""
    from plmkit.knowledge.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(averages), figsize=(3.6 * len(averages), 3.2), squeeze=False)
    for ax, (kind, curves) in zip(axes[0], averages.items()):
        for c, ys in curves.items():
            xs = [i for i, y in enumerate(ys) if y is not None]
            if xs:
                ax.plot(xs, [ys[i] for i in xs], label=c, linewidth=1.2)
        ax.set_title(kind.replace("_", " "), fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("average indirect effect")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)

