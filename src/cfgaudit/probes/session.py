"""The one live-session seam: the :class:`Session` protocol, :func:`run`, and the bcc ring-buffer
base every BPF backend is built on.

A session delivers :class:`Batch` es: an Arrow table of config accesses in the event schema
(events.arrow_schema()) and :class:`Notice` s of unmediated access. Live sessions (probes/syscalls.py,
probes/kernel.py) are :class:`RingBufferSession` s: the base owns the option checks, detection
before load, the load error, the -D constants, the raw-record callback, the reader thread, the
exact lost count, the final drain, the follow filter and the cleanup; a backend adds its BPF file,
its constants, its attach step and ``decode()``. The replay session (probes/replay.py) follows
the same protocol over recorded files.

Times are ns (``ts_ns``: CLOCK_MONOTONIC, as the probes stamp them); ``poll_ms``/``timeout_ms``
are ms; ``buffer_pages`` is in 4 KiB pages.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, ClassVar, Iterable, NamedTuple, Protocol, Self, runtime_checkable

import pyarrow as pa

from ..errors import BackendError, is_utf8_text
from ..events import FIELDS, ConfigAccess, arrow_schema, record_size
from ..hostpaths import DEFAULT, HostPaths
from . import bpfcache
from .bccutil import (
    BPF_DIR,
    check_buffer_pages,
    define_flags,
    import_bcc,
    kernel_headers,
    prepare_host,
    program_text,
    tracefs_problem,
)

__all__ = ["Notice", "Batch", "SessionStats", "Session", "run", "LiveOptions", "RingBufferSession",
           "EMPTY_EVENTS", "concat_batches", "table_events"]

EMPTY_EVENTS = arrow_schema().empty_table()


@dataclass
class Notice:
    """Something to report that is not a config access: unmediated access granted (ioperm/iopl
    reaching the config ports, an open of /dev/mem or /dev/port), or a path to config space the
    backend cannot follow (an open of /dev/vfio/*, io_uring_setup()). ``ts_ns``: when; ``kind``:
    ioperm, iopl, devmem, devport, vfio, io_uring (events.UNMEDIATED_KINDS, lower case, without
    UM_), or "" when not known (traces written before it was recorded)."""

    ts_ns: int
    pid: int
    comm: str
    what: str
    via: str
    kind: str = ""

    def to_record(self) -> dict[str, Any]:
        """The trace-file line (``{"record": "unmediated", ...}``; ``kind`` when known)."""
        d: dict[str, Any] = {"record": "unmediated", "ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                             "what": self.what, "via": self.via}
        if self.kind:
            d["kind"] = self.kind
        return d

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "Notice":
        """The inverse of :meth:`to_record` (missing keys, or a trace's values of the wrong type:
        zero or empty; a notice is never an error)."""
        def num(v: Any) -> int:
            return v if isinstance(v, int) and not isinstance(v, bool) else 0

        def text(v: Any) -> str:
            return v if isinstance(v, str) and is_utf8_text(v) else ""

        return cls(num(d.get("ts_ns")), num(d.get("pid")), text(d.get("comm")), text(d.get("what")),
                   text(d.get("via")), text(d.get("kind")))


class Batch(NamedTuple):
    """What one poll brought: config accesses (``events``, event schema) and ``notices``."""

    events: pa.Table
    notices: list[Notice]

    @classmethod
    def empty(cls) -> "Batch":
        return cls(EMPTY_EVENTS, [])

    def is_empty(self) -> bool:
        return self.events.num_rows == 0 and not self.notices


def concat_batches(batches: Iterable[Batch]) -> Batch:
    """One batch of everything in ``batches``, in order."""
    tables: list[pa.Table] = []
    notices: list[Notice] = []
    for b in batches:
        if b.events.num_rows:
            tables.append(b.events)
        notices += b.notices
    if not tables:
        return Batch(EMPTY_EVENTS, notices)
    return Batch(tables[0] if len(tables) == 1 else pa.concat_tables(tables), notices)


@dataclass
class SessionStats:
    """Counts of a session so far. ``lost``: records the ring buffer could not take (exact, summed
    over CPUs; replay: the traces' footers); ``dropped_other``: records about files or calls that
    turned out not to be config accesses; ``unresolved``: opens of possible config files closed
    (and moved away from) too fast to resolve; ``skipped``: malformed trace lines (replay);
    ``extra``: backend-specific facts (kernel: the probes attached)."""

    lost: int = 0
    dropped_other: int = 0
    unresolved: int = 0
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Session(Protocol):
    """A source of batches: open (``BACKENDS[name].open(opts)``), :meth:`start`, :meth:`poll`
    until done, :meth:`drain`, :meth:`close` (or use it as a context manager)."""

    name: str

    def start(self) -> None:
        """Begin delivering (bcc: start the ring-buffer reader thread). :meth:`poll` works without it."""

    def poll(self, timeout_ms: int = 100) -> Batch:
        """What arrived since the last call, waiting up to ``timeout_ms`` for it."""

    def drain(self) -> Batch:
        """Stop reading and return everything left."""

    def stats(self) -> SessionStats: ...

    def follow_pid(self, pid: int) -> None:
        """Trace ``pid`` (and, when following, its descendants) from now on."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def run(session: Session, on_batch: Callable[[Batch], None], stop: Callable[[], bool], poll_ms: int = 100) -> None:
    """Start ``session``, poll it every ``poll_ms`` until ``stop()`` says so, then drain it; every
    non-empty batch goes to ``on_batch``."""
    session.start()
    while not stop():
        b = session.poll(poll_ms)
        if not b.is_empty():
            on_batch(b)
    b = session.drain()
    if not b.is_empty():
        on_batch(b)


def table_events(t: pa.Table) -> list[ConfigAccess]:
    """An event table as ConfigAccess objects (slow; for tests and small scripts)."""
    names = [f.name for f in FIELDS]
    return [ConfigAccess(**{k: row.get(k) for k in names}) for row in t.to_pylist()]


@dataclass(frozen=True)
class LiveOptions:
    """What a live session traces. ``paths``: the host's trees (``paths.sysfs``/``paths.procfs``:
    the config files to watch, ``paths.proc`` for /proc/PID/fd, ``paths.tracefs``); ``pid``: one
    thread group (0 = all); ``follow``: only processes given to ``follow_pid()`` and their
    descendants; ``reads``: reads too; ``buffer_pages``: ring buffer size in 4 KiB pages (a power
    of two); ``comm``/``bdfs``: keep only this process name / these devices; ``bpf_cache``: the
    directory of compiled programs (probes/bpfcache.py; ``None``: ``$CFGAUDIT_BPF_CACHE``, else
    /var/cache/cfgaudit/bpf; ``"off"``: compile every time)."""

    paths: HostPaths = DEFAULT
    pid: int = 0
    follow: bool = False
    reads: bool = False
    buffer_pages: int = 4096
    comm: str | None = None
    bdfs: frozenset[str] | None = None
    bpf_cache: str | None = None


class RingBufferSession:
    """A running bcc program that sends records through the ``events`` ring buffer (see
    bpf/cfgaudit_common.bpf.h). Subclasses set :attr:`name`, :attr:`program`, :attr:`record_layout`
    and :attr:`tracepoints` and provide :meth:`detect` and :meth:`decode` (and, where needed,
    :meth:`constants` and :meth:`attach`). Use as a context manager.

    The program is compiled by bcc, or, for a :attr:`cacheable` one (tracepoint programs only),
    loaded from the cache of an earlier compile (probes/bpfcache.py). Either way every map is
    filled (:meth:`setup_maps`) before the first probe is attached. ``warnings``: what to tell
    the user (the cache could not be used); ``timings``: seconds per step of the start, and
    whether the cache served it ("cache": hit | miss | off | refused)."""

    name: str = ""
    program: ClassVar[str] = ""            # file in bpf/
    record_layout: ClassVar[str] = "event"  # events.RECORD_LAYOUTS: the usual record; others are "odd"
    tracepoints: ClassVar[tuple[tuple[str, str], ...]] = ()  # (category, event) the program needs
    cacheable: ClassVar[bool] = False      # tracepoint programs only: loaded from bpfcache when it can
    # -D constants that only size a map: (map, bytes per unit); a cached program is resized at load.
    map_sizes: ClassVar[dict[str, tuple[str, int]]] = {"RINGBUF_PAGES": ("events", 4096)}

    def __init__(self, opts: LiveOptions) -> None:
        check_buffer_pages(opts.buffer_pages)
        why = self.detect(opts.paths)
        if why:
            raise BackendError(f"{self.name} backend: {why}")
        prepare_host(opts.paths)  # tracefs, if it is not mounted yet; checked just below
        why = tracefs_problem(opts.paths, self.tracepoints, mountable_ok=False)
        if why:
            raise BackendError(f"{self.name} backend: {why}")
        self.opts = opts
        self.bcc = import_bcc()
        self._size = record_size(self.record_layout)
        self._raw: list[bytes] = []
        self._odd: list[int] = []  # positions in _raw of records not of the usual size
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stop_reader = threading.Event()
        self._lost_final = 0
        self.dropped_other = 0
        self.unresolved = 0
        self.warnings: list[str] = []
        self.timings: dict[str, Any] = {}
        self.cflags = [f"-I{BPF_DIR}", *define_flags(self.constants()), "-Wno-macro-redefined"]
        try:
            self.bpf: Any = self._load()
        except BackendError:
            raise
        except Exception as err:  # bcc raises bare Exception on compile and load errors
            raise BackendError(f"{self.name} backend: BPF program failed to load: {err}") from err
        try:
            self.attach()
            if "ring_buffer" not in self.timings:
                self._open_ring(self.bpf)
        except BaseException:
            self._cleanup_bpf()
            raise

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> Any:
        """The program with its maps filled and its tracepoints attached: from the cache when
        it has a usable entry, else compiled by bcc (and saved for next time)."""
        text = program_text(self.program).encode()
        directory = bpfcache.cache_dir(self.opts.bpf_cache) if self.cacheable else None
        self.timings["cache"] = "off" if directory is None else "miss"
        key = ""
        if directory is not None:
            problem = bpfcache.prepare_dir(directory)
            if problem:
                self.warnings.append(f"compiled BPF programs are not cached: {problem} "
                                     f"(the directory must be this user's, mode 0700; or set {bpfcache.ENV}=off)")
                self.timings["cache"] = "refused"
                directory = None
        if directory is not None:
            t = time.perf_counter()
            key = bpfcache.cache_key(self.bcc.__version__, text, self.cflags, self.map_sizes,
                                     extra=[self._headers_id()])
            try:
                entry = bpfcache.read_entry(directory, key)
                if entry is not None:
                    bpf = bpfcache.load_entry(self.bcc, entry, self._tracefs(), self._map_entries(), self.setup_maps)
                    loaded = time.perf_counter() - t
                    try:  # here, so that a bcc the cached object does not suit falls back to compiling too
                        self._open_ring(bpf)
                    except BaseException:
                        bpf.cleanup()
                        raise
                    self.timings.update(cache="hit", cached_load=loaded)
                    return bpf
            except Exception as err:  # CacheError, and whatever else an entry can do to bcc: compile instead
                self.warnings.append(f"cached BPF program {bpfcache.entry_path(directory, key)} not used: {err}; "
                                     "compiling it again")
                bpfcache.remove_entry(directory, key)
        t = time.perf_counter()
        bpf = bpfcache.compile_program(self.bcc, text, self.cflags)
        self.timings["compile"] = time.perf_counter() - t
        try:
            if directory is not None:
                t = time.perf_counter()
                try:
                    bpfcache.write_entry(directory, key, bpfcache.make_entry(self.bcc, bpf, self._tracefs()))
                except Exception as err:  # saving is best-effort: CacheError, OSError, a bcc it does not suit
                    self.warnings.append(f"compiled BPF program not cached in {directory}: {err}")
                self.timings["save"] = time.perf_counter() - t
            t = time.perf_counter()
            self.setup_maps(bpf)
            bpfcache.attach_compiled(bpf)
            self.timings["load_attach"] = time.perf_counter() - t
        except BaseException:
            bpf.cleanup()
            raise
        return bpf

    def _open_ring(self, bpf: Any) -> None:
        t = time.perf_counter()
        self._cb = self._on_record  # keep a reference for ctypes
        bpf[b"events"].open_ring_buffer(self._cb)
        self.timings["ring_buffer"] = time.perf_counter() - t

    def _map_entries(self) -> dict[str, int]:
        """max_entries of the maps sized by -D constants (:attr:`map_sizes`)."""
        consts = self.constants()
        return {m: int(consts[c]) * unit for c, (m, unit) in self.map_sizes.items() if c in consts}

    def _tracefs(self) -> str:
        root = self.opts.paths.tracefs_root()
        if root is None:  # checked before loading: only a race with an unmount gets here
            raise BackendError(f"{self.name} backend: tracefs is not mounted")
        return root

    @staticmethod
    def _headers_id() -> str:
        """Which kernel headers bcc compiles against (a link can be repointed without a new kernel)."""
        h = kernel_headers()
        if h is None:
            return ""
        st = os.stat(h)
        return f"{os.path.realpath(h)}:{st.st_size}:{st.st_mtime_ns}"

    def setup_maps(self, bpf: Any) -> None:
        """Fill the maps the program reads before its probes run: ``target_pid`` (-p)."""
        if self.opts.pid:
            t = bpf[b"target_pid"]
            t[t.Key(0)] = t.Leaf(int(self.opts.pid))

    def _cleanup_bpf(self) -> None:
        """Detach (every tracepoint at once) and close everything of the program."""
        bpf, self.bpf = self.bpf, None
        try:
            bpfcache.detach_tracepoints(self.bcc, bpf)
        finally:
            bpf.cleanup()

    # -- what a backend provides -------------------------------------------------------
    @staticmethod
    def detect(paths: HostPaths) -> str | None:
        """Why this backend cannot run here, or ``None``. Only looks."""
        raise NotImplementedError

    def constants(self) -> dict[str, int | bool | str]:
        """The program's -D constants (bpf/cfgaudit_common.bpf.h names the shared ones)."""
        o = self.opts
        return {"FOLLOW": o.follow, "TRACE_READS": o.reads,
                "RINGBUF_PAGES": int(o.buffer_pages)}

    def attach(self) -> None:
        """Attach what bcc does not attach by itself (tracepoint programs attach at load)."""

    def decode(self, records: list[bytes], odd: list[int]) -> Batch:
        """Raw records, in arrival order, to a batch. ``odd``: positions in ``records`` of those
        whose size is not the usual record's (``record_layout``)."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop_reading()
        if getattr(self, "bpf", None) is not None:
            self._lost_final = self._read_lost()
            self._cleanup_bpf()

    def follow_pid(self, pid: int) -> None:
        """Start tracing ``pid`` (and, with ``follow``, its descendants): the ``traced`` map."""
        t = self.bpf[b"traced"]
        t[t.Key(pid)] = t.Leaf(1)

    # -- records -----------------------------------------------------------------------
    def _on_record(self, ctx: Any, data: Any, size: int) -> int:
        rec = ctypes.string_at(data, size)
        with self._lock:
            if size != self._size:  # a boundary for the vectorised decoder
                self._odd.append(len(self._raw))
            self._raw.append(rec)
        return 0

    def start(self) -> None:
        """Drain the ring buffer from a thread of its own, so decoding, analysis and writing in
        the caller's thread (numpy and Arrow release the GIL) do not hold the buffer up."""
        if self._reader is not None:
            return

        def loop() -> None:
            while not self._stop_reader.is_set():
                self.bpf.ring_buffer_poll(20)

        self._reader = threading.Thread(target=loop, name=f"cfgaudit-{self.name}-ringbuf", daemon=True)
        self._reader.start()

    def _stop_reading(self) -> None:
        if self._reader is not None:
            self._stop_reader.set()
            self._reader.join()
            self._reader = None

    def _read_lost(self) -> int:
        return int(sum(self.bpf[b"lost"][0]))

    def stats(self) -> SessionStats:
        lost = self._read_lost() if getattr(self, "bpf", None) is not None else self._lost_final
        return SessionStats(lost=lost, dropped_other=self.dropped_other, unresolved=self.unresolved,
                            extra=self.stats_extra())

    def stats_extra(self) -> dict[str, Any]:
        return {}

    def doe_exchanges(self) -> str:
        """Whether this session records the kernel's own DOE exchanges (``doe_start``/``doe_end``
        events): ``traced``, or ``not traced: why`` (the trace header's ``doe_exchanges``)."""
        return (f"not traced: the {self.name} backend cannot see the kernel's own DOE exchanges "
                "(the kernel backend records them)")

    def poll(self, timeout_ms: int = 100) -> Batch:
        """Wait up to ``timeout_ms`` for records (without the reader thread: read them here);
        return what arrived."""
        if self._reader is None:
            self.bpf.ring_buffer_poll(timeout_ms)
        else:
            time.sleep(timeout_ms / 1000)
        return self._take()

    def drain(self) -> Batch:
        """Stop the reader thread and return everything still in the buffer."""
        self._stop_reading()
        batches = []
        while True:
            self.bpf.ring_buffer_consume()
            if not self._raw:
                break
            batches.append(self._take())
        return concat_batches(batches)

    def _take(self) -> Batch:
        with self._lock:
            raw, self._raw = self._raw, []
            odd, self._odd = self._odd, []
        if not raw:
            return Batch.empty()
        return self.decode(raw, odd)
