"""stemlab's own error and warning types: what the CLI reports as a one-line user mistake.

Every layer raises ``ValueError`` (or a subclass) for a bad value. A wrong *type* is raised as
:class:`StemlabTypeError`, still a ``TypeError`` for Python callers, so that the CLI can tell a
user's mistake from a ``TypeError`` that is a bug (which keeps its traceback).
"""

from __future__ import annotations

__all__ = [
    "MissingDependencyError",
    "StemlabError",
    "StemlabTypeError",
    "StemlabWarning",
    "StudyFileError",
    "StudyLockedError",
]


class StemlabError(Exception):
    """A mistake stemlab detected and explained itself (CLI: one line on stderr, exit 2)."""


class StemlabTypeError(StemlabError, TypeError):
    """An argument of the wrong type, found by stemlab's validation."""


class MissingDependencyError(StemlabError, ImportError):
    """An optional dependency a feature needs is not installed (the message says what to install)."""


class StudyFileError(StemlabError):
    """A study script could not be imported (syntax error, exception, ``sys.exit``)."""


class StudyLockedError(StemlabError):
    """Another stemlab driver holds the output folder's lock."""


class StemlabWarning(UserWarning):
    """Something the user should know that does not stop the work (a damaged cell set aside)."""
