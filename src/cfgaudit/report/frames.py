"""Findings as pandas DataFrames, and the summaries built from them.

A finding is one (write, region) pair: the write's event fields, the region it overlaps, and
the kernel's own verdict on the write. :class:`Report` bundles the findings with everything
a renderer needs (summary counts, the regions for plots, where the trace came from). The columns
are defined in :mod:`cfgaudit.analyze.findings`; ``FINDING_COLUMNS``, ``SEVERITY`` and
``empty_findings`` are re-exported from there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Union

from ..analyze.findings import FINDING_COLUMNS, FINDING_KINDS, SEVERITY, empty_findings
from ..ondemand import load_pandas

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FINDING_COLUMNS", "SEVERITY", "Report", "empty_findings", "by_device", "by_region", "by_process",
           "by_time", "summarize"]

# A frame, or a function that makes it when it is first asked for (pandas is then imported).
Frame = Union["pd.DataFrame", Callable[[], "pd.DataFrame"]]


class Report:
    """Everything a renderer needs.

    ``findings``: one row per (write, region), columns :data:`FINDING_COLUMNS`, sorted by
    (ts_ns, event_index, region_start). ``regions``: the registry as a frame (bdf, start,
    length, owner, kind, capability, rule, source). ``write_hist``: writes per (bdf, offset)
    for plots (columns bdf, offset, writes). ``summary``: counts (see :func:`summarize`).
    ``meta``: where it came from (traces, kernel, iomem_relaxed, host, backend).

    Each frame may be given as a function that makes it: it is called (and pandas loaded) the
    first time the frame is asked for, so a renderer that never looks at a frame (the table of
    a report without findings, ``n_findings``) needs no pandas. ``n_findings``: the number of
    findings rows, known without building the frame when the builder says so.
    """

    def __init__(self, findings: Frame, regions: Frame, write_hist: Frame, summary: dict[str, Any] | None = None,
                 meta: dict[str, Any] | None = None, n_findings: int | None = None) -> None:
        self._frames: dict[str, Frame] = {"findings": findings, "regions": regions, "write_hist": write_hist}
        self.summary: dict[str, Any] = summary if summary is not None else {}
        self.meta: dict[str, Any] = meta if meta is not None else {}
        self._n = n_findings

    def _frame(self, name: str) -> pd.DataFrame:
        f = self._frames[name]
        if callable(f):
            f = self._frames[name] = f()
        return f

    @property
    def findings(self) -> pd.DataFrame:
        return self._frame("findings")

    @property
    def regions(self) -> pd.DataFrame:
        return self._frame("regions")

    @property
    def write_hist(self) -> pd.DataFrame:
        return self._frame("write_hist")

    @property
    def n_findings(self) -> int:
        """Findings rows (without building the frame when the count was given)."""
        if self._n is None:
            self._n = len(self.findings)
        return self._n


def by_device(f: pd.DataFrame) -> pd.DataFrame:
    """Per device: findings, distinct writes, collision/exclusive/managed counts, writes the kernel taints on."""
    pd = load_pandas()
    if f.empty:
        return pd.DataFrame(columns=["bdf", "findings", "writes", "collision", "exclusive", "managed",
                                     "tainting_writes"])
    g = f.groupby("bdf", sort=True)
    out = pd.DataFrame({
        "findings": g.size(),
        "writes": g["event_index"].nunique(),
        "collision": g["kind"].apply(lambda s: int((s == "collision").sum())),
        "exclusive": g["kind"].apply(lambda s: int((s == "exclusive").sum())),
        "managed": g["kind"].apply(lambda s: int((s == "managed").sum())),
        "tainting_writes": f[f["kernel_taints"]].groupby("bdf")["event_index"].nunique(),
    }).fillna(0).astype("int64").reset_index()
    return out


def by_region(f: pd.DataFrame) -> pd.DataFrame:
    """Per (bdf, region, owner, kind): how many writes hit it and by how many processes."""
    pd = load_pandas()
    cols = ["bdf", "region_start", "region_length", "owner", "kind", "capability", "rule"]
    if f.empty:
        return pd.DataFrame(columns=cols + ["writes", "processes", "first_ts_ns", "last_ts_ns"])
    g = f.groupby(cols, sort=True, dropna=False)
    return g.agg(writes=("event_index", "nunique"), processes=("pid", "nunique"),
                 first_ts_ns=("ts_ns", "min"), last_ts_ns=("ts_ns", "max")).reset_index()


def by_process(f: pd.DataFrame) -> pd.DataFrame:
    """Per (pid, comm): writes with findings, devices touched, how many collided (or, for the
    kernel's context, started an exchange during a user's request), how many hit exclusive
    ranges, and how many the kernel taints on."""
    pd = load_pandas()
    cols = ["pid", "comm"]
    if f.empty:
        return pd.DataFrame(columns=cols + ["writes", "devices", "collision", "exclusive", "tainting_writes"])
    g = f.groupby(cols, sort=True)
    out = g.agg(writes=("event_index", "nunique"), devices=("bdf", "nunique")).reset_index()
    co = f[f["kind"] == "collision"].groupby(cols)["event_index"].nunique().rename("collision")
    ex = f[f["kind"] == "exclusive"].groupby(cols)["event_index"].nunique().rename("exclusive")
    tw = f[f["kernel_taints"]].groupby(cols)["event_index"].nunique().rename("tainting_writes")
    out = out.merge(co, on=cols, how="left").merge(ex, on=cols, how="left").merge(tw, on=cols, how="left")
    num = ["collision", "exclusive", "tainting_writes"]
    out[num] = out[num].fillna(0).astype("int64")
    return out


def by_time(f: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """Findings per time bin (``bins`` equal bins over the findings' span; ns)."""
    pd = load_pandas()
    if f.empty:
        return pd.DataFrame(columns=["start_ns", "end_ns", "findings", "exclusive"])
    lo, hi = int(f["ts_ns"].min()), int(f["ts_ns"].max())
    width = max(1, -(-(hi - lo + 1) // bins))
    b = (f["ts_ns"] - lo) // width
    g = f.assign(_b=b).groupby("_b")
    out = pd.DataFrame({"findings": g.size(), "exclusive": g["kind"].apply(lambda s: int((s == "exclusive").sum()))})
    out = out.reset_index()
    out.insert(0, "start_ns", lo + out["_b"] * width)
    out.insert(1, "end_ns", out["start_ns"] + width)
    return out.drop(columns="_b")


def summarize(f: pd.DataFrame | None, counts: dict[str, int]) -> dict[str, Any]:
    """The ``summary`` object: trace counts (``counts``: events, writes, reads, lost, skipped)
    plus findings by kind (:data:`FINDING_KINDS`, strictest first), the events with a collision
    finding (``collision_events``: user writes and kernel starts) and the kernel's verdicts.
    ``f`` may be ``None``: no findings."""
    if f is None or f.empty:
        return {**counts, "findings": 0, "writes_with_findings": 0,
                "by_kind": {k: 0 for k in FINDING_KINDS}, "collision_events": 0, "exclusive_writes": 0,
                "managed_writes": 0, "allowed": 0, "kernel_taints": 0, "kernel_logs": 0, "devices": [],
                "processes": []}
    kinds = f["kind"].value_counts().to_dict() if not f.empty else {}
    failing = f[f["allowed_by"].isna()] if not f.empty else f
    return {
        **counts,
        "findings": int(len(f)),
        "writes_with_findings": int(f["event_index"].nunique()) if not f.empty else 0,
        "by_kind": {k: int(kinds.get(k, 0)) for k in FINDING_KINDS},
        "collision_events": int(f[f["kind"] == "collision"]["event_index"].nunique()),
        "exclusive_writes": int(failing[failing["kind"] == "exclusive"]["event_index"].nunique()) if not f.empty else 0,
        "managed_writes": int(failing[failing["kind"] == "managed"]["event_index"].nunique()) if not f.empty else 0,
        "allowed": int(f["allowed_by"].notna().sum()) if not f.empty else 0,
        "kernel_taints": int(f[f["kernel_taints"]]["event_index"].nunique()) if not f.empty else 0,
        "kernel_logs": int(f[f["kernel_logs"]]["event_index"].nunique()) if not f.empty else 0,
        "devices": sorted(f["bdf"].unique().tolist()) if not f.empty else [],
        "processes": sorted({f"{p}/{c}" for p, c in zip(f["pid"], f["comm"])}) if not f.empty else [],
    }
