"""Hooks: how ``plmkit.models`` reaches the operations that live above it, without importing them.

One-way imports. ``models`` is the leaf of the package: it imports only ``plmkit.models.*`` and
``plmkit.errors``. Saving and loading checkpoints live in ``plmkit.interop`` (a table from model
class to (save, load)), decoding in ``plmkit.generation``, the classical LMs in ``plmkit.classic``.
Yet the public API keeps ``model.save_pretrained(dir)``, ``model.generate(...)`` and
``plmkit.models.load(name_or_path)``. So those call *hooks*: plain callables registered here by the
composition root, ``plmkit/__init__.py`` (Python runs it before any ``plmkit.models`` module, so
the hooks are in place whenever a model exists). The root's callables import their package on first
call, which keeps ``import plmkit`` and ``plm --help`` fast; this module imports nothing.

- ``register_hook(name, fn)`` / ``hook(name)`` for ``HOOKS``;
- ``register_builder(kind, fn)`` / ``builder(kind)``: who builds the presets of a kind that
  ``models`` does not own (``"recurrent"``: ``plmkit.classic.recurrent.build``).
"""

from __future__ import annotations

from typing import Any, Callable

from plmkit.errors import UserError

HOOKS = ("save_pretrained", "generate", "load_path")
"""Operations above ``models`` that models expose: save_pretrained(model, out_dir, **kw),
generate(model, input_ids, attention_mask=None, **kw), load_path(path, **overrides)."""

_HOOKS: dict[str, Callable[..., Any]] = {}
_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_hook(name: str, fn: Callable[..., Any]) -> None:
    """Install the implementation of hook ``name`` (one of ``HOOKS``); the composition root calls it."""
    if name not in HOOKS:
        raise ValueError(f"unknown model hook {name!r}: expected one of {', '.join(HOOKS)}")
    _HOOKS[name] = fn


def hook(name: str) -> Callable[..., Any]:
    """The registered implementation of ``name``."""
    return _registered(_HOOKS, name, f"{name!r} implementation")


def register_builder(kind: str, fn: Callable[..., Any]) -> None:
    """Install ``fn(name, **overrides) -> model`` for the presets of ``kind`` (e.g. "recurrent")."""
    _BUILDERS[kind] = fn


def builder(kind: str) -> Callable[..., Any]:
    """The registered builder of ``kind`` presets."""
    return _registered(_BUILDERS, kind, f"builder for {kind!r} presets")


def _registered(table: dict[str, Callable[..., Any]], key: str, what: str) -> Callable[..., Any]:
    fn = table.get(key)
    if fn is None:
        raise UserError(f"plmkit.models: no {what} registered (import plmkit first)")
    return fn
