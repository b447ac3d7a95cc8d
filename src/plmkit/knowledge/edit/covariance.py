"""The uncentred key covariance C = E[k k^T] of one layer's FFN keys over a text corpus (ROME / MEMIT).

Keys are the inputs of ``down`` (``plmkit.knowledge.structure``) at every token of ``samples`` tokens
of the corpus, read in windows of ``seq_len`` tokens (each window starts with the tokenizer's front
special tokens); forwards stop after the layer, so early layers are cheap.

The statistics are cached as safetensors under ``stats_dir`` (by default next to the model: the
``edit-stats/`` folder inside a model directory, ``<file>.edit-stats/`` beside a GGUF file) and
reused. The file name holds the layer, the corpus name, the sample count and a fingerprint of the
model (its layer-``l`` key matrix and embedding table) and of the corpus (path, size, mtime), so a
different model, corpus or count never reuses the wrong statistics.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from plmkit.errors import UserError
from plmkit.knowledge.lama import front_specials
from plmkit.knowledge.structure import ModelStructure, intervene


def default_stats_dir(model_arg: str) -> Path | None:
    p = Path(model_arg)
    if p.is_dir():
        return p / "edit-stats"
    if p.is_file():
        return p.with_name(p.name + ".edit-stats")
    return None


def corpus_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (".txt", ".raw", ".tokens", ""))
        files = [f for f in files if not f.name.startswith((".", "README"))]
    elif p.is_file():
        files = [p]
    else:
        raise UserError(f"--stats-corpus {path}: no such file or directory")
    if not files:
        raise UserError(f"--stats-corpus {path}: no text files in it")
    return files


def _fingerprint(struct: ModelStructure, layer: int, files: list[Path]) -> str:
    h = hashlib.sha1()
    for t in (struct.up(layer).weight, struct.word_embeddings.weight[:4096]):
        h.update(t.detach().float().contiguous().numpy().tobytes())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def token_windows(tok: Any, files: list[Path], samples: int, seq_len: int):
    """Windows of token ids from the corpus until ``samples`` tokens (front specials excluded)."""
    front = front_specials(tok)
    n = 0
    buf: list[int] = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line or line.startswith("="):  # WikiText headings
                    continue
                buf.extend(tok.encode(" " + line, add_special_tokens=False))
                while len(buf) >= seq_len:
                    take = min(seq_len, samples - n)
                    yield front + buf[:take], len(front)
                    buf = buf[seq_len:]
                    n += take
                    if n >= samples:
                        return
    if buf and n < samples:
        yield front + buf[: samples - n], len(front)


@torch.no_grad()
def compute_many(struct: ModelStructure, tok: Any, layers: list[int], files: list[Path], samples: int,
                 seq_len: int = 128, progress: bool = True) -> tuple[dict[int, Tensor], int]:
    """({layer: C = mean of k k^T over the tokens (I, I) float64}, number of tokens), in one pass."""
    import sys

    from tqdm import tqdm

    from plmkit.progress import Heartbeat

    layers = sorted(set(layers))
    acc = {x: torch.zeros(struct.intermediate_size, struct.intermediate_size, dtype=torch.float64) for x in layers}
    count = 0
    got: dict[int, Tensor] = {}

    class Stop(Exception):
        pass

    def grab(i: int, a: Tensor) -> None:
        got[i] = a[0]
        if i == layers[-1]:
            raise Stop

    show_bar = progress and sys.stderr.isatty()
    bar = tqdm(total=samples, desc=f"key covariance layers {layers}", unit="tok", disable=not show_bar,
               mininterval=2.0)
    # outside a terminal: a plain line every PLMKIT_PROGRESS_EVERY seconds instead of the bar
    beat = Heartbeat(f"key covariance layers {layers}", samples, "token", enabled=None if progress else False,
                     bar_shown=show_bar)
    with intervene(struct, "neurons", grab, layers=layers):
        for ids, n_front in token_windows(tok, files, samples, seq_len):
            got.clear()
            x = torch.tensor([ids])
            try:
                struct.model(x, labels_mask=torch.zeros_like(x, dtype=torch.bool))
            except Stop:
                pass
            for layer in layers:
                k = got[layer][n_front:].double()  # (T, I)
                acc[layer] += k.T @ k
            count += len(ids) - n_front
            bar.update(len(ids) - n_front)
            beat.update(count)
    bar.close()
    if count == 0:
        raise UserError("the statistics corpus gave no tokens")
    return {x: a / count for x, a in acc.items()}, count


def compute(struct: ModelStructure, tok: Any, layer: int, files: list[Path], samples: int, seq_len: int = 128,
            progress: bool = True) -> tuple[Tensor, int]:
    """(C = mean of k k^T over the tokens (I, I) float64, number of tokens) for one layer."""
    cs, n = compute_many(struct, tok, [layer], files, samples, seq_len, progress)
    return cs[layer], n


def _path(struct: ModelStructure, layer: int, corpus: str | os.PathLike, files: list[Path], samples: int,
          seq_len: int, stats_dir: str | os.PathLike | None) -> Path | None:
    name = Path(corpus).name or "corpus"
    key = f"L{layer}-{name}-n{samples}-s{seq_len}-{_fingerprint(struct, layer, files)}"
    return Path(stats_dir) / f"{key}.safetensors" if stats_dir is not None else None


def layer_stats_many(struct: ModelStructure, tok: Any, layers: list[int], corpus: str | os.PathLike, samples: int,
                     stats_dir: str | os.PathLike | None, seq_len: int = 128, progress: bool = True,
                     log: Callable[[str], None] = print) -> dict[int, Tensor]:
    """{layer: C} (float64, (I, I)), each from the cache when there; the missing ones computed in one
    pass over the corpus and cached."""
    from safetensors.torch import load_file, save_file

    files = corpus_files(corpus)
    out: dict[int, Tensor] = {}
    paths = {x: _path(struct, x, corpus, files, samples, seq_len, stats_dir) for x in layers}
    for x, path in paths.items():
        if path is not None and path.is_file():
            try:
                out[x] = load_file(str(path))["mom2"].double()
            except Exception:
                log(f"{path}: unreadable statistics cache, recomputing")
    missing = [x for x in layers if x not in out]
    if missing:
        cs, count = compute_many(struct, tok, missing, files, samples, seq_len, progress)
        for x in missing:
            C = cs[x]
            path = paths[x]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                save_file({"mom2": C.float().contiguous()}, str(tmp), metadata={"tokens": str(count), "layer": str(x)})
                os.replace(tmp, path)
            # the cache holds float32: round the same way so a cached run equals the first one
            out[x] = C.float().double()
    return out


def layer_stats(struct: ModelStructure, tok: Any, layer: int, corpus: str | os.PathLike, samples: int,
                stats_dir: str | os.PathLike | None, seq_len: int = 128, progress: bool = True,
                log: Callable[[str], None] = print) -> Tensor:
    """C for ``layer`` (float64, (I, I)), from the cache when there, else computed and cached."""
    return layer_stats_many(struct, tok, [layer], corpus, samples, stats_dir, seq_len, progress, log)[layer]


def solve(C: Tensor | None, k: Tensor) -> Tensor:
    """C^{-1} k (float64); k unchanged when C is None (the C = I variant)."""
    if C is None:
        return k.double()
    return torch.linalg.solve(C.double(), k.double())
