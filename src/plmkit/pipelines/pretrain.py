"""``run_pretraining``: a recipe in, a trained checkpoint out (the body of ``plm pretrain``).

    from plmkit.pipelines import run_pretraining
    summary = run_pretraining("recipes/gpt2/clm-shakespeare-char.yaml", "runs/shakespeare",
                              overrides=["train.max_steps=100"], progress=True)
    summary = run_pretraining({"model": {"preset": "gpt2-tiny"}, ...}, "runs/x")   # a dict works too

Inside the run directory ``RUN``:

    recipe.yaml            the resolved recipe (defaults + recipe + overrides, absolute paths)
    tokenizer/             the tokenizer (loaded from ``tokenizer.path`` or trained here)
    data/train, data/valid token stores (``plmkit.data.prepare``; reused when up to date)
    metrics.jsonl eval.jsonl tensorboard/ loss.png lr.png
    checkpoints/step-N/    self-contained: HF-format model + tokenizer + trainer state
    final/                 HF-format model + tokenizer + train_summary.json

Under torchrun, rank 0 trains the tokenizer and prepares the data; the other ranks wait and load them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

import plmkit.training.distributed as D
from plmkit.config import Recipe, apply_overrides, dump_recipe, load_recipe, recipe_from_dict
from plmkit.errors import UserError

RUN_MARKER = "recipe.yaml"


class Subset(Sequence):
    """Records ``[start, stop)`` of a map-style sequence (a contiguous held-out tail, or the rest)."""

    def __init__(self, seq: Sequence, start: int, stop: int):
        self.seq, self.start, self.stop = seq, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.seq[self.start + (i % len(self))]


def _as_recipe(recipe: Recipe | dict | str | os.PathLike, overrides: list[str],
               encoding_errors: str | None = None) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            over: dict = {}
            raw = apply_overrides(recipe.to_dict(), overrides, record=over)
            recipe = recipe_from_dict(raw, overridden=over)
    elif isinstance(recipe, dict):
        import copy

        raw = copy.deepcopy(recipe)
        from plmkit.config import _resolve_paths

        _resolve_paths(raw, Path.cwd())
        over = {}
        recipe = recipe_from_dict(apply_overrides(raw, overrides, record=over), overridden=over)
    else:
        recipe = load_recipe(recipe, overrides, encoding_errors=encoding_errors or "strict")
    if encoding_errors:
        recipe.data = dataclasses.replace(recipe.data, encoding_errors=encoding_errors)
    return recipe


def _source_lines(recipe, encoding_errors: str | None = None) -> tuple[str | None, dict]:
    """The recipe file's name and its key -> line map (nothing for a dict or a Recipe)."""
    if isinstance(recipe, (str, os.PathLike)) and Path(recipe).is_file():
        from plmkit.config import _line_map
        from plmkit.textio import read_text

        return str(recipe), _line_map(read_text(recipe, encoding_errors or "strict"))
    return None, {}


def check_paths(recipe: Recipe) -> None:
    """UserError naming the first missing input path of the recipe."""
    items = [("data.train", p) for p in recipe.data.train] + [("data.valid", p) for p in recipe.data.valid]
    if recipe.tokenizer.path:
        items.append(("tokenizer.path", recipe.tokenizer.path))
    if recipe.tokenizer.train and recipe.tokenizer.train.files:
        items += [("tokenizer.train.files", p) for p in recipe.tokenizer.train.files]
    if recipe.model.path:
        items.append(("model.path", recipe.model.path))
    for i, files in enumerate(_own_files(recipe)):
        items += [(f"objective[{i}].data", p) for p in files or []]
    for key, p in items:
        if not Path(p).exists():
            raise UserError(f"{key}: no such file or directory: {p}")


def check_model(recipe: Recipe, source: str | None = None, lines: dict | None = None) -> None:
    """Check ``model.preset`` and ``model.overrides`` before the tokenizer trains or anything is written.

    The preset is built on the meta device (no memory, no RNG draws): an unknown preset, an override that
    names no field of the model's config (one line with a did-you-mean hint, at the recipe's line when it
    comes from the file) or a value the config refuses fail here. ``model.path`` checkpoints are checked
    when they load.
    """
    from plmkit.errors import suggest
    from plmkit.models import load

    m = recipe.model
    if m.preset is None:
        return
    with torch.device("meta"):
        base = load(m.preset)
    names = sorted(f.name for f in dataclasses.fields(base.config))
    lines = lines or {}

    def where(*path) -> str:
        line = lines.get(path)
        return f"{source}:{line}: " if source and line else ""

    for key in m.overrides:
        if key not in names:
            raise UserError(f"{where('model', 'overrides', key)}model.overrides.{key}: unknown key"
                            f"{suggest(key, names) or '; see the fields of ' + type(base.config).__name__}")
    if m.overrides:
        try:
            with torch.device("meta"):
                base = load(m.preset, **m.overrides)
        except UserError as e:
            raise UserError(f"{where('model', 'overrides')}model.overrides: {e}") from None
    _check_seq_len(recipe, base)


def _check_seq_len(recipe: Recipe, model) -> None:
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos and recipe.data.seq_len + 2 > max_pos + getattr(model.config, "position_offset", 0):
        raise UserError(f"data.seq_len {recipe.data.seq_len} (+ special tokens) exceeds the model's "
                        f"max_position_embeddings {max_pos}; lower data.seq_len or set "
                        f"model.overrides.max_position_embeddings")


def check_run_dir(out: Path, recipe: Recipe, resume: bool, overwrite: bool) -> str:
    """What to do with the run directory, without touching it: "resume" (an existing run), "overwrite" (delete
    the run there once the new one is known to be valid) or "fresh" (absent or empty)."""
    marker = out / RUN_MARKER
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise UserError(f"--out {out}: directory is not empty and is not a plmkit run; choose another --out")
        if overwrite:
            return "overwrite"
        elif resume:
            try:
                old = yaml.safe_load(marker.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                old = {}
            new = recipe.to_dict()
            if isinstance(old.get("data"), dict):  # runs made before data.encoding_errors existed read strictly
                old["data"].setdefault("encoding_errors", "strict")
            changed = [k for k in ("model", "tokenizer", "data", "objective") if old.get(k) != new.get(k)]
            if changed:
                raise UserError(f"--out {out}: holds a run with a different {', '.join(changed)} section; "
                                f"cannot resume it with this recipe (use --overwrite or another --out)")
            return "resume"
        else:
            raise UserError(f"--out {out}: already holds a run; pass --resume to continue it or --overwrite "
                            f"to start over")
    return "fresh"


def prepare_run_dir(out: Path, recipe: Recipe, resume: bool, overwrite: bool) -> bool:
    """Check / create the run directory (an ``--overwrite`` run is deleted now); True when resuming."""
    action = check_run_dir(out, recipe, resume, overwrite)
    if action == "overwrite":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return action == "resume"


def _old_train_section(marker: Path) -> dict | None:
    """The ``train`` section of the run's recipe.yaml (for checkpoints that predate ``train_config``)."""
    try:
        old = yaml.safe_load(marker.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    train = old.get("train") if isinstance(old, dict) else None
    return train if isinstance(train, dict) else None


def _tokenizer(recipe: Recipe, out: Path, log: Callable[[str], None], reuse: bool = True):
    """The run's tokenizer, in memory: ``tokenizer.path``, the one an earlier attempt of this run saved, or a
    newly trained one (saved by :func:`_save_tokenizer` once the whole run set-up is valid)."""
    from plmkit import load_tokenizer, train_tokenizer

    t = recipe.tokenizer
    tok_dir = out / "tokenizer"
    if t.path:
        return load_tokenizer(t.path)
    if reuse and (tok_dir / "tokenizer.json").is_file():
        return load_tokenizer(tok_dir)  # trained by an earlier attempt of this run
    files = t.train.files or recipe.data.train
    log(f"training a {t.train.kind} tokenizer (vocab {t.train.vocab_size or 'all characters'}) on "
        f"{len(files)} file(s)")
    from plmkit.progress import Ticker

    try:
        with Ticker(f"training a {t.train.kind} tokenizer"):  # liveness lines in logs
            return train_tokenizer(files, kind=t.train.kind, vocab_size=t.train.vocab_size,
                                   special_tokens=t.train.special_tokens, doc_sep=recipe.data.doc_sep,
                                   errors=recipe.data.encoding_errors, log=log, **t.train.options)
    except TypeError as e:  # an unknown key in tokenizer.train.options
        raise UserError(f"tokenizer.train.options: {e}") from None


def _save_tokenizer(tok, out: Path) -> None:
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return
    tmp = out / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save(tmp)
    shutil.rmtree(tok_dir, ignore_errors=True)
    os.replace(tmp, tok_dir)


def _store(files: list[str], tok, path: Path, recipe: Recipe, info: D.DistInfo, log, parallel: bool = False):
    from plmkit.data import TokenStore, prepare
    from plmkit.data.parallel import prepare_parallel

    if info.is_main and parallel:  # an objective reads sentence pairs (TLM): the files hold parallel text
        m = prepare_parallel(files, tok, path)
        log(f"{path.name} data: {m['input']['pairs']} sentence pairs, {m['num_tokens']} tokens")
    elif info.is_main:
        m = prepare(files, tok, path, doc_sep=recipe.data.doc_sep, errors=recipe.data.encoding_errors,
                    format=recipe.data.format, text_field=recipe.data.text_field, progress=False)
        log(f"{path.name} data: {m['num_tokens']} tokens in {m['num_documents']} documents")
    D.barrier()
    return TokenStore(path, tokenizer=tok)


def _per_objective_data(recipe: Recipe, tok, objs: list, own: list, out: Path, info: D.DistInfo, log
                        ) -> tuple[dict[str, Sequence], dict[str, Sequence] | None]:
    """Training (and ``data.valid``) examples keyed by objective name when some entries read their own files."""
    names = [str(getattr(o, "name", "")) for o, _ in objs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"objective: entries with their own data need distinct names; {dup[0]!r} repeats "
                        f"(give each a 'key', e.g. key: mlm_zh)")
    train: dict[str, Sequence] = {}
    valid: dict[str, Sequence] = {}
    shared = [(n, o) for n, (o, _), files in zip(names, objs, own) if files is None]
    if shared:
        if not recipe.data.train:
            raise UserError(f"data.train: empty, and objective {shared[0][0]!r} has no data of its own")
        kinds = {getattr(o, "example_kind", "window") for _, o in shared}
        views = _views(_store(recipe.data.train, tok, out / "data" / "train", recipe, info, log,
                              "parallel" in kinds), kinds, recipe)
        vviews = (_views(_store(recipe.data.valid, tok, out / "data" / "valid", recipe, info, log,
                                "parallel" in kinds), kinds, recipe) if recipe.data.valid else {})
        for n, o in shared:
            kind = getattr(o, "example_kind", "window")
            train[n] = views[kind]
            if vviews:
                valid[n] = vviews[kind]
    for n, (o, _), files in zip(names, objs, own):
        if files is None:
            continue
        if hasattr(o, "examples"):  # read by the objective itself (read_examples, in _objectives)
            train[n], held = o.examples
            if held:
                valid[n] = held
            log(f"{n} data: {len(train[n])} training and {len(held)} held-out examples read by the objective")
            continue
        kind = getattr(o, "example_kind", "window")
        store = _store(files, tok, out / "data" / f"objective-{n}", recipe, info, log, kind == "parallel")
        train[n] = _views(store, {kind}, recipe)[kind]
    return train, valid or None


def _views(store, kinds: set[str], recipe: Recipe) -> dict[str, Sequence]:
    d = recipe.data
    out: dict[str, Sequence] = {}
    for kind in kinds:
        if kind == "window":
            out[kind] = store.windows(d.seq_len, d.stride)
        elif kind == "document":
            out[kind] = store.documents(d.seq_len)
        elif kind == "sentence_pair":
            out[kind] = store.sentence_pairs(d.seq_len, seed=recipe.train.seed)
        elif kind == "parallel":
            from plmkit.data.parallel import ParallelPairs

            out[kind] = ParallelPairs(store, d.seq_len)
        else:
            raise UserError(f"objective needs example_kind {kind!r}, which the token store does not provide")
    return out


def _model(recipe: Recipe, tok, log):
    from plmkit.models import load

    m = recipe.model
    if m.path:
        model = load(m.path, **m.overrides)
        if model.config.vocab_size < len(tok):
            raise UserError(f"model.path {m.path}: vocabulary of {model.config.vocab_size} is smaller than the "
                            f"tokenizer's {len(tok)}; use the checkpoint's own tokenizer")
        return model
    ids = {"vocab_size": len(tok)}
    for field, attr in (("pad_token_id", "pad_token_id"), ("bos_token_id", "bos_token_id"),
                        ("eos_token_id", "eos_token_id"), ("mask_token_id", "mask_token_id")):
        v = getattr(tok, attr, None)
        if v is not None:
            ids[field] = v
    return load(m.preset, **{**ids, **m.overrides})


def _own_files(recipe: Recipe) -> list[list[str] | None]:
    """Per objective entry: the files it reads instead of ``data.train`` (its ``data`` option), or None.

    XLM trains one MLM stream per language and TLM on parallel text: each entry names its own files and
    gets its own token store (``RUN/data/objective-KEY/``) and examples; ``data.valid_fraction`` holds out
    the same fraction of each (``data.valid`` serves the entries without their own data).
    """
    out: list[list[str] | None] = []
    for i, spec in enumerate(recipe.objective):
        files = spec.get("data")
        if files is None:
            out.append(None)
            continue
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise UserError(f"objective[{i}].data: expected a file path or a non-empty list of them, got {files!r}")
        out.append(files)
    return out


def _objectives(recipe: Recipe, tok, model) -> list[tuple[Any, float]]:
    import plmkit.objectives as O

    out = []
    for i, (spec, files) in enumerate(zip(recipe.objective, _own_files(recipe))):
        opts = dict(spec)
        opts.pop("data", None)  # the entry's own files (_own_files), read by the pipeline
        name, weight = opts.pop("name"), float(opts.pop("weight", 1.0))
        key = opts.pop("key", None)
        obj = O.build(name, tokenizer=tok, **opts)
        if key:
            obj.name = key
        if callable(getattr(obj, "read_examples", None)):  # reads its own format (CoLAKE: T-REx triples)
            if not files:
                raise UserError(f"objective[{i}] ({name}): needs its own data (the entry's 'data': files it reads)")
            obj.examples = obj.read_examples(files, recipe.data.seq_len)  # before prepare: heads may depend on it
        obj.prepare(model)  # adds heads before the optimizer is built
        out.append((obj, weight))
    return out


def _build(recipe: Recipe, tok, log) -> tuple[Any, list, set[str]]:
    """Seed, build the model and the objectives, and check them against the data settings."""
    torch.manual_seed(recipe.train.seed)  # the same initial weights on every rank
    model = _model(recipe, tok, log)
    objs = _objectives(recipe, tok, model)
    kinds = {getattr(o, "example_kind", "window") for o, _ in objs if not hasattr(o, "examples")}
    unknown = kinds - {"window", "document", "sentence_pair", "parallel"}
    if unknown:
        raise UserError(f"objective needs example_kind {sorted(unknown)[0]!r}, which the token store does not provide")
    _check_seq_len(recipe, model)
    return model, objs, kinds


def _remove_fresh_run(out: Path, created: bool) -> None:
    """Delete what a run that failed before training wrote into ``out`` (all of ``out`` if it made it)."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in (RUN_MARKER, "tokenizer", "data", ".tokenizer.tmp"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()


def run_pretraining(recipe: Recipe | dict | str | os.PathLike, out_dir: str | os.PathLike, *,
                    overrides: list[str] | None = None, resume: bool = False, overwrite: bool = False,
                    progress: bool | None = None, log: Callable[[str], None] | None = None,
                    callbacks: list | None = None, encoding_errors: str | None = None,
                    resume_from: str | None = None) -> dict[str, Any]:
    """Train the tokenizer (if asked), prepare the data, build model + objective(s) and run the Trainer.

    Args:
        recipe: a :class:`plmkit.config.Recipe`, a recipe dict (relative paths against the cwd) or a YAML path
            (relative paths against its folder).
        out_dir: the run directory (refused if it holds another run, unless ``resume`` or ``overwrite``).
        overrides: dotted ``KEY=VALUE`` strings (``train.lr=3e-4``).
        resume: continue from the newest complete checkpoint in ``out_dir`` (a damaged one is refused with the
            newest intact one named). Train settings changed since the checkpoint apply from the first resumed
            step (one log line each); ``train.seed`` / ``train.optimizer`` changes are refused.
        resume_from: continue from this checkpoint (``step-N``, ``N`` or a path) instead; implies ``resume``.
            Newer checkpoints are removed (the resumed run replays their steps).
        progress: tqdm bar on stderr (None: recipe's ``train.progress``, else only on a terminal).
        log: where one-line progress messages go (default: stderr, rank 0 only).
        encoding_errors: "strict" / "replace": how non-UTF-8 bytes in the recipe file and the data are read
            (sets ``data.encoding_errors``; None: the recipe's).

    Everything that can be checked before the data is read (the recipe, the run directory, the tokenizer,
    which is trained in memory, the model and the objectives) is checked before anything is written; a fresh
    run that fails later while preparing its data leaves no files behind either.
    Returns:
        The trainer's summary plus ``run_dir``, ``seconds``, ``num_parameters``, ``train_examples``,
        ``valid_examples``.
    """
    from plmkit import progress as P
    from plmkit.training import checkpoint as ckpt
    from plmkit.training.trainer import Trainer, resume_changes

    t0 = time.time()
    resume = resume or resume_from is not None
    info = D.init_distributed()
    recipe_arg, recipe = recipe, _as_recipe(recipe, list(overrides or []), encoding_errors)
    if progress is not None:
        recipe.train = dataclasses.replace(recipe.train, progress=progress)
    say = log or (lambda msg: print(f"plm pretrain: {msg}", file=sys.stderr, flush=True))
    log = say if info.is_main else (lambda msg: None)
    check_paths(recipe)
    check_model(recipe, *_source_lines(recipe_arg, encoding_errors))
    out = Path(out_dir).resolve()
    if resume_from is not None and info.is_main and not (out / RUN_MARKER).is_file():
        raise UserError(f"--resume-from {resume_from}: --out {out} holds no run to resume")
    action = check_run_dir(out, recipe, resume, overwrite) if info.is_main else None
    action = D.broadcast_object(action)
    resuming = action == "resume"
    start = None
    if resuming and info.is_main:  # checked before anything is written: a damaged checkpoint, a change that cannot apply
        start, meta = ckpt.resume_point(out / "checkpoints", resume_from)
        if start is not None:
            saved = meta.get("train_config") or _old_train_section(out / RUN_MARKER)
            changes = resume_changes(saved, recipe.train, meta["step"])
            newer = [d.name for n, d in ckpt.checkpoint_steps(out / "checkpoints") if n > meta["step"]]
            log(f"resuming from {start}" + (f" (the newer {', '.join(newer)} will be removed)" if newer else ""))
            for key, old, new in changes:
                log(f"resume: train.{key} {old!r} -> {new!r} from step {meta['step'] + 1}")
    start = D.broadcast_object(str(start) if start is not None else None)
    again = f"plm pretrain {recipe_arg if isinstance(recipe_arg, (str, os.PathLike)) else 'RECIPE'} --out {out}"
    P.set_hint(f"continue with: {again} --resume")
    # Import the model and objective code before seeding: an import that draws from the global RNG (e.g. a
    # kernel probe at import time) would otherwise make the first run in a process differ from later ones.
    import plmkit.models.transformer  # noqa: F401
    import plmkit.objectives  # noqa: F401

    created = not out.exists()
    try:
        if info.is_main:
            # Validate before writing: the tokenizer (trained in memory), the model, the objectives.
            P.stage("while training the tokenizer" if not recipe.tokenizer.path else "while loading the tokenizer")
            tok = _tokenizer(recipe, out, log, reuse=action != "overwrite")
            model, objs, kinds = _build(recipe, tok, log)
            if action == "overwrite":
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            dump_recipe(recipe, out / RUN_MARKER)
            _save_tokenizer(tok, out)
        D.barrier()
        if not info.is_main:
            from plmkit import load_tokenizer

            tok = load_tokenizer(recipe.tokenizer.path or out / "tokenizer")
            model, objs, kinds = _build(recipe, tok, log)

        P.stage("while preparing the data")
        own = _own_files(recipe)
        if any(own):
            train, valid = _per_objective_data(recipe, tok, objs, own, out, info, log)
        else:
            parallel = "parallel" in kinds
            train_store = _store(recipe.data.train, tok, out / "data" / "train", recipe, info, log, parallel)
            train = _views(train_store, kinds, recipe)
            valid = None
            if recipe.data.valid:
                valid = _views(_store(recipe.data.valid, tok, out / "data" / "valid", recipe, info, log, parallel),
                               kinds, recipe)
        if recipe.data.valid_fraction > 0 and (valid is None or any(own)):
            valid = valid or {}
            for k, seq in list(train.items()):
                if k in valid:  # data.valid already serves it
                    continue
                n_valid = max(1, int(len(seq) * recipe.data.valid_fraction))
                if len(seq) - n_valid < 1:
                    raise UserError(f"data.valid_fraction {recipe.data.valid_fraction}: too few examples "
                                    f"({len(seq)}) to hold out any")
                valid[k] = Subset(seq, len(seq) - n_valid, len(seq))
                train[k] = Subset(seq, 0, len(seq) - n_valid)
    except UserError:
        if info.is_main and not resuming and out.is_dir():
            _remove_fresh_run(out, created)  # a run that never started leaves nothing behind
        raise
    from plmkit.objectives.views import static_views

    train, valid = static_views([o for o, _ in objs], train, valid)  # mode: static -> pre-masked copies
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {recipe.model.preset or recipe.model.path}: {n_params / 1e6:.2f}M parameters; objectives "
        f"{', '.join(getattr(o, 'name', '?') for o, _ in objs)}; {sum(len(v) for v in train.values())} "
        f"training examples" + (f", {sum(len(v) for v in valid.values())} held out" if valid else ""))
    if recipe.train.eval_every and not valid:
        log("no held-out data (data.valid or data.valid_fraction): no evaluation")
    if resuming and start is None:
        log("--resume: no complete checkpoint yet; starting from step 0")
    P.stage("while building the model")
    trainer = Trainer(model, objs, train, recipe.train, callbacks=callbacks, out_dir=out, eval_data=valid,
                      tokenizer=tok)
    trainer.name = "pretraining"
    log(trainer.precision_note)
    summary = trainer.fit(resume=Path(start) if start is not None else False)
    summary.update({"run_dir": str(out), "seconds": round(time.time() - t0, 1), "num_parameters": n_params,
                    "train_examples": sum(len(v) for v in train.values()),
                    "valid_examples": sum(len(v) for v in valid.values()) if valid else 0})
    if "eval_loss" in summary:
        log(f"step {summary['step']}: held-out loss {summary['eval_loss']:.4f}"
            + (f", perplexity {summary['eval_ppl']:.2f}" if "eval_ppl" in summary else ""))
    if summary.get("interrupted"):
        kept = (f"checkpoint {summary['checkpoint']} saved" if summary.get("checkpoint")
                else "no checkpoint (train.save_every=0)")
        log(f"stopped by {summary.get('signal', 'a signal')} at step {summary['step']}/{recipe.train.max_steps}; "
            f"{kept}; continue with: {again} --resume")
    elif summary.get("final"):
        log(f"done in {summary['seconds']:.0f}s: {summary['final']}")
    return summary
