"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME §2).

For a prompt that asks for a fact ("Vinson Massif is located in the continent of" -> " Antarctica"):

1. *clean run*: record every site's output: block outputs ("hidden"), MLP outputs, attention outputs.
2. *corrupted runs*: add Gaussian noise N(0, nu^2) to the token embeddings of the subject tokens
   (``nu`` = 3 x the std of the token-embedding entries over a corpus, as in the paper: by default
   the subjects of the facts file, ROME's own choice), ``samples`` draws per fact; p* = mean P(o).
3. *restored runs*: the corrupted run with one site's output at (layer l, token t) set back to its
   clean value; the **indirect effect** IE(l, t) = P_restored(o) - p*. With a window W (the paper's
   Figure 2 MLP/attention panels use 10), the site is restored at the W layers centred on l.

Kinds: ``hidden``, ``mlp``, ``attn`` (single layer) and ``mlp_window``, ``attn_window``. Each
(kind, layer) is one batched forward of T x samples rows (row t restores token t), reading only the
last position's logits; restoring at layer l leaves layers < l identical to the corrupted run.

Token classes for averages over facts (the paper's Figure 2/3 rows): first subject token, middle
subject tokens, last subject token, first subsequent token, further tokens (after it, before the
last), last token. A one-token subject counts as first and last subject token; tokens before the
subject belong to no class.

Precision: ``precision="bf16"`` runs every forward under bf16 autocast (matrix products in bfloat16,
additions, norms and softmax in float32): on a CPU with AVX512-BF16 about 1.5x less CPU time per fact
for SmolLM2, effects within ~1e-3 (absolute) of float32 (docs/KNOWLEDGE.md has the figures).

The object token is the first token of " " + attribute; a fact is *known* when it is the clean
run's top-1 prediction (ROME traces facts the model knows; averages are reported for both sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import contextlib

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.lama import causal_ids, front_specials
from plmkit.knowledge.structure import ModelStructure, _site_module, intervene
from plmkit.models.cache import KVCache
from plmkit.models.layers import AttentionContext

PRECISIONS = ("fp32", "bf16")
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


def _fast_path_ok(struct: ModelStructure) -> bool:
    """True for plmkit's own ``Transformer`` backbone (blocks can be run one by one with a KV cache)."""
    from plmkit.models.transformer import Transformer

    m = struct.model
    return isinstance(m, Transformer) and type(m).backbone is Transformer.backbone and bool(m.config.causal)


@dataclass
class _Corrupted:
    """The ``samples`` corrupted runs of one fact, kept for the restored runs."""

    inputs: list[Tensor]  # input of block i, (S, T, H)
    cache: KVCache  # keys / values of every layer, (L, S, Nkv, T, D)
    p: Tensor  # (S,) P(target)


class Tracer:
    """Runs the clean, corrupted and restored forwards of one fact (see the module docstring).

    ``fast`` (default; plmkit ``Transformer`` causal LMs): the corrupted run is computed once per
    fact and kept (every block's input and its KV cache); a run restoring tokens ``toks`` at layers
    ``layers`` starts at block ``min(layers)`` from the corrupted input and computes only positions
    ``>= min(toks)`` (the earlier ones equal the corrupted run's at every layer, so their keys and
    values come from its cache), and only the last position goes through the head. Restoring a
    token before the first subject token is a no-op (its clean and corrupted states are the same)
    and gives ``p_corrupt`` without a forward. ``fast=False``: one full batched forward of the
    model per restoration set, with hooks (the reference implementation, ``restored``).
    ``precision="bf16"``: ``trace`` runs under bf16 autocast (see the module docstring).
    """

    def __init__(self, struct: ModelStructure, noise: float, samples: int = 10, window: int = 10,
                 seed: int = 0, batch_size: int = 256, fast: bool = True, precision: str = "fp32") -> None:
        if struct.kind != "lm":
            raise UserError("causal tracing needs a causal LM (the object is read from the next-token distribution)")
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.s, self.noise, self.samples, self.window, self.seed = struct, noise, samples, window, seed
        self.batch_size = batch_size
        self.fast = fast and _fast_path_ok(struct)

    # -------------------------------------------------------------- pieces
    def _noise(self, f: TraceFact) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        lo, hi = f.subject_range
        e = self.s.word_embeddings.weight
        return (torch.randn(self.samples, hi - lo, e.shape[1], generator=g) * self.noise).to(e.dtype)

    def _prob(self, ids: Tensor, target: int) -> Tensor:
        sel = torch.zeros_like(ids, dtype=torch.bool)
        sel[:, -1] = True
        logits = self.s.model(ids, labels_mask=sel).logits  # (B, V)
        return logits.float().softmax(-1)[:, target]

    def clean(self, f: TraceFact) -> tuple[dict[str, list[Tensor]], Tensor]:
        """({site: [output (T, H) per layer]}, probabilities (V,) at the last position) of the clean run."""
        rec: dict[str, list[Tensor]] = {k: [None] * self.s.num_layers for k in ("layer", "mlp", "attn")}
        ids = torch.tensor([f.ids])
        with intervene(self.s, "layer", lambda i, h: rec["layer"].__setitem__(i, h[0].clone())), \
                intervene(self.s, "mlp", lambda i, h: rec["mlp"].__setitem__(i, h[0].clone())), \
                intervene(self.s, "attn", lambda i, h: rec["attn"].__setitem__(i, h[0].clone())):
            logits = self.s.model(ids).logits[0, -1]
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

            with _embedding_hook(self.s, corrupt), intervene(self.s, site, restore, layers=layers):
                p = self._prob(ids, f.target_id)  # (B,)
            out.append(p.view(len(chunk), S).mean(1))
        return torch.cat(out)

    # -------------------------------------------------------------- fast path
    def _run_blocks(self, x: Tensor, start: int, cache: KVCache, hook=None) -> Tensor:
        """Blocks start..L-1 on ``x`` (B, T', H) = positions len(cache)..len(cache)+T'-1, whose keys
        and values are written into ``cache`` (the earlier positions' are read from it).
        ``hook(i, x)`` may replace block i's output."""
        m = self.s.model
        B, T = x.shape[:2]
        past = len(cache)
        mask, is_causal = m._attention_mask(None, B, T, past, cache, x.device)
        pos = m.default_position_ids(None, T, past, x.device)
        rotary = m.rotary(pos, x.dtype) if hasattr(m, "rotary") else None
        ctx = AttentionContext(mask=mask, is_causal=is_causal, rotary=rotary, cache=cache)
        for i in range(start, self.s.num_layers):
            self._layer = i
            x = self.s.layers[i](x, ctx, i)
            if hook is not None:
                x = hook(i, x)
        return x

    def _target_prob(self, last: Tensor, target: int) -> Tensor:
        return self.s.readout(last).float().softmax(-1)[:, target]  # (B,)

    def corrupted(self, f: TraceFact) -> _Corrupted:
        """The ``samples`` corrupted runs (fast path): block inputs, KV cache and P(target)."""
        m, S, (lo, hi) = self.s.model, self.samples, f.subject_range
        ids = torch.tensor([f.ids]).expand(S, -1)
        noise = self._noise(f)

        def corrupt(i: int, emb: Tensor) -> Tensor:
            emb = emb.clone()
            emb[:, lo:hi] += noise
            return emb

        with _embedding_hook(self.s, corrupt):
            x = m.embeddings(ids, m.default_position_ids(ids, len(f.ids), 0, ids.device), None, None)
        cache = KVCache.for_model(m, S, len(f.ids))
        inputs: list[Tensor] = [None] * self.s.num_layers

        def keep(i: int, h: Tensor) -> Tensor:
            if i + 1 < self.s.num_layers:
                inputs[i + 1] = h
            return h

        inputs[0] = x
        x = self._run_blocks(x, 0, cache, keep)
        cache.advance(len(f.ids))
        return _Corrupted(inputs, cache, self._target_prob(x[:, -1], f.target_id))

    def restored_fast(self, f: TraceFact, clean: dict[str, list[Tensor]], corrupted: _Corrupted, site: str,
                      layers: list[int], tokens: list[list[int]]) -> Tensor:
        """``restored`` computed from the kept corrupted run (see the class docstring) -> (len(tokens),)."""
        S, lo = self.samples, f.subject_range[0]
        p_corrupt = corrupted.p.mean()
        out = torch.empty(len(tokens))
        groups: dict[int, list[int]] = {}  # first restored position -> entries
        for k, toks in enumerate(tokens):
            live = [t for t in toks if t >= lo]
            if not live or not layers:
                out[k] = p_corrupt
            else:
                groups.setdefault(min(live), []).append(k)
        start, wanted = min(layers) if layers else 0, set(layers)
        per = max(1, self.batch_size // S)
        T = len(f.ids)
        # buckets of entries run together from the bucket's first position t0: an entry joins while
        # its own span T - t is at least half the bucket's (few, large matmuls, at most 2x the positions)
        buckets: list[tuple[int, list[int]]] = []
        for t in sorted(groups):
            for k in groups[t]:
                if buckets and 2 * (T - t) >= T - buckets[-1][0] and len(buckets[-1][1]) < per:
                    buckets[-1][1].append(k)
                else:
                    buckets.append((t, [k]))
        lasts: list[Tensor] = []
        for t0, chunk in buckets:
            n = len(chunk)
            mask = torch.zeros(n * S, T - t0, dtype=torch.bool)  # row j * S + s restores entry chunk[j]
            for j, k in enumerate(chunk):
                mask[j * S: (j + 1) * S, [t - t0 for t in tokens[k] if t >= lo]] = True
            cache = KVCache(self.s.num_layers, n * S, corrupted.cache.num_kv_heads, corrupted.cache.head_dim,
                            T, corrupted.cache.device)
            cache.k = corrupted.cache.k.repeat(1, n, 1, 1, 1)
            cache.v = corrupted.cache.v.repeat(1, n, 1, 1, 1)
            cache.capacity, cache.length = cache.k.shape[3], t0

            def put(i: int, h: Tensor, t0=t0, mask=mask) -> Tensor:
                return torch.where(mask[..., None], clean[site][i][t0:][None].to(h.dtype), h)

            x = corrupted.inputs[start][:, t0:].repeat(n, 1, 1)
            if site == "layer":
                x = self._run_blocks(x, start, cache, lambda i, h: put(i, h) if i in wanted else h)
            else:
                mods = {id(_site_module(self.s, site, i)): _site_module(self.s, site, i) for i in layers}
                handles = [mod.register_forward_hook(
                    lambda mod_, a, h: put(self._layer, h) if self._layer in wanted else None)
                    for mod in mods.values()]
                try:
                    x = self._run_blocks(x, start, cache)
                finally:
                    for h in handles:
                        h.remove()
            lasts.append(x[:, -1])
        if lasts:  # one head product for all buckets (the head is the largest matrix)
            p = self._target_prob(torch.cat(lasts), f.target_id)
            r = 0
            for _, chunk in buckets:
                out[chunk] = p[r: r + len(chunk) * S].view(len(chunk), S).mean(1)
                r += len(chunk) * S
        return out

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of ``precision`` (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.s.word_embeddings.weight.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def trace(self, f: TraceFact, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
        """All arrays of one fact: p_clean, p_corrupt, top-1, and per kind an (L, T) effect matrix."""
        with self.autocast():
            return self._trace(f, kinds)

    def _trace(self, f: TraceFact, kinds: tuple[str, ...]) -> dict[str, Any]:
        clean, probs = self.clean(f)
        p_clean = float(probs[f.target_id])
        if self.fast:
            corrupted = self.corrupted(f)
            p_corrupt = float(corrupted.p.mean())

            def restored(f, clean, site, layers, tokens):
                return self.restored_fast(f, clean, corrupted, site, layers, tokens)
        else:
            restored = self.restored
            p_corrupt = float(self.restored(f, clean, "layer", [], [[]])[0])
        T, L = len(f.ids), self.s.num_layers
        res: dict[str, Any] = {"p_clean": p_clean, "p_corrupt": p_corrupt, "top1_id": int(probs.argmax()),
                               "known": int(probs.argmax()) == f.target_id, "effects": {}}
        for kind in kinds:
            if kind not in KINDS:
                raise UserError(f"unknown trace kind {kind!r}: expected one of {', '.join(KINDS)}")
            rows = []
            for layer in range(L):
                layers = _window(layer, self.window, L) if kind.endswith("_window") else [layer]
                p = restored(f, clean, SITE[kind], layers, [[t] for t in range(T)])
                rows.append((p - p_corrupt).tolist())
            res["effects"][kind] = rows  # (L, T): indirect effect of restoring (layer, token)
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

