"""The fleet summary (``cfgaudit fleet report``, issue 13): frames and their four formats.

Which tools write into kernel-owned bytes, on which device models and kernel releases, on how
many hosts; which hosts lost events or opened paths the tracer cannot follow. Built from three
pandas frames the library (cfgaudit/fleet.py) reads from a fleet's output directory, with the
device model names passed in (report/ never reads pci.ids itself):

* findings: one row per finding, columns ``segment``, ``host``, ``comm``, ``bdf``, ``kind``,
  ``owner``, ``rule``, ``allowed_by``, ``event_index``, ``kernel_taints`` (of analyze's findings);
* segments: one row per segment analysed (:data:`SEGMENT_COLUMNS`);
* devices: one row per (segment, device): ``segment``, ``host``, ``bdf``, ``vendor``, ``device``.

A *write* is one event: (``segment``, ``event_index``); a write into two regions is two findings.
Kind columns (``collision``, ``exclusive``, ``managed``, ``user``) count findings rows.

Formats (:data:`FLEET_FORMATS`): table, markdown, json (the document of :func:`fleet_json`:
``{"format": "cfgaudit-fleet-report", "version": 1, "summary": {...}, "by_tool": [...],
"by_model": [...], "by_owner": [...], "by_kernel": [...], "by_host": [...], "attention": [...],
"meta": {...}}``, each list a frame's records in the order shown), html (the tables and inline
SVG bar charts; no plotting library). Renderers never print and never read files.
"""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..analyze.findings import FINDING_KINDS
from ..errors import UsageError
from ..ondemand import load_pandas

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FleetReport", "FLEET_FORMATS", "FLEET_REPORT_FORMAT", "FRAMES", "SEGMENT_COLUMNS", "build_fleet_report",
           "render_fleet", "fleet_json", "release_key"]

FLEET_REPORT_FORMAT = "cfgaudit-fleet-report"
FLEET_REPORT_VERSION = 1
SEGMENT_COLUMNS = ("segment", "host", "kernel_release", "backend", "events", "writes", "lost", "skipped", "notices",
                   "notice_kinds", "unknown_device_writes", "collisions_visible")
FRAMES = ("by_tool", "by_model", "by_owner", "by_kernel", "by_host", "attention")
KIND_COLS = list(FINDING_KINDS)  # collision, exclusive, managed, user: findings rows of each kind
TABLE_WIDTH = 100
SHOWN_ROWS = 25  # rows of each table in the text formats (json and html: all)
BAR_COLOR = "#d9534f"


@dataclass
class FleetReport:
    """The fleet summary: ``summary`` counts and the frames of :data:`FRAMES`; ``findings`` (the
    rows the frames were made from: for the ``--fail-on`` gate); ``meta`` (where it came from)."""

    summary: dict[str, Any]
    frames: dict[str, pd.DataFrame]
    findings: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


def release_key(release: Any) -> tuple:
    """Sort key of a kernel release in version order ("6.2" before "6.12"); None last."""
    if not isinstance(release, str):
        return ((1,),)
    return ((0,), *((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", release) if p))


def _kind_counts(f: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    pd = load_pandas()
    if f.empty:
        return pd.DataFrame(columns=by + KIND_COLS)
    ct = pd.crosstab([f[c] for c in by], f["kind"].astype("string"))
    for k in KIND_COLS:
        if k not in ct.columns:
            ct[k] = 0
    return ct[KIND_COLS].reset_index()


def _writes(f: pd.DataFrame, by: list[str], name: str = "writes") -> pd.DataFrame:
    """Distinct writes (segment, event_index) per group."""
    return f.drop_duplicates(by + ["segment", "event_index"]).groupby(by, dropna=False, observed=True) \
        .size().rename(name).reset_index()


def _nunique(f: pd.DataFrame, by: list[str], cols: list[str], name: str) -> pd.DataFrame:
    return f.drop_duplicates(by + cols).dropna(subset=cols).groupby(by, dropna=False, observed=True).size() \
        .rename(name).reset_index()


def _merge(parts: list[pd.DataFrame], on: list[str]) -> pd.DataFrame:
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p, on=on, how="left")
    return out


def _ints(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    for c in cols:
        df[c] = df[c].fillna(0).astype("int64")
    return df


def build_fleet_report(findings: pd.DataFrame, segments: pd.DataFrame, devices: pd.DataFrame,
                       model_names: Callable[[int, int], tuple[str | None, str | None, str]],
                       meta: dict[str, Any] | None = None) -> FleetReport:
    """The frames of :data:`FRAMES` and the summary. ``model_names(vendor_id, device_id)`` gives
    (vendor name, device name, display name) for a device model (names None when unlisted)."""
    pd = load_pandas()
    f = findings.copy()
    for c in ("segment", "host", "comm", "bdf", "kind", "owner", "rule"):
        f[c] = f[c].astype("string")
    seg = segments.copy()
    dev = devices.copy()
    f = f.merge(seg[["segment", "kernel_release"]], on="segment", how="left")
    f = f.merge(dev[["segment", "bdf", "vendor", "device"]], on=["segment", "bdf"], how="left")
    frames: dict[str, Any] = {}

    # by tool (comm)
    g = ["comm"]
    base = f.groupby(g, dropna=False).size().rename("findings").reset_index()
    t = _merge([base, _writes(f, g), _kind_counts(f, g),
                _writes(f[f["kernel_taints"].fillna(False).astype(bool)], g, "tainting_writes"),
                _nunique(f, g, ["host"], "hosts"), _nunique(f, g, ["vendor", "device"], "models"),
                _nunique(f, g, ["kernel_release"], "kernels")], g)
    t = _ints(t, ["findings", "writes", *KIND_COLS, "tainting_writes", "hosts", "models", "kernels"])
    frames["by_tool"] = t.sort_values(["writes", "comm"], ascending=[False, True], ignore_index=True)

    # by device model (vendor, device): every model seen, with or without findings
    dm = dev.dropna(subset=["vendor", "device"])
    m = _nunique(dm, ["vendor", "device"], ["host"], "hosts_with_model")
    fm = f.dropna(subset=["vendor", "device"])
    g = ["vendor", "device"]
    if not fm.empty:
        base = fm.groupby(g).size().rename("findings").reset_index()
        m = _merge([m, base, _writes(fm, g), _kind_counts(fm, g), _nunique(fm, g, ["host"], "hosts"),
                    _nunique(fm, g, ["comm"], "tools")], g)
    else:
        for c in ("findings", "writes", *KIND_COLS, "hosts", "tools"):
            m[c] = 0
    m = _ints(m, ["vendor", "device", "hosts_with_model", "findings", "writes", *KIND_COLS, "hosts", "tools"])
    names = [model_names(int(v), int(d)) for v, d in zip(m["vendor"], m["device"])]
    m.insert(0, "model", [n[2] for n in names])
    m.insert(1, "vendor_name", pd.array([n[0] for n in names], dtype="string"))
    m.insert(2, "device_name", pd.array([n[1] for n in names], dtype="string"))
    m.insert(3, "ids", [f"{v:04x}:{d:04x}" for v, d in zip(m["vendor"], m["device"])])
    frames["by_model"] = m.sort_values(["writes", "hosts_with_model", "ids"], ascending=[False, False, True],
                                       ignore_index=True)

    # by owner and rule
    g = ["owner", "rule", "kind"]
    base = f.groupby(g, dropna=False).size().rename("findings").reset_index()
    o = _merge([base, _writes(f, g), _nunique(f, g, ["host"], "hosts"), _nunique(f, g, ["comm"], "tools"),
                _nunique(f, g, ["vendor", "device"], "models")], g)
    o = _ints(o, ["findings", "writes", "hosts", "tools", "models"])
    frames["by_owner"] = o.sort_values(["writes", "owner", "rule"], ascending=[False, True, True], ignore_index=True,
                                       na_position="last")

    # by kernel release (every release seen, with or without findings)
    g = ["kernel_release"]
    k = seg.groupby(g, dropna=False).agg(hosts=("host", "nunique"), segments=("segment", "size"),
                                         events=("events", "sum"), lost=("lost", "sum")).reset_index()
    fk = f.groupby(g, dropna=False).size().rename("findings").reset_index()
    k = _merge([k, fk, _writes(f, g), _kind_counts(f, g), _nunique(f, g, ["host"], "hosts_with_findings"),
                _nunique(f, g, ["comm"], "tools")], g)
    k = _ints(k, ["hosts", "segments", "events", "lost", "findings", "writes", *KIND_COLS, "hosts_with_findings",
                  "tools"])
    frames["by_kernel"] = k.iloc[sorted(range(len(k)), key=lambda i: release_key(k["kernel_release"].iloc[i]))] \
        .reset_index(drop=True)

    # by host
    g = ["host"]
    h = seg.groupby(g).agg(segments=("segment", "size"), events=("events", "sum"), writes=("writes", "sum"),
                           lost=("lost", "sum"), skipped=("skipped", "sum"), notices=("notices", "sum"),
                           unknown_device_writes=("unknown_device_writes", "sum")).reset_index()
    rel = seg.groupby("host")["kernel_release"].agg(
        lambda s: ", ".join(sorted({str(x) for x in s.dropna()}, key=release_key))).rename("kernel_releases")
    h = h.merge(rel.reset_index(), on="host", how="left")
    fh = f.groupby(g).size().rename("findings").reset_index()
    h = _merge([h, fh, _writes(f, g, "writes_with_findings"), _kind_counts(f, g)], g)
    h = _ints(h, ["segments", "events", "writes", "lost", "skipped", "notices", "unknown_device_writes", "findings",
                  "writes_with_findings", *KIND_COLS])
    frames["by_host"] = h[["host", "kernel_releases", "segments", "events", "writes", "findings",
                           "writes_with_findings", *KIND_COLS, "lost", "skipped", "notices",
                           "unknown_device_writes"]].sort_values("host", ignore_index=True)

    # hosts needing attention: lost events, skipped lines, paths the tracer cannot follow
    kinds = seg.groupby("host")["notice_kinds"].agg(
        lambda s: ", ".join(sorted({k for x in s for k in (x.split(", ") if isinstance(x, str) and x else [])})))
    a = h[(h["lost"] > 0) | (h["notices"] > 0) | (h["skipped"] > 0)][["host", "lost", "skipped", "notices"]]
    a = a.merge(kinds.rename("notice_kinds").reset_index(), on="host", how="left")
    frames["attention"] = a.reset_index(drop=True)

    by_kind = {kd: int((f["kind"] == kd).sum()) for kd in FINDING_KINDS}
    summary = {
        "hosts": int(seg["host"].nunique()), "segments": int(len(seg)), "events": int(seg["events"].sum()),
        "writes": int(seg["writes"].sum()), "findings": int(len(f)),
        "writes_with_findings": int(len(f.drop_duplicates(["segment", "event_index"]))),
        "by_kind": by_kind, "hosts_with_findings": int(f["host"].nunique()),
        "lost": int(seg["lost"].sum()), "skipped": int(seg["skipped"].sum()),
        "hosts_with_lost": int((h["lost"] > 0).sum()), "hosts_with_notices": int((h["notices"] > 0).sum()),
        "hosts_needing_attention": int(len(frames["attention"])),
        "unknown_device_writes": int(seg["unknown_device_writes"].sum()),
        "tools": int(f["comm"].nunique()), "models": int(len(frames["by_model"])),
        "kernel_releases": int(seg["kernel_release"].nunique()),
        "segments_without_collision_view": int((~seg["collisions_visible"].astype(bool)).sum()),
    }
    return FleetReport(summary, frames, findings, dict(meta or {}))


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------
TITLES = {"by_tool": "By tool (comm)", "by_model": "By device model (pci.ids)", "by_owner": "By owner and rule",
          "by_kernel": "By kernel release", "by_host": "By host",
          "attention": "Hosts with lost events or paths the tracer cannot follow"}
# Columns each text table shows (json and html: every column).
SHOWN = {
    "by_tool": ["comm", "writes", "findings", "collision", "exclusive", "managed", "tainting_writes", "hosts",
                "models", "kernels"],
    "by_model": ["model", "ids", "hosts_with_model", "hosts", "writes", "exclusive", "managed", "tools"],
    "by_owner": ["owner", "rule", "kind", "writes", "findings", "hosts", "tools", "models"],
    "by_kernel": ["kernel_release", "hosts", "segments", "events", "writes", "collision", "exclusive", "managed",
                  "hosts_with_findings", "lost"],
    "by_host": ["host", "kernel_releases", "events", "writes_with_findings", "collision", "exclusive", "managed",
                "lost", "notices"],
    "attention": ["host", "lost", "skipped", "notices", "notice_kinds"],
}


def _plain(v: Any) -> Any:
    """A JSON value for a frame cell (NA -> None, numpy scalars -> Python)."""
    if v is None:
        return None
    try:
        if load_pandas().isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):
        return v.item()
    return v


def _records(df: pd.DataFrame, cols: Sequence[str] | None = None) -> list[dict[str, Any]]:
    cols = list(cols or df.columns)
    return [{c: _plain(v) for c, v in zip(cols, row)} for row in df[cols].itertuples(index=False, name=None)]


def fleet_json(rep: FleetReport) -> dict[str, Any]:
    """The json format's document (stable: keys and order as in the module's docstring)."""
    doc: dict[str, Any] = {"format": FLEET_REPORT_FORMAT, "version": FLEET_REPORT_VERSION, "summary": rep.summary}
    for name in FRAMES:
        doc[name] = _records(rep.frames[name])
    doc["meta"] = rep.meta
    return doc


def _cell(v: Any) -> str:
    v = _plain(v)
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return " ".join(str(v).split())


def _summary_lines(rep: FleetReport) -> list[str]:
    s = rep.summary
    k = s["by_kind"]
    lines = [f"{s['hosts']:,} hosts, {s['segments']:,} segments, {s['events']:,} events, {s['writes']:,} writes: "
             f"{s['writes_with_findings']:,} hit owned bytes on {s['hosts_with_findings']:,} hosts "
             f"({s['findings']:,} findings: {k['collision']:,} collision, {k['exclusive']:,} exclusive, "
             f"{k['managed']:,} managed, {k['user']:,} in user-claimed ranges)",
             f"{s['tools']:,} tools, {s['models']:,} device models, {s['kernel_releases']:,} kernel releases"]
    if s["hosts_needing_attention"]:
        lines.append(f"{s['hosts_needing_attention']:,} hosts need attention: {s['hosts_with_lost']:,} lost events "
                     f"({s['lost']:,} in all), {s['hosts_with_notices']:,} opened paths the tracer cannot follow "
                     "(findings there may be missing)")
    if s["unknown_device_writes"]:
        lines.append(f"{s['unknown_device_writes']:,} writes to devices not in their host's snapshot")
    if s["segments_without_collision_view"]:
        lines.append(f"{s['segments_without_collision_view']:,} segments could not show collisions with the kernel's "
                     "own DOE exchanges (recorded without the kernel backend)")
    return lines


def _text_table(df: pd.DataFrame, cols: list[str]) -> list[str]:
    rows = [[_cell(v) for v in r] for r in df[cols].head(SHOWN_ROWS).itertuples(index=False, name=None)]
    titles = [c.upper() for c in cols]
    widths = [max([len(t)] + [len(r[i]) for r in rows]) for i, t in enumerate(titles)]
    budget = TABLE_WIDTH - 2 * (len(cols) - 1)
    while sum(widths) > budget and max(widths) > 12:  # shrink the widest column until it fits
        widths[widths.index(max(widths))] -= 1

    def line(cells: list[str]) -> str:
        out = []
        for c, w in zip(cells, widths):
            out.append(c if len(c) <= w else c[: w - 1] + "\u2026")
        return "  ".join(o.ljust(w) for o, w in zip(out, widths)).rstrip()
    out = [line(titles)] + [line(r) for r in rows]
    if len(df) > SHOWN_ROWS:
        out.append(f"... {len(df) - SHOWN_ROWS:,} more (--format json or html: all)")
    return out


def _render_table(rep: FleetReport) -> str:
    out = ["Fleet summary", *_summary_lines(rep)]
    for name in FRAMES:
        df = rep.frames[name]
        out += ["", f"{TITLES[name]}:"]
        out += _text_table(df, SHOWN[name]) if not df.empty else ["(none)"]
    return "\n".join(out) + "\n"


def _md(v: Any) -> str:
    return _cell(v).replace("|", "\\|")


def _render_markdown(rep: FleetReport) -> str:
    out = ["# cfgaudit fleet summary", ""] + [f"- {line}" for line in _summary_lines(rep)]
    for name in FRAMES:
        df = rep.frames[name]
        cols = SHOWN[name]
        out += ["", f"## {TITLES[name]}", ""]
        if df.empty:
            out.append("(none)")
            continue
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        out += ["| " + " | ".join(_md(v) for v in r) + " |" for r in df[cols].itertuples(index=False, name=None)]
    return "\n".join(out) + "\n"


def _render_json(rep: FleetReport) -> str:
    return json.dumps(fleet_json(rep), indent=1, allow_nan=False) + "\n"


def _e(v: Any) -> str:
    return html.escape(_cell(v))


def bar_svg(labels: Sequence[str], values: Sequence[int], title: str, width: int = 640) -> str:
    """A horizontal bar chart as inline SVG (one bar per label; value in the bar's end)."""
    n = len(labels)
    if not n:
        return ""
    row, left = 18, 220
    top = max(values) or 1
    h = 24 + n * row
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
             f'aria-label="{html.escape(title)}"><text x="0" y="14" font-size="13" font-weight="bold">'
             f"{html.escape(title)}</text>"]
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 22 + i * row
        w = 0 if v <= 0 else max(1, math.floor((width - left - 60) * v / top))
        lab = lab if len(lab) <= 34 else lab[:33] + "\u2026"
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{html.escape(lab)}</text>'
                     f'<rect x="{left}" y="{y + 2}" width="{w}" height="{row - 5}" fill="{BAR_COLOR}"/>'
                     f'<text x="{left + w + 4}" y="{y + 12}" font-size="11">{v:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _plots(rep: FleetReport) -> list[str]:
    fr = rep.frames
    t = fr["by_tool"].head(15)
    m = fr["by_model"].head(15)
    k = fr["by_kernel"]
    return [bar_svg([str(x) for x in t["comm"]], [int(x) for x in t["writes"]], "Writes into owned bytes, by tool"),
            bar_svg([str(x) for x in m["model"]], [int(x) for x in m["writes"]],
                    "Writes into owned bytes, by device model"),
            bar_svg([str(x) for x in k["kernel_release"]], [int(x) for x in k["hosts_with_findings"]],
                    "Hosts with findings, by kernel release")]


def _render_html(rep: FleetReport) -> str:
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>cfgaudit fleet summary</title>',
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}</style></head><body>",
           "<h1>cfgaudit fleet summary</h1>", "<ul>"]
    out += [f"<li>{html.escape(line)}</li>" for line in _summary_lines(rep)] + ["</ul>"]
    out += [f'<div class="plot">{p}</div>' for p in _plots(rep) if p]
    for name in FRAMES:
        df = rep.frames[name]
        out.append(f"<h2>{html.escape(TITLES[name])}</h2>")
        if df.empty:
            out.append("<p>(none)</p>")
            continue
        cols = list(df.columns)
        out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>"
                for r in df[cols].itertuples(index=False, name=None)]
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


FLEET_RENDERERS: dict[str, Callable[[FleetReport], str]] = {
    "table": _render_table, "markdown": _render_markdown, "json": _render_json, "html": _render_html}
FLEET_FORMATS: tuple[str, ...] = tuple(FLEET_RENDERERS)


def render_fleet(rep: FleetReport, fmt: str) -> str:
    """``rep`` as ``fmt`` (one of :data:`FLEET_FORMATS`)."""
    try:
        fn = FLEET_RENDERERS[fmt]
    except KeyError:
        raise UsageError(f"unknown fleet report format {fmt!r}; choose from {', '.join(FLEET_FORMATS)}") from None
    return fn(rep)
