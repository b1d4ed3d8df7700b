"""cfgaudit's one exception hierarchy.

Every error a user can cause (bad input file, bad option, missing backend) is a
:class:`CfgauditError`. The CLI translates it once, at its edge, into a one-line
``Error: ...`` on stderr and exit code 2; library users catch the class itself.
"""
from __future__ import annotations

__all__ = ["CfgauditError", "InputError", "UsageError", "BackendError", "EXIT_OK", "EXIT_FINDINGS", "EXIT_ERROR",
           "EXIT_INTERNAL"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 3  # a bug in cfgaudit (an exception it did not expect): never confused with "findings"


class CfgauditError(Exception):
    """Base class. ``str()`` is the one-line message shown after ``Error: ``.

    ``path`` and ``line`` (1-based), when given, are put in front as ``PATH:LINE: ``.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return where + self.message


class InputError(CfgauditError):
    """A file or value given to cfgaudit is missing, unreadable or malformed."""


class UsageError(CfgauditError):
    """Options that do not fit together."""


class BackendError(CfgauditError):
    """A probe backend cannot run here (not root, no bcc, no tracepoint, ...)."""
