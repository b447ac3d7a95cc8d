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
"""

from __future__ import annotations

__version__ = "0.1.0"

from plmkit.errors import UserError  # noqa: F401


def load(name_or_path, **kwargs):
    """Build a preset (random init), or load an HF-format directory or a GGUF file."""
    from plmkit.models import load as _load

    return _load(name_or_path, **kwargs)


def save_pretrained(model, out_dir, **kwargs):
    """Write ``model`` as an HF-format directory (config.json + model.safetensors)."""
    return model.save_pretrained(out_dir, **kwargs)


def load_tokenizer(path, **kwargs):
    """Load tokenizer.json, an HF tokenizer directory, a BERT vocab.txt or GPT-2 vocab.json+merges.txt."""
    from plmkit.tokenization import load_tokenizer as _load_tokenizer

    return _load_tokenizer(path, **kwargs)


def train_tokenizer(files, kind="wordpiece", vocab_size=8000, **kwargs):
    """Train a WordPiece / byte-level BPE / Unigram / char tokenizer with HF ``tokenizers``."""
    from plmkit.tokenization import train_tokenizer as _train_tokenizer

    return _train_tokenizer(files, kind=kind, vocab_size=vocab_size, **kwargs)
