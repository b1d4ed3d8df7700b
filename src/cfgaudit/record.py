"""The recorder: ``cfgaudit record DIR`` as a library (issue 13), a live run that never ends.

:class:`Recorder` wraps one :class:`~cfgaudit.live.LiveRun` (``keep=False``: memory stays bounded
over days) and writes what it sees into rotated, self-contained segments under
``DIR/host=HOST/`` (docs/record.md is the contract):

* ``seg-<SEQ:08d>-<UTC start %Y%m%dT%H%M%SZ>.parquet``: a closed segment, a cfgaudit trace whose
  header embeds the snapshot, host, machine id, boot id, kernel and backend, and whose footer
  counts its events, losses and notices and says why it closed (``closed_by``);
* the open segment is the same name + ``PARTIAL_SUFFIX``: JSON Lines, flushed every batch, so
  ``cfgaudit analyze`` reads it at any moment and a crash leaves it readable. Closing a segment
  converts it to Parquet atomically (``<final>.tmp``, fsync, rename, then the partial goes).

Segments rotate by size (``rotate_bytes``: the open JSON Lines file), by time (``rotate_seconds``)
and on request (:meth:`Recorder.rotate_soon`: SIGHUP in the CLI). A restart first converts what a
crash left (:func:`recover_segments`) and continues the numbering. Closed segments beyond
``keep_bytes`` are deleted oldest first. Counters go to a Prometheus text file for node_exporter's
textfile collector (:func:`prometheus_text`, written atomically).

A write that fails while recording (disk full) closes the open segment as it is, and the
recorder goes on tracing (the counters keep counting; events seen meanwhile are counted as
unrecorded) and tries a new segment every :data:`RETRY_S` seconds or at the next rotation,
whichever comes first.

Sizes are bytes, times s (``*_s``) or ns (``*_ns``: wall clock where named ``unix``, else
CLOCK_MONOTONIC as the probes stamp events).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Callable

from .analyze.findings import FINDING_KINDS
from .errors import CfgauditError, InputError, OutputError, UsageError
from .live import LiveBatch, LiveRun, TraceConfig
from .probes.session import SessionStats
from .probes.tracefile import PARTIAL_SUFFIX, TMP_SUFFIX, TraceReader, TraceWriter, convert_trace

__all__ = ["RecordConfig", "Recorder", "SegmentInfo", "RecorderCounters", "recover_segments", "host_name",
           "host_dir", "segment_name", "segment_seq", "closed_segments", "next_seq", "enforce_retention",
           "prometheus_text", "write_metrics", "CLOSED_BY", "DEFAULT_ROTATE_BYTES", "DEFAULT_ROTATE_S"]

DEFAULT_ROTATE_BYTES = 64 << 20  # the open JSON Lines segment's size that closes it
DEFAULT_ROTATE_S = 3600.0
RETRY_S = 60.0  # after a failed write: try a new segment this often (or at the next rotation, if sooner)
METRICS_EVERY_S = 1.0  # the metrics file is rewritten at most this often when a counter changed ...
METRICS_IDLE_S = 30.0  # ... and at least this often otherwise (its mtime shows the recorder is alive)
MACHINE_ID = "/etc/machine-id"  # machine-id(5)
LOCK_NAME = ".cfgaudit-record.lock"  # one recorder per host directory (dot files are skipped by dataset readers)
# Why a segment closed (its footer's closed_by).
CLOSED_BY = ("size", "time", "sighup", "sigterm", "sigint", "duration", "recovered", "error")
_SEGMENT_RE = re.compile(r"^seg-(\d{8,})-(\d{8}T\d{6}Z)\.parquet$")  # a closed segment
_SEQ_RE = re.compile(r"^seg-(\d{8,})-")  # any file of a segment: closed, partial, .tmp
_HOST_BAD = re.compile(r"[^A-Za-z0-9._-]")

Warn = Callable[[str], None]


# -- names ---------------------------------------------------------------------------------
def host_name(name: str | None = None) -> str:
    """The host part of the layout: ``name`` (``--host``), or this host's name
    (socket.gethostname()) with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``.
    A given ``name`` must be made of those characters already (else a usage error)."""
    if name is not None:
        if not name or _HOST_BAD.search(name) or name in (".", ".."):
            raise UsageError(f"--host {name!r}: use letters, digits, '.', '_' and '-' only")
        return name
    return _HOST_BAD.sub("_", socket.gethostname()) or "_"


def host_dir(directory: str, host: str) -> str:
    """``DIR/host=HOST``: the hive-style partition of one host's segments."""
    return os.path.join(directory, f"host={host}")


def segment_name(seq: int, started_unix_ns: int) -> str:
    """``seg-<SEQ:08d>-<UTC start>.parquet``: names sort by sequence within a host."""
    return f"seg-{seq:08d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started_unix_ns // 1_000_000_000))}.parquet"


def segment_seq(name: str) -> int | None:
    """The sequence number of any file of a segment (closed, partial or .tmp), else ``None``."""
    m = _SEQ_RE.match(name)
    return int(m[1]) if m else None


def closed_segments(hdir: str) -> list[tuple[int, str, int]]:
    """(seq, path, bytes) of the closed segments in ``hdir``, oldest (lowest seq) first."""
    out = []
    with os.scandir(hdir) as it:
        for e in it:
            m = _SEGMENT_RE.match(e.name)
            if m and e.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    out.append((int(m[1]), e.path, e.stat(follow_symlinks=False).st_size))
    return sorted(out)


def next_seq(hdir: str) -> int:
    """One above the highest sequence number of any segment file in ``hdir`` (1 in an empty one)."""
    seqs = [s for s in (segment_seq(n) for n in os.listdir(hdir)) if s is not None]
    return max(seqs, default=0) + 1


# -- closing segments ----------------------------------------------------------------------
def convert_segment(partial: str, final: str, footer: dict[str, Any] | None = None, warn: Warn | None = None) -> int:
    """Convert the JSON Lines segment ``partial`` into the Parquet segment ``final`` atomically
    (probes.tracefile.convert_trace: ``final.tmp``, fsync, rename, then ``partial`` is removed).
    ``footer``: the footer to give it (the recorder knows its counts); ``None``: the partial's own
    footer, or, for a partial without one (what a crash leaves), one made of what it holds
    (``lost``: null, unknown). Returns the events converted. A failed write (disk full) is an
    :class:`OutputError` that leaves ``partial`` as it was and no ``final``."""
    def recovered(src: TraceReader, events: int, last_ts: int | None) -> dict[str, Any]:
        return _recovered_footer(partial, src.header, src.footer, events, len(src.notices), last_ts)

    return convert_trace(partial, final, recovered if footer is None else footer, warn)


def _recovered_footer(partial: str, header: dict[str, Any], footer: dict[str, Any], events: int, notices: int,
                      last_ts: int | None) -> dict[str, Any]:
    """The footer of a segment converted after the recorder that wrote it ended uncleanly."""
    if footer:  # closed, not yet converted: its counts stand
        out = {k: v for k, v in footer.items() if k != "record"}
        out.update(closed_by="recovered", recovered_from=footer.get("closed_by"))
        return out
    try:
        mtime_ns = os.stat(partial).st_mtime_ns  # the last flush: when the segment last grew
    except OSError:
        mtime_ns = None
    started = header.get("started_ns")
    return {"events": events, "lost": None, "unmediated": notices, "closed_by": "recovered",
            "ended_ns": last_ts if last_ts is not None else started, "ended_unix_ns": mtime_ns}


def recover_segments(hdir: str, warn: Warn | None = None) -> list[str]:
    """Finish what an earlier recorder left in ``hdir``: every ``.partial.jsonl`` becomes its
    Parquet segment (footer ``closed_by: recovered``), a leftover ``.tmp`` is removed, and a
    partial whose segment already exists (a crash between rename and unlink) is removed. A
    partial that cannot be read is renamed ``*.unreadable`` (kept, never deleted). Returns the
    segments made. Call it only while no recorder writes ``hdir`` (:class:`Recorder` holds a lock)."""
    warn = warn or (lambda m: None)
    made = []
    for name in sorted(os.listdir(hdir)):
        path = os.path.join(hdir, name)
        if segment_seq(name) is None:
            continue
        if name.endswith(".parquet" + TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        if not name.endswith(PARTIAL_SUFFIX):
            continue
        final = path[: -len(PARTIAL_SUFFIX)]
        if os.path.exists(final):
            os.unlink(path)
            continue
        try:
            n = convert_segment(path, final, warn=warn)
        except InputError as err:
            os.replace(path, path + ".unreadable")
            warn(f"{err}; kept as {os.path.basename(path)}.unreadable")
            continue
        made.append(final)
        warn(f"recovered {name} ({n} events): {os.path.basename(final)}")
    return made


def enforce_retention(hdir: str, keep_bytes: int) -> list[str]:
    """Delete closed segments of ``hdir``, oldest first, until they total at most ``keep_bytes``
    bytes (0: keep everything). The open segment (a partial) is never counted nor deleted.
    Returns the paths deleted."""
    if keep_bytes <= 0:
        return []
    segs = closed_segments(hdir)
    total = sum(n for _, _, n in segs)
    gone = []
    for _, path, n in segs:
        if total <= keep_bytes:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        total -= n
        gone.append(path)
    return gone


# -- metrics -------------------------------------------------------------------------------
@dataclass
class RecorderCounters:
    """What the recorder counted since it started (the metrics file's values)."""

    accesses: int = 0  # config accesses the tracer delivered
    findings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINDING_KINDS, 0))
    lost: int = 0  # events the ring buffer could not take
    unmediated: int = 0  # notices (unmediated access, paths the backend cannot follow)
    unrecorded: int = 0  # accesses seen while no segment could be written (disk full)
    write_errors: int = 0
    segments_closed: int = 0
    segments_deleted: int = 0
    disk_bytes: int = 0  # closed segments + the open one, in DIR/host=HOST
    open_seq: int = 0  # the open segment's sequence number (0: none open)
    last_rotation_unix_s: float = 0.0  # when the open segment was opened
    started_unix_s: float = 0.0


def _label(v: str) -> str:
    """A label value in the text format's escaping: backslash, double quote and line feed."""
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(c: RecorderCounters, host: str) -> str:
    """The counters in Prometheus' text exposition format (version 0.0.4: ``# HELP`` and ``# TYPE``
    lines, then ``name{labels} value`` samples; https://prometheus.io/docs/instrumenting/exposition_formats/),
    every sample labelled ``host``; what node_exporter's textfile collector reads."""
    h = f'host="{_label(host)}"'
    rows: list[tuple[str, str, str, list[tuple[str, float | int]]]] = [
        ("cfgaudit_accesses_total", "counter", "Config-space accesses the tracer delivered.", [(h, c.accesses)]),
        ("cfgaudit_findings_total", "counter", "Accesses into owned config-space bytes, by kind of finding.",
         [(f'{h},kind="{_label(k)}"', n) for k, n in sorted(c.findings.items())]),
        ("cfgaudit_lost_events_total", "counter", "Events the ring buffer could not take.", [(h, c.lost)]),
        ("cfgaudit_unmediated_total", "counter",
         "Notices: unmediated access (ioperm, iopl, /dev/mem) or paths the backend cannot follow.",
         [(h, c.unmediated)]),
        ("cfgaudit_unrecorded_accesses_total", "counter",
         "Accesses seen while no segment could be written (disk full).", [(h, c.unrecorded)]),
        ("cfgaudit_write_errors_total", "counter", "Failed writes of segments.", [(h, c.write_errors)]),
        ("cfgaudit_segments_closed_total", "counter", "Segments closed.", [(h, c.segments_closed)]),
        ("cfgaudit_segments_deleted_total", "counter", "Closed segments deleted to keep --keep-bytes.",
         [(h, c.segments_deleted)]),
        ("cfgaudit_disk_bytes", "gauge", "Bytes of this host's segments on disk, the open one included.",
         [(h, c.disk_bytes)]),
        ("cfgaudit_open_segment_seq", "gauge", "Sequence number of the open segment (0: none open).",
         [(h, c.open_seq)]),
        ("cfgaudit_last_rotation_timestamp_seconds", "gauge", "Unix time the open segment was opened.",
         [(h, c.last_rotation_unix_s)]),
        ("cfgaudit_start_time_seconds", "gauge", "Unix time the recorder started.", [(h, c.started_unix_s)]),
    ]
    out = []
    for name, typ, help_, samples in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {typ}"]
        out += [f"{name}{{{labels}}} {value if isinstance(value, int) else f'{value:.3f}'}"
                for labels, value in samples]
    return "\n".join(out) + "\n"


def write_metrics(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``path.tmp``, then rename: a scrape never sees half
    a file), mode 0644 (node_exporter reads it as another user)."""
    tmp = path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)  # whatever the umask
        data = text.encode()
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


# -- the recorder --------------------------------------------------------------------------
@dataclass
class RecordConfig:
    """Options of ``cfgaudit record``. ``directory``: DIR (segments go to DIR/host=HOST);
    ``trace``: the live options (its ``output`` and ``duration_s`` are not used: segments are the
    output, and the caller's ``stop`` ends the run); ``host``: HOST instead of this host's name;
    ``rotate_bytes``: close the open segment once its JSON Lines file reaches this many bytes;
    ``rotate_seconds``: ... once it is this many seconds old; ``keep_bytes``: delete closed
    segments, oldest first, beyond this many bytes (0: keep all); ``metrics``: the Prometheus
    text file to write (None: none); ``machine_id_path``: machine-id(5)."""

    directory: str
    trace: TraceConfig = field(default_factory=TraceConfig)
    host: str | None = None
    rotate_bytes: int = DEFAULT_ROTATE_BYTES
    rotate_seconds: float = DEFAULT_ROTATE_S
    keep_bytes: int = 0
    metrics: str | None = None
    machine_id_path: str = MACHINE_ID


@dataclass
class SegmentInfo:
    """A segment just closed: ``path`` (the Parquet file; its partial when it could not be
    converted), ``closed_by``, and its footer's counts."""

    seq: int
    path: str
    closed_by: str
    events: int
    lost: int
    unmediated: int
    converted: bool = True
    error: str | None = None


def _read_id(path: str) -> str | None:
    """The first line of a one-line file (machine-id, boot_id), stripped; ``None`` if unreadable."""
    try:
        with open(path) as fh:
            return fh.readline().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _check_directory(directory: str, hdir: str) -> None:
    """DIR and DIR/host=HOST exist (made when missing) and can be written; else an OutputError."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputError("not a directory", path=directory)
    try:
        os.makedirs(hdir, mode=0o750, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the segment directory: {err.strerror}", path=hdir) from err
    if not os.path.isdir(hdir):
        raise OutputError("not a directory", path=hdir)
    if not os.access(hdir, os.W_OK | os.X_OK):
        raise OutputError("cannot write here: permission denied (or a read-only file system)", path=hdir)


class Recorder:
    """``cfgaudit record`` (see the module docstring). Use as a context manager, then
    :meth:`run` until ``stop()`` gives a reason (``"sigterm"``, ``"sigint"``, ``"duration"``);
    whatever happens, the open segment is closed and converted.

    ``on_batch``: each :class:`~cfgaudit.live.LiveBatch` (to print findings); ``on_segment``:
    each :class:`SegmentInfo` closed; ``warn``: one line for each thing worth saying (a
    recovered segment, a failed write, recording resumed). ``clock``: monotonic seconds (tests)."""

    def __init__(self, cfg: RecordConfig, on_batch: Callable[[LiveBatch], None] | None = None,
                 on_segment: Callable[[SegmentInfo], None] | None = None, warn: Warn | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if cfg.rotate_bytes <= 0 or not cfg.rotate_seconds > 0 or cfg.keep_bytes < 0:
            raise UsageError("--rotate-bytes and --rotate-seconds must be above 0, --keep-bytes 0 or more")
        self.cfg = cfg
        self.on_batch = on_batch
        self.on_segment = on_segment
        self.warn = warn or (lambda m: None)
        self.clock = clock
        self.host = host_name(cfg.host)
        self.dir = host_dir(cfg.directory, self.host)
        _check_directory(cfg.directory, self.dir)
        if cfg.metrics:
            if os.path.isdir(cfg.metrics):
                raise OutputError("cannot write metrics: is a directory", path=cfg.metrics)
            if not os.path.isdir(os.path.dirname(os.path.abspath(cfg.metrics))):
                raise OutputError("cannot write metrics: no such directory", path=cfg.metrics)
        self._lock_fd = self._lock()
        try:
            self.live = LiveRun(replace(cfg.trace, output=None, duration_s=None), on_batch=self._batch, keep=False)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self.warnings = self.live.warnings
        self.load_warnings: list[str] = []
        self.machine_id = _read_id(cfg.machine_id_path)
        self.boot_id = _read_id(os.path.join(cfg.trace.paths.proc, "sys", "kernel", "random", "boot_id"))
        self.counters = RecorderCounters(started_unix_s=time.time())
        self.segments: deque[SegmentInfo] = deque(maxlen=1000)  # the last closed by this recorder
        self.seq = 0  # the open segment's (0: none)
        self.writer: TraceWriter | None = None
        self.partial = self.final = ""
        self._seg: dict[str, Any] = {}  # the open segment's counts and start
        self._rotate_reason: str | None = None
        self._retry_at: float | None = None  # suspended (a write failed): when to try a new segment
        self._pending: dict[str, tuple[str, dict[str, Any]]] = {}  # partial -> (final, footer): not converted yet
        self._metrics_at = 0.0
        self._metrics_last: tuple | None = None
        self._metrics_failed = False
        self.stopped_by: str | None = None

    def _lock(self) -> int:
        """Hold DIR/host=HOST/.cfgaudit-record.lock (flock) while recording: a second recorder on
        the same directory would convert the first one's open segment."""
        path = os.path.join(self.dir, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise OutputError(f"cannot make the lock file: {err.strerror}", path=path) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            raise UsageError(f"another cfgaudit record is writing {self.dir}") from err
        return fd

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.stopped_by is None and self.live.session is not None:
                self.close("error" if ev is not None else "duration")
        finally:
            try:
                self.live.__exit__(et, ev, tb)
            finally:
                self._unlock()

    def open(self) -> None:
        """Convert what an earlier recorder left, load the probes, open the first segment (a
        failure leaves no session open and the lock released)."""
        try:
            recover_segments(self.dir, self.warn)
            self.counters.segments_deleted += len(enforce_retention(self.dir, self.cfg.keep_bytes))
            self.live.open()
            self.load_warnings = self.live.load_warnings
            self._open_segment(first=True)
            self._write_metrics(force=True)
        except BaseException as err:
            try:
                self.live.__exit__(type(err), err, err.__traceback__)
            finally:
                self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def rotate_soon(self, reason: str = "sighup") -> None:
        """Close the open segment at the next poll (safe to call from a signal handler)."""
        self._rotate_reason = reason

    def run(self, stop: Callable[[], str | None], poll_ms: int = 100) -> None:
        """Record until ``stop()`` returns a reason (it becomes the last footer's ``closed_by``),
        then close the open segment."""
        def tick() -> bool:
            why = stop()
            if why:
                self.stopped_by = why
                return True
            self._tick()
            return False

        self.live.run(tick, poll_ms)
        self.close(self.stopped_by or "duration")

    def close(self, reason: str) -> None:
        """Close and convert the open segment (``closed_by`` = ``reason``), write the metrics,
        close the probes. Idempotent."""
        self.stopped_by = self.stopped_by or reason
        if self.writer is not None:
            self._close_segment(reason)
        self._finish_pending()
        self._retention()
        self.counters.open_seq = 0
        self._write_metrics(force=True)
        if self.live.report is None:
            self.live.finish()

    # -- batches and ticks -----------------------------------------------------------------
    def _batch(self, b: LiveBatch) -> None:
        rows = b.events.num_rows
        c = self.counters
        c.accesses += rows
        c.unmediated += len(b.notices)
        if not b.findings.empty:
            for kind, n in b.findings["kind"].value_counts().items():
                c.findings[str(kind)] = c.findings.get(str(kind), 0) + int(n)
        if self.writer is None:
            c.unrecorded += rows
        else:
            try:
                for n in b.notices:
                    self.writer.write(n.to_record())
                if rows:
                    self.writer.write_table(b.events)
                self.writer.flush()  # each batch reaches the file: cfgaudit analyze reads it now
                self._seg["events"] += rows
                self._seg["unmediated"] += len(b.notices)
            except OutputError as err:  # the file keeps the batches before this one, whole
                c.unrecorded += rows
                self._write_failed(err)
        if self.on_batch:
            self.on_batch(b)
        if self.writer is not None and self._partial_bytes() >= self.cfg.rotate_bytes:
            self._rotate("size")

    def _tick(self) -> None:
        """Between polls: rotate when asked, by age, or (suspended) try a new segment; metrics."""
        now = self.clock()
        asked, self._rotate_reason = self._rotate_reason, None
        if asked and self.writer is not None:
            self._rotate(asked)
        elif self.writer is not None and now - self._seg["started_s"] >= self.cfg.rotate_seconds:
            self._rotate("time")
        elif self.writer is None and self._retry_at is not None and now >= self._retry_at:
            self._finish_pending()
            self._retention()
            self._open_segment()
        self._write_metrics()

    # -- segments --------------------------------------------------------------------------
    def _partial_bytes(self) -> int:
        try:
            return os.stat(self.partial).st_size
        except OSError:
            return 0

    def _open_segment(self, first: bool = False) -> None:
        """Open the next segment (its header: the run's, for this host and this moment). A
        failure at start is an error; later it suspends recording until the next try."""
        seq = max(next_seq(self.dir), self.seq + 1)
        unix_ns = time.time_ns()
        final = os.path.join(self.dir, segment_name(seq, unix_ns))
        partial = final + PARTIAL_SUFFIX
        header = dict(self.live.header, host=self.host, machine_id=self.machine_id, boot_id=self.boot_id,
                      started_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC), started_unix_ns=unix_ns,
                      segment={"seq": seq, "started_unix_ns": unix_ns,
                               "recorder_started_unix_ns": int(self.counters.started_unix_s * 1e9)})
        try:
            self.writer = TraceWriter(partial, header)
        except CfgauditError as err:  # InputError: not made; OutputError: the header did not fit
            with contextlib.suppress(OSError):
                os.unlink(partial)
            if first:
                raise
            self.counters.write_errors += 1
            retry = min(RETRY_S, self.cfg.rotate_seconds)
            if self._retry_at is None:
                self.warn(f"segment {seq}: {err}; tracing goes on without recording, a new segment is tried "
                          f"every {retry:g} s")
            self._retry_at = self.clock() + retry
            return
        was_suspended = self._retry_at is not None
        self._retry_at = None
        self.seq, self.partial, self.final = seq, partial, final
        # the first segment counts from the probes' attach (what was lost before it opened is its loss)
        st = SessionStats() if first else self.live.session.stats()
        self._seg = {"events": 0, "unmediated": 0, "started_s": self.clock(), "lost": st.lost,
                     "dropped": st.dropped_other, "unresolved": st.unresolved}
        self.counters.open_seq = seq
        self.counters.last_rotation_unix_s = unix_ns / 1e9
        if was_suspended:
            self.warn(f"recording resumed: segment {seq} ({os.path.basename(partial)})")

    def _footer(self, reason: str) -> dict[str, Any]:
        st = self.live.session.stats()
        lost = st.lost - self._seg["lost"]
        self.counters.lost = st.lost
        return {"events": self._seg["events"], "lost": lost, "unmediated": self._seg["unmediated"],
                "dropped_other_files": st.dropped_other - self._seg["dropped"],
                "unresolved_opens": st.unresolved - self._seg["unresolved"], "closed_by": reason}

    def _close_segment(self, reason: str, error: str | None = None) -> None:
        """Close the open segment's JSON Lines file (footer) and convert it to Parquet."""
        assert self.writer is not None
        footer = self._footer(reason)
        if error:
            footer["error"] = error
        writer, self.writer = self.writer, None
        try:
            writer.close(footer)
        except OutputError:
            pass  # the footer did not fit: the conversion below gives the Parquet file the same one
        self.counters.open_seq = 0
        footer["ended_ns"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        footer["ended_unix_ns"] = time.time_ns()
        self._pending[self.partial] = (self.final, footer)
        self.segments.append(SegmentInfo(self.seq, self.partial, reason, footer["events"], footer["lost"],
                                         footer["unmediated"], converted=False, error=error))
        self.counters.segments_closed += 1

    def _finish_pending(self) -> None:
        """Convert the closed segments still in JSON Lines (now, or again after a failure)."""
        for partial, (final, footer) in list(self._pending.items()):
            info = next((s for s in reversed(self.segments) if s.path == partial), None)
            try:
                convert_segment(partial, final, footer, warn=self.warn)
            except OutputError as err:
                self.counters.write_errors += 1
                if info is not None and not info.error:
                    info.error = str(err)
                    self.warn(f"segment {info.seq}: not converted to Parquet ({err}); {os.path.basename(partial)} "
                              "stays (JSON Lines, readable); retried at the next rotation and at restart")
                continue
            except InputError as err:  # cannot happen to a file this recorder wrote, short of tampering
                del self._pending[partial]
                self.warn(str(err))
                continue
            del self._pending[partial]
            if info is not None:
                info.path, info.converted = final, True
                if self.on_segment:
                    self.on_segment(info)

    def _rotate(self, reason: str) -> None:
        """Close the open segment (``closed_by`` = ``reason``), open the next, then convert and
        trim: the tracer's reader thread keeps taking events meanwhile, into the new segment."""
        self._close_segment(reason)
        self._open_segment()
        self._finish_pending()
        self._retention()
        self._write_metrics(force=True)

    def _write_failed(self, err: OutputError) -> None:
        """The open segment cannot take more (disk full): close it as it is (whole records only),
        try to convert it, and go on tracing without recording until a new segment opens."""
        self.counters.write_errors += 1
        seq = self.seq
        self._close_segment("error", error=err.message)
        retry = min(RETRY_S, self.cfg.rotate_seconds)
        self._retry_at = self.clock() + retry
        self.warn(f"segment {seq}: {err}; closed as it is; tracing goes on without recording, "
                  f"a new segment is tried every {retry:g} s")
        self._finish_pending()
        self._retention()

    def _retention(self) -> None:
        gone = enforce_retention(self.dir, self.cfg.keep_bytes)
        self.counters.segments_deleted += len(gone)

    # -- metrics ---------------------------------------------------------------------------
    def _disk_bytes(self) -> int:
        total = sum(n for _, _, n in closed_segments(self.dir))
        for p in [self.partial if self.writer is not None else "", *self._pending]:
            with contextlib.suppress(OSError):
                total += os.stat(p).st_size if p else 0
        return total

    def _write_metrics(self, force: bool = False) -> None:
        """Rewrite the metrics file: when ``force``d, when a counter changed (at most every
        METRICS_EVERY_S), and every METRICS_IDLE_S. A failure is said once and retried."""
        if not self.cfg.metrics:
            return
        now = self.clock()
        c = self.counters
        state = (c.accesses, c.lost, c.unmediated, c.unrecorded, c.write_errors, c.segments_closed,
                 c.segments_deleted, c.open_seq, tuple(c.findings.values()))
        if not force and not ((state != self._metrics_last and now - self._metrics_at >= METRICS_EVERY_S)
                              or now - self._metrics_at >= METRICS_IDLE_S):
            return
        self._metrics_at, self._metrics_last = now, state
        if self.live.session is not None and self.stopped_by is None:
            # since start, also while no segment was open; once stopped, the last footer's count
            # stands (the drained buffer keeps refusing records until the probes detach)
            c.lost = self.live.session.stats().lost
        try:
            c.disk_bytes = self._disk_bytes()
            write_metrics(self.cfg.metrics, prometheus_text(c, self.host))
        except OSError as err:
            if not self._metrics_failed:
                self.warn(f"{self.cfg.metrics}: cannot write metrics: {err.strerror or err}; retried")
            self._metrics_failed = True
            return
        self._metrics_failed = False
