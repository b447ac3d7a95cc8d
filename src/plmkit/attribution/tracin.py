"""TracInCP (Pruthi et al. 2020) over the checkpoints of a plmkit pretraining run.

    TracIn(z, z') = sum over saved checkpoints t of  lr_t * grad L(w_t, z') . grad L(w_t, z)

- ``z'`` is the query: the text ``prompt + " " + target``; L is the mean next-token cross-entropy over
  the *target* tokens only (the positions after the prompt's tokens).
- ``z`` is a training example: one document of the run's token store, a standalone sequence (its own
  ids, truncated to ``max_len`` / the model's positions); L is the mean next-token cross-entropy over
  all its positions, as in pretraining.
- ``w_t``: the weights of ``RUN/checkpoints/step-t`` (every complete one the run kept; a run keeps
  them with ``train.save_every`` > 0 and ``train.keep_last: 0`` to keep all, else the newest
  ``keep_last``). ``lr_t``: the learning rate of the optimizer step that produced checkpoint t, i.e.
  ``train.lr * lr_multiplier(t - 1, train_config)`` from the checkpoint's own ``train_config``
  (``plmkit.training.optim``: warm-up and the schedule). With Adam this is the usual heuristic of
  Pruthi et al. (their theory is for SGD).

Gradients are taken with respect to the chosen parameters only (``layers``: transformer block indices,
``params``: ``fnmatch`` patterns over parameter names; both None = every trainable parameter; a tied
embedding / output matrix counts once). Per-example gradients are batched with ``torch.func``
(``functional_call`` + ``vmap(grad(loss))``) over right-padded sequences (a causal model never lets a
real token see the padding); the batch size is chosen so that B x (selected parameters) floats stay
under ``grad_budget`` (64 M floats = 256 MB by default).

Random projection (``proj_dim=d``), applied per parameter block (a parameter tensor; b = its position in
the sorted list of selected names), the same matrices for every checkpoint, so that
E[<Pg, Pg'>] = <g, g'> (Johnson-Lindenstrauss) and memory stays bounded by one block at a time:

- ``projection="gaussian"``: block b (n_b elements) gets P_b of shape (n_b, d) with i.i.d.
  N(0, 1) / sqrt(d) entries; rows are drawn in chunks of 4096 from ``torch.Generator`` seeded with
  ``(seed * 1_000_003 + b) * 65_537 + chunk``, cached while all blocks total at most ``proj_cache``
  floats (else regenerated chunk by chunk each batch). The projected gradient is ``sum_b g_b @ P_b``:
  B x n x d multiply-adds per batch, several times the cost of the gradients themselves.
- ``projection="kronecker"`` (default): a block with 2 or more dimensions, seen as an (m, k) matrix G
  (first dimension by the rest), is projected to ``A_b^T G C_b`` of d_1 x d_2 = d numbers, A_b (m, d_1)
  and C_b (k, d_2) i.i.d. N(0, 1/d_1) and N(0, 1/d_2), seeded like the Gaussian ones with chunk
  0 and 1 (d_1 = the largest power of two <= sqrt(d), d_2 = d / d_1; d must be a multiple of d_1).
  vec(A^T G C) = (C kron A)^T vec(G), again an unbiased inner-product estimate, at B x m x k x d_2
  multiply-adds (d_2 ~ sqrt(d)) and a few small matrices; one-dimensional blocks (biases, norms) use the
  Gaussian one. The projected gradient is the sum over blocks.

Projected example gradients are computed once per example and
kept (one (N, d) float32 array per checkpoint), so later queries cost only a matrix product. Without
projection the exact dot products are computed, streaming the examples once per call
(``scores_many`` scores many queries in that one pass).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from plmkit.attribution.bm25 import top_k as _top_k
from plmkit.errors import UserError

IGNORE = -100
KEEP_HINT = ("set train.save_every > 0 (and train.keep_last: 0 to keep every checkpoint) in the recipe "
             "and pretrain again")


@contextlib.contextmanager
def _plain_linears():
    """Route linears through ``F.linear`` (torch.func cannot transform plmkit's oneDNN autograd.Function)
    and attention through SDPA's math backend."""
    from plmkit.models import kernels

    from torch.nn.attention import SDPBackend, sdpa_kernel

    old = kernels.FAST_LINEAR
    kernels.FAST_LINEAR = False
    try:  # the math attention has vmap batching rules (the fused CPU kernel falls back to a loop)
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        kernels.FAST_LINEAR = old


class _LM(nn.Module):
    """forward(ids) -> logits through the backbone (no input checks, which vmap cannot run)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _, _ = self.m.backbone(ids)
        return self.m.head_logits(h)


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not IGNORE. logits (T, V), labels (T,)."""
    mask = labels != IGNORE
    lp = torch.log_softmax(logits.float(), dim=-1)
    picked = lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (T,)
    return -(picked * mask).sum() / mask.sum().clamp_min(1)


def example_labels(ids: list[int], start: int = 1) -> list[int]:
    """Next-token labels of a sequence: position p predicts ids[p + 1]; only predictions of tokens at
    index >= ``start`` count (1 = all; the prompt length for a query)."""
    lab = [IGNORE] * len(ids)
    for p in range(len(ids) - 1):
        if p + 1 >= start:
            lab[p] = ids[p + 1]
    return lab


def select_params(model: nn.Module, layers: Sequence[int] | None = None,
                  params: Sequence[str] | None = None) -> list[str]:
    """Sorted names of the parameters TracIn differentiates (see the module docstring)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if layers is None and params is None:
        return sorted(names)
    keep = set()
    if layers is not None:
        L = int(model.config.num_layers)
        for i in layers:
            if not -L <= int(i) < L:
                raise UserError(f"--tracin-layers {i}: the model has layers 0..{L - 1}")
            prefix = f"layers.{int(i) % L}."
            keep.update(n for n in names if n.startswith(prefix))
    for pat in params or []:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise UserError(f"--tracin-params {pat!r}: matches no parameter (e.g. {names[0]!r})")
        keep.update(hit)
    if not keep:
        raise UserError("TracIn: the chosen layers / params select no parameter")
    return sorted(keep)


def run_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path, float]]:
    """(step, path, lr) of every complete checkpoint of a run, oldest first; UserError when there is none."""
    from plmkit.config import TrainConfig
    from plmkit.training.checkpoint import checkpoint_steps
    from plmkit.training.optim import lr_multiplier

    run = Path(run_dir)
    steps = checkpoint_steps(run / "checkpoints")
    if not steps:
        raise UserError(f"--run {run}: no checkpoints in {run / 'checkpoints'}; TracIn needs the run's step "
                        f"checkpoints: {KEEP_HINT}")
    out = []
    for step, path in steps:
        try:
            meta = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{path / 'trainer_state.json'}: cannot read it ({e})") from None
        cfg_dict = meta.get("train_config")
        if not isinstance(cfg_dict, dict):
            raise UserError(f"{path / 'trainer_state.json'}: no 'train_config' (the learning rate of the "
                            f"checkpoint cannot be known)")
        fields = {f for f in TrainConfig.__dataclass_fields__}
        cfg = TrainConfig(**{k: v for k, v in cfg_dict.items() if k in fields})
        lr = float(cfg.lr) * lr_multiplier(max(step - 1, 0), cfg)
        out.append((step, path, lr))
    return out


class TracIn:
    """TracInCP scores of training examples for queries (see the module docstring).

    Args:
        checkpoints: (model, lr) pairs; the models must be causal LMs with an LM head.
        tokenizer: encodes the queries.
        examples: ``TrainingExamples``.
        layers / params: which parameters to differentiate (None, None = all).
        proj_dim: random projection size (None = exact dot products).
        seed: projection seed.
        max_len: truncate examples and queries to this many tokens (None: the model's positions).
        grad_budget: per-batch bound on B x selected parameters (floats).
        proj_cache: cache the Gaussian projection matrices while they total at most this many floats.
        projection: "kronecker" (default) or "gaussian" (see the module docstring).
    """

    def __init__(self, checkpoints: Sequence[tuple[nn.Module, float]], tokenizer: Any, examples: Any,
                 layers: Sequence[int] | None = None, params: Sequence[str] | None = None,
                 proj_dim: int | None = None, seed: int = 0, max_len: int | None = None,
                 grad_budget: int = 1 << 26, proj_cache: int = 1 << 28, steps: Sequence[int] | None = None,
                 projection: str = "kronecker"):
        if not checkpoints:
            raise UserError(f"TracIn needs at least one checkpoint: {KEEP_HINT}")
        self.models = [m.eval() for m, _ in checkpoints]
        self.lrs = [float(lr) for _, lr in checkpoints]
        self.steps = list(steps) if steps is not None else list(range(len(checkpoints)))
        m0 = self.models[0]
        if not getattr(m0.config, "causal", False) or getattr(m0, "head", None) is None:
            raise UserError("TracIn here takes the next-token loss: it needs a causal LM with an LM head "
                            f"(got a {m0.config.family!r} model, causal={m0.config.causal})")
        self.tokenizer, self.examples = tokenizer, examples
        self.names = select_params(m0, layers, params)
        self.layers, self.params = layers, params
        self.proj_dim = int(proj_dim) if proj_dim else None
        self.seed = int(seed)
        cfg = m0.config
        limit = None
        if getattr(cfg, "position", None) in ("learned", "sinusoidal"):
            limit = int(cfg.max_position_embeddings) - int(getattr(cfg, "position_offset", 0) or 0)
        lims = [x for x in (max_len, getattr(examples, "max_len", None), limit) if x]
        self.max_len = min(lims) if lims else None
        shapes = dict(m0.named_parameters())
        self.sizes = [int(shapes[n].numel()) for n in self.names]
        self.shapes = [tuple(shapes[n].shape) for n in self.names]
        if projection not in ("kronecker", "gaussian"):
            raise UserError(f"projection {projection!r}: expected 'kronecker' or 'gaussian'")
        self.projection = projection
        if self.proj_dim:
            if self.proj_dim < 1:
                raise UserError(f"--proj-dim {proj_dim}: expected a positive integer (0 = exact)")
            d1 = 1 << (int(math.isqrt(self.proj_dim)).bit_length() - 1)
            if projection == "kronecker" and self.proj_dim % d1:
                raise UserError(f"--proj-dim {self.proj_dim}: the kronecker projection needs a multiple of {d1} "
                                f"(e.g. 256, 512, 1024)")
            self._d1, self._d2 = d1, self.proj_dim // d1
        self.num_selected = sum(self.sizes)
        self.grad_budget = int(grad_budget)
        self._proj: dict[int, Any] = {}
        dense = sum(n for n, sh in zip(self.sizes, self.shapes) if projection == "gaussian" or len(sh) < 2)
        self._proj_cache_ok = self.proj_dim is not None and dense * self.proj_dim <= proj_cache
        self._features: list[np.ndarray] | None = None  # per checkpoint (N, d) float32
        self._have: np.ndarray | None = None  # (N,) bool: features computed
        self.example_seconds = 0.0
        self.examples_done = 0
        self._lengths: np.ndarray | None = None

    # ------------------------------------------------------------------ construction from a run
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, examples: Any = None, layers: Sequence[int] | None = None,
                 proj_dim: int | None = None, seed: int = 0, params: Sequence[str] | None = None,
                 checkpoints: Sequence[int] | None = None, **kwargs: Any) -> "TracIn":
        """Every complete checkpoint of ``RUN/checkpoints`` (or the ``checkpoints`` steps) and its LR."""
        from plmkit import load_tokenizer
        from plmkit.models import load

        run = Path(run_dir)
        found = run_checkpoints(run)
        if checkpoints is not None:
            have = {s for s, _, _ in found}
            missing = [s for s in checkpoints if s not in have]
            if missing:
                raise UserError(f"--run {run}: no checkpoint step-{missing[0]} (have: "
                                f"{', '.join(f'step-{s}' for s in sorted(have))})")
            found = [x for x in found if x[0] in set(checkpoints)]
        if examples is None:
            from plmkit.attribution.examples import TrainingExamples

            examples = TrainingExamples.from_run(run)
        tok = examples.tokenizer if getattr(examples, "tokenizer", None) is not None else \
            load_tokenizer(run / "tokenizer")
        models = []
        for step, path, lr in found:
            models.append((load(path), lr))
        return cls(models, tok, examples, layers=layers, params=params, proj_dim=proj_dim, seed=seed,
                   steps=[s for s, _, _ in found], **kwargs)

    # ------------------------------------------------------------------ gradients
    def _grad_fn(self, model: nn.Module):
        from torch.func import functional_call, grad, vmap

        wrapper = _LM(model)
        selected = {f"m.{n}": p.detach() for n, p in model.named_parameters() if n in set(self.names)}
        rest = {f"m.{n}": t.detach() for n, t in list(model.named_parameters()) + list(model.named_buffers())
                if n not in set(self.names)}

        def loss(sel, ids, labels):
            logits = functional_call(wrapper, {**rest, **sel}, (ids.unsqueeze(0),))  # (1, T, V)
            return _nll(logits[0], labels)

        per_example = vmap(grad(loss), in_dims=(None, 0, 0))
        return selected, per_example

    def _batch_grads(self, model_fn, seqs: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        """Per-example gradients of one padded batch: a (B, n_b) tensor per selected block."""
        selected, per_example = model_fn
        T = max(2, max(len(s) for s, _ in seqs))
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        lab = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
        for i, (s, l) in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            lab[i, : len(l)] = torch.as_tensor(l, dtype=torch.long)
        with _plain_linears():
            g = per_example(selected, ids, lab)
        return [g[f"m.{n}"].reshape(len(seqs), -1) for n in self.names]

    def _gauss(self, b: int, rows: int, cols: int, chunk: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + b) * 65_537 + chunk)
        return torch.randn(rows, cols, generator=gen)

    def _dense(self, b: int, g: torch.Tensor) -> torch.Tensor:
        """g (B, n_b) @ P_b (n_b, d), P_b ~ N(0, 1/d), drawn in seeded row chunks."""
        n, d = g.shape[1], self.proj_dim
        if b in self._proj:
            return g @ self._proj[b]
        parts = [self._gauss(b, min(4096, n - r), d, r // 4096) / math.sqrt(d) for r in range(0, n, 4096)]
        if self._proj_cache_ok:
            self._proj[b] = torch.cat(parts)
            return g @ self._proj[b]
        out = torch.zeros(g.shape[0], d)
        for k, m in enumerate(parts):
            out += g[:, k * 4096: k * 4096 + m.shape[0]] @ m
        return out

    def _kron(self, b: int, g: torch.Tensor) -> torch.Tensor:
        """g (B, m*k) seen as (B, m, k) -> A^T G C (B, d1*d2)."""
        shape = self.shapes[b]
        m, k = shape[0], int(np.prod(shape[1:]))
        if b not in self._proj:
            a = self._gauss(b, m, self._d1, 0) / math.sqrt(self._d1)
            c = self._gauss(b, k, self._d2, 1) / math.sqrt(self._d2)
            self._proj[b] = (a, c)
        a, c = self._proj[b]
        G = g.reshape(g.shape[0], m, k)
        return torch.matmul(a.t(), G @ c).reshape(g.shape[0], -1)  # (B, d1, d2) -> (B, d)

    def _project(self, grads: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(grads[0].shape[0], self.proj_dim)
        for b, g in enumerate(grads):
            if self.projection == "kronecker" and len(self.shapes[b]) >= 2:
                out += self._kron(b, g)
            else:
                out += self._dense(b, g)
        return out

    def _batch_size(self) -> int:
        return max(1, min(256, self.grad_budget // max(self.num_selected, 1)))

    def _example_seq(self, i: int) -> tuple[list[int], list[int]]:
        ids = self.examples.input_ids(int(i))
        if self.max_len:
            ids = ids[: self.max_len]
        if len(ids) < 2:
            ids = list(ids) + [0] * (2 - len(ids))  # a one-token document has no prediction: its grad is 0
            return ids, [IGNORE, IGNORE]
        return ids, example_labels(ids)

    def query_seq(self, query: Any) -> tuple[list[int], list[int]]:
        """Token ids of ``prompt + " " + target`` and labels on the target tokens only."""
        tok = self.tokenizer
        full = tok.encode(query.text, add_special_tokens=False)
        prompt = tok.encode(query.prompt, add_special_tokens=False)
        start = 0
        while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
            start += 1
        start = max(start, 1)  # the first token has no context: it cannot be a target
        if self.max_len and len(full) > self.max_len:
            cut = len(full) - self.max_len
            full, start = full[cut:], max(1, start - cut)
        if start >= len(full):
            raise UserError(f"query {query.id!r}: its target {query.target!r} adds no token after the prompt")
        return full, example_labels(full, start)

    def _order(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` sorted by length (less padding per batch)."""
        if self._lengths is None:
            from plmkit.attribution.embedding import _lengths

            self._lengths = _lengths(self.examples)
        return ids[np.argsort(self._lengths[ids], kind="stable")]

    def _query_grads(self, queries: Sequence[Any]) -> list[list[torch.Tensor]]:
        """Per checkpoint: per block (Q, n_b) query gradients (or one (Q, d) projected tensor)."""
        seqs = [self.query_seq(q) for q in queries]
        out = []
        bs = self._batch_size()
        for model in self.models:
            fn = self._grad_fn(model)
            parts = [self._batch_grads(fn, seqs[s: s + bs]) for s in range(0, len(seqs), bs)]
            blocks = [torch.cat([p[b] for p in parts]) for b in range(len(self.names))]
            out.append([self._project(blocks)] if self.proj_dim else blocks)
        return out

    # ------------------------------------------------------------------ projected features
    def _ensure_features(self, ids: np.ndarray) -> None:
        n = len(self.examples)
        if self._features is None:
            self._features = [np.zeros((n, self.proj_dim), dtype=np.float32) for _ in self.models]
            self._have = np.zeros(n, dtype=bool)
        todo = np.unique(ids[~self._have[ids]])
        if not len(todo):
            return
        t0 = time.perf_counter()
        todo = self._order(todo)
        bs = self._batch_size()
        for c, model in enumerate(self.models):
            fn = self._grad_fn(model)
            for s in range(0, len(todo), bs):
                chunk = todo[s: s + bs]
                g = self._batch_grads(fn, [self._example_seq(i) for i in chunk])
                self._features[c][chunk] = self._project(g).numpy()
        self._have[todo] = True
        self.example_seconds += time.perf_counter() - t0
        self.examples_done += len(todo)

    def precompute(self) -> None:
        """Projected gradients of every example (projection only)."""
        if self.proj_dim:
            self._ensure_features(np.arange(len(self.examples)))

    # ------------------------------------------------------------------ scores
    def scores(self, query: Any, candidate_ids: Sequence[int] | None = None) -> np.ndarray:
        return self.scores_many([query], candidate_ids)[0]

    def scores_many(self, queries: Sequence[Any], candidate_ids: Sequence[int] | None = None) -> np.ndarray:
        """(Q, N) TracIn scores (or (Q, len(candidate_ids)), in that order)."""
        ids = np.arange(len(self.examples)) if candidate_ids is None else np.asarray(candidate_ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.examples)):
            raise UserError(f"candidate ids must be in 0..{len(self.examples) - 1}")
        qg = self._query_grads(queries)
        out = np.zeros((len(queries), len(ids)), dtype=np.float64)
        if self.proj_dim:
            self._ensure_features(ids)
            for c, lr in enumerate(self.lrs):
                out += lr * (qg[c][0].double().numpy() @ self._features[c][ids].astype(np.float64).T)
            return out.astype(np.float32)
        # exact: stream the (length-sorted) candidates once per checkpoint
        t0 = time.perf_counter()
        pos = np.argsort(self._lengths_of(ids), kind="stable")
        bs = self._batch_size()
        for c, (model, lr) in enumerate(zip(self.models, self.lrs)):
            fn = self._grad_fn(model)
            for s in range(0, len(pos), bs):
                p = pos[s: s + bs]
                g = self._batch_grads(fn, [self._example_seq(i) for i in ids[p]])
                dot = sum((q @ e.T).double() for q, e in zip(qg[c], g))  # (Q, B): float32 GEMMs, float64 sum
                out[:, p] += lr * dot.numpy()
        self.example_seconds += time.perf_counter() - t0
        self.examples_done += len(ids)
        return out.astype(np.float32)

    def _lengths_of(self, ids: np.ndarray) -> np.ndarray:
        if self._lengths is None:
            from plmkit.attribution.embedding import _lengths

            self._lengths = _lengths(self.examples)
        return self._lengths[ids]

    def top_k(self, query: Any, k: int) -> list[tuple[int, float]]:
        return _top_k(self.scores(query), k)
