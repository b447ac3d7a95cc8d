"""Embedding similarity: cosine between mean-pooled hidden states of one layer (Akyürek et al. 2022).

Each example (its stored token ids, no special tokens, truncated to ``max_len``) and each query
(``prompt + " " + target``, tokenized the same way) is run through the model; the hidden states of
``layer`` (0 = the embedding output, L = the last layer; default ``L // 2``, a middle layer) are
averaged over the real tokens. The example vectors are computed once and stored as a float16
``np.memmap`` of shape (N, H) (``path``, written to a temporary name and renamed when complete; a
sidecar ``PATH.json`` records N, H, the layer, the length limit, a checksum of the weights and a
fingerprint of the examples (store checksums or texts), and a finished file is reused by
``EmbeddingIndex.build`` when they all match). Scores are
cosine similarities computed in float32.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from plmkit.attribution.bm25 import top_k as _top_k
from plmkit.errors import UserError


def default_layer(model: Any) -> int:
    return int(model.config.num_layers) // 2


def _lengths(examples: Any) -> np.ndarray:
    if getattr(examples, "store", None) is not None:
        starts = examples.store.document_starts()
        n = np.diff(starts)
    else:
        n = np.array([len(examples.input_ids(i)) for i in range(len(examples))], dtype=np.int64)
    if examples.max_len:
        n = np.minimum(n, examples.max_len)
    return n


def _max_positions(model: Any) -> int | None:
    cfg = model.config
    if getattr(cfg, "position", None) in ("learned", "sinusoidal"):
        return int(cfg.max_position_embeddings) - int(getattr(cfg, "position_offset", 0) or 0)
    return None


@torch.no_grad()
def mean_pooled(model: Any, seqs: list[list[int]], layer: int) -> torch.Tensor:
    """(B, H) float32: the mean over real tokens of layer ``layer``'s hidden states of each sequence."""
    pad = 0
    T = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    h = _stop_early(model, layer, ids, mask)
    if h is None:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                    labels_mask=torch.zeros_like(mask))
        h = out.hidden_states[layer]
    h = h.float()  # (B, T, H)
    m = mask.unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class _Stop(Exception):
    pass


def _stop_early(model: Any, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Hidden states after ``layer`` blocks without running the blocks above it (a forward hook on block
    ``layer - 1`` takes its output and stops the pass), or None where that does not apply: the last
    layer (its entry is the final-normed output), the embedding output, shared (ALBERT) layers, or a
    model without a ``layers`` list."""
    layers = getattr(model, "layers", None)
    cfg = model.config
    if (not isinstance(layers, torch.nn.ModuleList) or getattr(cfg, "share_layers", False)
            or not 0 < layer < int(cfg.num_layers) or len(layers) != int(cfg.num_layers)):
        return None
    got: list[torch.Tensor] = []

    def hook(module, args, output):
        got.append(output)
        raise _Stop

    handle = layers[layer - 1].register_forward_hook(hook)
    try:
        model(input_ids=ids, attention_mask=mask, labels_mask=torch.zeros_like(mask))
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0] if got and isinstance(got[0], torch.Tensor) else None


class EmbeddingIndex:
    """Mean-pooled layer embeddings of every example (an (N, H) float16 memmap) and cosine scoring."""

    def __init__(self, model: Any, tokenizer: Any, vectors: np.ndarray, layer: int, max_len: int | None,
                 build_seconds: float = 0.0):
        self.model, self.tokenizer = model, tokenizer
        self.vectors = vectors
        self.layer = layer
        self.max_len = max_len
        self.build_seconds = build_seconds
        self._norms = np.linalg.norm(np.asarray(vectors, dtype=np.float32), axis=1)
        self.query_seconds = 0.0
        self.num_queries = 0

    @classmethod
    def build(cls, model: Any, tokenizer: Any, examples: Any, layer: int | None = None,
              path: str | os.PathLike | None = None, batch_tokens: int = 8192,
              progress: Any = None) -> "EmbeddingIndex":
        """Embed every example (reusing a finished ``path`` made with the same model, layer and size).

        Args:
            layer: hidden-state index (0 = embeddings .. num_layers); None = ``num_layers // 2``.
            path: the float16 memmap file (None: a temporary file).
            batch_tokens: padded tokens per forward batch (examples are batched by length).
        """
        L = int(model.config.num_layers)
        layer = default_layer(model) if layer is None else int(layer)
        if not 0 <= layer <= L:
            raise UserError(f"--layer {layer}: the model has hidden states 0..{L} (0 = embeddings)")
        model.eval()
        n, H = len(examples), int(model.config.hidden_size)
        limit = _max_positions(model)
        max_len = min(x for x in (examples.max_len, limit) if x) if (examples.max_len or limit) else None
        if path is None:
            fd, path = tempfile.mkstemp(suffix=".f16")
            os.close(fd)
        path = Path(path)
        meta_path = Path(f"{path}.json")
        meta = {"num_examples": n, "hidden_size": H, "layer": layer, "max_len": max_len,
                "model": getattr(model, "name_or_path", None) or type(model).__name__,
                "params_checksum": _checksum(model), "examples": _examples_fingerprint(examples)}
        if path.is_file() and meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            if old.get("done") and all(old.get(k) == v for k, v in meta.items()):
                vec = np.memmap(path, dtype=np.float16, mode="r", shape=(n, H))
                return cls(model, tokenizer, vec, layer, max_len, float(old.get("seconds", 0.0)))
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # renamed into place when complete
        vec = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(n, H))
        try:
            lengths = _lengths(examples)
            if max_len:
                lengths = np.minimum(lengths, max_len)
            order = np.argsort(lengths, kind="stable")
            i = 0
            while i < n:
                j = i + 1
                while j < n and (j - i + 1) * max(1, int(lengths[order[j]])) <= batch_tokens:
                    j += 1
                idx = order[i:j]
                seqs = [examples.input_ids(int(k))[:max_len] if max_len else examples.input_ids(int(k)) for k in idx]
                seqs = [s if s else [0] for s in seqs]
                vec[idx] = mean_pooled(model, seqs, layer).numpy().astype(np.float16)
                if progress is not None:
                    progress(j - i)
                i = j
            vec.flush()
            del vec
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)  # readers of an older file keep their copy (a new inode)
        seconds = time.perf_counter() - t0
        meta_path.write_text(json.dumps({**meta, "done": True, "seconds": round(seconds, 3)}), encoding="utf-8")
        vec = np.memmap(path, dtype=np.float16, mode="r", shape=(n, H))
        return cls(model, tokenizer, vec, layer, max_len, seconds)

    def __len__(self) -> int:
        return len(self.vectors)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(Q, H) float32 mean-pooled vectors of query texts (tokenized without special tokens)."""
        seqs = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        seqs = [(s[-self.max_len:] if self.max_len else s) or [0] for s in seqs]
        return mean_pooled(self.model, seqs, self.layer).numpy()

    def scores(self, query: Any, candidate_ids: Sequence[int] | None = None) -> np.ndarray:
        """Cosine similarity of every example (or of ``candidate_ids``, in that order) to the query."""
        return self.scores_many([query], candidate_ids)[0]

    def scores_many(self, queries: Sequence[Any], candidate_ids: Sequence[int] | None = None) -> np.ndarray:
        """(Q, N) (or (Q, len(candidate_ids))) cosine similarities."""
        t0 = time.perf_counter()
        q = self.embed([x if isinstance(x, str) else x.text for x in queries])  # (Q, H)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        if candidate_ids is None:
            out = np.empty((len(q), len(self.vectors)), dtype=np.float32)
            for s in range(0, len(self.vectors), 65536):
                block = np.asarray(self.vectors[s: s + 65536], dtype=np.float32)
                out[:, s: s + 65536] = (q @ block.T) / np.maximum(self._norms[s: s + 65536], 1e-12)
        else:
            c = np.asarray(candidate_ids, dtype=np.int64)
            block = np.asarray(self.vectors[c], dtype=np.float32)
            out = (q @ block.T) / np.maximum(self._norms[c], 1e-12)
        self.query_seconds += time.perf_counter() - t0
        self.num_queries += len(q)
        return out.astype(np.float32)

    def top_k(self, query: Any, k: int) -> list[tuple[int, float]]:
        return _top_k(self.scores(query), k)


def _checksum(model: Any) -> list[float]:
    """A cheap fingerprint of all the weights (count, sum, sum of squares), to refuse a stale memmap."""
    with torch.no_grad():
        n, total, sq = 0, 0.0, 0.0
        for p in model.parameters():
            x = p.detach().double()
            n, total, sq = n + x.numel(), total + float(x.sum()), sq + float((x * x).sum())
    return [n, round(total, 6), round(sq, 6)]


def _examples_fingerprint(examples: Any) -> str:
    """sha256 of what the examples are: the token store's shard checksums, or all the texts."""
    import hashlib

    h = hashlib.sha256()
    store = getattr(examples, "store", None)
    if store is not None:
        h.update(json.dumps([sh.get("sha256") for sh in store.manifest["shards"]], sort_keys=True).encode())
    else:
        for t in examples.texts():
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()
