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
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import BackendError
from ..events import (DATA_MAX, FIELDS, RECORD_FIELDS, RECORD_TYPES, UNMEDIATED_KINDS, ConfigAccess, arrow_schema,
                      record_size)

__all__ = ["import_bcc", "detect_syscalls", "SyscallSession", "LiveOptions", "BPF_DIR", "record_struct", "record_dtype", "table_events", "run_session",
           "decode_record", "resolve_config_path", "Notice", "hex_column"]

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
_NP = {"__u64": "<u8", "__s64": "<i8", "__u32": "<u4", "__s32": "<i4", "__u16": "<u2", "__u8": "u1", "char": "S1"}


def record_dtype() -> "np.dtype":
    """A numpy structured dtype for a run of records (vectorised decoding)."""
    fields = []
    for name, ctype, n, _ in RECORD_FIELDS:
        if ctype == "char":
            fields.append((name, f"S{n}"))
        elif n:
            fields.append((name, _NP[ctype], (n,)))
        else:
            fields.append((name, _NP[ctype]))
    dt = np.dtype(fields)
    assert dt.itemsize == record_size()
    return dt


_TYPE_OFF = sum({"__u64": 8, "__s64": 8, "__u32": 4, "__s32": 4, "__u16": 2, "__u8": 1, "char": 1}[t] * (n or 1)
                for name, t, n, _ in RECORD_FIELDS[: _NAMES.index("type")])
_RW = (RECORD_TYPES["EV_WRITE"], RECORD_TYPES["EV_READ"])


def decode_record(raw: bytes) -> dict[str, Any]:
    """One raw record (and, for OPEN/UNMEDIATED opens, its path) as a dict."""
    vals = dict(zip(_NAMES, _REC.unpack_from(raw, 0)))
    vals["comm"] = vals["comm"].split(b"\0", 1)[0].decode("utf-8", "replace")
    vals["data"] = bytes(vals["data"][: min(vals["data_len"], DATA_MAX)])
    if len(raw) > _REC.size:
        vals["path"] = raw[_REC.size:].split(b"\0", 1)[0].decode("utf-8", "replace")
    return vals


_DT = record_dtype()
_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint8).reshape(256, 2)
_EMPTY = arrow_schema().empty_table()


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return _EMPTY
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def hex_column(arr: "np.ndarray") -> pa.Array:
    """The ``data`` column (lower-case hex, null when empty) of records decoded with
    :func:`record_dtype` (or a dtype with the same ``data`` and ``data_len`` fields)."""
    n = len(arr)
    lens = 2 * np.minimum(arr["data_len"].astype(np.int64), DATA_MAX)
    width = int(lens.max()) // 2 if n else 0
    chars = _HEX[arr["data"][:, :width]].reshape(n, 2 * width)
    buf = chars[np.arange(2 * width)[None, :] < lens[:, None]]
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int32)
    data = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(buf.tobytes()))
    return pc.if_else(pa.array(lens > 0), data, pa.scalar(None, pa.string()))


def table_events(t: pa.Table) -> list[ConfigAccess]:
    names = [f.name for f in FIELDS]
    return [ConfigAccess(**{k: row.get(k) for k in names}) for row in t.to_pylist()]


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
        self._big: list[int] = []  # positions in _raw of records longer than the fixed record
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
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
        self._stop_reading()
        if getattr(self, "bpf", None) is not None:
            self.bpf.cleanup()
            self.bpf = None

    def follow_pid(self, pid: int) -> None:
        """Start tracing ``pid`` (and, with FOLLOW, its descendants)."""
        t = self.bpf[b"traced"]
        t[t.Key(pid)] = t.Leaf(1)

    # -- records -----------------------------------------------------------------------
    def _on_record(self, ctx: Any, data: Any, size: int) -> int:
        rec = ctypes.string_at(data, size)
        with self._lock:
            if size != _REC.size:  # an OPEN record (with its path): a boundary for the vector decoder
                self._big.append(len(self._raw))
            self._raw.append(rec)
        return 0

    def start_reader(self) -> None:
        """Drain the ring buffer from a thread of its own, so decoding, analysis and writing in
        the caller's thread (numpy and Arrow release the GIL) do not hold the buffer up."""
        if self._reader is not None:
            return

        def loop() -> None:
            while not self._stop_reader.is_set():
                self.bpf.ring_buffer_poll(20)

        self._reader = threading.Thread(target=loop, name="cfgaudit-ringbuf", daemon=True)
        self._reader.start()

    def _stop_reading(self) -> None:
        if self._reader is not None:
            self._stop_reader.set()
            self._reader.join()
            self._reader = None

    @property
    def lost(self) -> int:
        """Records the kernel could not put in the ring buffer (exact, summed over CPUs)."""
        return int(sum(self.bpf[b"lost"][0]))

    def poll(self, timeout_ms: int = 100) -> tuple[pa.Table, list[Notice]]:
        """Wait up to ``timeout_ms`` for records; return the config accesses that arrived (an
        Arrow table in the event schema) and any notices of unmediated access."""
        if self._reader is None:
            self.bpf.ring_buffer_poll(timeout_ms)
        else:
            time.sleep(timeout_ms / 1000)
        return self._process()

    def drain(self) -> tuple[pa.Table, list[Notice]]:
        """Everything still in the buffer."""
        self._stop_reading()
        tables: list[pa.Table] = []
        notices: list[Notice] = []
        while True:
            self.bpf.ring_buffer_consume()
            if not self._raw:
                break
            t, n = self._process()
            tables.append(t)
            notices += n
        return _concat(tables), notices

    def poll_events(self, timeout_ms: int = 100) -> list[ConfigAccess]:
        """:meth:`poll` as ConfigAccess objects (slower; for tests and small scripts)."""
        return table_events(self.poll(timeout_ms)[0])

    def _process(self) -> tuple[pa.Table, list[Notice]]:
        """Decode what arrived, in order: runs of fixed-size records go through numpy at once;
        the long (OPEN) records between them are handled one by one."""
        with self._lock:
            raw, self._raw = self._raw, []
            big, self._big = self._big, []
        tables: list[pa.Table] = []
        notices: list[Notice] = []
        start = 0
        for pos in big + [len(raw)]:
            if pos > start:
                tables.append(self._decode_run(raw[start:pos], notices))
            if pos < len(raw):
                self._handle(raw[pos], notices)
            start = pos + 1
        self.notices += notices
        return _concat(tables), notices

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
            return _EMPTY
        bdfs = pa.array([f.bdf if f and f.bdf else "" for f in files], type=pa.string())
        vias = pa.array([f.via if f and f.via else "unknown" for f in files], type=pa.string())
        idx = pa.array(inv.astype(np.int32))
        cu, cinv = np.unique(arr["comm"], return_inverse=True)
        comm = pa.DictionaryArray.from_arrays(pa.array(cinv.astype(np.int32)),
                                              pa.array([c.decode("utf-8", "replace") for c in cu]))
        op = pa.DictionaryArray.from_arrays(pa.array((arr["type"] != RECORD_TYPES["EV_WRITE"]).astype(np.int32)),
                                            pa.array(["write", "read"]))
        data = hex_column(arr)
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
            "data": data,
            "via": vias.take(idx),
            "ret": pa.array(arr["ret"].astype(np.int64)),
            "kernel_verdict": pa.nulls(n, pa.bool_()),
        }
        return pa.table(cols, schema=arrow_schema())

    def _handle(self, raw: bytes, notices: list[Notice]) -> None:
        rec = decode_record(raw)
        t = rec["type"]
        if t == EV["EV_OPEN"]:
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


def run_session(session: SyscallSession, on_batch: Callable[[pa.Table, list[Notice]], None],
                stop: Callable[[], bool], poll_ms: int = 100) -> None:
    """Poll until ``stop()`` says so, then drain; every batch goes to ``on_batch``."""
    session.start_reader()
    while not stop():
        t, no = session.poll(poll_ms)
        if t.num_rows or no:
            on_batch(t, no)
    t, no = session.drain()
    if t.num_rows or no:
        on_batch(t, no)
