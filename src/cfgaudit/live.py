"""Live tracing: ``cfgaudit trace`` and ``cfgaudit run`` as a library.

:class:`LiveRun` is one run: this host's devices and registry, a probe session (backends from
probes.BACKENDS), an optional trace file and the analyzer. Use it as a context manager: whatever
happens inside, the session is closed and a trace file being written gets its footer (a
footer-less file is what a crash leaves, never a failure cfgaudit saw). Batches go to a callback
as :class:`LiveBatch` (events, their findings, notices); printing them is the caller's job.
Times are ns (CLOCK_MONOTONIC, as the probes stamp them).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from .analyze import Analyzer
from .analyze.findings import empty_findings, findings_frame
from .audit import build_report
from .errors import BackendError, OutputError, UsageError
from .files import check_output
from .hostpaths import DEFAULT, HostPaths
from .inventory import Sources, open_devices, registry_for
from .ondemand import child_environ, load_pandas
from .probes import GUARD, LiveOptions, backend_table, pick_backend, prepare_host
from .probes.guard import GuardSession
from .probes.session import Batch, Notice, run
from .probes.tracefile import (
    PARTIAL_SUFFIX,
    TRACE_FORMATS,
    TraceWriter,
    convert_trace,
    make_header,
    trace_kind,
)
from .regions import normalize_bdf, running_kernel
from .regions.configspace import snapshot_dict
from .regions.guard import GUARD_LEVELS, GuardPolicy
from .report.frames import Report

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TraceConfig", "GuardConfig", "LiveBatch", "LiveRun", "doctor_rows", "prepare_host", "resolve_command"]


@dataclass
class GuardConfig:
    """``cfgaudit guard`` / ``run --guard``: refuse writes into bytes at or above ``level``
    (regions/guard.py GUARD_LEVELS), except for the ``allow_comms``; ``dry_run``: refuse nothing,
    record what would have been refused."""

    level: str = "exclusive"
    allow_comms: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class TraceConfig:
    """Options of ``cfgaudit trace`` / ``cfgaudit run``. ``duration_s`` in seconds; ``buffer_pages``
    in 4 KiB pages (a power of two); ``paths.sysfs``/``paths.procfs``: the trees to watch."""

    backend: str = "auto"
    paths: HostPaths = DEFAULT
    pid: int = 0
    comm: str | None = None
    bdfs: list[str] = field(default_factory=list)
    duration_s: float | None = None
    reads: bool = False
    output: str | None = None
    kernel: str | None = None
    claims: list[str] = field(default_factory=list)
    iomem_relaxed: bool | None = None
    buffer_pages: int = 4096
    drivers: list[str] = field(default_factory=list)
    guard: GuardConfig | None = None  # run the guard instead of a tracing backend


@dataclass
class LiveBatch:
    """What one poll brought: ``events`` (event schema; row ``i`` has event index ``base + i``),
    their ``findings`` (a DataFrame, maybe empty), ``notices`` of unmediated access, ``t0_ns``,
    the run's time zero (first record seen), and ``warnings`` (one line each: recording stopped)."""

    events: pa.Table
    findings: pd.DataFrame
    notices: list[Notice]
    base: int
    t0_ns: int
    warnings: list[str] = field(default_factory=list)


def doctor_rows(paths: HostPaths = DEFAULT) -> list[dict[str, Any]]:
    """Every backend with whether it can run here and why not (only looks; changes nothing)."""
    return backend_table(paths)


def resolve_command(cmd: list[str]) -> str:
    """The executable ``cmd[0]`` names (searched in PATH when it has no slash); a usage error when
    there is none, it is a directory, or it cannot be executed."""
    if not cmd:
        raise UsageError("no command given (cfgaudit run -- CMD [ARGS]...)")
    exe = shutil.which(cmd[0]) if "/" not in cmd[0] else cmd[0]
    if exe is None or not os.path.exists(exe):
        raise UsageError(f"cannot run {cmd[0]}: command not found")
    if os.path.isdir(exe):
        raise UsageError(f"cannot run {cmd[0]}: is a directory")
    if not os.access(exe, os.X_OK):
        raise UsageError(f"cannot run {cmd[0]}: not executable")
    return exe


# prctl(2) option: orphaned descendants are re-parented to the caller, not to init
# (include/uapi/linux/prctl.h: #define PR_SET_CHILD_SUBREAPER 36).
PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Make this process the child subreaper (Linux >= 3.4), so every descendant it starts stays
    its descendant (and is reaped here) after its own parent exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _default_signals() -> None:
    """In a child about to exec: the signal dispositions a program expects (Python ignores SIGPIPE
    and may have inherited an ignored SIGINT from a background job), nothing blocked."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _descendants(root: int, proc: str = "/proc") -> list[int]:
    """Pids of the live processes below ``root`` (by parent pid in PROC/PID/stat), sorted;
    zombies (exited, not yet reaped) are not counted."""
    children: dict[int, list[int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "stat"), "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) >= 2 and rest[0] != b"Z":
            children.setdefault(int(rest[1]), []).append(int(name))
    found: list[int] = []
    frontier = [root]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return sorted(found)


def _boot_flags(paths: HostPaths) -> list[str]:
    try:
        with open(os.path.join(paths.proc, "cmdline")) as fh:
            return fh.read().split()
    except OSError:
        return []


class LiveRun:
    """One live tracing run (see the module docstring). ``follow``: trace only processes handed
    to :meth:`follow` and their descendants (``cfgaudit run``)."""

    def __init__(self, cfg: TraceConfig, follow: bool = False,
                 on_batch: Callable[[LiveBatch], None] | None = None, keep: bool = True) -> None:
        self.cfg = cfg
        self.on_batch = on_batch
        # keep=False (cfgaudit record, running for days): no findings frame nor notice is kept;
        # they go to on_batch only, and the report counts them without listing them.
        self.keep = keep
        self.n_notices = 0  # notices seen (kept in self.notices too when keep)
        if cfg.output:  # a trace path that cannot be made fails now, not after the probes load
            check_output(cfg.output)
        if cfg.guard is not None:
            if cfg.guard.level not in GUARD_LEVELS:
                raise UsageError(f"--level {cfg.guard.level}: choose from {', '.join(GUARD_LEVELS)}")
            why = GUARD.detect(cfg.paths)
            if why:
                raise BackendError(f"guard: {why}")
            self.backend = GUARD
        else:
            self.backend = pick_backend(cfg.backend, cfg.paths)
        ds = open_devices(Sources(sysfs_path=cfg.paths.sysfs, drivers=list(cfg.drivers), paths=cfg.paths))
        rel, upstream, relaxed = running_kernel(cfg.paths)
        ds.kernel_release, ds.kernel_version = rel, upstream
        ds.iomem_relaxed = relaxed if cfg.iomem_relaxed is None else cfg.iomem_relaxed
        self.devices = ds
        self.registry = registry_for(ds, cfg.kernel, cfg.claims, ds.iomem_relaxed)
        self.warnings = ds.warnings + self.registry.warnings
        self.analyzer = Analyzer(self.registry, reads=cfg.reads)
        self.policy = GuardPolicy(self.registry, cfg.guard.level, cfg.guard.allow_comms) if cfg.guard else None
        self.header = make_header(
            host=socket.gethostname(), kernel_release=cfg.kernel or rel,
            kernel_version=None if cfg.kernel else upstream, running_kernel_release=rel,
            boot_flags=_boot_flags(cfg.paths), iomem_relaxed=ds.iomem_relaxed, backend=self.backend.name,
            started_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC), started_unix_ns=time.time_ns(),
            argv=list(sys.argv), snapshot=snapshot_dict(ds))
        bdfs = frozenset(normalize_bdf(b) for b in cfg.bdfs) if cfg.bdfs else None
        absent = sorted(b for b in bdfs or () if b not in ds.devices)
        if absent:  # it would trace nothing, silently
            raise UsageError(f"--bdf {absent[0]}: no such device in {cfg.paths.sysfs}")
        self.options = LiveOptions(paths=cfg.paths, pid=cfg.pid, follow=follow, reads=cfg.reads,
                                   buffer_pages=cfg.buffer_pages, comm=cfg.comm, bdfs=bdfs)
        self.session: Any = None
        self.writer: TraceWriter | None = None
        # A format unreadable until closed (Parquet): record JSON Lines beside it, convert at the end.
        self.partial = (cfg.output + PARTIAL_SUFFIX
                        if cfg.output and not TRACE_FORMATS[trace_kind(cfg.output)].appendable else None)
        self.parts: list[pd.DataFrame] = []
        self.notices: list[Notice] = []
        self.t0: int | None = None
        self.report: Report | None = None
        self.still_running: list[int] = []  # cfgaudit run: descendants still running at the end (pids)
        self.record_error: str | None = None  # why the trace file stopped early (disk full, ...), if it did
        self.load_warnings: list[str] = []  # from loading the probes (a BPF cache that could not be used)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "LiveRun":
        self.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.report is None:
            self.finish(error=None if ev is None else f"{type(ev).__name__}: {ev}")

    def open(self) -> None:
        """Load and attach the probes, then create the trace file (a failed load leaves no file)."""
        if self.policy is not None and self.cfg.guard is not None:
            pol = self.policy
            self.session = GuardSession(self.options, {b: pol.refused_bytes(b) for b in pol.devices},
                                        pol.allowed_bytes(), pol.allow_comms, self.cfg.guard.dry_run,
                                        {b: pol.mailboxes(b) for b in pol.devices}, need_doe=pol.level == "collision")
            if self.session.doe_problem and any(pol.mailboxes(b) for b in pol.devices):
                self.load_warnings.append("writes into DOE mailboxes during the kernel's own exchanges are not "
                                          f"refused: {self.session.doe_problem}")
            self.header["guard"] = {"level": pol.level, "allow_comms": sorted(pol.allow_comms),
                                    "dry_run": self.cfg.guard.dry_run}
        else:
            self.session = self.backend.open(self.options)
        self.load_warnings = list(getattr(self.session, "warnings", []))
        doe = getattr(self.session, "doe_exchanges", None)
        if doe is not None:
            self.header["doe_exchanges"] = doe()
        if self.cfg.output:
            try:
                self.writer = TraceWriter(self.partial or self.cfg.output, self.header)
            except BaseException:
                self.session.close()
                self.session = None
                raise

    def follow(self, pid: int) -> None:
        """Trace ``pid`` and (with ``follow``) its descendants from now on."""
        self.session.follow_pid(pid)

    # -- batches ---------------------------------------------------------------------------
    def _batch(self, b: Batch) -> None:
        """One batch: record it, analyse it, hand it on."""
        events, notices = b.events, b.notices
        if self.t0 is None:
            first = ([int(pc.min(events.column("ts_ns")).as_py())] if events.num_rows else []) + \
                [n.ts_ns for n in notices]
            self.t0 = min(first) if first else None
        self.n_notices += len(notices)
        if self.keep:
            self.notices += notices
        warnings: list[str] = []
        if self.writer:
            try:
                for n in notices:
                    self.writer.write(n.to_record())
                if events.num_rows:
                    self.writer.write_table(events)
                self.writer.flush()  # each batch reaches the file: a crash loses at most one poll interval
            except OutputError as err:
                warnings.append(self._stop_recording(err))
        base = self.analyzer.counts["events"]
        f = self.analyzer.feed(events) if events.num_rows else empty_findings()
        if not f.empty and self.keep:
            self.parts.append(f)
        if self.on_batch:
            self.on_batch(LiveBatch(events, f, notices, base, self.t0 or 0, warnings))

    def run(self, stop: Callable[[], bool], poll_ms: int = 100) -> None:
        """Poll the session until ``stop()`` says so, then drain it."""
        run(self.session, self._batch, stop, poll_ms)

    def run_command(self, cmd: list[str], stop: Callable[[], bool], wait_s: float | None = None,
                    on_cmd_exit: Callable[[int, list[int]], None] | None = None) -> int:
        """Start ``cmd`` held at a pipe until the probe follows it, then trace it and every
        descendant to the end, like ``strace -f``: cfgaudit is made the child subreaper, so a
        descendant orphaned by its parent (``(sleep 1; setpci ...) &``) is re-parented to it and
        waited for. ``wait_s``: once CMD exits, wait at most this many seconds for descendants
        still running (None: until the last one exits); ``on_cmd_exit(code, pids)`` is told when
        CMD exits while descendants run. Those still running at the end are in
        :attr:`still_running` (pids). Returns CMD's exit code (128+signal when killed)."""
        exe = resolve_command(cmd)
        env = child_environ()  # the user's environment, not what cfgaudit set for itself
        _become_subreaper()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child waits until the probe follows its pid, then becomes CMD
            try:
                os.close(w)
                _default_signals()
                os.read(r, 1)
                os.close(r)
                os.execve(exe, cmd, env)
            finally:
                os._exit(127)
        os.close(r)
        self.follow(pid)
        os.write(w, b"g")
        os.close(w)
        rc: int | None = None
        deadline: float | None = None

        def finished() -> bool:
            nonlocal rc, deadline
            if stop():
                return True
            while True:  # reap CMD and any orphan re-parented to us
                try:
                    wpid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:  # no child left: CMD and every descendant are done
                    return rc is not None
                if wpid == 0:
                    break
                if wpid == pid:
                    rc = os.waitstatus_to_exitcode(status)
                    deadline = None if wait_s is None else time.monotonic() + wait_s
                    if on_cmd_exit is not None:
                        left = _descendants(os.getpid(), self.cfg.paths.proc)
                        if left:
                            on_cmd_exit(rc if rc >= 0 else 128 - rc, left)
            return rc is not None and deadline is not None and time.monotonic() >= deadline

        self.run(finished, poll_ms=50)
        if rc is None:  # stopped by a signal: pass it on to CMD and wait for it
            try:
                os.kill(pid, signal.SIGTERM)
                rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            except ChildProcessError:  # reaped in the last poll
                rc = 128 + signal.SIGTERM
        self.still_running = _descendants(os.getpid(), self.cfg.paths.proc)
        return rc if rc >= 0 else 128 - rc

    # -- recording failures ----------------------------------------------------------------
    def _stop_recording(self, err: OutputError) -> str:
        """The trace file cannot take more (disk full, ...): close it as it is (the writer keeps
        it valid: whole records only) and go on tracing without it. Returns the warning."""
        where = self.partial or self.cfg.output
        self.record_error = str(err)
        if self.writer is not None:
            try:
                self.writer.close({"error": f"recording stopped: {err.message}"})
            except OutputError:
                pass  # the footer did not fit either: the file ends after the last whole record
            self.writer = None
        if self.partial:
            self.record_error += f"; {self.cfg.output} is not made: cfgaudit analyze reads {where} (JSON Lines)"
        return f"{self.record_error}; tracing goes on without recording"

    def _convert_partial(self) -> None:
        """Parquet output: convert the JSON Lines recorded beside it. After a recording failure, or
        when the conversion fails (no space for it), the readable JSON Lines file stays and
        :attr:`record_error` says where it is."""
        assert self.partial and self.cfg.output
        if self.record_error:
            return
        try:
            convert_trace(self.partial, self.cfg.output)  # atomic; removes the partial once done
        except OutputError as err:
            self.record_error = f"{err}; the trace is in {self.partial} (JSON Lines: cfgaudit analyze reads it)"

    # -- the end ---------------------------------------------------------------------------
    def finish(self, error: str | None = None) -> Report:
        """Close the session and the trace file (footer with counts and losses; ``error`` says why
        the run ended early) and return the run's report."""
        if self.report is not None:
            return self.report
        st = self.session.stats() if self.session is not None else None
        lost, dropped, unresolved = (st.lost, st.dropped_other, st.unresolved) if st else (0, 0, 0)
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.writer:
            footer: dict[str, Any] = {"lost": lost, "unmediated": self.n_notices, "dropped_other_files": dropped,
                                      "unresolved_opens": unresolved}
            if error:
                footer["error"] = error
            if self.still_running:
                footer["still_running"] = list(self.still_running)
            try:
                self.writer.close(footer)
            except OutputError as err:
                self._stop_recording(err)
            self.writer = None
        if self.partial and self.cfg.output and os.path.exists(self.partial):
            self._convert_partial()
        meta = {"traces": [self.cfg.output] if self.cfg.output else [], "kernel": str(self.registry.kernel),
                "iomem_relaxed": self.registry.iomem_relaxed, "host": self.header.get("host"),
                "backend": self.header.get("backend"), "doe_exchanges": self.header.get("doe_exchanges")}
        rest = self.analyzer.finish()  # findings held for a kernel DOE exchange's end the run did not see
        if rest is not None:
            self.parts.append(findings_frame(rest))
        parts = self.parts
        frames = (lambda: load_pandas().concat(parts, ignore_index=True)) if parts else None
        rep = build_report(self.analyzer, self.registry, frames, dict(self.analyzer.counts, lost=lost, skipped=0), meta)
        rep.summary["unmediated"] = [n.to_record() for n in self.notices]
        rep.summary["unresolved_opens"] = unresolved
        rep.summary["still_running"] = list(self.still_running)
        rep.summary["record_error"] = self.record_error
        self.report = rep
        return rep
