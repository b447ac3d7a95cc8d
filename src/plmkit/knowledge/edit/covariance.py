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
def compute(struct: ModelStructure, tok: Any, layer: int, files: list[Path], samples: int, seq_len: int = 128,
            progress: bool = True) -> tuple[Tensor, int]:
    """(C = mean of k k^T over the tokens (I, I) float64, number of tokens)."""
    from tqdm import tqdm

    acc = torch.zeros(struct.intermediate_size, struct.intermediate_size, dtype=torch.float64)
    count = 0
    got: list[Tensor] = []

    class Stop(Exception):
        pass

    def grab(i: int, a: Tensor) -> None:
        got.append(a[0])
        raise Stop

    bar = tqdm(total=samples, desc=f"key covariance layer {layer}", unit="tok", disable=not progress,
               mininterval=2.0)
    with intervene(struct, "neurons", grab, layers=[layer]):
        for ids, n_front in token_windows(tok, files, samples, seq_len):
            got.clear()
            x = torch.tensor([ids])
            try:
                struct.model(x, labels_mask=torch.zeros_like(x, dtype=torch.bool))
            except Stop:
                pass
            k = got[0][n_front:].double()  # (T, I)
            acc += k.T @ k
            count += k.shape[0]
            bar.update(k.shape[0])
    bar.close()
    if count == 0:
        raise UserError("the statistics corpus gave no tokens")
    return acc / count, count


def layer_stats(struct: ModelStructure, tok: Any, layer: int, corpus: str | os.PathLike, samples: int,
                stats_dir: str | os.PathLike | None, seq_len: int = 128, progress: bool = True,
                log: Callable[[str], None] = print) -> Tensor:
    """C for ``layer`` (float64, (I, I)), from the cache when there, else computed and cached."""
    from safetensors.torch import load_file, save_file

    files = corpus_files(corpus)
    name = Path(corpus).name or "corpus"
    key = f"L{layer}-{name}-n{samples}-s{seq_len}-{_fingerprint(struct, layer, files)}"
    path = Path(stats_dir) / f"{key}.safetensors" if stats_dir is not None else None
    if path is not None and path.is_file():
        try:
            return load_file(str(path))["mom2"].double()
        except Exception:
            log(f"{path}: unreadable statistics cache, recomputing")
    C, count = compute(struct, tok, layer, files, samples, seq_len, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"mom2": C.float().contiguous()}, str(tmp), metadata={"tokens": str(count), "layer": str(layer)})
        os.replace(tmp, path)
    return C.float().double() if path is not None else C


def solve(C: Tensor | None, k: Tensor) -> Tensor:
    """C^{-1} k (float64); k unchanged when C is None (the C = I variant)."""
    if C is None:
        return k.double()
    return torch.linalg.solve(C.double(), k.double())
