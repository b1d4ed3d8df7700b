"""The files cfgaudit opens for the user: inputs (regular files only, never blocking) and
outputs (traces, snapshots: 0600, never through a symbolic link, devices never chmodded), their
OSErrors translated into :class:`~cfgaudit.errors.InputError` naming the file. A leaf: the
regions package, the inventory and the trace formats all open files here, without pyarrow.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from .errors import InputError

__all__ = ["open_input", "create_output", "check_output", "LINK_REFUSED"]


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


def check_output(path: str) -> None:
    """Refuse, before a live run loads its probes, a trace path :func:`create_output` would refuse:
    a symbolic link, a directory, or a file in a directory that does not exist."""
    if os.path.islink(path):
        raise InputError(LINK_REFUSED, path=path)
    if os.path.isdir(path):
        raise InputError("cannot create trace: is a directory", path=path)
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise InputError(f"cannot create trace: no such directory {parent}", path=path)
