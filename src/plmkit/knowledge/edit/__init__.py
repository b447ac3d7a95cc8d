"""Editing what a causal LM knows (issue 17): ROME, MEMIT, FT, FT+L and knowledge-neuron edits.

One interface for every method::

    from plmkit.knowledge.edit import Request, edit, undo, load_hparams
    hp = load_hparams("rome", "recipes/editing/rome-llama.yaml", layers=[4])
    delta = edit(model, [Request(prompt, subject, " Rome")], "rome", hp, tokenizer=tok, covariance={4: C})
    ...                      # the model is edited in place
    undo(model, delta)       # every touched parameter back bit for bit

``delta`` (``common.Delta``) holds each touched parameter's original values and its exact change,
and ``delta.info`` the provenance (method, layers, norms, the v* optimisation curve).
Modules: ``rome``, ``memit``, ``ft`` (FT and FT+L), ``kn``; ``covariance`` (key statistics),
``evaluate`` (CounterFact / zsRE metrics), ``common`` (requests, keys, v*). Conventions: docs/EDITING.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.knowledge.edit import common, ft, kn, memit, rome
from plmkit.knowledge.edit.common import Delta, Request, undo
from plmkit.knowledge.structure import locate

METHODS = ("rome", "memit", "ft", "ft-l", "kn")
PARAMS = {"rome": rome.ROMEParams, "memit": memit.MEMITParams, "ft": ft.FTParams, "ft-l": ft.FTParams,
          "kn": kn.KNParams}
USES_COVARIANCE = ("rome", "memit")


def load_hparams(method: str, source: str | Path | dict | None = None, **overrides: Any) -> Any:
    """The method's hyper-parameters from a YAML file (or dict), with ``overrides`` (None values ignored)."""
    if method not in METHODS:
        raise UserError(f"unknown editing method {method!r}; expected one of {', '.join(METHODS)}")
    where = str(source) if source is not None else method
    data: dict[str, Any] = {}
    if isinstance(source, dict):
        data = dict(source)
    elif source is not None:
        import yaml

        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: hyper-parameter file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of hyper-parameters")
        declared = data.pop("method", method)
        if declared != method:
            raise UserError(f"{path}: method: {declared!r}, but --method is {method!r}")
        data.pop("notes", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    cls = PARAMS[method]
    if method == "ft-l":
        data.setdefault("norm_constraint", 5e-4)  # ROME's FT+L setting for GPT-2
    v = data.pop("v", None)
    hp = common.dataclass_from(cls, data, where)
    if v is not None:
        if not hasattr(hp, "v"):
            raise UserError(f"{where}: unknown key(s) v")
        if not isinstance(v, dict):
            raise UserError(f"{where}: v: expected a mapping of v* optimisation settings")
        hp.v = common.dataclass_from(common.VParams, v, f"{where}: v")
    if method == "ft-l" and hp.norm_constraint <= 0:
        raise UserError(f"{where}: ft-l needs norm_constraint > 0 (the L-inf bound delta)")
    if method == "ft" and hp.norm_constraint:
        raise UserError(f"{where}: norm_constraint is FT+L's bound; use --method ft-l")
    return hp


def _checked(model: nn.Module, requests: list[Request | dict], method: str, hparams: Any,
             covariance: dict[int, Tensor] | None) -> tuple[Any, list[Request]]:
    """(structure, validated requests), or UserError (see ``edit``)."""
    if method not in METHODS:
        raise UserError(f"unknown editing method {method!r}; expected one of {', '.join(METHODS)}")
    struct = locate(model)
    if struct.kind != "lm":
        raise UserError("editing needs a causal LM (the new object is read from the next-token distribution)")
    reqs = [(r if isinstance(r, Request) else Request.from_dict(r, f"request {k}")).validate(f"request {k}")
            for k, r in enumerate(requests)]
    if not reqs:
        raise UserError("no edit requests")
    layers = hparams.layers
    if not layers:
        raise UserError(f"{method}: no layers to edit; pass --layers, --trace or a recipe with layers")
    common.check_layers(struct, layers, "layers")
    if method == "rome" and len(layers) != 1:
        raise UserError(f"rome edits one layer, got layers {layers}; use memit for a range")
    if method in USES_COVARIANCE and hparams.covariance:
        missing = [x for x in layers if not covariance or x not in covariance]
        if missing:
            raise UserError(f"{method}: no key covariance for layer(s) {missing}; pass --stats-corpus "
                            "or --no-covariance")
    return struct, reqs


def edit_each(model: nn.Module, requests: list[Request | dict], method: str, hparams: Any, *, tokenizer: Any,
              covariance: dict[int, Tensor] | None = None) -> list[Delta]:
    """Each request edited alone on the current weights: the ``Delta`` that ``edit(model, [request], ...)``
    would return (``original`` left empty), and the model unchanged (every edit undone).

    ROME: the keys k* and the v* optimisations of all the requests share batched forwards
    (``rome.each``); FT / FT+L tune the requests' own changes side by side (``ft.each``); both equal
    one ``edit`` per request up to float rounding (tested). MEMIT and KN edit and undo one request at
    a time. ``info["seconds"]`` / ``["cpu_seconds"]``: the call's time
    divided evenly between the requests."""
    struct, reqs = _checked(model, requests, method, hparams, covariance)
    if method not in ("rome", "ft", "ft-l"):
        out = []
        for r in reqs:
            d = edit(model, [r], method, hparams, tokenizer=tokenizer, covariance=covariance)
            undo(model, d)
            d.original = {}
            out.append(d)
        return out
    t0, c0 = time.time(), time.process_time()
    with common.frozen(model):
        if method == "rome":
            out = rome.each(struct, tokenizer, reqs, hparams, covariance)
        else:
            out = ft.each(struct, tokenizer, reqs, hparams)
    wall, cpu = (time.time() - t0) / len(reqs), (time.process_time() - c0) / len(reqs)
    for d in out:
        d.info.update(method=method, layers=list(hparams.layers), seconds=round(wall, 3), cpu_seconds=round(cpu, 3))
        d.info.setdefault("delta_norm", {k: round(v, 6) for k, v in d.norms().items()})
    return out


def edit(model: nn.Module, requests: list[Request | dict], method: str, hparams: Any, *, tokenizer: Any,
         covariance: dict[int, Tensor] | None = None) -> Delta:
    """Edit ``model`` in place so that each request's prompt continues with its new target.

    ``covariance``: {layer: C = E[k k^T]} for ROME / MEMIT (``covariance.layer_stats``); missing layers
    or None with ``hparams.covariance`` true raise. Returns the exact ``Delta`` (see ``undo``).
    Raises UserError for a request that cannot be edited (subject not in the prompt, empty target,
    target equal to the true object) or layers out of range; nothing is changed then.
    """
    struct, reqs = _checked(model, requests, method, hparams, covariance)
    rec = common.Recorder(model)
    info: dict[str, Any] = {"method": method, "layers": list(hparams.layers)}
    t0, c0 = time.time(), time.process_time()
    try:
        with common.frozen(model):
            if method == "rome":
                rome.apply(struct, tokenizer, reqs, hparams, covariance, rec, info)
            elif method == "memit":
                memit.apply(struct, tokenizer, reqs, hparams, covariance, rec, info)
            elif method in ("ft", "ft-l"):
                ft.apply(struct, tokenizer, reqs, hparams, rec, info)
            else:
                kn.apply(struct, tokenizer, reqs, hparams, rec, info)
    except BaseException:
        rec.restore()
        raise
    info["seconds"] = round(time.time() - t0, 3)
    info["cpu_seconds"] = round(time.process_time() - c0, 3)  # all threads of this process: load-independent
    return rec.finish(**info)


__all__ = ["METHODS", "Delta", "Request", "edit", "edit_each", "load_hparams", "undo"]
