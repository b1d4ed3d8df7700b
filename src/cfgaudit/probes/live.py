"""Live backends on bcc. ``bcc`` is imported here only, lazily.

The syscall backend (``syscalls``) needs only syscall tracepoints: it follows opens of PCI
config files (sysfs and /proc/bus/pci), the fd table (dup, fcntl, close, fork) and the file
position (lseek, write, read), and reports every write (and with ``reads``, every read) on
those files, plus grants of unmediated access (ioperm/iopl reaching 0xCF8-0xCFF, opens of
/dev/mem and /dev/port). The BPF side is bpf/cfgaudit_syscalls.bpf.c; the record layout is
bpf/cfgaudit_event.h, generated from events.RECORD_FIELDS.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import BackendError
from ..events import (DATA_MAX, RECORD_FIELDS, RECORD_TYPES, UNMEDIATED_KINDS, ConfigAccess, record_size)

__all__ = ["import_bcc", "detect_syscalls", "SyscallSession", "LiveOptions", "BPF_DIR", "record_struct",
           "decode_record", "resolve_config_path", "Notice"]

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
SYSCALL_PROGRAM = "cfgaudit_syscalls.bpf.c"
_FMT = {"__u64": "Q", "__s64": "q", "__u32": "I", "__s32": "i", "__u16": "H", "__u8": "B", "char": "s"}
EV = RECORD_TYPES
UM_NAMES = {v: k[3:].lower() for k, v in UNMEDIATED_KINDS.items()}
_BDF = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BCC_HINT = ("install bcc's Python module from the distribution: 'apt install python3-bpfcc' (Debian/Ubuntu) "
            "or 'dnf install python3-bcc' (Fedora/RHEL); PyPI's package named 'bcc' is unrelated")


def record_struct() -> struct.Struct:
    """A struct.Struct for one record, built from events.RECORD_FIELDS."""
    fmt = "<" + "".join(f"{n}s" if n else _FMT[ctype] for _, ctype, n, _ in RECORD_FIELDS)
    st = struct.Struct(fmt)
    assert st.size == record_size(), (st.size, record_size())
    return st


_REC = record_struct()
_NAMES = [f[0] for f in RECORD_FIELDS]


def decode_record(raw: bytes) -> dict[str, Any]:
    """One raw record (and, for OPEN/UNMEDIATED opens, its path) as a dict."""
    vals = dict(zip(_NAMES, _REC.unpack_from(raw, 0)))
    vals["comm"] = vals["comm"].split(b"\0", 1)[0].decode("utf-8", "replace")
    vals["data"] = bytes(vals["data"][: min(vals["data_len"], DATA_MAX)])
    if len(raw) > _REC.size:
        vals["path"] = raw[_REC.size:].split(b"\0", 1)[0].decode("utf-8", "replace")
    return vals


# --------------------------------------------------------------------------------------
# bcc and the kernel
# --------------------------------------------------------------------------------------
def import_bcc() -> Any:
    """Import the distribution's bcc module, also from inside a virtualenv."""
    try:
        import bcc  # type: ignore

        if hasattr(bcc, "BPF"):
            return bcc
        raise BackendError(f"the 'bcc' module found ({getattr(bcc, '__file__', '?')}) is not BPF Compiler "
                           f"Collection: {BCC_HINT}")
    except ImportError:
        pass
    for d in ["/usr/lib/python3/dist-packages", *sorted(glob.glob("/usr/lib/python3*/site-packages")),
              *sorted(glob.glob("/usr/lib64/python3*/site-packages"))]:
        if os.path.exists(os.path.join(d, "bcc", "__init__.py")) and d not in sys.path:
            sys.path.append(d)
            try:
                import bcc  # type: ignore

                return bcc
            except ImportError:
                sys.path.remove(d)
    raise BackendError(f"bcc is not installed: {BCC_HINT}")


def tracefs_root() -> str | None:
    for d in TRACEFS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def ensure_tracefs() -> None:
    """Mount tracefs/debugfs where bcc looks for them, if they are missing (root only)."""
    if tracefs_root() and os.path.isdir("/sys/kernel/debug/tracing/events"):
        return
    import subprocess

    for fstype, where in (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug")):
        if os.path.isdir(where) and not os.path.ismount(where):
            subprocess.run(["mount", "-t", fstype, "nodev", where], capture_output=True)


def kernel_headers() -> str | None:
    rel = os.uname().release
    for p in (f"/lib/modules/{rel}/build/include/generated/autoconf.h", "/sys/kernel/kheaders.tar.xz"):
        if os.path.exists(p):
            return p
    return None


def detect_syscalls() -> str | None:
    """Why the syscall backend cannot run here, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF and CAP_PERFMON): run with sudo"
    try:
        import_bcc()
    except BackendError as err:
        return err.message
    if kernel_headers() is None:
        return (f"no kernel headers for {os.uname().release}: install linux-headers-$(uname -r), or link "
                f"/lib/modules/{os.uname().release}/build to a headers tree ('make deps' does this)")
    ensure_tracefs()
    root = tracefs_root()
    if root is None:
        return "tracefs is not mounted and could not be mounted (mount -t tracefs nodev /sys/kernel/tracing)"
    for tp in ("sys_enter_pwrite64", "sys_enter_openat", "sys_exit_write"):
        if not os.path.isdir(os.path.join(root, "events", "syscalls", tp)):
            return f"the kernel has no syscall tracepoint {tp} (CONFIG_FTRACE_SYSCALLS)"
    return None


# --------------------------------------------------------------------------------------
# Paths -> devices
# --------------------------------------------------------------------------------------
def resolve_config_path(real: str, sysfs_path: str, procfs_path: str) -> tuple[str, str] | None:
    """(bdf, via) for a resolved path of a PCI config file under the given trees, else ``None``."""
    real = os.path.normpath(real)
    if os.path.basename(real) == "config":
        bdf = os.path.basename(os.path.dirname(real))
        if _BDF.match(bdf):
            want = os.path.realpath(os.path.join(sysfs_path, "devices", bdf, "config"))
            if want == real:
                return bdf, "sysfs"
    proc = os.path.realpath(procfs_path)
    if real.startswith(proc + os.sep):
        rel = real[len(proc) + 1:].split(os.sep)
        if len(rel) == 2:
            busdir, devfn = rel
            m = re.match(r"^(?:([0-9a-f]{4,8}):)?([0-9a-f]{2})$", busdir)
            n = re.match(r"^([0-1][0-9a-f])\.([0-7])$", devfn)
            if m and n:
                return f"{int(m[1] or '0', 16):04x}:{m[2]}:{n[1]}.{n[2]}", "procfs"
    return None


@dataclass
class LiveOptions:
    """What to trace. Sizes in pages of 4 KiB; ``pid``: a thread group (0 = all)."""

    sysfs_path: str = "/sys/bus/pci"
    procfs_path: str = "/proc/bus/pci"
    pid: int = 0
    follow: bool = False
    reads: bool = False
    buffer_pages: int = 4096
    comm: str | None = None
    bdfs: frozenset[str] | None = None


@dataclass
class Notice:
    """Something to report that is not a config access (unmediated access granted)."""

    ts_ns: int
    pid: int
    comm: str
    what: str
    via: str

    def to_record(self) -> dict[str, Any]:
        return {"record": "unmediated", "ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                "what": self.what, "via": self.via}


@dataclass
class _File:
    bdf: str | None
    via: str | None
    path: str


class SyscallSession:
    """A running syscall-tracepoint probe. Use as a context manager; ``poll()`` returns what
    arrived since the last call."""

    name = "syscalls"

    def __init__(self, opts: LiveOptions) -> None:
        if opts.buffer_pages < 2 or opts.buffer_pages & (opts.buffer_pages - 1):
            # one page is refused in practice (even the first records are lost): seen on 6.18
            raise BackendError(f"--buffer-pages must be a power of two, at least 2, not {opts.buffer_pages}")
        why = detect_syscalls()
        if why:
            raise BackendError(f"syscall backend: {why}")
        self.opts = opts
        self.bcc = import_bcc()
        self._raw: list[bytes] = []
        self._files: dict[int, _File] = {}
        self.notices: list[Notice] = []
        self.dropped_other = 0  # writes on files that turned out not to be config files
        self.unresolved = 0  # opens of possible config files closed (and moved away from) too fast to resolve
        self.sysfs_real = os.path.realpath(opts.sysfs_path)
        cflags = [f"-I{BPF_DIR}", f'-DSYSFS_PATH="{os.path.realpath(opts.sysfs_path)}"',
                  f'-DPROCFS_PATH="{os.path.realpath(opts.procfs_path)}"', f"-DTARGET_PID={int(opts.pid)}",
                  f"-DFOLLOW={int(opts.follow)}", f"-DTRACE_READS={int(opts.reads)}",
                  f"-DRINGBUF_PAGES={int(opts.buffer_pages)}", "-Wno-macro-redefined"]
        self.cflags = cflags
        try:
            self.bpf = self.bcc.BPF(src_file=os.path.join(BPF_DIR, SYSCALL_PROGRAM).encode(), cflags=cflags)
        except Exception as err:  # bcc raises bare Exception on compile errors
            raise BackendError(f"syscall backend: BPF program failed to load: {err}") from err
        self._cb = self._on_record  # keep a reference for ctypes
        self.bpf[b"events"].open_ring_buffer(self._cb)

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> "SyscallSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "bpf", None) is not None:
            self.bpf.cleanup()
            self.bpf = None

    def follow_pid(self, pid: int) -> None:
        """Start tracing ``pid`` (and, with FOLLOW, its descendants)."""
        t = self.bpf[b"traced"]
        t[t.Key(pid)] = t.Leaf(1)

    # -- records -----------------------------------------------------------------------
    def _on_record(self, ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, size))
        return 0

    @property
    def lost(self) -> int:
        """Records the kernel could not put in the ring buffer (exact, summed over CPUs)."""
        return int(sum(self.bpf[b"lost"][0]))

    def poll(self, timeout_ms: int = 100) -> tuple[list[ConfigAccess], list[Notice]]:
        self.bpf.ring_buffer_poll(timeout_ms)
        raw, self._raw = self._raw, []
        events: list[ConfigAccess] = []
        notices: list[Notice] = []
        for r in raw:
            self._handle(r, events, notices)
        self.notices += notices
        return events, notices

    def drain(self) -> tuple[list[ConfigAccess], list[Notice]]:
        """Everything still in the buffer."""
        out_e: list[ConfigAccess] = []
        out_n: list[Notice] = []
        while True:
            self.bpf.ring_buffer_consume()
            if not self._raw:
                return out_e, out_n
            e, n = self.poll(0)
            out_e += e
            out_n += n

    def _handle(self, raw: bytes, events: list[ConfigAccess], notices: list[Notice]) -> None:
        rec = decode_record(raw)
        t = rec["type"]
        if t in (EV["EV_WRITE"], EV["EV_READ"]):
            f = self._files.get(rec["file_id"])
            if f is None or f.bdf is None:
                self.dropped_other += 1
                return
            if self.opts.comm and rec["comm"] != self.opts.comm:
                return
            if self.opts.bdfs and f.bdf not in self.opts.bdfs:
                return
            events.append(ConfigAccess(
                ts_ns=rec["ts_ns"], pid=rec["pid"], comm=rec["comm"], op="write" if t == EV["EV_WRITE"] else "read",
                bdf=f.bdf, offset=max(rec["offset"], 0), size=rec["size"], tid=rec["tid"], uid=rec["uid"],
                data=rec["data"].hex() if rec["data"] else None, via=f.via, ret=rec["ret"]))
        elif t == EV["EV_OPEN"]:
            self._on_open(rec)
        elif t == EV["EV_UNMEDIATED"]:
            kind = UM_NAMES.get(rec["aux"], "?")
            if kind == "ioperm":
                what = f"ioperm({rec['offset']:#x}, {rec['size']}, 1): config ports 0xcf8-0xcff reachable"
                via = "ioport"
            elif kind == "iopl":
                what = f"iopl({rec['size']}): every I/O port reachable, config ports included"
                via = "ioport"
            else:
                what = f"opened {rec.get('path', '?')}: config space reachable through memory or ports"
                via = "devmem" if kind == "devmem" else "ioport"
            notices.append(Notice(rec["ts_ns"], rec["pid"], rec["comm"], what, via))
        elif t == EV["EV_EXIT"]:
            self._forget_process(rec["pid"])
        # EV_CLOSE / EV_DUP: the kernel keeps the fd table; file ids stay valid for later records

    def _on_open(self, rec: dict[str, Any]) -> None:
        pid, fd, path = rec["pid"], rec["fd"], rec.get("path", "")
        real = None
        try:
            real = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            try:
                base = path if os.path.isabs(path) else os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)
                real = os.path.realpath(base)
            except OSError:
                real = os.path.realpath(path) if os.path.isabs(path) else None
        hit = resolve_config_path(real, self.opts.sysfs_path, self.opts.procfs_path) if real else None
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


def run_session(session: SyscallSession, on_batch: Callable[[list[ConfigAccess], list[Notice]], None],
                stop: Callable[[], bool], poll_ms: int = 100) -> None:
    """Poll until ``stop()`` says so, then drain; every batch goes to ``on_batch``."""
    while not stop():
        ev, no = session.poll(poll_ms)
        if ev or no:
            on_batch(ev, no)
    ev, no = session.drain()
    if ev or no:
        on_batch(ev, no)


def iter_session(session: SyscallSession, duration_s: float | None = None) -> Iterator[ConfigAccess]:
    """Events for ``duration_s`` seconds (tests and simple scripts)."""
    end = None if duration_s is None else time.monotonic() + duration_s
    while end is None or time.monotonic() < end:
        ev, _ = session.poll(50)
        yield from ev
    yield from session.drain()[0]
