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
    if not kernel and not ds.kernel_release and header.get("kernel_release"):
        kernel = header["kernel_release"]
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


def run_analysis(a: Analysis, sink=None) -> Report:
    """Stream every chunk through the analyzer. With ``sink``, each findings chunk goes to it
    and is not kept (bounded memory); otherwise the findings are collected into the report."""
    import os as _os

    prog = _Progress(sum(_os.path.getsize(p) for p in a.source.paths))
    parts: list[_pd.DataFrame] = []
    for t in a.source.tables():
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


def render_report(report: Report, fmt: str) -> str:
    """Render a report with one of :data:`REPORT_FORMATS` (report/render.py's table)."""
    from .report.render import render

    return render(report, fmt)


def analyze_to_csv(a: Analysis, out) -> Report:
    """Stream findings as CSV to the text stream ``out`` (one header line, a row per finding),
    holding no more than one chunk of findings in memory. Returns the report without findings."""
    import csv as _csv

    w = _csv.writer(out, lineterminator="\n")
    w.writerow(list(FINDING_COLUMNS))
    state = {"rows": 0, "failing": 0}

    def sink(f: _pd.DataFrame) -> None:
        if f.empty:
            return
        f.to_csv(out, header=False, index=False, lineterminator="\n")
        state["rows"] += len(f)
        state["failing"] += failing(f, "managed")

    rep = run_analysis(a, sink=sink)
    rep.summary["findings"] = state["rows"]
    rep.summary["failing"] = state["failing"]
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
