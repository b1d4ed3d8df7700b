"""cfgaudit's one exception hierarchy.

Every error a user can cause (bad input file, bad option, missing backend) is a
:class:`CfgauditError`. The CLI translates it once, at its edge, into a one-line
``Error: ...`` on stderr and exit code 2; library users catch the class itself.
:func:`open_input` opens a user-given input file (regular files only), :func:`create_output` a file
cfgaudit writes (traces, snapshots), their OSErrors already translated.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

__all__ = ["CfgauditError", "InputError", "OutputError", "UsageError", "BackendError", "EXIT_OK", "EXIT_FINDINGS",
           "EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_CODES", "open_input", "create_output",
           "LINK_REFUSED", "is_utf8_text"]

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
     "sources do not have count too"),
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


def open_input(path: str, what: str, max_bytes: int | None = None) -> BinaryIO:
    """Open a user-given input file for reading (binary), or raise :class:`InputError`.

    Only regular files are read: a directory, a FIFO, a device (``/dev/zero``) or a terminal
    (``/dev/stdin``) is refused, so reading can neither block for ever nor grow without bound.
    The file is opened non-blocking and checked on its descriptor (no race with a FIFO put in
    its place), then set blocking again. ``max_bytes``: refuse a larger file (for inputs that are
    read whole); ``what`` names the input in messages ("trace", "lspci dump", ...).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise InputError(f"no such {what} file", path=path) from err
    except OSError as err:
        raise InputError(f"cannot read {what}: {err.strerror}", path=path) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) \
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket or other file"
            raise InputError(f"not a regular file ({kind}); cfgaudit reads {what} input only from regular files",
                             path=path)
        if max_bytes is not None and st.st_size > max_bytes:
            raise InputError(f"{st.st_size} bytes is too large for a {what} (at most {max_bytes >> 20} MiB)",
                             path=path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_utf8_text(s: str) -> bool:
    """False for text that cannot be UTF-8 (JSON's lone surrogate escapes, such as "\\ud800"):
    input a trace, snapshot or header field must not hold."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


LINK_REFUSED = "is a symbolic link: give the real path (cfgaudit does not write through links)"


def create_output(path: str, what: str = "trace") -> int:
    """Open ``path`` for a new trace or snapshot (fd; ``what`` names the file in messages). A new
    file is made mode 0600 (traces and snapshots hold config bytes non-root cannot read); an
    existing file is truncated and keeps its mode; a symbolic link is refused (no writing through
    a link); a device (``/dev/null``) is written, never chmodded. Here, not in the trace writer,
    so that ``cfgaudit snapshot`` does not load the trace formats (pyarrow) to open its file."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            return fd
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(LINK_REFUSED, path=path) from err
        raise InputError(f"cannot create {what}: {err.strerror}", path=path) from err
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.ftruncate(fd, 0)
    return fd
