"""plmkit: the pretrained-language-model lifecycle in one PyTorch toolkit.

Public API (kept stable)::

    import plmkit
    model = plmkit.load("bert-base")          # a preset, randomly initialised
    model = plmkit.load("path/to/hf_dir")     # an HF-format directory (or a .gguf file)
    out = model(input_ids, attention_mask=mask)
    model.save_pretrained("dir")              # transformers can load it back
    tok = plmkit.load_tokenizer("path/or/dir")
    tok = plmkit.train_tokenizer(files, kind="wordpiece", vocab_size=8000)

Submodules are imported lazily so that ``import plmkit`` and ``plm --help`` stay fast.

This module is also the composition root. ``plmkit.models`` is the leaf of the package (it imports
only itself and ``plmkit.errors``), yet its models offer ``save_pretrained`` and ``generate`` and
``plmkit.models.load`` reads directories; the implementations live above it (``interop``,
``generation``, ``classic``). The functions below are registered as ``plmkit.models.hooks``; each
imports its package on first call. Python runs this file before any ``plmkit.*`` module, so the
hooks are in place whenever a model exists.

Layers (imports point down only; ``tests/test_architecture.py`` checks it)::

    cli/  pipelines/  tasks/  training/  objectives/  generation/  interop/  classic/
    data/  tokenization/
    models/          leaf: layers, kernels, caches, the model classes, the preset table, hooks
    errors.py
"""

from __future__ import annotations

__version__ = "0.1.0"

from plmkit.errors import UserError  # noqa: F401


def load(name_or_path, **kwargs):
    """Build a preset (random init), or load an HF-format directory or a GGUF file."""
    from plmkit.models import load as _load

    return _load(name_or_path, **kwargs)


# ---------------------------------------------------------------------------- composition
def _save_model(model, out_dir, **kwargs):
    from plmkit.interop import save_pretrained as _save

    return _save(model, out_dir, **kwargs)


def _load_path(path, **overrides):
    from plmkit.interop import load_pretrained

    return load_pretrained(path, **overrides) if overrides else load_pretrained(path)


def _generate(model, input_ids, attention_mask=None, **kwargs):
    from plmkit.generation import generate_any

    return generate_any(model, input_ids, attention_mask=attention_mask, **kwargs)


def _build_recurrent(name, **overrides):
    from plmkit.classic.recurrent import build

    return build(name, **overrides)


def _compose() -> None:
    from plmkit.models.hooks import register_builder, register_hook

    register_hook("save_pretrained", _save_model)
    register_hook("generate", _generate)
    register_hook("load_path", _load_path)
    register_builder("recurrent", _build_recurrent)


_compose()


def save_pretrained(model, out_dir, **kwargs):
    """Write ``model`` as an HF-format directory (config.json + model.safetensors)."""
    return model.save_pretrained(out_dir, **kwargs)


def load_tokenizer(path, **kwargs):
    """Load tokenizer.json, an HF tokenizer directory, a BERT vocab.txt or GPT-2 vocab.json+merges.txt,
    or the tokenizer of a ``.gguf`` file (rebuilt by ``plmkit.interop.gguf``; needs transformers)."""
    from pathlib import Path

    if Path(path).suffix == ".gguf" and Path(path).exists():
        from plmkit.interop.gguf import gguf_tokenizer

        return gguf_tokenizer(path)
    from plmkit.tokenization import load_tokenizer as _load_tokenizer

    return _load_tokenizer(path, **kwargs)


def train_tokenizer(files, kind="wordpiece", vocab_size=8000, **kwargs):
    """Train a WordPiece / byte-level BPE / Unigram / char tokenizer with HF ``tokenizers``."""
    from plmkit.tokenization import train_tokenizer as _train_tokenizer

    return _train_tokenizer(files, kind=kind, vocab_size=vocab_size, **kwargs)
