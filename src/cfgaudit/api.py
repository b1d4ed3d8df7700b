"""Library entry points. The CLI calls these; notebooks can too."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .regions import (
    DeviceSet,
    RegistryResult,
    build_registry,
    device_views,
    load_claims,
    load_devices,
    parse_driver_overrides,
    parse_kernel,
    save_snapshot,
)
from .report.listing import Column, render_listing

__all__ = ["Sources", "open_devices", "devices_rows", "regions_rows", "render_devices", "render_regions",
           "registry_for", "write_snapshot"]


@dataclass
class Sources:
    """Where config spaces come from (the CLI's shared source options)."""

    sysfs_path: str | None = None
    lspci_dumps: list[str] = field(default_factory=list)
    snapshot: str | None = None
    drivers: list[str] = field(default_factory=list)  # "BDF=NAME"


def open_devices(src: Sources) -> DeviceSet:
    return load_devices(src.sysfs_path, src.lspci_dumps, src.snapshot, parse_driver_overrides(src.drivers))


def devices_rows(ds: DeviceSet) -> list[dict]:
    """One dict per device (the ``devices --format json`` contract)."""
    rows = []
    for v in device_views(ds):
        cs = v.cs
        rows.append({
            "bdf": cs.bdf,
            "vendor": cs.vendor,
            "device": cs.device,
            "class": cs.class_code,
            "revision": cs.revision,
            "driver": cs.driver,
            "config_size": cs.config_size,
            "known_bytes": sum(cs.known),
            "capabilities": [c.to_dict() for c in v.caps.caps],
            "anomalies": [a.to_dict() for a in v.caps.anomalies] + [
                {"kind": "note", "space": "header", "offset": None, "message": n} for n in cs.notes],
        })
    return rows


def _hex(width: int):
    return lambda v: "-" if v is None else f"{v:0{width}x}"


def _caps_summary(caps: list[dict]) -> str:
    out = []
    for c in caps:
        tag = c["name"]
        if c.get("dvsec_vendor") is not None:
            tag = c.get("dvsec_name") or f"DVSEC {c['dvsec_vendor']:04x}:{c.get('dvsec_id') or 0:x}"
        mark = "" if c.get("kernel_visible", True) else "*"
        out.append(f"[{c['offset']:x}]{mark} {tag}" + (f" ({c['length']})" if c["length"] else ""))
    return ", ".join(out) or "none"


_DEVICE_COLS = [
    Column("bdf", "BDF"),
    Column("id", "VEN:DEV"),
    Column("class", "CLASS", _hex(6)),
    Column("driver", "DRIVER"),
    Column("config_size", "CFG"),
    Column("caps", "CAPABILITIES [offset] name (bytes)"),
]


def render_devices(ds: DeviceSet, fmt: str = "table") -> str:
    rows = devices_rows(ds)
    if fmt != "table":
        keys = ["bdf", "vendor", "device", "class", "revision", "driver", "config_size", "known_bytes", "capabilities", "anomalies"]
        return render_listing(rows, fmt, _DEVICE_COLS, keys)
    trows = []
    for r in rows:
        caps = _caps_summary(r["capabilities"])
        if r["anomalies"]:
            caps += "; anomalies: " + "; ".join(a["message"] for a in r["anomalies"])
        trows.append({**r, "id": f"{r['vendor'] if r['vendor'] is not None else 0xffff:04x}:"
                                  f"{r['device'] if r['device'] is not None else 0xffff:04x}",
                      "caps": caps})
    return render_listing(trows, "table", _DEVICE_COLS)


def registry_for(ds: DeviceSet, kernel: str | None = None, claims: Iterable[str] = (),
                 iomem_relaxed: bool | None = None) -> RegistryResult:
    rules = [r for path in claims for r in load_claims(path)]
    return build_registry(ds, kernel, rules, iomem_relaxed)


def regions_rows(res: RegistryResult) -> list[dict]:
    """One dict per region (the ``regions --format json`` contract)."""
    return [r.to_dict() for r in res.registry.regions()]


_REGION_COLS = [
    Column("bdf", "BDF"),
    Column("start", "START", lambda v: f"{v:#05x}"),
    Column("length", "LEN", lambda v: f"{v:#x}"),
    Column("kind", "KIND"),
    Column("owner", "OWNER"),
    Column("what", "WHAT"),
]


def render_regions(res: RegistryResult, fmt: str = "table") -> str:
    rows = regions_rows(res)
    if fmt != "table":
        return render_listing(rows, fmt, _REGION_COLS,
                              ["bdf", "start", "length", "owner", "kind", "capability", "rule", "source"])
    head = (f"# kernel {res.kernel}, {'iomem=relaxed (the kernel checks nothing)' if res.iomem_relaxed else 'strict iomem'}; "
            f"{len(rows)} regions\n")
    trows = [{**r, "what": f"{r['capability'] or ''} [{r['rule']}]".strip()} for r in rows]
    return head + render_listing(trows, "table", _REGION_COLS)


def write_snapshot(ds: DeviceSet, path: str, kernel: str | None = None, iomem_relaxed: bool | None = None,
                   host: str | None = None) -> int:
    """Write a snapshot; returns the number of devices written. ``kernel``, ``iomem_relaxed``
    and ``host`` override what the source said (dumps say nothing)."""
    if kernel:
        parse_kernel(kernel)
        ds.kernel_release, ds.kernel_version = kernel, None
    if iomem_relaxed is not None:
        ds.iomem_relaxed = iomem_relaxed
    if host:
        ds.host = host
    device_views(ds)  # fills in config_size where the source did not give it
    save_snapshot(ds, path)
    return len(ds.devices)


# ------------------------------------------------------------------------------------------
# Traces and analysis
# ------------------------------------------------------------------------------------------
import sys as _sys  # noqa: E402
import time as _time  # noqa: E402

import numpy as _np  # noqa: E402
import pandas as _pd  # noqa: E402
import pyarrow as _pa  # noqa: E402

from .analyze import Analyzer  # noqa: E402
from .errors import InputError as _InputError, UsageError as _UsageError  # noqa: E402
from .probes.replay import ReplaySource  # noqa: E402
from .regions import DeviceSet as _DeviceSet  # noqa: E402
from .regions.configspace import devices_from_snapshot_dict  # noqa: E402
from .report.frames import FINDING_COLUMNS, Report, empty_findings, summarize  # noqa: E402

FAIL_LEVELS = ("exclusive", "managed", "never")


def _has_source(src: Sources) -> bool:
    return bool(src.sysfs_path or src.lspci_dumps or src.snapshot)


def devices_for_trace(src: Sources, header: dict) -> _DeviceSet:
    """The device picture for a trace: explicit source options win, else the trace's snapshot."""
    if _has_source(src):
        return open_devices(src)
    snap = header.get("snapshot")
    if not snap:
        raise _UsageError("the trace embeds no device snapshot: give --snapshot, --lspci-dump or --sysfs-path")
    ds = devices_from_snapshot_dict(snap, "trace header")
    overrides = parse_driver_overrides(src.drivers)
    for bdf, name in overrides.items():
        if bdf not in ds.devices:
            raise _UsageError(f"--driver {bdf}={name}: no such device in the trace's snapshot")
        ds.devices[bdf].driver = name
    for key in ("kernel_release", "kernel_version"):
        if header.get(key) and not getattr(ds, key):
            setattr(ds, key, header[key])
    return ds


def _header_relaxed(header: dict) -> bool | None:
    if "iomem_relaxed" in header and header["iomem_relaxed"] is not None:
        return bool(header["iomem_relaxed"])
    flags = header.get("boot_flags")
    if isinstance(flags, list):
        return "iomem=relaxed" in flags
    return None


@dataclass
class Analysis:
    """An analysis set up and ready to stream: the replay source, the registry, the analyzer."""

    source: ReplaySource
    registry: RegistryResult
    analyzer: Analyzer
    warnings: list[str]
    shown: int = 0  # warnings already shown to the user

    def meta(self) -> dict:
        h = self.source.header
        return {"traces": self.source.paths, "kernel": str(self.registry.kernel),
                "iomem_relaxed": self.registry.iomem_relaxed, "host": h.get("host"), "backend": h.get("backend")}


def open_analysis(traces: list[str], src: Sources, kernel: str | None = None, claims: Iterable[str] = (),
                  iomem_relaxed: bool | None = None, reads: bool = False, skip_bad: bool = False,
                  speed: float = 0.0) -> Analysis:
    warnings: list[str] = []
    rs = ReplaySource(list(traces), skip_bad=skip_bad, speed=speed, warn=warnings.append)
    header = rs.header
    ds = devices_for_trace(src, header)
    if not kernel and header.get("kernel_release"):
        ds.kernel_release, ds.kernel_version = header["kernel_release"], header.get("kernel_version")
    relaxed = iomem_relaxed if iomem_relaxed is not None else _header_relaxed(header)
    res = registry_for(ds, kernel, claims, relaxed)
    warnings += ds.warnings + res.warnings
    return Analysis(rs, res, Analyzer(res, reads=reads), warnings)


class _Progress:
    """Progress on stderr for long analyses (only on a terminal)."""

    def __init__(self, total_bytes: int) -> None:
        self.on = _sys.stderr.isatty() and total_bytes > (64 << 20)
        self.t0 = _time.monotonic()

    def update(self, events: int) -> None:
        if self.on:
            rate = events / max(1e-9, _time.monotonic() - self.t0)
            _sys.stderr.write(f"\ranalyzed {events:,} events ({rate:,.0f}/s)")
            _sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            _sys.stderr.write("\n")


def _regions_frame(res: RegistryResult) -> _pd.DataFrame:
    return _pd.DataFrame(regions_rows(res), columns=["bdf", "start", "length", "owner", "kind", "capability", "rule", "source"])


def _write_hist(an: Analyzer) -> _pd.DataFrame:
    h = an.write_hist
    nz = _np.flatnonzero(h)
    width = h.shape[1]
    return _pd.DataFrame({"bdf": [an.bdfs[i // width] for i in nz], "offset": nz % width, "writes": h.flat[nz]})


def _prefetch(it, depth: int = 1):
    """The items of ``it``, produced by a worker thread up to ``depth`` ahead (its exceptions
    are raised here, where the item would have been)."""
    import queue as _queue
    import threading as _threading

    q: _queue.Queue = _queue.Queue(maxsize=depth)
    stop = _threading.Event()
    done = object()

    def work() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except _queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            q.put((done, err))

    th = _threading.Thread(target=work, name="cfgaudit-read", daemon=True)
    th.start()
    try:
        while True:
            x, err = q.get()
            if x is done:
                if err is not None:
                    raise err
                return
            yield x
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except _queue.Empty:
                th.join(0.05)


def run_analysis(a: Analysis, sink=None, arrow_sink=None) -> Report:
    """Stream every chunk through the analyzer. With ``sink``, each findings chunk goes to it
    and is not kept (bounded memory); otherwise the findings are collected into the report.
    ``arrow_sink`` is like ``sink`` but gets Arrow tables (:meth:`Analyzer.feed_arrow`)."""
    import os as _os

    prog = _Progress(sum(_os.path.getsize(p) for p in a.source.paths))
    parts: list[_pd.DataFrame] = []
    # the Arrow path reads the next chunk in a second thread while this one analyses
    for t in (_prefetch(a.source.tables()) if arrow_sink is not None else a.source.tables()):
        if arrow_sink is not None:
            fa = a.analyzer.feed_arrow(t)
            if fa is not None:
                arrow_sink(fa)
            prog.update(a.analyzer.counts["events"])
            continue
        f = a.analyzer.feed(t)
        if sink is not None:
            sink(f)
        elif not f.empty:
            parts.append(f)
        prog.update(a.analyzer.counts["events"])
    prog.done()
    findings = _pd.concat(parts, ignore_index=True) if parts else empty_findings()
    counts = dict(a.analyzer.counts, lost=a.source.lost, skipped=a.source.skipped)
    return Report(findings, _regions_frame(a.registry), _write_hist(a.analyzer), summarize(findings, counts), a.meta())


def load_trace(*paths: str, skip_bad: bool = False) -> _pd.DataFrame:
    """A trace (or several) as one DataFrame of events, for notebooks."""
    rs = ReplaySource(list(paths), skip_bad=skip_bad)
    tables = list(rs.tables())
    if not tables:
        from .events import arrow_schema
        return arrow_schema().empty_table().to_pandas()
    return _pa.concat_tables(tables, promote_options="permissive").to_pandas()


def analyze(traces, sources: Sources | None = None, kernel: str | None = None, claims: Iterable[str] = (),
            iomem_relaxed: bool | None = None, reads: bool = False) -> _pd.DataFrame:
    """Findings of ``traces`` as a DataFrame (columns: report.frames.FINDING_COLUMNS)."""
    paths = [traces] if isinstance(traces, str) else list(traces)
    a = open_analysis(paths, sources or Sources(), kernel, claims, iomem_relaxed, reads)
    return run_analysis(a).findings


def failing(findings: _pd.DataFrame, level: str) -> int:
    """How many findings are at or above ``level`` (exclusive > managed), not allowed by a user claim."""
    if level not in FAIL_LEVELS:
        raise _UsageError(f"--fail-on must be one of {', '.join(FAIL_LEVELS)}")
    if level == "never" or findings.empty:
        return 0
    kinds = {"exclusive"} if level == "exclusive" else {"exclusive", "managed"}
    return int((findings["kind"].isin(kinds) & findings["allowed_by"].isna()).sum())


REPORT_FORMATS = ("table", "json", "csv", "markdown", "html", "github", "sarif", "junit")
from .report.live import LIVE_HEADER  # noqa: E402  (the live commands' column header)


def render_report(report: Report, fmt: str) -> str:
    """Render a report with one of :data:`REPORT_FORMATS` (report/render.py's table)."""
    from .report.render import render

    return render(report, fmt)


def analyze_to_csv(a: Analysis, out) -> Report:
    """Stream findings as CSV to the text stream ``out`` (one header line, a row per finding),
    holding no more than one chunk of findings in memory. Returns the report without findings."""
    import csv as _csv

    from .report.csvout import CsvSink

    w = _csv.writer(out, lineterminator="\n")
    w.writerow(list(FINDING_COLUMNS))
    # Arrow tables straight to CSV text (no DataFrame per chunk), made and written by a
    # second thread while this one reads and analyses the next chunk.
    sink = CsvSink(out, background=True)
    try:
        rep = run_analysis(a, arrow_sink=sink)
    finally:
        sink.close()
    rep.summary["findings"] = sink.rows
    rep.summary["failing"] = sink.failing
    return rep


def replay_lines(a: Analysis, emit, verbose: bool = False) -> Report:
    """Replay traces at their recorded pace (``a.source.speed``), emitting one line per finding
    as it would have appeared live; returns the full report at the end."""
    from .report.live import LIVE_HEADER, live_lines

    emit(LIVE_HEADER)
    parts: list[_pd.DataFrame] = []
    t0: int | None = None
    for ts, t in a.source.paced():
        if t0 is None:
            t0 = ts
        f = a.analyzer.feed(t)
        if not f.empty:
            parts.append(f)
            for line in live_lines(f, t0, verbose):
                emit(line)
    findings = _pd.concat(parts, ignore_index=True) if parts else empty_findings()
    counts = dict(a.analyzer.counts, lost=a.source.lost, skipped=a.source.skipped)
    return Report(findings, _regions_frame(a.registry), _write_hist(a.analyzer), summarize(findings, counts), a.meta())


# ------------------------------------------------------------------------------------------
# Live tracing
# ------------------------------------------------------------------------------------------
from .probes import backend_table, pick_backend  # noqa: E402
from .probes.tracefile import TraceWriter, events_table, make_header  # noqa: E402
from .regions import running_kernel as _running_kernel  # noqa: E402
from .regions.configspace import snapshot_dict as _snapshot_dict  # noqa: E402


@dataclass
class TraceConfig:
    """Options of ``cfgaudit trace`` / ``cfgaudit run``. ``duration_s`` in seconds."""

    backend: str = "auto"
    sysfs_path: str | None = None
    procfs_path: str = "/proc/bus/pci"
    pid: int = 0
    comm: str | None = None
    bdfs: list[str] = field(default_factory=list)
    duration_s: float | None = None
    reads: bool = False
    output: str | None = None
    kernel: str | None = None
    claims: list[str] = field(default_factory=list)
    iomem_relaxed: bool | None = None
    verbose: bool = False
    buffer_pages: int = 4096
    drivers: list[str] = field(default_factory=list)


def doctor_rows() -> list[dict]:
    return backend_table()


def _boot_flags(proc_root: str = "/proc") -> list[str]:
    try:
        with open(f"{proc_root}/cmdline") as fh:
            return fh.read().split()
    except OSError:
        return []


class LiveRun:
    """One live tracing run: devices, registry, backend session, trace file, analyzer."""

    def __init__(self, cfg: TraceConfig, follow: bool = False) -> None:
        from .probes.live import LiveOptions
        from .regions import normalize_bdf

        self.cfg = cfg
        backend = pick_backend(cfg.backend)
        ds = open_devices(Sources(sysfs_path=cfg.sysfs_path or "/sys/bus/pci", drivers=list(cfg.drivers)))
        rel, upstream, relaxed = _running_kernel()
        ds.kernel_release, ds.kernel_version = rel, upstream
        ds.iomem_relaxed = relaxed if cfg.iomem_relaxed is None else cfg.iomem_relaxed
        self.devices = ds
        self.registry = registry_for(ds, cfg.kernel, cfg.claims, ds.iomem_relaxed)
        self.warnings = ds.warnings + self.registry.warnings
        self.analyzer = Analyzer(self.registry, reads=cfg.reads)
        bdfs = frozenset(normalize_bdf(b) for b in cfg.bdfs) if cfg.bdfs else None
        self.header = make_header(
            host=_socket_name(), kernel_release=cfg.kernel or rel, kernel_version=None if cfg.kernel else upstream,
            running_kernel_release=rel, boot_flags=_boot_flags(), iomem_relaxed=ds.iomem_relaxed,
            backend=backend.name, started_ns=_time.clock_gettime_ns(_time.CLOCK_MONOTONIC),
            started_unix_ns=_time.time_ns(), argv=list(_sys.argv), snapshot=_snapshot_dict(ds))
        self.output = cfg.output
        self.writer = None
        self.partial = None
        if cfg.output:
            if cfg.output.lower().endswith((".parquet", ".pq")):
                # Parquet is unreadable until closed: record JSONL beside it, convert at the end.
                self.partial = cfg.output + ".partial.jsonl"
                self.writer = TraceWriter(self.partial, self.header)
            else:
                self.writer = TraceWriter(cfg.output, self.header)
        opts = LiveOptions(sysfs_path=cfg.sysfs_path or "/sys/bus/pci", procfs_path=cfg.procfs_path,
                           pid=cfg.pid, follow=follow, reads=cfg.reads, buffer_pages=cfg.buffer_pages,
                           comm=cfg.comm, bdfs=bdfs)
        self.session = backend.open(opts)
        self.parts: list[_pd.DataFrame] = []
        self.notices: list = []
        self.t0: int | None = None

    def on_batch(self, events: _pa.Table, notices: list, emit) -> None:
        """One batch from the session: record it, analyse it, print findings (all with -v)."""
        from .report.live import live_lines, value_text

        if self.t0 is None:
            first = ([int(_pc_min(events))] if events.num_rows else []) + [n.ts_ns for n in notices]
            self.t0 = min(first) if first else None
        for n in notices:
            self.notices.append(n)
            if self.writer:
                self.writer.write(n.to_record())
            emit(f"{'':>10} {n.pid:>7} {n.comm[:15]:<15} UNMEDIATED {n.what}"[:100])
        if self.writer:
            if events.num_rows:
                self.writer.write_table(events)
            self.writer.flush()  # each batch reaches the file: a crash loses at most one poll interval
        if not events.num_rows:
            return
        base = self.analyzer.counts["events"]
        f = self.analyzer.feed(events)
        if self.cfg.verbose:
            hit = set(f["event_index"].tolist()) if not f.empty else set()
            for i, e in enumerate(events.to_pylist()):
                if base + i not in hit:
                    emit(f"{(e['ts_ns'] - (self.t0 or e['ts_ns'])) / 1e9:<10.6f} {e['pid']:>7} {e['comm'][:15]:<15} "
                         f"{e['bdf'][5:]:<12} {e['offset']:>#5x} {e['size']:>2} {value_text(e['data'], e['size']):<8} "
                         f"{'-':<12} {e['op']}")
        if not f.empty:
            self.parts.append(f)
            for line in live_lines(f, self.t0 or 0):
                emit(line)

    def finish(self) -> Report:
        lost = self.session.lost
        dropped = getattr(self.session, "dropped_other", 0)
        unresolved = getattr(self.session, "unresolved", 0)
        self.session.close()
        counts = dict(self.analyzer.counts, lost=lost, skipped=0)
        if self.writer:
            self.writer.close({"lost": lost, "unmediated": len(self.notices), "dropped_other_files": dropped,
                               "unresolved_opens": unresolved})
            if self.partial:
                src = TraceReaderFor(self.partial)
                out = TraceWriter(self.output, src.header)
                for t in src.tables():
                    out.write_table(t)
                out.close(src.footer)
                import os as _os
                _os.unlink(self.partial)
        findings = _pd.concat(self.parts, ignore_index=True) if self.parts else empty_findings()
        meta = {"traces": [self.output] if self.output else [], "kernel": str(self.registry.kernel),
                "iomem_relaxed": self.registry.iomem_relaxed, "host": self.header.get("host"),
                "backend": self.header.get("backend")}
        rep = Report(findings, _regions_frame(self.registry), _write_hist(self.analyzer),
                     summarize(findings, counts), meta)
        rep.summary["unmediated"] = [n.to_record() for n in self.notices]
        rep.summary["unresolved_opens"] = unresolved
        return rep


def _pc_min(t: _pa.Table) -> int:
    import pyarrow.compute as pc

    return pc.min(t.column("ts_ns")).as_py()


def TraceReaderFor(path: str):
    from .probes.tracefile import TraceReader

    return TraceReader(path)


def _socket_name() -> str:
    import socket

    return socket.gethostname()


def summary_lines(rep: Report) -> list[str]:
    s = rep.summary
    out = [f"{s.get('events', 0)} config accesses ({s.get('writes', 0)} writes, {s.get('reads', 0)} reads); "
           f"{s.get('writes_with_findings', 0)} writes hit owned bytes: {s.get('exclusive_writes', 0)} exclusive, "
           f"{s.get('managed_writes', 0)} managed; the kernel would taint on {s.get('kernel_taints', 0)}"]
    if s.get("unmediated"):
        out.append(f"{len(s['unmediated'])} grant(s) of unmediated access (ioperm/iopl, /dev/mem, /dev/port)")
    if s.get("unresolved_opens"):
        out.append(f"{s['unresolved_opens']} relative open(s) of a possible config file closed before cfgaudit "
                   "could resolve them: their writes are not reported")
    if s.get("lost"):
        out.append(f"Possibly lost {s['lost']} events (ring buffer full): raise --buffer-pages")
    else:
        out.append("0 events lost")
    return out


def run_live(live: LiveRun, emit, stop) -> None:
    """Poll the session until ``stop()``; each batch is written, analysed and printed."""
    from .probes.live import run_session

    run_session(live.session, lambda ev, no: live.on_batch(ev, no, emit), stop)


def run_command(live: LiveRun, cmd: list[str], emit, stop) -> int:
    """Start ``cmd`` held at a pipe until the probe follows it, then trace it to its end.
    Returns its exit code (128+signal when killed)."""
    import os as _os

    import shutil as _shutil

    exe = _shutil.which(cmd[0]) if "/" not in cmd[0] else cmd[0]
    if exe is None or not _os.access(exe, _os.X_OK):
        raise _UsageError(f"cannot run {cmd[0]}: command not found")
    r, w = _os.pipe()
    pid = _os.fork()
    if pid == 0:  # the child waits until the probe follows its pid, then becomes CMD
        try:
            _os.close(w)
            _os.read(r, 1)
            _os.close(r)
            _os.execv(exe, cmd)
        finally:
            _os._exit(127)
    _os.close(r)
    live.session.follow_pid(pid)
    _os.write(w, b"g")
    _os.close(w)
    done: dict[str, int | None] = {"rc": None}

    def finished() -> bool:
        if done["rc"] is None:
            wpid, status = _os.waitpid(pid, _os.WNOHANG)
            if wpid == pid:
                done["rc"] = _os.waitstatus_to_exitcode(status)
        return done["rc"] is not None or stop()

    from .probes.live import run_session

    run_session(live.session, lambda ev, no: live.on_batch(ev, no, emit), finished, poll_ms=50)
    if done["rc"] is None:  # stopped by a signal: pass it on and wait
        _os.kill(pid, 15)
        done["rc"] = _os.waitstatus_to_exitcode(_os.waitpid(pid, 0)[1])
    rc = int(done["rc"])
    return rc if rc >= 0 else 128 - rc


def render_doctor(rows: list[dict], fmt: str) -> str:
    cols = [Column("backend", "BACKEND"), Column("available", "OK", lambda v: "yes" if v else "no"),
            Column("reason", "WHY NOT", lambda v: v or "-"), Column("help", "WHAT")]
    if fmt != "table":
        return render_listing(rows, fmt, cols)
    lines = render_listing(rows, "table", cols)
    live = [r["backend"] for r in rows if r["live"] and r["available"]]
    return lines + (f"--backend auto uses: {live[0]}\n" if live else "--backend auto: no live backend can run here\n")
