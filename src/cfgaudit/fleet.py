"""Fleet analysis (issue 13): many hosts' trace segments, one Dask task each, into one dataset.

The library side of ``cfgaudit fleet analyze`` and ``fleet report`` (docs/fleet.md). Nothing here
prints: progress goes to a callback, results to the caller, text to report/fleet.py.

* :func:`find_segments`: directories, globs or fsspec URLs -> :class:`Segment` (trace files:
  ``*.parquet``, ``*.jsonl``; a directory's open recorder segments ``*.partial.jsonl`` only when
  named explicitly).
* :func:`analyze_segment`: THE task. It runs what ``cfgaudit analyze SEGMENT`` runs
  (:func:`cfgaudit.audit.open_analysis` + :func:`~cfgaudit.audit.stream_analysis`, against the
  segment's own embedded snapshot and kernel release), streams the findings to
  ``OUT/host=<HOST>/<SEGMENT-ID>.parquet`` (columns :data:`FLEET_COLUMNS`: analyze's findings plus
  ``segment``; ``host`` is the hive partition) and writes the segment record
  ``OUT/_segments/<SEGMENT-ID>.json`` LAST: the record is the "done" marker. Both are written
  whole or not at all (a temporary file renamed into place; one PUT on an object store), so a
  task run twice (a killed worker, a resumed run) leaves the same files.
* :func:`run_fleet`: every segment not yet done, one task each, on a Dask cluster (a running
  one at ``scheduler``, or a LocalCluster of worker processes).
* :func:`load_fleet` / :func:`fleet_report`: the dataset (pyarrow dataset, hive partitioning)
  and the records as pandas frames; the fleet summary by tool, device model (pci.ids names),
  owner/rule, kernel release and host.

Sizes are bytes, times ns (``*_ns``) or seconds (``*_s``).
"""
from __future__ import annotations

import contextlib
import glob as globmod
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .analyze.findings import FINDING_FIELDS, FINDING_KINDS, findings_schema
from .audit import FAIL_LEVELS, collisions_visible, failing, open_analysis, stream_analysis
from .errors import CfgauditError, InputError, OutputError, UsageError
from .ondemand import frame, load_pandas
from .probes.tracefile import PARTIAL_SUFFIX
from .regions.pciids import PciIds
from .report.fleet import FleetReport, build_fleet_report

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FLEET_COLUMNS", "FLEET_FORMAT", "RECORD_FORMAT", "Segment", "FleetOptions", "FleetRun", "FleetData",
           "SegmentError", "find_segments", "analyze_segment", "run_fleet", "load_fleet", "fleet_report",
           "fleet_failing", "default_workers", "findings_dataset", "dataset_schema", "REPORT_COLUMNS"]

FLEET_FORMAT = "cfgaudit-fleet"  # OUT/_fleet.json: the options every segment of OUT was analysed with
RECORD_FORMAT = "cfgaudit-fleet-segment"  # OUT/_segments/<id>.json
FLEET_VERSION = 1
SEGMENTS_DIR = "_segments"  # underscore: pyarrow's dataset discovery ignores it (ignore_prefixes)
SEGMENT_SUFFIXES = (".parquet", ".jsonl")  # what a directory is searched for (recursively)
HOST_DIR_RE = re.compile(r"(?:^|/)host=([^/]+)/")  # the recorder's (hive) host directory
NOTICES_KEPT = 100  # notice records kept per segment record (the count is always whole)
TASK_PREFIX = "cfgaudit-segment-"
# Columns of the findings files: analyze's findings (analyze.findings.FINDING_FIELDS) plus the
# segment's id; the dataset adds ``host`` from the directory names (hive partitioning).
FLEET_COLUMNS: tuple[str, ...] = (*(f.name for f in FINDING_FIELDS), "segment")
_KINDS_FAILING = ("collision", "exclusive", "managed")


def _file_schema() -> pa.Schema:
    return findings_schema().append(pa.field("segment", pa.string()))


def dataset_schema() -> pa.Schema:
    """The findings dataset's schema: :data:`FLEET_COLUMNS` then ``host`` (the partition)."""
    return _file_schema().append(pa.field("host", pa.string()))


# ------------------------------------------------------------------------------------------
# Segments
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One trace segment to analyse. ``url``: its path (local) or fsspec URL; ``id``: its name
    in OUT (the file's stem and a hash of ``url``: stable while the file changes); ``version``:
    size and modification time (or an object store's ETag): a done segment whose file has
    another version is analysed again; ``host_dir``: the host its ``host=NAME`` directory names."""

    url: str
    id: str
    version: str
    size: int
    host_dir: str | None = None


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for suf in (PARTIAL_SUFFIX, *SEGMENT_SUFFIXES, ".json", ".ndjson", ".pq"):
        if base.lower().endswith(suf):
            base = base[: -len(suf)]
            break
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[:80] or "segment"


def segment_id(url: str) -> str:
    """``<file stem>-<16 hex digits of sha256(url)>``: unique per file, readable in OUT."""
    return f"{_stem(url)}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    p = fs.protocol
    return p if isinstance(p, str) else p[0]


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return _protocol(fs) in ("file", "local")


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return f"{info.get('size')}:{info[key]}"
    return f"{info.get('size')}:?"


def _segment(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> Segment:
    url = os.path.abspath(path) if _is_local(fs) else fs.unstrip_protocol(path)
    if _is_local(fs):  # nanoseconds: two writes within one second still differ
        st = os.stat(url)
        version = f"{st.st_size}:{st.st_mtime_ns}"
    else:
        version = _version(info)
    hosts = HOST_DIR_RE.findall(path)
    return Segment(url, segment_id(url), version, int(info.get("size") or 0),
                   urllib.parse.unquote(hosts[-1]) if hosts else None)


def _wanted(path: str, explicit_partials: bool) -> bool:
    low = path.lower()
    name = low.rsplit("/", 1)[-1]
    if name.startswith("."):
        return False
    if low.endswith(PARTIAL_SUFFIX):
        return explicit_partials
    return low.endswith(SEGMENT_SUFFIXES)


def find_segments(paths: Sequence[str]) -> list[Segment]:
    """The segments ``paths`` name, sorted by URL, each once. A path is a file (taken whatever
    its name), a directory (searched recursively for ``*.parquet`` and ``*.jsonl``, without the
    open segments ``*.partial.jsonl`` of a running recorder: they still change), a glob (its
    files as a directory's; a pattern ending ``.partial.jsonl`` takes partials) or any of these
    as an fsspec URL (``s3://bucket/fleet/``). A path that names nothing is a UsageError."""
    out: dict[str, Segment] = {}
    for p in paths:
        try:
            fs, root = fsspec.core.url_to_fs(p)
        except (ImportError, ValueError) as err:  # an unknown protocol, or its package missing
            raise UsageError(f"{p}: {err}") from err
        explicit = root.lower().endswith(PARTIAL_SUFFIX)
        found: list[tuple[str, dict[str, Any]]] = []
        try:
            if globmod.has_magic(root):
                for m, info in sorted(fs.glob(root, detail=True).items()):
                    if info.get("type") == "directory":
                        found += [(f, i) for f, i in sorted(fs.find(m, detail=True).items()) if _wanted(f, False)]
                    elif _wanted(m, explicit):
                        found.append((m, info))
                if not found:
                    raise UsageError(f"{p}: matches no segment file (*.parquet, *.jsonl)")
            elif fs.isdir(root):
                found = [(f, i) for f, i in sorted(fs.find(root, detail=True).items()) if _wanted(f, False)]
            elif fs.isfile(root):
                found = [(root, fs.info(root))]
            else:
                raise UsageError(f"{p}: no such file or directory")
        except OSError as err:
            raise InputError(f"cannot list: {err}", path=p) from err
        for f, info in found:
            seg = _segment(fs, f, info)
            out.setdefault(seg.url, seg)
    return [out[u] for u in sorted(out)]


# ------------------------------------------------------------------------------------------
# The output directory (local or any fsspec filesystem)
# ------------------------------------------------------------------------------------------
class _Out:
    """OUT: where the dataset and the records go. Writes are whole-or-nothing: locally a
    temporary file (a dot name, which dataset discovery ignores) renamed into place; elsewhere
    one PUT of a finished local file (an object appears whole or not at all)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = _is_local(self.fs)
        if self.local:
            self.root = os.path.abspath(self.root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    @contextlib.contextmanager
    def writing(self, *parts: str) -> Iterator[str]:
        """A local path to write; on success it becomes OUT/PARTS (whole), on failure it is gone."""
        final = self.path(*parts)
        if self.local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{parts[-1]}.", suffix=".tmp", dir=os.path.dirname(final))
            os.close(fd)
        else:
            fd, tmp = tempfile.mkstemp(prefix="cfgaudit-fleet-", suffix=".tmp")
            os.close(fd)
        try:
            yield tmp
            if self.local:
                os.replace(tmp, final)
            else:
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_json(self, doc: dict[str, Any], *parts: str) -> None:
        with self.writing(*parts) as tmp:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, separators=(",", ":"), sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())

    def read_json(self, *parts: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path(*parts), "rb") as fh:
                doc = json.loads(fh.read())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # a torn or foreign file: as if not there (the segment is analysed again)
        return doc if isinstance(doc, dict) else None

    def remove(self, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(*parts))

    def records(self) -> list[dict[str, Any]]:
        """Every segment record (the done markers) in OUT/_segments, sorted by segment id."""
        try:
            names = sorted(self.fs.ls(self.path(SEGMENTS_DIR), detail=False))
        except FileNotFoundError:
            return []
        docs = []
        for n in names:
            base = n.rstrip("/").rsplit("/", 1)[-1]
            if base.endswith(".json") and not base.startswith("."):
                d = self.read_json(SEGMENTS_DIR, base)
                if d is not None and d.get("format") == RECORD_FORMAT:
                    docs.append(d)
        return docs


def _host_dir(host: str) -> str:
    """``host=NAME`` with NAME percent-encoded (pyarrow's hive partitioning decodes it)."""
    return "host=" + urllib.parse.quote(host, safe="")


# ------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetOptions:
    """How every segment of a fleet is analysed (``analyze``'s ``--reads``, ``--skip-bad``)."""

    reads: bool = False
    skip_bad: bool = False


@contextlib.contextmanager
def _local_copy(url: str) -> Iterator[str]:
    """A local path of ``url``: itself when local, else a temporary copy (bounded by the
    segment's size; removed afterwards) with the same file name, so the format is recognised."""
    fs, path = fsspec.core.url_to_fs(url)
    if _is_local(fs):
        yield path
        return
    d = tempfile.mkdtemp(prefix="cfgaudit-segment-")
    try:
        local = os.path.join(d, path.rsplit("/", 1)[-1] or "segment")
        fs.get_file(path, local)
        yield local
    finally:
        shutil.rmtree(d, ignore_errors=True)


class _FindingsFile:
    """The streaming sink of one segment's findings: Arrow chunks appended to a Parquet file
    (plain strings, the ``segment`` column added); counts by kind as they go (a streamed
    analysis's report has no findings-derived summary)."""

    def __init__(self, path: str, seg_id: str) -> None:
        self.schema = _file_schema()
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.seg_id = seg_id
        self.rows = 0
        self.by_kind = {k: 0 for k in FINDING_KINDS}
        self.failing = {k: 0 for k in FINDING_KINDS}  # not allowed by a user claim

    def __call__(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        cols = [pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in t.columns]
        cols.append(pa.array([self.seg_id] * t.num_rows, pa.string()))
        plain = pa.Table.from_arrays(cols, names=[*t.column_names, "segment"]).cast(self.schema)
        self.writer.write_table(plain)
        self.rows += plain.num_rows
        kinds = plain.column("kind")
        allowed = pc.is_valid(plain.column("allowed_by"))
        for k, n in zip(*_counts(kinds)):
            self.by_kind[k] = self.by_kind.get(k, 0) + n
        for k, n in zip(*_counts(pc.filter(kinds, pc.invert(allowed)))):
            self.failing[k] = self.failing.get(k, 0) + n

    def close(self) -> None:
        self.writer.close()


def _counts(col: pa.ChunkedArray | pa.Array) -> tuple[list[str], list[int]]:
    vc = pc.value_counts(col)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


class SegmentError(Exception):
    """A segment that could not be analysed: ``url`` and the one-line reason."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


def _reason(err: BaseException, local: str, url: str) -> str:
    """One line saying why, naming ``url`` where the message named the local copy ``local``."""
    if isinstance(err, CfgauditError):
        msg = err.message if err.path in (local, url) else str(err)
        if err.path in (local, url) and err.line is not None:
            msg = f"line {err.line}: {msg}"
    else:
        msg = f"{type(err).__name__}: {err}" if not isinstance(err, OSError) else \
            f"cannot read: {err.strerror or err}"
    return " ".join(msg.replace(local, url).split())


def _host_of(header: dict[str, Any], seg: Segment) -> str:
    h = header.get("host")
    if isinstance(h, str) and h.strip():
        return h
    if seg.host_dir:
        return seg.host_dir
    raise InputError("the header names no host and the path has no host=NAME directory "
                     "(put the segment under DIR/host=NAME/)")


def _devices(views: Any) -> dict[str, dict[str, Any]]:
    return {v.cs.bdf: {"vendor": v.cs.vendor, "device": v.cs.device, "class": v.cs.class_code,
                       "driver": v.cs.driver} for v in views}


def analyze_segment(seg: Segment, out: str, options: FleetOptions = FleetOptions()) -> dict[str, Any]:
    """THE fleet task: analyse ``seg`` as ``cfgaudit analyze SEGMENT`` would (its own embedded
    snapshot and kernel release) and write its findings file and record into ``out``. Pure in
    effect and idempotent: the same segment gives the same files, written whole.

    Returns ``{"ok": True, "record": RECORD}`` or, for a segment that cannot be analysed (a
    malformed or unreadable trace, no snapshot, no host), ``{"ok": False, "url", "segment",
    "error"}``: nothing is marked done, and a later run tries it again."""
    t0 = time.perf_counter()
    o = _Out(out)
    local = seg.url
    try:
        with _local_copy(seg.url) as local:
            rec = _analyze_local(local, seg, o, options)
    except (CfgauditError, OSError, pa.ArrowException, ValueError) as err:  # the segment's fault: named
        return {"ok": False, "url": seg.url, "segment": seg.id, "error": _reason(err, local, seg.url)}
    rec["seconds"] = round(time.perf_counter() - t0, 6)
    return {"ok": True, "record": rec}


def _analyze_local(path: str, seg: Segment, o: _Out, options: FleetOptions) -> dict[str, Any]:
    # analyze would fall back to this machine's devices without a snapshot: meaningless on a worker
    a = open_analysis([path], reads=options.reads, skip_bad=options.skip_bad, require_snapshot=True)
    reader = a.source.readers[0]
    header = reader.header
    host = _host_of(header, seg)
    old = o.read_json(SEGMENTS_DIR, seg.id + ".json")
    if old is not None:  # another version: not done until its new record is written
        o.remove(SEGMENTS_DIR, seg.id + ".json")
    hdir = _host_dir(host)
    with o.writing(hdir, seg.id + ".parquet") as tmp:
        sink = _FindingsFile(tmp, seg.id)
        try:
            rep = stream_analysis(a, sink)
        finally:
            sink.close()
    if old is not None and old.get("host") != host and isinstance(old.get("host"), str):
        o.remove(_host_dir(old["host"]), seg.id + ".parquet")  # the segment's host changed: one file only
    s, meta = rep.summary, rep.meta
    notes = list(s.get("unmediated") or [])
    footer = reader.footer
    seg_facts = header.get("segment") if isinstance(header.get("segment"), dict) else {}
    rec: dict[str, Any] = {
        "format": RECORD_FORMAT, "version": FLEET_VERSION,
        "segment": seg.id, "url": seg.url, "file_version": seg.version, "size": seg.size,
        "host": host, "host_from": "header" if header.get("host") else "path",
        "machine_id": header.get("machine_id"), "boot_id": header.get("boot_id"),
        "seq": seg_facts.get("seq"), "started_unix_ns": seg_facts.get("started_unix_ns",
                                                                      header.get("started_unix_ns")),
        "kernel_release": header.get("kernel_release") or str(a.registry.kernel),
        "kernel_version": header.get("kernel_version"), "kernel": meta.get("kernel"),
        "iomem_relaxed": meta.get("iomem_relaxed"), "backend": header.get("backend"),
        "doe_exchanges": header.get("doe_exchanges"), "collisions_visible": collisions_visible(s, meta),
        "events": int(s.get("events") or 0), "writes": int(s.get("writes") or 0), "reads": int(s.get("reads") or 0),
        "lost": int(s.get("lost") or 0), "skipped": int(s.get("skipped") or 0),
        "closed_by": footer.get("closed_by"), "footer": bool(footer),
        "findings": sink.rows, "by_kind": sink.by_kind, "failing_by_kind": sink.failing,
        "unknown_device_writes": int(s.get("unknown_device_writes") or 0),
        "unknown_devices": s.get("unknown_devices") or {},
        "notices": len(notes), "notice_kinds": sorted({n.get("kind") or n.get("via") or "" for n in notes} - {""}),
        "notice_records": notes[:NOTICES_KEPT],
        "devices": _devices(a.registry.views),
        "warnings": a.warnings[:20], "options": asdict(options),
    }
    o.write_json(rec, SEGMENTS_DIR, seg.id + ".json")  # LAST: the segment is done
    return rec


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------
@dataclass
class FleetRun:
    """What :func:`run_fleet` did: ``segments`` found, ``analysed`` now, ``skipped`` (done
    before, same file version), ``errors`` (``SegmentError`` per bad segment, by URL),
    ``seconds`` of wall time, ``workers`` the cluster had, ``records`` of the segments analysed now."""

    out: str
    segments: int = 0
    analysed: int = 0
    skipped: int = 0
    errors: list[SegmentError] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


Progress = Callable[[int, int], None]  # (segments finished, segments to analyse)


def default_workers() -> int:
    """Worker processes of a LocalCluster when not told: min(CPUs, 4)."""
    return max(1, min(os.cpu_count() or 1, 4))


def _check_options(o: _Out, options: FleetOptions) -> None:
    """OUT's segments were all analysed with one set of options: refuse a run with others."""
    doc = {"format": FLEET_FORMAT, "version": FLEET_VERSION, "options": asdict(options)}
    old = o.read_json("_fleet.json")
    if old is None:
        o.write_json(doc, "_fleet.json")
    elif old.get("options") != doc["options"]:
        raise UsageError(f"{o.url} holds segments analysed with other options ({old.get('options')}); "
                         "use another output directory")


def _todo(o: _Out, segs: list[Segment]) -> tuple[list[Segment], int]:
    done = {r.get("segment"): r.get("file_version") for r in o.records()}
    todo = [s for s in segs if done.get(s.id) != s.version]
    return todo, len(segs) - len(todo)


def _remove_stale_temporaries(o: _Out) -> None:
    """Temporary files a killed task left (``.NAME.XXXX.tmp``): only locally; after the run."""
    if not o.local:
        return
    for p in globmod.glob(os.path.join(o.root, "**", ".*.tmp"), recursive=True):
        with contextlib.suppress(OSError):
            os.unlink(p)


def run_fleet(paths: Sequence[str], out: str, scheduler: str | None = None, workers: int | None = None,
              options: FleetOptions = FleetOptions(), progress: Progress | None = None,
              quiet: bool = True) -> FleetRun:
    """Analyse every segment ``paths`` name (:func:`find_segments`) into ``out`` (a directory
    or fsspec URL), one Dask task per segment not yet done. ``scheduler``: the address of a
    running Dask scheduler (``tcp://HOST:8786``); without it a LocalCluster of ``workers``
    processes (default :func:`default_workers`), one thread each, is started and closed here.
    ``quiet``: the cluster's own log lines below ERROR are not shown. Bad segments are in the
    result's ``errors``; the others complete."""
    t0 = time.perf_counter()
    segs = find_segments(paths)
    o = _Out(out)
    try:
        o.makedirs(SEGMENTS_DIR)
    except OSError as err:
        raise OutputError(f"cannot create: {err}", path=out) from err
    _check_options(o, options)
    todo, skipped = _todo(o, segs)
    run = FleetRun(o.url, segments=len(segs), skipped=skipped)
    if todo:
        load_pandas()  # dask's modules import pandas: lift the entry point's deferral first
        client, cluster = _connect(scheduler, workers, quiet)
        try:
            run.workers = len(client.scheduler_info().get("workers", {}))
            _submit_all(client, todo, out if not o.local else o.root, options, run, progress)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        _remove_stale_temporaries(o)
    run.errors.sort(key=lambda e: e.url)
    run.seconds = time.perf_counter() - t0
    return run


def _connect(scheduler: str | None, workers: int | None, quiet: bool) -> tuple[Any, Any]:
    # dask is an optional heavy dependency loaded here (the fleet commands alone), never at start-up
    from dask.distributed import Client, LocalCluster
    level = logging.ERROR if quiet else logging.WARNING
    if scheduler:
        try:
            return Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError) as err:
            raise UsageError(f"--scheduler {scheduler}: cannot connect: {err}") from err
    n = workers or default_workers()
    # ":0": the scheduler's HTTP endpoints (no dashboard without bokeh) on a free port, not 8787
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=level)
    return Client(cluster), cluster


def _submit_all(client: Any, todo: list[Segment], out: str, options: FleetOptions, run: FleetRun,
                progress: Progress | None) -> None:
    # dask is an optional heavy dependency loaded here (the fleet commands alone), never at start-up
    from dask.distributed import as_completed
    keys = [TASK_PREFIX + s.id for s in todo]
    futs = client.map(analyze_segment, todo, out=out, options=options, key=keys, pure=False)
    by_key = dict(zip(keys, todo))
    done = 0
    if progress:
        progress(0, len(todo))
    for fut in as_completed(futs):
        seg = by_key[fut.key]
        try:
            res = fut.result()
        except Exception as err:  # noqa: BLE001 - a worker that died with it each time (KilledWorker), a bug
            why = "its worker died each time it ran (Dask's allowed-failures)" \
                if type(err).__name__ == "KilledWorker" else f"{type(err).__name__}: {' '.join(str(err).split())}"
            run.errors.append(SegmentError(seg.url, why))
        else:
            if res.get("ok"):
                run.analysed += 1
                run.records.append(res["record"])
            else:
                run.errors.append(SegmentError(res["url"], res["error"]))
        fut.release()
        done += 1
        if progress:
            progress(done, len(todo))


# ------------------------------------------------------------------------------------------
# Reading a fleet's output: the dataset and the records, as pandas frames
# ------------------------------------------------------------------------------------------
# The findings columns the fleet summary reads (of FLEET_COLUMNS, plus the partition ``host``).
REPORT_COLUMNS = ("segment", "host", "comm", "bdf", "kind", "owner", "rule", "allowed_by", "event_index",
                  "kernel_taints")


@dataclass
class FleetData:
    """A fleet's output as frames. ``findings``: the findings of the segments done (columns
    ``columns`` of :func:`load_fleet`); ``segments``: one row per segment record
    (report.fleet.SEGMENT_COLUMNS and more); ``devices``: one row per (segment, device):
    segment, host, bdf, vendor, device, class, driver; ``records``: the records themselves."""

    out: str
    findings: pd.DataFrame
    segments: pd.DataFrame
    devices: pd.DataFrame
    records: list[dict[str, Any]]


def findings_dataset(out: str) -> pads.Dataset:
    """OUT's findings as a pyarrow dataset (hive partitioning: the ``host`` column from
    ``host=NAME`` directories; ``_segments`` and dot files are not part of it)."""
    o = _Out(out)
    part = pads.partitioning(pa.schema([("host", pa.string())]), flavor="hive")
    return pads.dataset(o.root, filesystem=None if o.local else o.fs, format="parquet", partitioning=part,
                        schema=dataset_schema())


def load_fleet(out: str, columns: Sequence[str] = REPORT_COLUMNS) -> FleetData:
    """Read a fleet's output directory (or URL): the findings of every segment whose record
    exists (a findings file without its record is a task that did not finish: left out)."""
    pd = load_pandas()
    o = _Out(out)
    recs = o.records()
    if not recs and o.read_json("_fleet.json") is None:
        raise InputError("not a fleet output directory (no _fleet.json, no _segments/: made by 'cfgaudit fleet "
                         "analyze')", path=out)
    done = [r["segment"] for r in recs]
    try:
        t = findings_dataset(out).to_table(columns=list(columns), filter=pc.field("segment").isin(done))
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"cannot read the findings dataset: {' '.join(str(err).split())}", path=out) from err
    t = pa.table({n: (c.dictionary_encode() if pa.types.is_string(c.type) else c)  # categoricals: less memory
                  for n, c in zip(t.column_names, t.columns)})
    findings = frame(t)
    for c in findings.columns:
        if isinstance(findings[c].dtype, pd.CategoricalDtype):
            findings[c] = findings[c].astype("string")
    seg_rows = [{"segment": r["segment"], "host": r["host"], "url": r.get("url"),
                 "kernel_release": r.get("kernel_release"), "backend": r.get("backend"),
                 "machine_id": r.get("machine_id"), "boot_id": r.get("boot_id"), "seq": r.get("seq"),
                 "events": int(r.get("events") or 0), "writes": int(r.get("writes") or 0),
                 "lost": int(r.get("lost") or 0), "skipped": int(r.get("skipped") or 0),
                 "notices": int(r.get("notices") or 0), "notice_kinds": ", ".join(r.get("notice_kinds") or []),
                 "unknown_device_writes": int(r.get("unknown_device_writes") or 0),
                 "collisions_visible": bool(r.get("collisions_visible")), "findings": int(r.get("findings") or 0)}
                for r in recs]
    segments = pd.DataFrame(seg_rows, columns=["segment", "host", "url", "kernel_release", "backend", "machine_id",
                                               "boot_id", "seq", "events", "writes", "lost", "skipped", "notices",
                                               "notice_kinds", "unknown_device_writes", "collisions_visible",
                                               "findings"])
    dev_rows = [{"segment": r["segment"], "host": r["host"], "bdf": bdf, "vendor": d.get("vendor"),
                 "device": d.get("device"), "class": d.get("class"), "driver": d.get("driver")}
                for r in recs for bdf, d in sorted((r.get("devices") or {}).items())]
    devices = pd.DataFrame(dev_rows, columns=["segment", "host", "bdf", "vendor", "device", "class", "driver"])
    devices = devices.astype({"vendor": "Int64", "device": "Int64", "class": "Int64"})
    return FleetData(o.url, findings, segments, devices, recs)


def fleet_report(out: str, pci_ids: str | None = None) -> FleetReport:
    """The fleet summary of ``out`` (report.fleet.FleetReport): by tool, device model (names
    from ``pci_ids``, default the system's pci.ids: the names ``cfgaudit devices`` shows), owner
    and rule, kernel release and host; the hosts that lost events or opened unseen paths."""
    data = load_fleet(out)
    ids = PciIds.load(pci_ids)

    def names(vendor: int, device: int) -> tuple[str | None, str | None, str]:
        return ids.vendor_name(vendor), ids.device_name(vendor, device), ids.describe(vendor, device)

    return build_fleet_report(data.findings, data.segments, data.devices, names,
                              {"out": data.out, "pci_ids": ids.path})


def fleet_failing(rep: FleetReport, level: str) -> int:
    """Findings at or above ``level`` not allowed by a user claim, as ``check --fail-on`` counts
    them (:func:`cfgaudit.audit.failing`), over the whole fleet; at ``managed`` the writes to
    devices not in their host's snapshot count too."""
    if level not in FAIL_LEVELS:
        raise UsageError(f"--fail-on must be one of {', '.join(FAIL_LEVELS)}")
    n = failing(rep.findings, level)
    if level == "managed":
        n += int(rep.summary.get("unknown_device_writes") or 0)
    return n
