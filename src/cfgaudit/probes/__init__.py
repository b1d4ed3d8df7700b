"""Event sources behind one table, like pciutils' access methods (``struct pci_methods``).

Each backend row has a name, one line of help, ``detect(paths)`` (``None`` when it can run here,
else why not; it only looks), ``note(paths)`` (what opening it will do to the host, "" for
nothing) and ``open(opts)``, which returns a :class:`~cfgaudit.probes.session.Session`: live
backends take :class:`LiveOptions`, replay takes :class:`ReplayOptions`. A new live backend is a
BPF file, a :class:`~cfgaudit.probes.session.RingBufferSession` subclass with its ``decode()``,
and a row here. bcc is imported lazily, inside probes/bccutil.py only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BackendError
from ..hostpaths import DEFAULT, HostPaths
from .bccutil import prepare_host, tracefs_note
from .guard import detect_guard
from .kernel import KernelSession, detect_kernel, doe_status
from .replay import ReplayOptions, ReplaySession
from .session import LiveOptions, Session
from .syscalls import SyscallSession, detect_syscalls

__all__ = ["Backend", "BACKENDS", "GUARD", "LIVE_ORDER", "pick_backend", "backend_table", "prepare_host", "LiveOptions",
           "ReplayOptions", "Session"]


def _nothing(paths: HostPaths) -> str:
    return ""


def _doe_unseen(paths: HostPaths) -> str:
    return "not traced: system calls do not show the kernel's own DOE exchanges (the kernel backend records them)"


def _doe_recorded(paths: HostPaths) -> str:
    return "as recorded (the trace header's doe_exchanges)"


@dataclass(frozen=True)
class Backend:
    """One row: ``detect(paths)`` -> why not (or ``None``), ``open(opts)`` -> a Session (typed
    ``Any`` so each row's own session type shows through, e.g. replay's ``header`` and ``tables()``)."""

    name: str
    help: str
    live: bool
    detect: Callable[[HostPaths], str | None]
    open: Callable[[Any], Any]
    note: Callable[[HostPaths], str] = _nothing
    # whether its events include the kernel's own DOE exchanges (collision detection): "traced"
    # or "not traced: why"
    doe_exchanges: Callable[[HostPaths], str] = _doe_recorded


def _can_run(paths: HostPaths) -> str | None:
    return None


BACKENDS: dict[str, Backend] = {
    "kernel": Backend("kernel", "kprobes on pci_user_write_config_*: sysfs, /proc/bus/pci and VFIO writes "
                      "however issued, with the kernel's own verdict", True, detect_kernel, KernelSession,
                      tracefs_note, doe_status),
    "syscalls": Backend("syscalls", "syscall tracepoints (open, openat, pwrite64, write, writev, lseek, dup, close, "
                        "ioperm, iopl, io_uring_setup): sysfs and /proc/bus/pci, no kprobes needed; says when "
                        "VFIO or io_uring could write unseen", True, detect_syscalls,
                        SyscallSession, tracefs_note, _doe_unseen),
    "replay": Backend("replay", "recorded trace files (JSONL or Parquet); read-only, needs no root", False,
                      _can_run, ReplaySession),
}
LIVE_ORDER = ("kernel", "syscalls")  # preference of --backend auto


def _doe_guard(paths: HostPaths) -> str:
    return "not traced: the guard records only the writes it refuses"


def _guard_open(opts: Any) -> Any:
    raise BackendError("the guard opens with a policy (cfgaudit guard; live.LiveRun with a GuardConfig)")


# Not a tracing backend (never picked by --backend): cfgaudit guard / run --guard open a
# GuardSession with a policy (live.py); doctor lists it so an operator sees whether it can run here.
GUARD = Backend("guard", "BPF-LSM (lsm/file_permission): refuses user writes into owned config bytes "
                "(cfgaudit guard; opt-in)", False, detect_guard, _guard_open, tracefs_note, _doe_guard)


def pick_backend(name: str, paths: HostPaths = DEFAULT) -> Backend:
    """The live backend called ``name``, or for ``auto`` the best one that can run here."""
    if name == "auto":
        reasons = []
        for n in LIVE_ORDER:
            why = BACKENDS[n].detect(paths)
            if why is None:
                return BACKENDS[n]
            reasons.append(f"{n}: {why}")
        raise BackendError("no live backend can run here (" + "; ".join(reasons) + "); see 'cfgaudit doctor'")
    b = BACKENDS.get(name)
    if b is None or not b.live:
        raise BackendError(f"no live backend {name!r} (choose from auto, {', '.join(LIVE_ORDER)})")
    why = b.detect(paths)
    if why:
        raise BackendError(f"backend {name}: {why}")
    return b


def backend_table(paths: HostPaths = DEFAULT) -> list[dict[str, Any]]:
    """Every backend with whether it can run here, why not, (``note``) what a session will do to
    the host when it starts (mount tracefs) and (``doe_exchanges``) whether it would record the
    kernel's own DOE exchanges, which collision detection needs. Only looks."""
    rows = []
    for b in (*BACKENDS.values(), GUARD):
        why = b.detect(paths)
        rows.append({"backend": b.name, "live": b.live, "available": why is None, "reason": why or "",
                     "note": b.note(paths) if why is None else "", "help": b.help,
                     "doe_exchanges": b.doe_exchanges(paths)})
    return rows
