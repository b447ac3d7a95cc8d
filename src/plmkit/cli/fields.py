"""Command-line options generated from a config dataclass (not a command: a helper of command modules).

:func:`add_dataclass_options` adds one option per field: ``--field-name`` (or the field's ``flag``
metadata), typed from the annotation (``int``, ``float``, ``str``, ``X | None``, ``tuple[float, ...]`` as
comma-separated numbers, ``bool``: a switch, ``bool | None``: ``--x / --no-x``), help from the docstring
under the field (:func:`plmkit.config.field_docs`), ``choices`` and ``parse`` from the field's metadata, and
the accepted numbers from its ``bound`` (``plmkit.checks``; floats must be finite).

Every option's default is ``argparse.SUPPRESS``: a flag that was not typed is absent from the parsed
namespace, so :func:`given_options` returns exactly the flags typed on the command line, and a recipe
value is never mistaken for a flag (or the reverse) even when the flag repeats the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _is_optional_bool(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and \
        set(typing.get_args(tp)) == {bool, type(None)}


def _scalar(tp):
    """The non-None member of ``X | None`` (or ``tp`` itself)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _comma_list(item_type, flag: str, b=None):
    from plmkit.checks import FINITE

    def parse(text: str):
        try:
            out = tuple(item_type(x) for x in str(text).split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        for v in out:
            msg = (b or FINITE).problem(v)
            if msg:
                raise argparse.ArgumentTypeError(msg)
        return out

    parse.__name__ = f"comma-separated {item_type.__name__}"
    return parse


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options (metadata ``cli: False`` excludes one)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of ``cls``; every default is SUPPRESS (see the module docstring)."""
    from plmkit.checks import FINITE, arg
    from plmkit.config import field_docs

    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls):
        tp, flag = hints[f.name], _flag(f)
        help_text = f.metadata.get("flag_help") or docs.get(f.name) or f.name.replace("_", " ")
        required = f.metadata.get("required", False)
        has_default = f.default is not dataclasses.MISSING
        if required:
            help_text += " (required)"
        elif has_default and f.default is not None and tp is not bool:
            help_text += f" (default: {_show(f.default)})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kw["action"] = "store_false" if f.default is True else "store_true"
        elif _is_optional_bool(tp):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            base = _scalar(tp)
            if typing.get_origin(base) is tuple:
                kw["type"] = _comma_list(typing.get_args(base)[0], flag, f.metadata.get("bound"))
                kw["metavar"] = "X,Y,..."
            elif base in (int, float) and "parse" not in f.metadata:
                kw["type"] = arg(base, f.metadata.get("bound", FINITE))  # the field's bound, finite floats
            else:
                kw["type"] = f.metadata.get("parse") or base
            if "choices" in f.metadata:
                kw["choices"] = list(f.metadata["choices"]())
        parser.add_argument(flag, **kw)


def given_options(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of ``cls`` given as flags on the command line (absent ones were not typed)."""
    return {f.name: getattr(args, f.name) for f in cli_fields(cls) if hasattr(args, f.name)}


def missing_required(values: dict[str, Any], cls) -> list[str]:
    """Flags of the required fields that ``values`` lacks (or holds as None)."""
    return [_flag(f) for f in dataclasses.fields(cls) if f.metadata.get("required") and values.get(f.name) is None]
