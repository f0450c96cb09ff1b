"""What every ``stemlab`` subcommand module shares: the parser class, its errors, argument types.

Kept apart from :mod:`stemlab.cli` so that :mod:`stemlab.cli_study` needs nothing from the
module that imports it.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from stemlab.errors import StemlabError

__all__ = ["CLIError", "Parser", "positive_int"]


class CLIError(StemlabError):
    """A user mistake on the command line: reported as one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`CLIError` (one line) instead of exits."""

    def error(self, message: str) -> NoReturn:
        # main() prints "stemlab: error: ", so only the subcommand is named here
        where = self.prog.removeprefix("stemlab").strip()
        raise CLIError(f"{where + ': ' if where else ''}{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
