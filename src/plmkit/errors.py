"""User-facing errors.

``UserError`` is raised for bad input (a missing file, an unknown key, a malformed
row). The CLI prints its message as one line and exits with code 2, without a
traceback. Messages should name the file, line or key and what was expected, e.g.
``data/train.tsv:17: expected 2 tab-separated columns, got 3``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: shown as one line, exit code 2."""

    exit_code = 2


def suggest(name: str, choices) -> str:
    """Return ' (did you mean X?)' for the closest valid choice, or ''."""
    import difflib

    best = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {best[0]!r}?)" if best else ""


class Interrupted(Exception):
    """A run stopped by a signal (Ctrl-C / SIGTERM) after keeping what it could.

    The message says where it stopped and how to continue; the CLI prints it as one line
    (``plm <command>: stopped: <message>``) and exits with code 130.
    """

    exit_code = 130
