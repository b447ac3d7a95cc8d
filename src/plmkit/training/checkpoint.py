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

import contextlib
import errno
import json
import math
import os
import random
import re
import shutil
import sys
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


def clean_partial(root: str | os.PathLike) -> list[str]:
    """Remove leftovers of interrupted writes in ``root`` (``.step-N.tmp-*``, ``.final.tmp-*`` directories,
    ``.NAME.tmp-PID`` files). A ``.X.tmp-old`` whose ``X`` is missing (a kill between the two renames of
    the fallback swap in :func:`write_atomic_dir`) is the complete previous ``X``: it is renamed back.
    Returns the names removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if not (d.name.startswith(".") and ".tmp-" in d.name):
                continue
            if d.name.endswith(".tmp-old") and d.is_dir():
                target = root / d.name[1:-len(".tmp-old")]
                if not target.exists():
                    os.replace(d, target)
                    continue
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    d.unlink()
            removed.append(d.name)
    return removed


def prune(root: str | os.PathLike, keep_last: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (0 = keep all), never the ``protect``ed steps."""
    if keep_last <= 0:
        return
    steps = checkpoint_steps(root)
    for step, d in steps[:-keep_last]:
        if step not in protect:
            shutil.rmtree(d, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # the filesystem (or kernel) cannot exchange
    raise OSError(err, os.strerror(err), str(b))


def write_atomic_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``final``, replacing it. Disk full -> UserError.

    Replacing never leaves a moment without ``final``: on Linux the two directories are exchanged
    atomically (``renameat2``), then the old one is removed. Elsewhere the old one is renamed to
    ``.NAME.tmp-old`` and the new one into place; a kill between those two renames leaves the complete
    old copy there, and :func:`clean_partial` (run at every start / resume) renames it back.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            if _exchange(tmp, final):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old content
            else:
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


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / inf float replaced by None (strict JSON: no ``NaN`` / ``Infinity`` tokens)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """Strict JSON text of ``obj`` (non-finite floats become null)."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` via a temp file + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class DamagedCheckpoint(UserError):
    """A ``step-N`` checkpoint whose files cannot be read back; ``reason`` says which file and why."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path.name} is damaged ({reason})")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta(meta: Any, expect_step: int | None) -> str | None:
    """What is wrong with a trainer_state.json object (None if nothing)."""
    if not isinstance(meta, dict):
        return "trainer_state.json: expected a JSON object"
    for key in ("step", "world_size", "bad_evals", "bad_steps"):
        if key not in meta:
            return f"trainer_state.json: no {key!r}"
        if not _is_int(meta[key]) or meta[key] < 0:
            return f"trainer_state.json: {key!r} is {meta[key]!r}, expected a non-negative integer"
    if meta["world_size"] < 1:
        return "trainer_state.json: 'world_size' is 0"
    if expect_step is not None and meta["step"] != expect_step:
        return f"trainer_state.json: 'step' is {meta['step']}, but the directory is step-{expect_step}"
    for key, ok in (("best_eval", lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool)),
                    ("best_step", lambda v: v is None or _is_int(v))):
        if key not in meta or not ok(meta[key]):
            return f"trainer_state.json: {key!r} is {meta.get(key, 'missing')!r}"
    cursors = meta.get("cursors")
    if not isinstance(cursors, list) or not all(
            isinstance(c, dict) and all(_is_int(c.get(k)) and c.get(k) >= 0 for k in ("epoch", "pos", "n"))
            for c in cursors):
        return "trainer_state.json: 'cursors' is not a list of {epoch, pos, n} integers"
    rng = meta.get("rng")
    if not isinstance(rng, list) or len(rng) != meta["world_size"] or not all(
            isinstance(r, dict) and isinstance(r.get("python"), list) and len(r["python"]) == 3
            and isinstance(r.get("numpy"), list) and len(r["numpy"]) == 5 for r in rng):
        return "trainer_state.json: 'rng' does not hold one Python and one NumPy RNG state per process"
    if "train_config" in meta and not isinstance(meta["train_config"], dict):
        return "trainer_state.json: 'train_config' is not an object"
    return None


def read_state(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors (``trainer_state.pt``) and metadata (``trainer_state.json``) of a checkpoint, after checking
    them and the header of ``model_state.safetensors``. Anything unreadable -> :class:`DamagedCheckpoint`
    naming the file and the reason. Nothing is unpickled beyond tensors (``weights_only=True``)."""
    ckpt = Path(ckpt)
    m = _STEP_RE.match(ckpt.name)
    try:
        text = (ckpt / "trainer_state.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DamagedCheckpoint(ckpt, "trainer_state.json is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(ckpt, f"trainer_state.json: cannot read it: {e}") from None
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise DamagedCheckpoint(ckpt, f"trainer_state.json: not valid JSON: {e}") from None
    problem = _check_meta(meta, int(m.group(1)) if m else None)
    if problem:
        raise DamagedCheckpoint(ckpt, problem)
    state = ckpt / "trainer_state.pt"
    try:
        with open(state, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DamagedCheckpoint(ckpt, "trainer_state.pt is missing") from None
    except OSError as e:
        raise DamagedCheckpoint(ckpt, f"trainer_state.pt: cannot read it: {e.strerror}") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        what = "a bare pickle" if head[:1] == b"\x80" else "not a torch.save archive"
        raise DamagedCheckpoint(ckpt, f"trainer_state.pt: {what}; refused unread (nothing in it was run)")
    try:
        tensors = torch.load(state, weights_only=True, map_location="cpu")
    except Exception as e:  # UnpicklingError (objects other than tensors), a truncated zip, ...
        if type(e).__name__ == "UnpicklingError" or "weights_only" in str(e):
            why = "holds objects other than tensors; refused unread (torch.load weights_only: nothing in it was run)"
        else:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedCheckpoint(ckpt, f"trainer_state.pt: {why}") from None
    need = ("optimizer", "scheduler", "scaler", "rng_torch", "rng_cuda")
    if not isinstance(tensors, dict) or any(k not in tensors for k in need):
        raise DamagedCheckpoint(ckpt, f"trainer_state.pt: expected the keys {', '.join(need)}")
    weights = ckpt / "model_state.safetensors"
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            f.keys()
    except FileNotFoundError:
        raise DamagedCheckpoint(ckpt, "model_state.safetensors is missing") from None
    except Exception as e:  # SafetensorError: truncated, bad header
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedCheckpoint(ckpt, f"model_state.safetensors: {first}") from None
    return tensors, meta


def resolve_checkpoint(root: str | os.PathLike, which: str) -> Path:
    """``which`` = ``step-N``, ``N`` or a path to a checkpoint directory -> its path (UserError if absent)."""
    root = Path(root)
    text = str(which).strip()
    cands = []
    if text.isdigit():
        cands.append(root / f"step-{int(text)}")
    cands += [root / text, Path(text)]
    for c in cands:
        if c.is_dir() and _STEP_RE.match(c.name):
            return c
    have = ", ".join(d.name for _, d in checkpoint_steps(root)) or "none"
    raise UserError(f"--resume-from {which}: no such checkpoint in {root} (have: {have})")


def resume_point(root: str | os.PathLike, which: str | None = None) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from and its metadata: ``which`` (see :func:`resolve_checkpoint`) or the
    newest one. A damaged one -> one-line UserError naming it, the reason and the newest intact
    checkpoint to pass to ``--resume-from`` (or that none is left). ``(None, None)`` when there is none."""
    root = Path(root)
    if which is not None:
        path = resolve_checkpoint(root, which)
    else:
        path = latest_checkpoint(root)
        if path is None:
            return None, None
    try:
        _, meta = read_state(path)
    except DamagedCheckpoint as e:
        step = int(_STEP_RE.match(path.name).group(1))
        intact = None
        for s, d in reversed(checkpoint_steps(root)):
            if s < step:
                try:
                    read_state(d)
                except DamagedCheckpoint:
                    continue
                intact = d
                break
        fallback = (f"{intact.name} is intact: pass --resume-from {intact.name}" if intact else
                    "no older intact checkpoint is left: start over with --overwrite")
        raise UserError(f"{root / path.name} is damaged ({e.reason}); {fallback}") from None
    return path, meta


def discard_after(root: str | os.PathLike, step: int) -> list[str]:
    """Remove the checkpoints newer than ``step`` (a resume from an older one replays those steps), and
    ``best.json`` when it names one of them. Returns their names."""
    root = Path(root)
    gone = []
    for s, d in checkpoint_steps(root):
        if s > step:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d.name)
    # a step-N directory without trainer_state.json is not listed by checkpoint_steps: remove those too
    if root.is_dir():
        for d in root.iterdir():
            m = _STEP_RE.match(d.name)
            if m and int(m.group(1)) > step and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
    best = root / "best.json"
    if best.is_file():
        try:
            if int(json.loads(best.read_text(encoding="utf-8")).get("step", -1)) > step:
                best.unlink()
        except (ValueError, TypeError, AttributeError, OSError):
            best.unlink(missing_ok=True)
    return sorted(set(gone))
