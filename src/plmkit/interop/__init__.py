"""Hugging Face and GGUF checkpoints in and out of plmkit's ``Transformer``.

    model = load_pretrained("path/to/hf_dir")      # config.json + model.safetensors / pytorch_model.bin
    model = load_pretrained("smollm2.Q4_1.gguf")    # llama GGUF, de-quantized to float32
    save_pretrained(model, "out_dir")               # config.json + model.safetensors (+ generation_config.json)
    convert("x.gguf", "out_dir")                    # ``plm convert``: HF-format dir, with the tokenizer

Supported ``model_type``: bert, roberta, albert, electra (generator and discriminator), openai-gpt,
gpt2, llama (this file and ``hf.py``); t5, bart, switch_transformers, deberta, deberta-v2 and xlnet
are dispatched through ``LOADERS`` to ``seq2seq.py``, ``deberta.py`` and ``xlnet.py``; plmkit's own
format (``native.py``: MASS, GLM, MoE, the classical LMs) likewise. ``FORMATS`` maps every model
class to its (save, load) pair; ``model.save_pretrained`` reaches ``save_pretrained`` here through
the hook that ``plmkit/__init__.py`` registers (``plmkit.models.hooks``). Heads found in a checkpoint (MLM, LM, pooler, NSP, SOP, ELECTRA discriminator) are
loaded; heads the checkpoint's ``architectures`` promises but lacks, or that ``**overrides`` ask for
(``head="mlm"``), keep their random initialisation and are named in one warning line. Missing or
mis-shaped backbone tensors raise ``UserError`` naming the key and the shapes.

Name maps live in ``plmkit.interop.hf``; GGUF reading in ``plmkit.interop.gguf``; file handling in
``plmkit.interop.files``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from plmkit.errors import UserError, suggest
import plmkit.interop.deberta as _deberta
import plmkit.interop.files as _files
import plmkit.interop.hf as _hf
import plmkit.interop.native as _native
import plmkit.interop.seq2seq as _seq2seq
import plmkit.interop.xlnet as _xlnet

__all__ = ["load_pretrained", "save_pretrained", "save_hf", "from_hf", "convert", "hf_config_of", "FORMATS",
           "LOADERS"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _resolve_dtype(dtype: Any, sd: dict[str, torch.Tensor]) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        for t in sd.values():
            if t.is_floating_point():
                return t.dtype
        return torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: expected auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _valid_token_ids(fields: dict, where: str) -> None:
    """Drop special-token ids that do not fit the vocabulary (HF only warns about them)."""
    dropped = []
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "mask_token_id"):
        v = fields.get(name)
        if v is not None and not (isinstance(v, int) and 0 <= v < fields["vocab_size"]):
            dropped.append(f"{name}={v}")
            fields[name] = None
    if dropped:
        warnings.warn(f"{where}: ignoring {', '.join(dropped)} (outside vocab_size={fields['vocab_size']})",
                      stacklevel=3)


def from_hf(
    hf_config: dict,
    hf_state_dict: dict[str, torch.Tensor],
    where: str = "checkpoint",
    dtype: Any = None,
    **overrides: Any,
):
    """Build a plmkit ``Transformer`` from an HF config dict and HF-named tensors.

    Args:
        hf_config: the ``config.json`` contents (``model_type`` picks the family).
        hf_state_dict: tensors under HF names (head-model or base-model naming). They are adopted
            by the model, not copied, where no transform or dtype change applies.
        where: file name for messages.
        dtype: None (float32), "auto" (the checkpoint's dtype), or a torch dtype / name.
        **overrides: ``ModelConfig`` fields to change (e.g. ``head="mlm"`` to add a head the
            checkpoint lacks; it stays randomly initialised and is reported).
    Returns:
        The model in eval mode.
    """
    from plmkit.models import ModelConfig, from_config
    from plmkit.models.heads import DiscriminatorHead, SentencePairHead

    spec = _hf.family_spec(hf_config.get("model_type"), where=where)
    present = _hf.rule_parts(spec, set(hf_state_dict))
    archs = hf_config.get("architectures") or []
    promised = spec.architectures.get(archs[0], frozenset()) if archs else frozenset()
    parts = frozenset(present | promised)
    if spec.model_type == "electra" and "mlm" in parts and "rtd" in parts and "rtd" not in present:
        parts = parts - {"rtd"}  # a generator checkpoint mislabelled as ElectraForPreTraining
    fields = spec.config_from_hf(hf_config, parts)
    if hf_config.get("mask_token_id") is not None:
        fields["mask_token_id"] = hf_config["mask_token_id"]
    fields["initializer_range"] = hf_config.get("initializer_range", 0.02)
    if spec.model_type == "albert" and fields["embedding_size"] == fields["hidden_size"]:
        # HF ALBERT always has embedding_hidden_mapping_in; plmkit's Embeddings only project when E != H
        raise UserError(f"{where}: ALBERT with embedding_size == hidden_size is not supported")
    if spec.model_type in ("roberta", "electra") and fields["activation"] != "gelu" and "mlm" in parts:
        raise UserError(f"{where}: {spec.model_type} MLM head with hidden_act={fields['activation']!r} is not "
                        "supported (HF's head always uses gelu)")
    _valid_token_ids(fields, where)
    config = ModelConfig.from_dict(fields, source=where)
    if overrides:
        config = config.replace(**overrides)
        wanted = {config.head} - {None} | ({"pooler"} if config.pooler else set())
        parts = frozenset((parts - {"mlm", "lm", "pooler"}) | wanted)

    model = from_config(config)
    for name in ("nsp", "sop"):
        if name in parts:
            model.add_head(name, SentencePairHead(config.hidden_size, 2))
    if "rtd" in parts:
        model.add_head("rtd", DiscriminatorHead(config))

    params = dict(model.named_parameters())  # shared (tied) parameters appear once
    tied = {k for k, _ in model.named_parameters(remove_duplicate=False)} - set(params)
    shapes = {k: tuple(p.shape) for k, p in params.items()}
    sd, report = _hf.from_hf_state_dict(spec, hf_state_dict, shapes, config, where, tied=tied)
    target = _resolve_dtype(dtype, hf_state_dict)
    model.to(target)
    # assign=True adopts the checkpoint tensors instead of copying them into the random ones: one
    # copy of the weights in memory, not two (then re-tie, since assigning replaced the Parameter)
    sd = {k: v.to(target).contiguous() if v.is_floating_point() else v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    model.tie_weights()
    assert not unexpected, unexpected
    not_covered = sorted(set(params) - set(sd) - set(report.random_keys))
    random_keys = sorted(set(report.random_keys) | set(not_covered))
    if random_keys:
        what = sorted(report.random_parts) or ["-"]
        warnings.warn(
            f"{where}: no weights for {', '.join(what)} ({len(random_keys)} tensors: "
            f"{', '.join(random_keys[:6])}{', ...' if len(random_keys) > 6 else ''}); "
            "they keep their random initialisation", stacklevel=2)
    if report.unused_hf_keys:
        keys = report.unused_hf_keys
        warnings.warn(f"{where}: {len(keys)} tensors not used: {', '.join(keys[:6])}"
                      f"{', ...' if len(keys) > 6 else ''}", stacklevel=2)
    model.eval()
    return model


def load_pretrained(path: str | Path, dtype: Any = None, **overrides: Any):
    """Load an HF-format directory or a llama ``.gguf`` file into a plmkit ``Transformer``.

    Args:
        path: directory with ``config.json`` + weights, or a ``.gguf`` file.
        dtype: None (float32), "auto" (as stored), or a dtype name / ``torch.dtype``.
        **overrides: ``ModelConfig`` fields to change (see ``from_hf``).
    """
    p = Path(path)
    if p.suffix.lower() == ".gguf":
        from plmkit.interop.gguf import read_gguf

        hf_cfg, sd = read_gguf(p)
        return from_hf(hf_cfg, sd, where=str(p), dtype=dtype, **overrides)
    if p.is_file() and p.name == "config.json":
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{path}: not a directory or .gguf file (expected an HF-format model directory)")
    if _native.is_recurrent_dir(p):  # a classical LM (plmkit_family in config.json)
        return _native.load_recurrent(p, **overrides)
    hf_cfg = _files.read_hf_config(p)
    model_type = hf_cfg.get("model_type")
    loader = LOADERS.get(model_type)
    if loader is not None:  # families with their own model class and name map
        return loader(p, dtype=dtype, **overrides)
    known = list(_hf.FAMILIES) + list(LOADERS)
    if model_type not in _hf.FAMILIES:  # fail before reading weights
        raise UserError(f"{p / 'config.json'}: unknown model_type {model_type!r}{suggest(str(model_type), known)}; "
                        f"supported: {', '.join(known)}")
    sd, where = _files.read_hf_weights(p)
    return from_hf(hf_cfg, sd, where=where, dtype=dtype, **overrides)


def _model_parts(model) -> tuple[frozenset[str], list[str]]:
    cfg = model.config
    parts = set()
    if cfg.head is not None:
        parts.add(cfg.head)
    if cfg.pooler:
        parts.add("pooler")
    other = []
    for name in getattr(model, "heads", {}):
        (parts.add(name) if name in ("nsp", "sop", "rtd") else other.append(name))
    return frozenset(parts), other


def hf_config_of(model) -> tuple[dict, str, frozenset[str]]:
    """The HF ``config.json`` dict of a plmkit model, its architecture name and the parts it holds."""
    cfg = model.config
    model_type = _hf.MODEL_TYPE_OF_FAMILY.get(cfg.family)
    if model_type is None:
        raise UserError(f"save_pretrained: family {cfg.family!r} has no Hugging Face equivalent in plmkit "
                        f"(supported: {', '.join(_hf.MODEL_TYPE_OF_FAMILY)})")
    spec = _hf.FAMILIES[model_type]
    parts, _ = _model_parts(model)
    arch, _ = _hf.pick_architecture(spec, parts)
    hf_cfg = spec.config_to_hf(cfg, parts)
    hf_cfg["architectures"] = [arch]
    hf_cfg["initializer_range"] = cfg.initializer_range
    if cfg.mask_token_id is not None:
        hf_cfg["mask_token_id"] = cfg.mask_token_id
    return hf_cfg, arch, parts


def save_hf(model, out_dir: str | Path, dtype: Any = None) -> Path:
    """Write a ``Transformer`` as an HF-format directory that ``transformers.AutoModel*`` loads back.

    Writes ``config.json`` + ``model.safetensors`` (+ ``generation_config.json`` for causal LMs),
    each atomically; other files in ``out_dir`` (a tokenizer) are kept, stale weight files of an
    earlier save are removed. Heads with no HF counterpart (task heads) are not written and are
    named in a warning.

    Args:
        dtype: None keeps the model's dtype; otherwise a dtype name / ``torch.dtype``.
    Returns:
        ``out_dir`` as a Path.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    cfg = model.config
    hf_cfg, arch, parts = hf_config_of(model)
    spec = _hf.FAMILIES[hf_cfg["model_type"]]
    _, have = _hf.pick_architecture(spec, parts)
    base_arch = next(iter(spec.architectures))
    params = dict(model.named_parameters())  # tied duplicates appear once (HF re-ties them)
    sd = {k: v.detach() for k, v in params.items()}
    target = _resolve_dtype(dtype, sd) if dtype is not None else None
    if target is not None:
        sd = {k: (v.to(target) if v.is_floating_point() else v) for k, v in sd.items()}
    hf_sd, leftover = _hf.to_hf_state_dict(spec, sd, cfg, prefixed=arch != base_arch)
    if leftover:
        warnings.warn(f"save_pretrained: {len(leftover)} tensors have no Hugging Face name and are not written: "
                      f"{', '.join(leftover[:6])}{', ...' if len(leftover) > 6 else ''}", stacklevel=2)
    if parts - have:
        warnings.warn(f"save_pretrained: {arch} has no {', '.join(sorted(parts - have))}; those tensors are "
                      "written but transformers' class will not use them", stacklevel=2)
    if have - parts:
        warnings.warn(f"save_pretrained: the model has no {', '.join(sorted(have - parts))} head; transformers' "
                      f"{arch} will initialise it randomly", stacklevel=2)
    any_t = next(iter(hf_sd.values()))
    hf_cfg["torch_dtype"] = str(any_t.dtype).replace("torch.", "")
    out.mkdir(parents=True, exist_ok=True)
    _files.write_safetensors(out / _files.SAFE_WEIGHTS, {k: v.contiguous() for k, v in hf_sd.items()})
    _files.remove_stale_weights(out)
    _files.write_json(out / "config.json", hf_cfg)
    if spec.generation_config:
        gen = {k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               if getattr(cfg, k) is not None}
        _files.write_json(out / "generation_config.json", gen)
    return out


def _save_seq2seq(model, out_dir: str | Path, **kwargs: Any) -> Path:
    """T5 / BART / Switch in HF format; families without an HF class (MASS) and configs HF cannot
    express (Switch with a capacity factor) in plmkit's own format, which ``load_pretrained`` reads back."""
    if model.config.family not in _seq2seq.MODEL_TYPE_OF:
        return _native.save_native(model, out_dir)
    try:
        _seq2seq.config_to_hf(model.config)
    except UserError as e:  # e.g. Switch with a capacity factor instead of a fixed capacity
        warnings.warn(f"{e}; writing plmkit's own format instead", stacklevel=3)
        return _native.save_native(model, out_dir)
    return _seq2seq.save_pretrained(model, out_dir, **kwargs)


def _save_native(model, out_dir: str | Path, **_: Any) -> Path:
    return _native.save_native(model, out_dir)


def _save_transformer(model, out_dir: str | Path, **kwargs: Any) -> Path:
    """HF format, unless the config picks a plmkit-only attention (``extra.attention``, e.g. the
    Star-Transformer's "star"), which HF's class would silently load as full attention: plmkit's own
    format then, without the objective heads (``load_native`` reads the backbone + output head back)."""
    if model.config.extra.get("attention", "self") == "self":
        return save_hf(model, out_dir, **kwargs)
    heads = model.heads
    if len(heads):
        warnings.warn(f"save_pretrained: objective heads {sorted(heads)} are not written (plmkit format of a "
                      f"{model.config.extra['attention']!r}-attention Transformer)", stacklevel=3)
    model.heads = torch.nn.ModuleDict()
    try:
        return _native.save_native(model, out_dir)
    finally:
        model.heads = heads


def _save_recurrent(model, out_dir: str | Path, **_: Any) -> Path:
    return _native.save_recurrent(model, out_dir)


FORMATS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    # model class -> (save(model, out_dir, **kw), load(dir, dtype=None, **overrides))
    "Transformer": (_save_transformer, load_pretrained),  # bert, ..., llama, unilm (HF); star attention (native)
    "EncoderDecoder": (_save_seq2seq, load_pretrained),  # t5, bart, switch (HF); mass (native)
    "DeBERTa": (_deberta.save_pretrained, _deberta.load_deberta),
    "XLNet": (_xlnet.save_pretrained, _xlnet.load_xlnet),
    "GLM": (_save_native, _native.load_native),  # no HF class
    "MoETransformer": (_save_native, _native.load_native),  # HF has no decoder-/encoder-only Switch
    "Canine": (_save_native, _native.load_native),  # plmkit's CANINE (hash embeddings differ from HF's)
    "FFNNLM": (_save_recurrent, _native.load_recurrent),
    "RNNLM": (_save_recurrent, _native.load_recurrent),
    "ELMo": (_save_recurrent, _native.load_recurrent),
    "CoVe": (_save_recurrent, _native.load_recurrent),
}
"""How each model class is written and read. ``save_pretrained`` looks the model's class up (its
own, then its bases), ``load_pretrained`` reads ``config.json`` and picks the loader from ``LOADERS``."""

LOADERS: dict[str, Callable[..., Any]] = {
    **{t: _seq2seq.load_seq2seq for t in _seq2seq.MODEL_TYPES},  # t5, bart, switch_transformers
    **{t: _deberta.load_deberta for t in _deberta.MODEL_TYPES},  # deberta, deberta-v2
    **{t: _xlnet.load_xlnet for t in _xlnet.MODEL_TYPES},  # xlnet
    **{t: _native.load_native for t in _native.MODEL_TYPES},  # plmkit's own format (MASS, GLM, ...)
}
"""``config.json`` ``model_type`` -> loader, for the types outside ``hf.FAMILIES`` (those go through
``from_hf``). Classical LMs are recognised by ``"plmkit_family"`` instead (``native.is_recurrent_dir``)."""


def save_pretrained(model, out_dir: str | Path, **kwargs: Any) -> Path:
    """Write ``model`` in the format ``FORMATS`` gives its class (HF format where transformers has
    the family, plmkit's own otherwise). ``kwargs`` (e.g. ``dtype``) go to the HF writers."""
    for cls in type(model).__mro__:
        entry = FORMATS.get(cls.__name__)
        if entry is not None:
            return entry[0](model, out_dir, **kwargs)
    raise UserError(f"save_pretrained: no format for model class {type(model).__name__} "
                    f"(known: {', '.join(FORMATS)})")


def convert(src: str | Path, out_dir: str | Path, overwrite: bool = False, dtype: Any = "auto",
            tokenizer: bool = True) -> dict:
    """``plm convert``: a GGUF file or HF-format directory -> an HF-format safetensors directory.

    The model goes through plmkit (``load_pretrained`` then ``save_pretrained``), so the output is
    exactly what plmkit would save. With ``tokenizer``: an HF source's tokenizer files are copied;
    for GGUF, transformers rebuilds the tokenizer from the file's metadata (skipped with a warning if
    transformers is not installed).

    Returns:
        A summary dict: ``out_dir``, ``model_type``, ``architecture``, ``num_parameters``, ``dtype``,
        ``tokenizer_files``.
    """
    src_p, out_p = Path(src), Path(out_dir)
    if not src_p.exists():
        raise UserError(f"{src}: no such file or directory")
    if src_p.resolve() == out_p.resolve():
        raise UserError(f"{out_dir}: output directory is the source")
    tmp = _files.prepare_output_dir(out_p, overwrite)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # "auto" keeps the stored dtype (GGUF tensors are de-quantized to float32); a name is
            # resolved here so that every family's loader gets a torch.dtype
            if dtype not in (None, "auto"):
                dtype = _resolve_dtype(dtype, {})
            model = load_pretrained(src_p, dtype="auto" if dtype is None else dtype)
            model.save_pretrained(tmp)  # the model's own exporter (decoder/encoder or seq2seq)
        tok_files: list[str] = []
        if tokenizer:
            if src_p.is_dir():
                tok_files = _files.copy_tokenizer_files(src_p, tmp)
            else:
                try:
                    import transformers  # noqa: F401
                except ImportError:
                    caught.append(warnings.WarningMessage(
                        f"{src}: transformers is not installed; no tokenizer written (pip install 'plmkit[interop]')",
                        UserWarning, __file__, 0))
                else:
                    from plmkit.interop.gguf import load_gguf_tokenizer

                    load_gguf_tokenizer(src_p).save_pretrained(str(tmp))
                    tok_files = sorted(p.name for p in tmp.iterdir() if p.name in _files.TOKENIZER_FILES)
        hf_cfg = _files.read_json(tmp / "config.json")
        _files.commit_output_dir(tmp, out_p)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out_dir": str(out_p),
        "model_type": hf_cfg["model_type"],
        "architecture": hf_cfg["architectures"][0],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": hf_cfg.get("torch_dtype"),
        "tokenizer_files": tok_files,
        "warnings": [str(w.message) for w in caught],
    }
