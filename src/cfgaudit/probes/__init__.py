"""Event sources behind one table, like pciutils' access methods (``struct pci_methods``).

Each backend has a name, one line of help, ``detect()`` (``None`` when it can run here, else
why not) and ``open()``. Live backends import bcc lazily, inside probes/live.py only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BackendError

__all__ = ["Backend", "BACKENDS", "LIVE_ORDER", "pick_backend", "backend_table"]


@dataclass(frozen=True)
class Backend:
    name: str
    help: str
    live: bool
    detect: Callable[[], str | None]
    open: Callable[..., Any]


def _detect_syscalls() -> str | None:
    from .live import detect_syscalls

    return detect_syscalls()


def _open_syscalls(opts: Any) -> Any:
    from .live import SyscallSession

    return SyscallSession(opts)


def _detect_kernel() -> str | None:
    from .kernel import detect_kernel

    return detect_kernel()


def _open_kernel(opts: Any) -> Any:
    from .kernel import KernelSession

    return KernelSession(opts)


def _open_replay(*args: Any, **kw: Any) -> Any:
    from .replay import ReplaySource

    return ReplaySource(*args, **kw)


BACKENDS: dict[str, Backend] = {
    "kernel": Backend("kernel", "kprobes on pci_user_write_config_*: sysfs, /proc/bus/pci and VFIO writes "
                      "however issued, with the kernel's own verdict",
                      True, _detect_kernel, _open_kernel),
    "syscalls": Backend("syscalls", "syscall tracepoints (openat, pwrite64, write, writev, lseek, dup, close, "
                        "ioperm, iopl): sysfs and /proc/bus/pci, no kprobes needed", True, _detect_syscalls,
                        _open_syscalls),
    "replay": Backend("replay", "recorded trace files (JSONL or Parquet); read-only, needs no root", False,
                      lambda: None, _open_replay),
}
LIVE_ORDER = ("kernel", "syscalls")  # preference of --backend auto


def pick_backend(name: str) -> Backend:
    """The live backend called ``name``, or for ``auto`` the best one that can run here."""
    if name == "auto":
        reasons = []
        for n in LIVE_ORDER:
            why = BACKENDS[n].detect()
            if why is None:
                return BACKENDS[n]
            reasons.append(f"{n}: {why}")
        raise BackendError("no live backend can run here (" + "; ".join(reasons) + "); see 'cfgaudit doctor'")
    b = BACKENDS.get(name)
    if b is None or not b.live:
        raise BackendError(f"no live backend {name!r} (choose from auto, {', '.join(LIVE_ORDER)})")
    why = b.detect()
    if why:
        raise BackendError(f"backend {name}: {why}")
    return b


def backend_table() -> list[dict[str, Any]]:
    """Every backend with whether it can run here and why not."""
    rows = []
    for b in BACKENDS.values():
        why = b.detect()
        rows.append({"backend": b.name, "live": b.live, "available": why is None, "reason": why or "", "help": b.help})
    return rows
