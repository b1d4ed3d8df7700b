"""Findings summaries accumulated chunk by chunk from Arrow findings tables, without pandas.

:class:`FindingsSummary` is fed the findings tables :meth:`cfgaudit.analyze.Analyzer.feed_arrow`
returns (columns of :data:`~cfgaudit.analyze.findings.FINDING_COLUMNS`; any string or region
column may be dictionary-encoded) one chunk at a time, and gives at the end exactly what
report/frames.py gives for all of them at once, as plain Python (ints, strings, ``None``):

* :meth:`FindingsSummary.summary`: the findings-derived keys of ``frames.summarize``;
* :meth:`FindingsSummary.by_device`, :meth:`~FindingsSummary.by_region`,
  :meth:`~FindingsSummary.by_process`, :meth:`~FindingsSummary.by_time`: the rows of
  ``render._records(frames.by_device(df))`` and so on: same keys, same row order (pandas'
  ``groupby(sort=True)``: ascending keys, a missing key last; ``by_device`` and ``by_process``
  drop rows with a missing key as pandas' default ``dropna`` does).

What it relies on: ``event_index`` is a finding's event's position in the trace, and one event's
findings all come in the same chunk (chunks partition the events), so the distinct events of a
group in separate chunks are distinct and their counts add up. ``ts_ns``, ``pid``, ``comm``,
``bdf`` and ``event_index`` are required event fields (never null); a null ``kernel_taints`` or
``kernel_logs`` counts as false (as the pandas frame's ``bool`` dtype makes it).

Memory: a few counters per device, per region written to and per (pid, comm) process (with the
distinct pids of each region and the devices of each process), plus, for :meth:`by_time`
(whose bins span the findings' first..last ``ts_ns``, known only at the end), 9 bytes per finding:
its ``ts_ns`` (int64, ns) and whether it is in an exclusive region (one byte).

Times are ns; ``region_start`` and ``region_length`` are bytes into config space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FindingsSummary", "BY_REGION_KEYS", "TIME_BINS"]

BY_REGION_KEYS = ("bdf", "region_start", "region_length", "owner", "kind", "capability", "rule")
"""The group keys of :meth:`FindingsSummary.by_region`, in order."""
TIME_BINS = 20  # bins of by_time (as frames.by_time's default)
_KINDS = ("collision", "exclusive", "managed", "user")  # the keys of summary()["by_kind"], in order (FINDING_KINDS)


def _column(t: pa.Table, name: str) -> pa.Array:
    """Column ``name`` of ``t`` as one plain (not dictionary-encoded) array."""
    c = t.column(name)
    a = c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
    if pa.types.is_dictionary(a.type):
        a = a.dictionary.take(a.indices)
    if pa.types.is_large_string(a.type):
        a = a.cast(pa.string())
    return a


def _flag(a: pa.Array) -> pa.Array:
    """A boolean column with null as false."""
    return pc.fill_null(a, False)


def _only(ev: pa.Array, mask: pa.Array) -> pa.Array:
    """``ev`` where ``mask``, else null (so ``count_distinct`` counts only those)."""
    return pc.if_else(mask, ev, pa.scalar(None, ev.type))


def _distinct(a: pa.Array) -> int:
    """Distinct non-null values of ``a``."""
    return int(pc.count_distinct(a).as_py())


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    """pandas' group order: each key ascending, a missing (None) key after every other."""
    return tuple((v is None, v) for v in key)


@dataclass
class _Device:
    findings: int = 0
    writes: int = 0
    collision: int = 0
    exclusive: int = 0
    managed: int = 0
    tainting_writes: int = 0


@dataclass
class _Region:
    writes: int = 0
    pids: set[int] = field(default_factory=set)
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None


@dataclass
class _Process:
    writes: int = 0
    devices: set[str] = field(default_factory=set)
    collision: int = 0
    exclusive: int = 0
    tainting_writes: int = 0


class _Grown:
    """A numpy array grown by appending (capacity doubles: amortised O(1) per element)."""

    def __init__(self, dtype: Any) -> None:
        self._a = np.empty(1024, dtype=dtype)
        self.n = 0

    def extend(self, x: np.ndarray) -> None:
        need = self.n + x.size
        if need > self._a.size:
            a = np.empty(max(need, 2 * self._a.size), dtype=self._a.dtype)
            a[: self.n] = self._a[: self.n]
            self._a = a
        self._a[self.n:need] = x
        self.n = need

    def values(self) -> np.ndarray:
        return self._a[: self.n]


class FindingsSummary:
    """Counts and breakdowns of findings, fed chunk by chunk (see the module docstring).

    ``feed(table)`` each findings table (in trace order; empty ones are fine), then ask
    :meth:`summary`, :meth:`by_device`, :meth:`by_region`, :meth:`by_process` and :meth:`by_time`
    (any number of times; feeding more afterwards is fine too). Work per chunk is whole-column
    Arrow and numpy kernels plus a Python step per group (device, region, process) in the chunk.
    """

    def __init__(self) -> None:
        self.findings = 0
        self.writes_with_findings = 0
        self.kinds: dict[str, int] = {}
        self.collision_events = 0
        self.exclusive_writes = 0
        self.managed_writes = 0
        self.allowed = 0
        self.kernel_taints = 0
        self.kernel_logs = 0
        self.devices: set[str] = set()
        self._devices: dict[str, _Device] = {}
        self._regions: dict[tuple[Any, ...], _Region] = {}
        self._processes: dict[tuple[int, str | None], _Process] = {}
        self._ts = _Grown(np.int64)  # ts_ns of every finding, ns
        self._excl = _Grown(np.bool_)  # ... and whether its region is exclusive

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, t: pa.Table) -> None:
        """Add one findings table (columns of FINDING_COLUMNS; any may be dictionary-encoded)."""
        n = t.num_rows
        if n == 0:
            return
        ev = _column(t, "event_index")
        kind = _column(t, "kind")
        bdf = _column(t, "bdf")
        allowed_by = _column(t, "allowed_by")
        is_ex = _flag(pc.equal(kind, "exclusive"))
        is_mg = _flag(pc.equal(kind, "managed"))
        is_co = _flag(pc.equal(kind, "collision"))
        taints = _flag(_column(t, "kernel_taints"))
        logs = _flag(_column(t, "kernel_logs"))
        free = pc.is_null(allowed_by)
        ev_ex, ev_taint, ev_co = _only(ev, is_ex), _only(ev, taints), _only(ev, is_co)

        self.findings += n
        self.writes_with_findings += _distinct(ev)
        for k, c in zip(*pc.value_counts(kind).flatten()):
            if k.is_valid:
                self.kinds[k.as_py()] = self.kinds.get(k.as_py(), 0) + c.as_py()
        self.collision_events += _distinct(ev_co)
        self.exclusive_writes += _distinct(_only(ev, pc.and_(is_ex, free)))
        self.managed_writes += _distinct(_only(ev, pc.and_(is_mg, free)))
        self.allowed += n - allowed_by.null_count
        self.kernel_taints += _distinct(ev_taint)
        self.kernel_logs += _distinct(_only(ev, logs))
        self.devices.update(v for v in pc.unique(bdf).to_pylist() if v is not None)

        ts = _column(t, "ts_ns")
        pid = _column(t, "pid")
        comm = _column(t, "comm")
        g = pa.table({"bdf": bdf, "event_index": ev, "ex": is_ex.cast(pa.int64()), "mg": is_mg.cast(pa.int64()),
                      "co": is_co.cast(pa.int64()), "ev_taint": ev_taint, "ev_ex": ev_ex, "ev_co": ev_co,
                      "ts_ns": ts, "pid": pid, "comm": comm,
                      **{k: kind if k == "kind" else _column(t, k) for k in BY_REGION_KEYS[1:]}})
        self._feed_devices(g)
        self._feed_regions(g)
        self._feed_processes(g)
        self._ts.extend(ts.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
        self._excl.extend(is_ex.to_numpy(zero_copy_only=False).astype(np.bool_, copy=False))

    def _feed_devices(self, g: pa.Table) -> None:
        agg = g.group_by("bdf", use_threads=False).aggregate([
            ([], "count_all"), ("event_index", "count_distinct"), ("co", "sum"), ("ex", "sum"), ("mg", "sum"),
            ("ev_taint", "count_distinct")])
        for r in agg.to_pylist():
            if r["bdf"] is None:  # pandas' groupby drops a missing key
                continue
            d = self._devices.setdefault(r["bdf"], _Device())
            d.findings += r["count_all"]
            d.writes += r["event_index_count_distinct"]
            d.collision += r["co_sum"] or 0
            d.exclusive += r["ex_sum"] or 0
            d.managed += r["mg_sum"] or 0
            d.tainting_writes += r["ev_taint_count_distinct"]

    def _feed_regions(self, g: pa.Table) -> None:
        agg = g.group_by(list(BY_REGION_KEYS), use_threads=False).aggregate([
            ("event_index", "count_distinct"), ("pid", "distinct"), ("ts_ns", "min"), ("ts_ns", "max")])
        for r in agg.to_pylist():
            key = tuple(r[k] for k in BY_REGION_KEYS)
            reg = self._regions.setdefault(key, _Region())
            reg.writes += r["event_index_count_distinct"]
            reg.pids.update(p for p in r["pid_distinct"] if p is not None)
            lo, hi = r["ts_ns_min"], r["ts_ns_max"]
            if lo is not None:
                reg.first_ts_ns = lo if reg.first_ts_ns is None else min(reg.first_ts_ns, lo)
                reg.last_ts_ns = hi if reg.last_ts_ns is None else max(reg.last_ts_ns, hi)

    def _feed_processes(self, g: pa.Table) -> None:
        agg = g.group_by(["pid", "comm"], use_threads=False).aggregate([
            ("event_index", "count_distinct"), ("bdf", "distinct"), ("ev_co", "count_distinct"),
            ("ev_ex", "count_distinct"), ("ev_taint", "count_distinct")])
        for r in agg.to_pylist():
            p = self._processes.setdefault((r["pid"], r["comm"]), _Process())
            p.writes += r["event_index_count_distinct"]
            p.devices.update(b for b in r["bdf_distinct"] if b is not None)
            p.collision += r["ev_co_count_distinct"]
            p.exclusive += r["ev_ex_count_distinct"]
            p.tainting_writes += r["ev_taint_count_distinct"]

    # -- results ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The findings-derived keys of ``frames.summarize``, in its order: findings,
        writes_with_findings, by_kind, collision_events, exclusive_writes, managed_writes, allowed, kernel_taints,
        kernel_logs, devices (sorted BDFs), processes (sorted ``"pid/comm"``)."""
        return {
            "findings": self.findings,
            "writes_with_findings": self.writes_with_findings,
            "by_kind": {k: self.kinds.get(k, 0) for k in _KINDS},
            "collision_events": self.collision_events,
            "exclusive_writes": self.exclusive_writes,
            "managed_writes": self.managed_writes,
            "allowed": self.allowed,
            "kernel_taints": self.kernel_taints,
            "kernel_logs": self.kernel_logs,
            "devices": sorted(self.devices),
            "processes": sorted({f"{p}/{c}" for p, c in self._processes}),
        }

    def summarize(self, counts: dict[str, int]) -> dict[str, Any]:
        """``frames.summarize(findings, counts)``: the trace ``counts`` (events, writes, reads,
        lost, skipped), then :meth:`summary`."""
        return {**counts, **self.summary()}

    def by_device(self) -> list[dict[str, Any]]:
        """Per device (by BDF): findings, distinct writes, collision, exclusive and managed
        findings, writes the kernel taints on."""
        return [{"bdf": b, "findings": d.findings, "writes": d.writes, "collision": d.collision,
                 "exclusive": d.exclusive, "managed": d.managed, "tainting_writes": d.tainting_writes}
                for b, d in sorted(self._devices.items())]

    def by_region(self) -> list[dict[str, Any]]:
        """Per (bdf, region_start, region_length, owner, kind, capability, rule): distinct writes,
        distinct processes (pids), first and last ``ts_ns`` (ns)."""
        rows = []
        for key in sorted(self._regions, key=_sort_key):
            r = self._regions[key]
            rows.append({**dict(zip(BY_REGION_KEYS, key)), "writes": r.writes, "processes": len(r.pids),
                         "first_ts_ns": r.first_ts_ns, "last_ts_ns": r.last_ts_ns})
        return rows

    def by_process(self) -> list[dict[str, Any]]:
        """Per (pid, comm): distinct writes, distinct devices, distinct collision events, distinct
        writes into exclusive regions, distinct writes the kernel taints on."""
        return [{"pid": pid, "comm": comm, "writes": p.writes, "devices": len(p.devices),
                 "collision": p.collision, "exclusive": p.exclusive, "tainting_writes": p.tainting_writes}
                for (pid, comm), p in sorted(self._processes.items(), key=lambda kv: _sort_key(kv[0]))
                if pid is not None and comm is not None]  # pandas' groupby drops a missing key

    def by_time(self, bins: int = TIME_BINS) -> list[dict[str, Any]]:
        """Findings per time bin: ``bins`` equal bins of whole ns over the findings' first..last
        ``ts_ns``, only bins holding findings: start_ns, end_ns (ns), findings, exclusive."""
        ts = self._ts.values()
        if ts.size == 0:
            return []
        lo, hi = int(ts.min()), int(ts.max())
        width = max(1, -(-(hi - lo + 1) // bins))
        b = (ts - lo) // width
        total = np.bincount(b)
        excl = np.bincount(b[self._excl.values()], minlength=total.size)
        return [{"start_ns": lo + i * width, "end_ns": lo + i * width + width, "findings": int(total[i]),
                 "exclusive": int(excl[i])} for i in np.flatnonzero(total).tolist()]

    def breakdowns(self) -> dict[str, list[dict[str, Any]]]:
        """by_device, by_region, by_process and by_time, in that order (the json summary's tail)."""
        return {"by_device": self.by_device(), "by_region": self.by_region(),
                "by_process": self.by_process(), "by_time": self.by_time()}

