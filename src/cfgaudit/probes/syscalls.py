"""The syscall-tracepoint backend (``syscalls``): needs only syscall tracepoints, no kprobes.

It follows opens of PCI config files (sysfs and /proc/bus/pci), the fd table (dup, fcntl, close,
fork) and the file position (lseek, write, read), and reports every write (and with ``reads``,
every read) on those files, plus notices: grants of unmediated access (ioperm/iopl reaching
0xCF8-0xCFF, opens of /dev/mem and /dev/port) and the paths to config space it cannot follow
(opens of /dev/vfio/*: VFIO device fds; io_uring_setup(): writes submitted through a ring). The
BPF side is bpf/cfgaudit_syscalls.bpf.c; records are the structs of bpf/cfgaudit_event.h
(``event``; ``open`` for OPEN records and the opens among the notices, with the path), generated
from events.py. Offsets and sizes are bytes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..events import DATA_MAX, RECORD_TYPES, UNMEDIATED_KINDS, event_table
from ..hexarrow import encode_rows
from ..hostpaths import DEFAULT, HostPaths
from .bccutil import bcc_problem, headers_problem, record_dtype, tracefs_problem
from .session import EMPTY_EVENTS, Batch, LiveOptions, Notice, RingBufferSession, concat_batches

__all__ = ["SyscallSession", "LiveOptions", "detect_syscalls", "resolve_config_path", "decode_record",
           "TRACEPOINTS", "OPTIONAL_TRACEPOINTS", "SYSCALL_PROGRAM", "optional_tracepoints", "NOT_FOLLOWED"]

SYSCALL_PROGRAM = "cfgaudit_syscalls.bpf.c"
# Checked before load (the program uses more; these stand for the syscall tracepoints as a whole).
TRACEPOINTS = (("syscalls", "sys_enter_pwrite64"), ("syscalls", "sys_enter_openat"), ("syscalls", "sys_exit_write"),
               ("sched", "sched_process_fork"))
# Probes compiled in only where the kernel has their tracepoints (-D HAVE_...=1): open(2) exists on
# x86_64 but not arm64; io_uring_setup needs CONFIG_IO_URING.
OPTIONAL_TRACEPOINTS: dict[str, tuple[tuple[str, str], ...]] = {
    "HAVE_SYS_OPEN": (("syscalls", "sys_enter_open"), ("syscalls", "sys_exit_open")),
    "HAVE_IO_URING": (("syscalls", "sys_exit_io_uring_setup"),),
}
EV = RECORD_TYPES
UM_NAMES = {v: k[3:].lower() for k, v in UNMEDIATED_KINDS.items()}
_BDF = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
_DT = record_dtype("event")
_RW = (RECORD_TYPES["EV_WRITE"], RECORD_TYPES["EV_READ"])
_OPS = pa.array(["write", "read"])


def detect_syscalls(paths: HostPaths = DEFAULT) -> str | None:
    """Why the syscall backend cannot run here, or ``None`` when it can (tracefs not mounted
    but mountable counts: the session mounts it). Only looks."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF and CAP_PERFMON): run with sudo"
    return bcc_problem() or headers_problem() or tracefs_problem(paths, TRACEPOINTS, mountable_ok=True)


def optional_tracepoints(paths: HostPaths) -> dict[str, bool]:
    """Which :data:`OPTIONAL_TRACEPOINTS` groups the kernel has (all False when tracefs is not
    mounted). Only looks."""
    root = paths.tracefs_root()
    return {name: root is not None and all(os.path.isdir(os.path.join(root, "events", c, e)) for c, e in tps)
            for name, tps in OPTIONAL_TRACEPOINTS.items()}


def resolve_config_path(real: str, paths: HostPaths) -> tuple[str, str] | None:
    """(bdf, via) for a resolved path of a PCI config file under ``paths.sysfs`` or
    ``paths.procfs``, else ``None``."""
    real = os.path.normpath(real)
    if os.path.basename(real) == "config":
        bdf = os.path.basename(os.path.dirname(real))
        if _BDF.match(bdf):
            want = os.path.realpath(os.path.join(paths.sysfs, "devices", bdf, "config"))
            if want == real:
                return bdf, "sysfs"
    proc = os.path.realpath(paths.procfs)
    if real.startswith(proc + os.sep):
        rel = real[len(proc) + 1:].split(os.sep)
        if len(rel) == 2:
            busdir, devfn = rel
            m = re.match(r"^(?:([0-9a-f]{4,8}):)?([0-9a-f]{2})$", busdir)
            n = re.match(r"^([0-1][0-9a-f])\.([0-7])$", devfn)
            if m and n:
                return f"{int(m[1] or '0', 16):04x}:{m[2]}:{n[1]}.{n[2]}", "procfs"
    return None


def decode_record(raw: bytes) -> dict[str, Any]:
    """One raw record (and, for OPEN/UNMEDIATED opens, its path) as a dict."""
    rec = np.frombuffer(raw, dtype=_DT, count=1)[0]
    vals: dict[str, Any] = {name: rec[name].item() for name in _DT.names or () if name not in ("comm", "data")}
    vals["comm"] = bytes(rec["comm"]).split(b"\0", 1)[0].decode("utf-8", "replace")
    vals["data"] = rec["data"].tobytes()[: min(vals["data_len"], DATA_MAX)]
    if len(raw) > _DT.itemsize:
        vals["path"] = raw[_DT.itemsize:].split(b"\0", 1)[0].decode("utf-8", "replace")
    return vals


@dataclass
class _File:
    bdf: str | None
    via: str | None
    path: str


class SyscallSession(RingBufferSession):
    """A running syscall-tracepoint probe (see the module docstring)."""

    name = "syscalls"
    program = SYSCALL_PROGRAM
    record_layout = "event"
    tracepoints = TRACEPOINTS
    cacheable = True
    detect = staticmethod(detect_syscalls)

    def __init__(self, opts: LiveOptions) -> None:
        self._files: dict[int, _File] = {}
        super().__init__(opts)

    def constants(self) -> dict[str, int | bool | str]:
        p = self.opts.paths
        return {**super().constants(), "SYSFS_PATH": os.path.realpath(p.sysfs),
                "PROCFS_PATH": os.path.realpath(p.procfs), **optional_tracepoints(p)}

    def stats_extra(self) -> dict[str, Any]:
        """The optional probes compiled in (``HAVE_SYS_OPEN``, ``HAVE_IO_URING``: true or false)."""
        c = self.constants()
        return {name: bool(c[name]) for name in OPTIONAL_TRACEPOINTS}

    # -- records -----------------------------------------------------------------------
    def decode(self, records: list[bytes], odd: list[int]) -> Batch:
        """In order: runs of fixed-size records go through numpy at once; the long (OPEN)
        records between them are handled one by one."""
        batches: list[Batch] = []
        notices: list[Notice] = []
        start = 0
        for pos in odd + [len(records)]:
            if pos > start:
                batches.append(Batch(self._decode_run(records[start:pos], notices), []))
            if pos < len(records):
                self._handle(records[pos], notices)
            start = pos + 1
        out = concat_batches(batches)
        return Batch(out.events, notices)

    def _decode_run(self, run: list[bytes], notices: list[Notice]) -> pa.Table:
        """A run of fixed-size records -> event table, vectorised; the rare other fixed-size
        records in it (close, dup, exit, ioperm/iopl) are handled one by one."""
        arr = np.frombuffer(b"".join(run), dtype=_DT)
        rw = np.isin(arr["type"], _RW)
        if not rw.all():
            for i in np.flatnonzero(~rw):
                self._handle(run[i], notices)
            arr = arr[rw]
        fid = arr["file_id"]
        uniq, inv = np.unique(fid, return_inverse=True)
        files = [self._files.get(int(u)) for u in uniq]
        known = np.array([f is not None and f.bdf is not None for f in files], dtype=bool)
        keep = known[inv]
        if self.opts.comm:
            keep &= arr["comm"] == self.opts.comm.encode()[:15]
        if self.opts.bdfs:
            keep &= np.array([f is not None and f.bdf in self.opts.bdfs for f in files], dtype=bool)[inv]
        self.dropped_other += int((~known[inv]).sum())
        arr, inv = arr[keep], inv[keep]
        n = len(arr)
        if n == 0:
            return EMPTY_EVENTS
        bdfs = pa.array([f.bdf if f and f.bdf else "" for f in files], type=pa.string())
        vias = pa.array([f.via if f and f.via else "unknown" for f in files], type=pa.string())
        idx = pa.array(inv.astype(np.int32))
        cu, cinv = np.unique(arr["comm"], return_inverse=True)
        comm = pa.DictionaryArray.from_arrays(pa.array(cinv.astype(np.int32)),
                                              pa.array([c.decode("utf-8", "replace") for c in cu]))
        op = pa.DictionaryArray.from_arrays(pa.array((arr["type"] != RECORD_TYPES["EV_WRITE"]).astype(np.int32)), _OPS)
        cols = {
            "ts_ns": pa.array(arr["ts_ns"].astype(np.int64)),
            "pid": pa.array(arr["pid"].astype(np.int64)),
            "comm": comm.cast(pa.string()),
            "op": op.cast(pa.string()),
            "bdf": bdfs.take(idx),
            "offset": pa.array(np.maximum(arr["offset"], 0).astype(np.int64)),
            "size": pa.array(arr["size"].astype(np.int64)),
            "tid": pa.array(arr["tid"].astype(np.int64)),
            "uid": pa.array(arr["uid"].astype(np.int64)),
            "data": encode_rows(arr["data"], arr["data_len"]),
            "via": vias.take(idx),
            "ret": pa.array(arr["ret"].astype(np.int64)),
        }
        return event_table(cols, n)

    def _handle(self, raw: bytes, notices: list[Notice]) -> None:
        rec = decode_record(raw)
        t = rec["type"]
        if t == EV["EV_OPEN"]:
            self._on_open(rec)
        elif t == EV["EV_UNMEDIATED"]:
            notices.append(_unmediated(rec))
        elif t == EV["EV_EXIT"]:
            self._forget_process(rec["pid"])
        # EV_CLOSE / EV_DUP: the kernel keeps the fd table; file ids stay valid for later records

    def _on_open(self, rec: dict[str, Any]) -> None:
        pid, fd, path = rec["pid"], rec["fd"], rec.get("path", "")
        proc = os.path.join(self.opts.paths.proc, str(pid))
        real = None
        try:
            real = os.readlink(os.path.join(proc, "fd", str(fd)))
        except OSError:
            try:
                base = path if os.path.isabs(path) else os.path.join(os.readlink(os.path.join(proc, "cwd")), path)
                real = os.path.realpath(base)
            except OSError:
                real = os.path.realpath(path) if os.path.isabs(path) else None
        hit = resolve_config_path(real, self.opts.paths) if real else None
        if hit is None and (real is None or not os.path.exists(real)) and not os.path.isabs(path):
            self.unresolved += 1
        self._files[rec["file_id"]] = _File(hit[0] if hit else None, hit[1] if hit else None, real or path)
        if hit is None:  # not a config file: stop following it in the kernel
            fds = self.bpf[b"fds"]
            try:
                del fds[fds.Key(pid, fd)]
            except KeyError:
                pass

    def _forget_process(self, pid: int) -> None:
        fds = self.bpf[b"fds"]
        for k in [k for k in fds.keys() if k.tgid == pid]:
            try:
                del fds[k]
            except KeyError:
                pass


# How the notices of the paths this backend cannot follow (kinds vfio, io_uring) end.
NOT_FOLLOWED = "not visible to the syscall backend (the kernel backend sees them)"


def _unmediated(rec: dict[str, Any]) -> Notice:
    """The notice for an EV_UNMEDIATED record (``offset``: ioperm's first port; ``size``: its
    count of ports, or iopl's level; ``path``: what an open named)."""
    kind = UM_NAMES.get(rec["aux"], "?")
    path = rec.get("path", "?")
    if kind == "ioperm":
        what = f"ioperm({rec['offset']:#x}, {rec['size']}, 1): config ports 0xcf8-0xcff reachable"
        via = "ioport"
    elif kind == "iopl":
        what = f"iopl({rec['size']}): every I/O port reachable, config ports included"
        via = "ioport"
    elif kind == "vfio":
        what = f"opened {path}: config writes through a VFIO device are {NOT_FOLLOWED}"
        via = "vfio"
    elif kind == "io_uring":
        what = f"set up io_uring: writes to config files submitted through io_uring are {NOT_FOLLOWED}"
        via = "unknown"
    else:  # devmem, devport (and a kind this version does not know)
        what = f"opened {path}: config space reachable through memory or ports"
        via = "devmem" if kind == "devmem" else "ioport"
    return Notice(rec["ts_ns"], rec["pid"], rec["comm"], what, via, "" if kind == "?" else kind)
