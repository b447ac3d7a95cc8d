"""Atomic, self-contained training checkpoints and RNG state capture.

A checkpoint is a directory ``checkpoints/step-N/`` holding

- the model in HF format (``model.save_pretrained``: config.json + model.safetensors) and the tokenizer
  (``tok.save``), so that ``plm generate`` / ``fill-mask`` / ``finetune`` can load it directly;
- ``model_state.safetensors``: the module's own state dict (objective heads included) for exact resume;
- ``trainer_state.pt``: optimizer, scheduler and grad-scaler states and torch/CUDA RNG states of every rank
  (tensors only; loaded with ``torch.load(weights_only=True)``);
- ``trainer_state.json``: step, data position, Python and NumPy RNG states of every rank, best metric, ...

It is written to ``checkpoints/.step-N.tmp-XXXX/`` and renamed into place, so a crash (or a full disk)
while writing leaves the previous checkpoints untouched; a directory named ``step-N`` is always complete.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from plmkit.errors import UserError

_STEP_RE = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """This process's RNG states: Python, NumPy (JSON-able) and torch CPU/CUDA (tensors)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_steps(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete ``step-N`` checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP_RE.match(d.name)
        if m and d.is_dir() and (d / "trainer_state.json").is_file():
            out.append((int(m.group(1)), d))
    return sorted(out)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root`` (``RUN/checkpoints``), or None."""
    steps = checkpoint_steps(root)
    return steps[-1][1] if steps else None


def clean_partial(root: str | os.PathLike) -> None:
    """Remove leftovers of interrupted writes (``.step-N.tmp-*``, ``.final.tmp-*``)."""
    root = Path(root)
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".") and ".tmp-" in d.name:
                shutil.rmtree(d, ignore_errors=True)


def prune(root: str | os.PathLike, keep_last: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (0 = keep all), never the ``protect``ed steps."""
    if keep_last <= 0:
        return
    steps = checkpoint_steps(root)
    for step, d in steps[:-keep_last]:
        if step not in protect:
            shutil.rmtree(d, ignore_errors=True)


def write_atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``final`` (replacing it). Disk full -> UserError."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.tmp-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            prev = latest_checkpoint(final.parent)
            kept = f"; the previous checkpoint {prev} is intact" if prev else ""
            raise UserError(f"disk full while writing {final} ({e.strerror}){kept}") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_model_files(model: torch.nn.Module, out: Path, tokenizer=None, state_dict: dict | None = None) -> None:
    """HF-format model (``save_pretrained`` when the model has it) + tokenizer into ``out``."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(out)
    else:
        from safetensors.torch import save_model

        save_model(model, str(out / "model.safetensors"))
    if tokenizer is not None and hasattr(tokenizer, "save"):
        tokenizer.save(out)


def save_native_weights(model: torch.nn.Module, path: Path) -> None:
    """The module's own state dict (shared tensors handled) as safetensors."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_native_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match the model (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}); was the run's model or objective changed?")


def write_state(out: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    torch.save(tensors, out / "trainer_state.pt")
    # trainer_state.json last: its presence marks the directory complete (also checked after rename).
    with open(out / "trainer_state.json", "w", encoding="utf-8") as f:
        json.dump(meta, f)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temp file + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ckpt = Path(ckpt)
    try:
        meta = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        tensors = torch.load(ckpt / "trainer_state.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{ckpt}: cannot read the trainer state ({e})") from None
    return tensors, meta
