"""cfgaudit's one exception hierarchy.

Every error a user can cause (bad input file, bad option, missing backend) is a
:class:`CfgauditError`. The CLI translates it once, at its edge, into a one-line
``Error: ...`` on stderr and exit code 2; library users catch the class itself.
"""
from __future__ import annotations

__all__ = ["CfgauditError", "InputError", "OutputError", "UsageError", "BackendError", "EXIT_OK", "EXIT_FINDINGS",
           "EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_CODES", "is_utf8_text"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 3  # a bug in cfgaudit (an exception it did not expect): never confused with "findings"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, a shell's code for "ended by Ctrl-C"

# The one table of exit codes (README.md's "Exit codes" block is generated from it and checked).
EXIT_CODES: tuple[tuple[str, str, str], ...] = (
    (str(EXIT_OK), "ok", "no findings at the gate level; a live run that ended cleanly (Ctrl-C, SIGTERM, "
     "`-d`); `cfgaudit run`: see CMD's code below"),
    (str(EXIT_FINDINGS), "findings", "writes into owned bytes at or above the gate level (`check` and `run`: "
     "`--fail-on`, default `exclusive`; `analyze` and `replay`: `managed`); at `managed`, writes to devices the "
     "sources do not have count too; at every level, collisions (findings of kind `collision`: a write into a DOE "
     "mailbox during the kernel's own exchange, or the kernel starting one during a user's request; `--fail-on "
     "collision`: those alone)"),
    (str(EXIT_ERROR), "error", "bad input (`Error: FILE[:LINE]: ...`), bad usage, a live backend that cannot run "
     "here, an output that cannot be written (disk full: what was recorded stays valid)"),
    (str(EXIT_INTERNAL), "internal error", "a bug in cfgaudit: one `Error: internal error at FILE:LINE: ...` "
     "line; `cfgaudit --debug ...` shows the traceback"),
    (str(EXIT_INTERRUPTED), "interrupted", "Ctrl-C while cfgaudit loads, during an offline command, or before "
     "`cfgaudit run` starts CMD (a live run already tracing ends cleanly instead: 0)"),
    ("CMD's", "`cfgaudit run`", "when nothing fails the gate: CMD's own exit code (128+N when signal N killed "
     "it), so a failing test suite still fails"),
)


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


class OutputError(CfgauditError):
    """A file cfgaudit writes cannot be written (disk full, quota, I/O error). What was written
    before stays valid (whole records only)."""


class UsageError(CfgauditError):
    """Options that do not fit together."""


class BackendError(CfgauditError):
    """A probe backend cannot run here (not root, no bcc, no tracepoint, ...)."""


def is_utf8_text(s: str) -> bool:
    """False for text that cannot be UTF-8 (JSON's lone surrogate escapes, such as "\\ud800"):
    input a trace, snapshot or header field must not hold."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
