"""Offline audits: open recorded traces, analyse them against the regions, replay them, gate CI.

The library side of ``cfgaudit analyze``, ``check`` and ``replay``. Nothing here prints: progress
goes to a callback, findings to the caller, text to report/. Times are ns, offsets bytes.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import pyarrow as pa

from .analyze import Analyzer
from .analyze.findings import FINDING_KINDS, empty_findings, findings_frame
from .errors import InputError, UsageError
from .events import arrow_schema
from .inventory import REGION_KEYS, Sources, open_devices, regions_rows, registry_for
from .ondemand import frame, load_pandas
from .probes import BACKENDS, ReplayOptions
from .regions import DeviceSet, RegistryResult, parse_driver_overrides, parse_kernel
from .regions.configspace import devices_from_snapshot_dict
from .report.frames import Report, summarize
from .report.render import RENDERERS, render

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FAIL_LEVELS", "Analysis", "collisions_visible", "open_analysis", "run_analysis", "stream_analysis",
           "replay", "analyze", "load_trace", "failing", "render_report", "build_report", "devices_for_trace"]

FAIL_LEVELS = ("collision", "exclusive", "managed", "never")  # strictest first; collision: issue 11
Progress = Callable[[int], None]  # called with the number of events analysed so far
T = TypeVar("T")


def devices_for_trace(src: Sources, header: dict[str, Any], path: str | None = None,
                      line: int | None = None) -> DeviceSet:
    """The device picture for a trace: explicit source options win, else the trace's snapshot
    (read from the header at ``path``, ``line``), else the default source: this machine's
    sysfs tree (``src.paths.sysfs``, read-only), with a warning saying so."""
    if src.given():
        return open_devices(src)
    snap = header.get("snapshot")
    if not snap:
        try:
            ds = open_devices(src)
        except InputError as err:
            raise UsageError(f"the trace embeds no device snapshot, and the default source gave none ({err}): "
                             "give --snapshot, --lspci-dump or --sysfs-path") from err
        ds.warnings.append(f"the trace embeds no device snapshot: analysing it against this machine's devices "
                           f"({src.paths.sysfs}); give --snapshot, --lspci-dump or --sysfs-path for another host's")
        return ds
    try:
        ds = devices_from_snapshot_dict(snap, path or "trace header", line)
    except InputError as err:
        raise InputError(f"header: {err.message}", path=err.path, line=err.line) from err
    if not ds.devices:
        ds.warnings.append("the trace's snapshot has no devices: every write in it is to an unknown device "
                           "(give --snapshot, --lspci-dump or --sysfs-path)")
    for bdf, name in parse_driver_overrides(src.drivers).items():
        if bdf not in ds.devices:
            raise UsageError(f"--driver {bdf}={name}: no such device in the trace's snapshot")
        ds.devices[bdf].driver = name
    for key in ("kernel_release", "kernel_version"):
        if header.get(key) and not getattr(ds, key):
            setattr(ds, key, header[key])
    return ds


def _header_relaxed(header: dict[str, Any]) -> bool | None:
    """Whether the traced host booted with iomem=relaxed, as its header says (None: unknown)."""
    if header.get("iomem_relaxed") is not None:
        return bool(header["iomem_relaxed"])
    flags = header.get("boot_flags")
    if isinstance(flags, list):
        return "iomem=relaxed" in flags
    return None


@dataclass
class Analysis:
    """An analysis set up and ready to stream: the trace source, the registry, the analyzer.
    ``warnings`` grows while the traces are read (a truncated last line, ...)."""

    source: Any  # the replay session (probes.BACKENDS["replay"])
    registry: RegistryResult
    analyzer: Analyzer
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Size of the trace files, bytes (for progress)."""
        return sum(os.path.getsize(p) for p in self.source.paths if os.path.exists(p))

    def meta(self) -> dict[str, Any]:
        h = self.source.header
        meta = {"traces": list(self.source.paths), "kernel": str(self.registry.kernel),
                "iomem_relaxed": self.registry.iomem_relaxed, "host": h.get("host"), "backend": h.get("backend")}
        if h.get("doe_exchanges") is not None:  # whether the recording backend traced the kernel's DOE exchanges
            meta["doe_exchanges"] = h.get("doe_exchanges")
        return meta

    def counts(self) -> dict[str, int]:
        st = self.source.stats()
        return dict(self.analyzer.counts, lost=st.lost, skipped=st.skipped)


def open_analysis(traces: list[str], src: Sources | None = None, kernel: str | None = None,
                  claims: Iterable[str] = (), iomem_relaxed: bool | None = None, reads: bool = False,
                  skip_bad: bool = False, speed: float = 0.0, require_snapshot: bool = False) -> Analysis:
    """Open ``traces`` (JSONL or Parquet) and set up the analysis: devices from ``src`` or the
    trace's embedded snapshot, rules for ``kernel`` (default: the trace's), ``claims`` files.
    ``require_snapshot``: a trace without a snapshot (and no source given) is an InputError
    naming it, not analysed against this machine's devices (a fleet worker's are meaningless)."""
    src = src or Sources()
    warnings: list[str] = []
    rs = BACKENDS["replay"].open(ReplayOptions(paths=list(traces), skip_bad=skip_bad, speed=speed,
                                               warn=warnings.append))
    header = rs.header
    reader = next((r for r in rs.readers if r.header is header), None)  # the file the header came from
    if require_snapshot and not src.given() and not isinstance(header.get("snapshot"), dict):
        raise InputError("the trace embeds no device snapshot (its own host's is needed, not this machine's)",
                         path=reader.path if reader else traces[0] if traces else None)
    ds = devices_for_trace(src, header, reader.path if reader else None, reader.header_line if reader else None)
    if not kernel and header.get("kernel_release"):
        ds.kernel_release, ds.kernel_version = header["kernel_release"], header.get("kernel_version")
        try:
            parse_kernel(ds.kernel_release, ds.kernel_version)
        except InputError as err:  # name the trace whose header says it
            raise InputError(f"header: 'kernel_release': {err.message}", path=reader.path if reader else None,
                             line=reader.header_line if reader else None) from err
    relaxed = iomem_relaxed if iomem_relaxed is not None else _header_relaxed(header)
    res = registry_for(ds, kernel, claims, relaxed)
    warnings += ds.warnings + res.warnings
    return Analysis(rs, res, Analyzer(res, reads=reads), warnings)


# ------------------------------------------------------------------------------------------
# The one place a Report is built
# ------------------------------------------------------------------------------------------
def regions_frame(res: RegistryResult) -> pd.DataFrame:
    """The registry as a frame (columns :data:`cfgaudit.inventory.REGION_KEYS`; bytes)."""
    pd = load_pandas()
    return pd.DataFrame(regions_rows(res), columns=list(REGION_KEYS))


def write_hist_frame(an: Analyzer) -> pd.DataFrame:
    """Writes per (device, config offset in bytes) seen by ``an`` (offset 4096: beyond)."""
    pd = load_pandas()
    h = an.write_hist
    nz = np.flatnonzero(h)
    width = h.shape[1]
    return pd.DataFrame({"bdf": [an.bdfs[i // width] for i in nz], "offset": nz % width, "writes": h.flat[nz]})


def build_report(analyzer: Analyzer, registry: RegistryResult, findings: Callable[[], pd.DataFrame] | None,
                 counts: dict[str, int], meta: dict[str, Any]) -> Report:
    """A :class:`Report` from a maker of the findings frame (``None``: no findings), trace
    counts and where it came from. The summary also counts the writes to devices not in the
    sources (``unknown_device_writes``, and per BDF ``unknown_devices``: see
    :attr:`cfgaudit.analyze.Analyzer.unknown`). Without findings, no frame is built until a
    renderer asks for one (and pandas is not loaded)."""
    rep = Report(findings or empty_findings, lambda: regions_frame(registry), lambda: write_hist_frame(analyzer),
                 meta=meta, n_findings=0 if findings is None else None)
    rep.summary = summarize(rep.findings if findings is not None else None, counts)
    rep.summary["unknown_device_writes"] = analyzer.unknown_writes
    rep.summary["unknown_devices"] = analyzer.unknown_devices()
    rep.summary["collisions_visible"] = collisions_visible(counts, meta)
    return rep


def collisions_visible(counts: dict[str, int], meta: dict[str, Any]) -> bool:
    """Could the trace show a collision with the kernel's own DOE exchanges? Only when it records
    them: it holds some (``counts["kernel_doe_exchanges"]``), or its header says the recording
    backend traced them (``meta["doe_exchanges"] == "traced"``). A syscall-backend trace never does."""
    return bool(counts.get("kernel_doe_exchanges")) or meta.get("doe_exchanges") == "traced"


def _with_notices(rep: Report, a: Analysis) -> Report:
    """``rep`` with the traces' notices (unmediated access; paths the syscall backend cannot
    follow) as ``summary["unmediated"]``, notice records; only when there are any."""
    notes = a.source.notices()
    if notes:
        rep.summary["unmediated"] = [n.to_record() for n in notes]
    return rep


def _frames_of(parts: list[pa.Table]) -> Callable[[], pd.DataFrame] | None:
    """A maker of one findings frame from Arrow findings chunks (``None`` when there are none)."""
    if not parts:
        return None

    def make() -> pd.DataFrame:
        pd = load_pandas()
        return pd.concat([findings_frame(p) for p in parts], ignore_index=True)
    return make


# ------------------------------------------------------------------------------------------
# Running an analysis
# ------------------------------------------------------------------------------------------
def _prefetch(it: Iterator[T], depth: int = 1) -> Iterator[T]:
    """The items of ``it``, produced by a worker thread up to ``depth`` ahead (its exceptions
    are raised here, where the item would have been)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            q.put((done, err))

    th = threading.Thread(target=work, name="cfgaudit-read", daemon=True)
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
            except queue.Empty:
                th.join(0.05)


def run_analysis(a: Analysis, progress: Progress | None = None) -> Report:
    """Analyse every chunk and collect the findings into a :class:`Report`."""
    parts: list[pa.Table] = []
    for t in a.source.tables():
        f = a.analyzer.feed_arrow(t)
        if f is not None and f.num_rows:
            parts.append(f)
        if progress:
            progress(a.analyzer.counts["events"])
    f = a.analyzer.finish()  # findings held for a kernel exchange's end that the trace does not have
    if f is not None:
        parts.append(f)
    return _with_notices(build_report(a.analyzer, a.registry, _frames_of(parts), a.counts(), a.meta()), a)


def stream_analysis(a: Analysis, sink: Callable[[pa.Table], None], progress: Progress | None = None) -> Report:
    """Analyse every chunk, handing each findings chunk (an Arrow table, see
    Analyzer.feed_arrow) to ``sink`` without keeping it: bounded memory. The next chunk is read
    in a second thread meanwhile. Returns the report without findings rows."""
    for t in _prefetch(a.source.tables()):
        fa = a.analyzer.feed_arrow(t)
        if fa is not None:
            sink(fa)
        if progress:
            progress(a.analyzer.counts["events"])
    fa = a.analyzer.finish()
    if fa is not None:
        sink(fa)
    return _with_notices(build_report(a.analyzer, a.registry, None, a.counts(), a.meta()), a)


def replay(a: Analysis, on_findings: Callable[[int, pd.DataFrame], None]) -> Report:
    """Replay the traces at their recorded pace (the source's ``speed``), handing each non-empty
    findings chunk to ``on_findings(t0_ns, findings)`` as it would have appeared live (``t0_ns``:
    the first event's time); returns the whole report at the end."""
    parts: list[pa.Table] = []
    t0: int | None = None
    for ts, t in a.source.paced():
        if t0 is None:
            t0 = ts
        f = a.analyzer.feed_arrow(t)
        if f is not None and f.num_rows:
            parts.append(f)
            on_findings(t0, findings_frame(f))
    f = a.analyzer.finish()
    if f is not None:
        parts.append(f)
        on_findings(t0 or 0, findings_frame(f))
    return _with_notices(build_report(a.analyzer, a.registry, _frames_of(parts), a.counts(), a.meta()), a)


def render_report(a: Analysis, fmt: str, out: IO[str], progress: Progress | None = None) -> Report:
    """Analyse and write the report as ``fmt`` to the text stream ``out``. A format with a
    streaming hook (RENDERERS[fmt].stream) gets findings chunk by chunk in bounded memory; the
    others get the whole report at the end. Returns the report (without rows when streamed)."""
    r = RENDERERS.get(fmt)
    if r is None:
        raise UsageError(f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}")
    if r.stream is not None:
        sink = r.stream(out)
        try:
            rep = stream_analysis(a, sink, progress)
            finish = getattr(sink, "finish", None)
            if finish is not None:  # a format whose end holds the summary and meta (json): before close
                finish(rep.summary, rep.meta)
        finally:
            sink.close()
        rep.summary["findings"] = sink.rows
        rep.summary["failing"] = sink.failing + failing(rep, "managed")  # rep has no rows: its unknown devices
        return rep
    rep = run_analysis(a, progress)
    out.write(render(rep, fmt))
    rep.summary["failing"] = failing(rep, "managed")
    return rep


# ------------------------------------------------------------------------------------------
# Notebook helpers and the CI gate
# ------------------------------------------------------------------------------------------
def load_trace(*paths: str, skip_bad: bool = False) -> pd.DataFrame:
    """A trace (or several) as one DataFrame of events, for notebooks."""
    rs = BACKENDS["replay"].open(ReplayOptions(paths=list(paths), skip_bad=skip_bad))
    tables = list(rs.tables())
    if not tables:
        return frame(arrow_schema().empty_table())
    return frame(pa.concat_tables(tables, promote_options="permissive"))


def analyze(traces: str | Iterable[str], sources: Sources | None = None, kernel: str | None = None,
            claims: Iterable[str] = (), iomem_relaxed: bool | None = None, reads: bool = False) -> pd.DataFrame:
    """Findings of ``traces`` as a DataFrame (columns: analyze.findings.FINDING_COLUMNS)."""
    paths = [traces] if isinstance(traces, str) else list(traces)
    return run_analysis(open_analysis(paths, sources, kernel, claims, iomem_relaxed, reads)).findings


def failing(report: Report | pd.DataFrame, level: str) -> int:
    """How many findings are at or above ``level`` (collision > exclusive > managed), not allowed
    by a user claim (a collision never is): at ``collision`` the collisions alone, at every other
    level but ``never`` they count too. Given a :class:`Report`, its writes to devices not in the
    sources (``summary["unknown_device_writes"]``: what they hit is unknown) count too at ``managed``."""
    if level not in FAIL_LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_LEVELS)}")
    if level == "never":
        return 0
    empty = report.n_findings == 0 if isinstance(report, Report) else report.empty
    n = 0
    if not empty:
        findings = report.findings if isinstance(report, Report) else report
        kinds = FINDING_KINDS[:FINDING_KINDS.index(level) + 1]
        n = int((findings["kind"].isin(kinds) & findings["allowed_by"].isna()).sum())
    if isinstance(report, Report) and level == "managed":
        n += int(report.summary.get("unknown_device_writes") or 0)
    return n
