"""Reading and writing the files of an HF-format model directory.

Reads ``config.json`` and the weights in any of HF's layouts: ``model.safetensors``, sharded
``model.safetensors.index.json``, ``pytorch_model.bin`` and its sharded index. ``.bin`` files are
opened with ``torch.load(weights_only=True)`` only, so a checkpoint that needs arbitrary unpickling
is refused with one line instead of executing code. Writes are atomic per file (temp file in the same
directory, then ``os.replace``); whole directories (``plm convert``) are built as ``DIR.tmp-XXXX``
and renamed.

References: transformers ``modeling_utils`` (file names, shard index format); safetensors docs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from plmkit.errors import UserError

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "chat_template.jinja", "chat_template.json",
)


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes a ``UserError`` naming file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_hf_config(model_dir: Path) -> dict:
    """``config.json`` of an HF-format directory as a dict (must name a ``model_type``)."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{model_dir}: no config.json (expected an HF-format model directory)")
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object")
    return cfg


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path}: refused: the pickle needs more than tensors to load (weights_only=True failed: {first}); "
            "convert it to safetensors with a trusted tool first"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path}: expected a dict of tensors (a state dict)")
    return sd


def _shards(index_path: Path) -> list[Path]:
    index = read_json(index_path)
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise UserError(f"{index_path}: expected a 'weight_map' object of tensor name -> shard file")
    files = sorted(set(wm.values()))
    for f in files:
        if not (index_path.parent / f).is_file():
            raise UserError(f"{index_path}: shard {f!r} is missing")
    return [index_path.parent / f for f in files]


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files HF would load from ``model_dir`` (safetensors preferred)."""
    if (model_dir / SAFE_WEIGHTS).is_file():
        return [model_dir / SAFE_WEIGHTS]
    if (model_dir / SAFE_INDEX).is_file():
        return _shards(model_dir / SAFE_INDEX)
    if (model_dir / BIN_WEIGHTS).is_file():
        return [model_dir / BIN_WEIGHTS]
    if (model_dir / BIN_INDEX).is_file():
        return _shards(model_dir / BIN_INDEX)
    raise UserError(
        f"{model_dir}: no weights found (expected {SAFE_WEIGHTS}, {SAFE_INDEX}, {BIN_WEIGHTS} or {BIN_INDEX})"
    )


def read_hf_weights(model_dir: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of an HF-format directory, and a short name of where they came from."""
    files = weight_files(model_dir)
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        part = _load_safetensors(f) if f.suffix == ".safetensors" else _load_bin(f)
        sd.update(part)
    where = str(files[0]) if len(files) == 1 else f"{model_dir}/{files[0].name}.."
    return sd, where


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def hf_model_dir(path: str | os.PathLike) -> Path:
    """``path`` as an HF-format model directory, or a one-line UserError."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{path}: not a directory (expected an HF-format model directory)")
    return p


def copy_weights(model: Any, params: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], dtype: Any) -> Any:
    """Cast ``model`` to ``dtype`` (float32 unless a torch dtype is given), copy the converted checkpoint
    ``sd`` into its ``params`` (name -> parameter), and return it in eval mode."""
    target = dtype if isinstance(dtype, torch.dtype) else torch.float32
    model.to(target)
    with torch.no_grad():
        for k, v in sd.items():
            params[k].copy_(v.to(target))
    return model.eval()


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write a file atomically: ``write(tmp_path)`` then ``os.replace(tmp, path)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n",
                                                    encoding="utf-8"))


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    # transformers refuses safetensors files without {"format": "pt"} metadata
    atomic_write_bytes(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))


def remove_stale_weights(model_dir: Path, keep: Iterable[str] = (SAFE_WEIGHTS,)) -> list[str]:
    """Delete other weight files of an earlier save (HF would otherwise read the wrong ones)."""
    removed = []
    keep = set(keep)
    for p in model_dir.iterdir() if model_dir.is_dir() else ():
        name = p.name
        stale = name in (SAFE_INDEX, BIN_WEIGHTS, BIN_INDEX) or (
            name.startswith(("model-", "pytorch_model-")) and "-of-" in name
            and name.endswith((".safetensors", ".bin")))
        if stale and name not in keep and p.is_file():
            p.unlink()
            removed.append(name)
    return removed


def copy_tokenizer_files(src_dir: Path, out_dir: Path) -> list[str]:
    """Copy the tokenizer files HF knows from ``src_dir`` to ``out_dir``; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, out_dir / name)
            copied.append(name)
    return copied


def prepare_output_dir(out_dir: Path, overwrite: bool) -> Path:
    """Check ``out_dir`` for ``plm convert`` and return a fresh sibling temp dir to build into.

    A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir}: directory is not empty (pass --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))


def commit_output_dir(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished temp dir into place, replacing ``out_dir`` (old contents go last)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=out_dir.name + ".old-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
