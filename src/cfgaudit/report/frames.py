"""Findings as pandas DataFrames, and the summaries built from them.

A finding is one (write, region) pair: the write's event fields, the region it overlaps, and
the kernel's own verdict on the write. :class:`Report` bundles the findings with everything
a renderer needs (summary counts, the regions for plots, where the trace came from). The columns
are defined in :mod:`cfgaudit.analyze.findings`; ``FINDING_COLUMNS``, ``SEVERITY`` and
``empty_findings`` are re-exported from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..analyze.findings import FINDING_COLUMNS, SEVERITY, empty_findings

__all__ = ["FINDING_COLUMNS", "SEVERITY", "Report", "empty_findings", "by_device", "by_region", "by_process",
           "by_time", "summarize"]


@dataclass
class Report:
    """Everything a renderer needs.

    ``findings``: one row per (write, region), columns :data:`FINDING_COLUMNS`, sorted by
    (ts_ns, event_index, region_start). ``regions``: the registry as a frame (bdf, start,
    length, owner, kind, capability, rule, source). ``write_hist``: writes per (bdf, offset)
    for plots (columns bdf, offset, writes). ``summary``: counts (see :func:`summarize`).
    ``meta``: where it came from (traces, kernel, iomem_relaxed, host, backend).
    """

    findings: pd.DataFrame
    regions: pd.DataFrame
    write_hist: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def by_device(f: pd.DataFrame) -> pd.DataFrame:
    """Per device: findings, distinct writes, exclusive/managed counts, writes the kernel taints on."""
    if f.empty:
        return pd.DataFrame(columns=["bdf", "findings", "writes", "exclusive", "managed", "tainting_writes"])
    g = f.groupby("bdf", sort=True)
    out = pd.DataFrame({
        "findings": g.size(),
        "writes": g["event_index"].nunique(),
        "exclusive": g["kind"].apply(lambda s: int((s == "exclusive").sum())),
        "managed": g["kind"].apply(lambda s: int((s == "managed").sum())),
        "tainting_writes": f[f["kernel_taints"]].groupby("bdf")["event_index"].nunique(),
    }).fillna(0).astype("int64").reset_index()
    return out


def by_region(f: pd.DataFrame) -> pd.DataFrame:
    """Per (bdf, region, owner, kind): how many writes hit it and by how many processes."""
    cols = ["bdf", "region_start", "region_length", "owner", "kind", "capability", "rule"]
    if f.empty:
        return pd.DataFrame(columns=cols + ["writes", "processes", "first_ts_ns", "last_ts_ns"])
    g = f.groupby(cols, sort=True, dropna=False)
    return g.agg(writes=("event_index", "nunique"), processes=("pid", "nunique"),
                 first_ts_ns=("ts_ns", "min"), last_ts_ns=("ts_ns", "max")).reset_index()


def by_process(f: pd.DataFrame) -> pd.DataFrame:
    """Per (pid, comm): writes with findings, devices touched, and how many the kernel taints on."""
    cols = ["pid", "comm"]
    if f.empty:
        return pd.DataFrame(columns=cols + ["writes", "devices", "exclusive", "tainting_writes"])
    g = f.groupby(cols, sort=True)
    out = g.agg(writes=("event_index", "nunique"), devices=("bdf", "nunique")).reset_index()
    ex = f[f["kind"] == "exclusive"].groupby(cols)["event_index"].nunique().rename("exclusive")
    tw = f[f["kernel_taints"]].groupby(cols)["event_index"].nunique().rename("tainting_writes")
    out = out.merge(ex, on=cols, how="left").merge(tw, on=cols, how="left")
    out[["exclusive", "tainting_writes"]] = out[["exclusive", "tainting_writes"]].fillna(0).astype("int64")
    return out


def by_time(f: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """Findings per time bin (``bins`` equal bins over the findings' span; ns)."""
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


def summarize(f: pd.DataFrame, counts: dict[str, int]) -> dict[str, Any]:
    """The ``summary`` object: trace counts (``counts``: events, writes, reads, lost, skipped)
    plus findings by kind and the kernel's verdicts."""
    kinds = f["kind"].value_counts().to_dict() if not f.empty else {}
    failing = f[f["allowed_by"].isna()] if not f.empty else f
    return {
        **counts,
        "findings": int(len(f)),
        "writes_with_findings": int(f["event_index"].nunique()) if not f.empty else 0,
        "by_kind": {k: int(kinds.get(k, 0)) for k in ("exclusive", "managed", "user")},
        "exclusive_writes": int(failing[failing["kind"] == "exclusive"]["event_index"].nunique()) if not f.empty else 0,
        "managed_writes": int(failing[failing["kind"] == "managed"]["event_index"].nunique()) if not f.empty else 0,
        "allowed": int(f["allowed_by"].notna().sum()) if not f.empty else 0,
        "kernel_taints": int(f[f["kernel_taints"]]["event_index"].nunique()) if not f.empty else 0,
        "kernel_logs": int(f[f["kernel_logs"]]["event_index"].nunique()) if not f.empty else 0,
        "devices": sorted(f["bdf"].unique().tolist()) if not f.empty else [],
        "processes": sorted({f"{p}/{c}" for p, c in zip(f["pid"], f["comm"])}) if not f.empty else [],
    }
