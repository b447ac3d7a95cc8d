"""The ``plm`` command table is complete and every command answers --help with defaults shown."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from plmkit.cli.main import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_module_contract(name):
    module, purpose = COMMANDS[name]
    mod = importlib.import_module(f"plmkit.cli.{module}")
    assert callable(mod.add_arguments) and callable(mod.run)
    assert isinstance(mod.HELP, str) and mod.HELP.strip()
    assert purpose.strip()


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "plmkit", "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: plm " + name in out


def test_every_option_has_help_text():
    """ArgumentDefaultsHelpFormatter shows defaults only for options that have help text."""
    parser = build_parser("all")
    missing = []
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            stack = [(name, sub)]
            while stack:
                label, p = stack.pop()
                for a in p._actions:
                    if a.dest in ("help",) or a.help == "==SUPPRESS==":
                        continue
                    if hasattr(a, "choices") and isinstance(a.choices, dict) and a.nargs == "A...":
                        stack.extend((f"{label} {k}", v) for k, v in a.choices.items())
                        continue
                    if not a.help:
                        missing.append(f"{label}: {a.option_strings or a.dest}")
    assert not missing, missing
