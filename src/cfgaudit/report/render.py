"""Renderers for audit reports: one table of output formats.

Each :class:`Renderer` (a row of :data:`RENDERERS`) turns a
:class:`~cfgaudit.report.frames.Report` into text; a row may also have a streaming hook
(``stream``) that writes findings chunk by chunk in bounded memory (a :class:`FindingsSink`).
Adding a format is one row: the CLI's ``--format`` choices (:data:`FORMATS`) and
docs/formats.md follow the table. The formats
share their wording: one sentence per finding (:func:`finding_message`), one line of totals
(:func:`summary_text`), one set of display cells per finding (:func:`_display_rows`) and one set
of summary tables (:func:`_summary_tables`). Renderers never print and never read files.

Units: ``ts_ns`` and every ``*_ns`` value are nanoseconds; ``offset``, ``size``,
``region_start`` and ``region_length`` are bytes into the device's config space.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, overload

import numpy as np
import pyarrow as pa

from ..errors import UsageError
from .csvout import CsvSink
from .frames import FINDING_COLUMNS, SEVERITY, Report, by_device, by_process, by_region, by_time
from .jsonout import JsonSink
from .listing import Column, render_listing
from .live import (
    NOTICES_SHOWN,
    notice_summary_lines,
    unknown_device_line,
    unknown_device_lines,
    unknown_device_total,
    value_text,
)
from .live import printable as _printable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Renderer", "RENDERERS", "FORMATS", "FindingsSink", "render", "finding_message", "summary_text"]

TABLE_WIDTH = 100  # characters per line of the ``table`` format
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
KIND_COLORS = {"exclusive": "#d9534f", "managed": "#f0ad4e", "user": "#4a86e8"}
_OTHER_COLOR = "#999999"
UNKNOWN_DEVICE_RULE = "unknown-device"  # the SARIF rule id (and JUnit failure type) of writes to unknown devices
COLLISION_RULE = "doe-collision"  # the SARIF rule id of findings of kind collision
FAILING_KINDS = ("collision", "exclusive", "managed")  # kinds of findings that fail (when not allowed)
BLIND_NOTE = ("collision detection needs the kernel backend: the syscalls backend does not record the kernel's "
              "own DOE exchanges")
_ELLIPSIS = "\u2026"


class FindingsSink(Protocol):
    """A streaming writer of findings, made by a :class:`Renderer`'s ``stream(out)``.

    Called with each findings chunk (a ``pyarrow.Table``: the analyzer's ``feed_arrow`` output,
    columns of :data:`FINDING_COLUMNS` in order, string columns possibly dictionary-encoded),
    then :meth:`close` once (which flushes and raises any deferred error; ``out`` stays open).
    Anything the format needs before the first finding (CSV's header record) is written when
    the sink is made. ``rows``: findings written; ``failing``: findings of kind collision,
    exclusive or managed not allowed by a user claim.
    """

    rows: int
    failing: int

    def __call__(self, findings: pa.Table, /) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Renderer:
    """One output format (a row of :data:`RENDERERS`).

    ``render(report)`` returns the whole document as text; ``file_ext`` is the usual file name
    extension (no dot); ``stream``, when set, makes a :class:`FindingsSink` writing the same
    document to a text stream chunk by chunk (for formats that can be written in bounded memory).
    """

    name: str
    help: str
    render: Callable[[Report], str]
    file_ext: str
    stream: Callable[[IO[str]], FindingsSink] | None = None


# ----------------------------------------------------------------------------------------------
# Plain values
# ----------------------------------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """``v`` as plain JSON-able Python: numpy scalars -> int/float/bool, NA/NaN/NaT -> None,
    containers recursively, paths -> str."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=str) if isinstance(v, (set, frozenset)) else v
        return [_plain(x) for x in items]
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if v is None:
        return None
    pdm = sys.modules.get("pandas")  # pandas' missing values exist only when pandas is loaded (it is lazy)
    if pdm is not None and (v is pdm.NA or v is pdm.NaT):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def _records(df: pd.DataFrame | None, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``df`` as plain dicts; with ``columns``, exactly those keys (missing -> None)."""
    if df is None or df.empty:
        return []
    cols = list(columns) if columns is not None else [str(c) for c in df.columns]
    present = [c for c in cols if c in df.columns]
    rows = df[present].astype(object).to_dict("records")
    return [{c: _plain(r.get(c)) for c in cols} for r in rows]


def _missing(v: Any) -> bool:
    return _plain(v) is None


def _text(v: Any, default: str = "-") -> str:
    """``v`` as a string, ``default`` when missing."""
    v = _plain(v)
    return default if v is None or v == "" else str(v)


def _int(v: Any) -> int:
    """``v`` as an int; missing -> 0."""
    v = _plain(v)
    return 0 if v is None else int(v)


def _hex(v: Any) -> str:
    """A byte offset as lower-case hex (``0x198``); missing -> ``-``."""
    v = _plain(v)
    return "-" if v is None else f"0x{int(v):x}"


def _plural(n: int, word: str) -> str:
    """``1 write``, ``2 writes``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _clip(s: str, width: int) -> str:
    """``s`` cut to ``width`` characters, marking the cut with an ellipsis."""
    if len(s) <= width:
        return s
    return s[: max(0, width - 1)] + _ELLIPSIS if width > 0 else ""


# ----------------------------------------------------------------------------------------------
# Shared wording
# ----------------------------------------------------------------------------------------------

def _is_allowed(row: dict[str, Any]) -> bool:
    return not _missing(row.get("allowed_by"))


def _level(row: dict[str, Any]) -> str:
    """SARIF-style level of a finding: ``note`` when allowed, else by kind (error/warning/note)."""
    if _is_allowed(row):
        return "note"
    return SEVERITY.get(_text(row.get("kind"), ""), "note")


def _kernel_verdict(row: dict[str, Any]) -> str:
    """``taint+log``, ``taint`` or ``-``: what the kernel itself would do about the write."""
    if _plain(row.get("kernel_taints")):
        return "taint+log" if _plain(row.get("kernel_logs")) else "taint"
    return "-"


def _location(row: dict[str, Any]) -> str:
    """``BDF+0xOFF``: where in config space a finding's write landed."""
    return f"{_text(row.get('bdf'), '?')}+{_hex(row.get('offset'))}"


def finding_message(row: dict[str, Any]) -> str:
    """One sentence for a finding (a dict of :data:`FINDING_COLUMNS`), e.g. ``pid 42 (setpci)
    wrote 2 bytes at 0x198 of 0000:0d:00.0 via sysfs: owned by cxl_pci (exclusive, cxl-dvsec)``.

    Raw field text is kept (no escaping); each format escapes it its own way.
    """
    op = _text(row.get("op"), "write")
    if _text(row.get("kind"), "") == "collision":
        if op == "doe_start":  # the kernel started an exchange during a user's request
            return (f"COLLISION on the DOE mailbox at {_hex(row.get('offset'))} of {_text(row.get('bdf'), '?')}: "
                    f"{_text(row.get('collision'), '?')}")
        return (f"pid {_text(row.get('pid'), '?')} ({_text(row.get('comm'), '?')}) wrote "
                f"{_plural(_int(row.get('size')), 'byte')} at {_hex(row.get('offset'))} of "
                f"{_text(row.get('bdf'), '?')} via {_text(row.get('via'), 'unknown')}: COLLISION: it "
                f"{_text(row.get('collision'), '?')}")
    verb = "read" if op == "read" else "wrote"
    size = _int(row.get("size"))
    msg = (f"pid {_text(row.get('pid'), '?')} ({_text(row.get('comm'), '?')}) {verb} "
           f"{_plural(size, 'byte')} at {_hex(row.get('offset'))} of "
           f"{_text(row.get('bdf'), '?')} via {_text(row.get('via'), 'unknown')}: "
           f"owned by {_text(row.get('owner'), '?')} "
           f"({_text(row.get('kind'), '?')}, {_text(row.get('rule'), '?')})")
    if _plain(row.get("kernel_taints")):
        msg += "; the kernel would taint"
    if _is_allowed(row):
        msg += f"; allowed by {_text(row.get('allowed_by'))}"
    return msg


def _iomem_text(meta: dict[str, Any]) -> str:
    relaxed = _plain(meta.get("iomem_relaxed"))
    return {True: "iomem=relaxed", False: "iomem strict"}.get(relaxed, "iomem unknown")


def _meta_text(meta: dict[str, Any]) -> str:
    """``kernel K on host H, iomem ...``: the state the verdicts were made for."""
    out = f"kernel {_text(meta.get('kernel'), 'unknown')}"
    if not _missing(meta.get("host")):
        out += f" on {_text(meta.get('host'))}"
    out += f", {_iomem_text(meta)}"
    if not _missing(meta.get("backend")):
        out += f", backend {_text(meta.get('backend'))}"
    return out


def _blind(meta: dict[str, Any]) -> str | None:
    """:data:`BLIND_NOTE` for a trace of the syscalls backend (it cannot show collisions), else None."""
    return BLIND_NOTE if _text(meta.get("backend"), "") == "syscalls" else None


def _traces(meta: dict[str, Any]) -> list[str]:
    t = _plain(meta.get("traces"))
    if t is None:
        return []
    return [str(x) for x in t] if isinstance(t, list) else [str(t)]


def _summary_counts(summary: dict[str, Any]) -> dict[str, int]:
    """The integer counts of ``summary`` with every missing key as 0."""
    keys = ("events", "writes", "reads", "lost", "skipped", "findings", "collision_events", "exclusive_writes",
            "managed_writes", "allowed", "kernel_taints", "kernel_logs")
    out = {k: _int(summary.get(k, 0)) for k in keys}
    kinds = summary.get("by_kind") or {}
    for k in ("collision", "exclusive", "managed", "user"):
        out[f"kind_{k}"] = _int(kinds.get(k, 0))
    return out


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    """Totals as short sentences (each well under :data:`TABLE_WIDTH`)."""
    c = _summary_counts(summary)
    lines = [
        f"{c['findings']} findings ({c['kind_collision']} collision, {c['kind_exclusive']} exclusive, "
        f"{c['kind_managed']} managed, {c['kind_user']} user), {c['allowed']} allowed",
        f"writes not allowed: {c['exclusive_writes']} into exclusive ranges, "
        f"{c['managed_writes']} into managed ranges",
        f"the kernel would taint on {c['kernel_taints']} writes and log on {c['kernel_logs']}",
        f"trace: {c['events']} events, {c['writes']} writes, {c['reads']} reads, "
        f"{c['skipped']} skipped, {c['lost']} lost",
    ]
    if c["lost"]:
        lines.append(f"possibly lost {c['lost']} events: the trace is incomplete")
    kdoe = _int(summary.get("kernel_doe_exchanges", 0))
    if kdoe:
        lines.append(f"the kernel's own DOE exchanges in the trace: {kdoe}")
    lines += _collision_lines(summary)
    unknown = unknown_device_total(summary)
    if unknown:
        lines.append(unknown)
    lines += notice_summary_lines(summary, NOTICES_SHOWN)  # unmediated access; paths not followed
    return lines


def _collision_lines(summary: dict[str, Any]) -> list[str]:
    """The collisions with the kernel's own DOE exchanges (findings of kind collision, listed with
    the findings; they fail the gate at every level but never), or, in a trace that records none of
    the kernel's exchanges, that they were not visible."""
    n = _int(summary.get("collision_events", 0))
    mailbox_writes = _int(summary.get("doe_mailbox_writes", 0))
    visible = summary.get("collisions_visible")
    if visible is None:  # a summary from before the key: the kernel's exchanges in the trace say
        visible = bool(_int(summary.get("kernel_doe_exchanges", 0)))
    if not n and mailbox_writes and not visible:
        return [f"{_plural(mailbox_writes, 'write')} into DOE mailboxes: whether any collided with the kernel's own "
                "DOE exchanges is not visible, the trace records none of them (no claim of no collision)"]
    if not n:
        return []
    return [f"COLLISION: {n} event{'' if n == 1 else 's'} where user space and the kernel's own DOE exchange met "
            "on one mailbox (findings of kind collision: the kernel's exchange is aborted or corrupted, and the "
            "kernel does not say so)"]


def _unknown_devices(summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The summary's writes to devices not in the sources, one dict per BDF (may be empty)."""
    return list((summary or {}).get("unknown_devices") or [])


def _no_findings_text(summary: dict[str, Any] | None) -> str:
    """What a report says when there are no findings."""
    if _unknown_devices(summary):
        return "No conflicting writes into the devices in the sources; writes to unknown devices below."
    return "No conflicting writes."


def summary_text(summary: dict[str, Any]) -> str:
    """All totals of ``summary`` on one line (missing counts are 0)."""
    return "; ".join(_summary_lines(summary))


# ----------------------------------------------------------------------------------------------
# Display cells and summary tables, shared by table, markdown and html
# ----------------------------------------------------------------------------------------------

# key, title, text-table width cap (None: takes what is left), text-table minimum width
_DISPLAY: tuple[tuple[str, str, int | None, int], ...] = (
    ("TIME", "TIME", 11, 8),
    ("PID", "PID", 7, 3),
    ("COMM", "COMM", 16, 6),
    ("BDF", "BDF", 12, 7),
    ("OFF", "OFF", 6, 5),
    ("SZ", "SZ", 4, 2),
    ("VALUE", "VALUE", 10, 5),
    ("VIA", "VIA", 7, 3),
    ("KIND", "KIND", 9, 4),
    ("OWNER", "OWNER", None, 8),
    ("RULE", "RULE", 24, 4),
    ("KERNEL", "KERNEL", 9, 6),
    ("ALLOWED", "ALLOWED BY", 24, 6),
)
_TABLE_KEYS = ("TIME", "PID", "COMM", "BDF", "OFF", "SZ", "VALUE", "KIND", "OWNER", "KERNEL")


def _notes(row: dict[str, Any]) -> list[str]:
    """Continuation notes of a finding: DOE sense, the kernel's message, allowance."""
    out = []
    if not _missing(row.get("collision")):
        out.append(f"COLLISION: {_text(row.get('collision'))}")
    if not _missing(row.get("doe")):
        out.append(f"doe: {_text(row.get('doe'))}")
    if not _missing(row.get("kernel_message")):
        out.append(f"kernel: {_text(row.get('kernel_message'))}")
    if _is_allowed(row):
        out.append(f"allowed by {_text(row.get('allowed_by'))}")
    return out


def _display_rows(findings: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict of printable display strings per finding (keys of :data:`_DISPLAY` plus
    ``NOTES``, a list, and ``_level``). TIME is seconds after the first finding."""
    rows = _records(findings, list(FINDING_COLUMNS))
    t0 = min((_int(r["ts_ns"]) for r in rows), default=0)
    out = []
    for r in rows:
        cells = {
            "TIME": f"{(_int(r['ts_ns']) - t0) / 1e9:.6f}",
            "PID": _text(r["pid"]),
            "COMM": _text(r["comm"]),
            "BDF": _text(r["bdf"]),
            "OFF": _hex(r["offset"]),
            "SZ": _text(r["size"]),
            "VALUE": value_text(r["data"], _int(r["size"])),
            "VIA": _text(r["via"]),
            "KIND": _text(r["kind"]),
            "OWNER": _text(r["owner"]),
            "RULE": _text(r["rule"]),
            "KERNEL": _kernel_verdict(r),
            "ALLOWED": _text(r["allowed_by"]),
        }
        d: dict[str, Any] = {k: _printable(v) for k, v in cells.items()}
        d["NOTES"] = [_printable(n) for n in _notes(r)]
        d["_level"] = _level(r)
        d["_kind"] = _text(r["kind"], "")
        out.append(d)
    return out


@dataclass(frozen=True)
class _SummaryTable:
    title: str
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]


def _fmt_range(start: Any, length: Any) -> str:
    return f"{_hex(start)}+{_text(length)}"


def _summary_tables(findings: pd.DataFrame) -> list[_SummaryTable]:
    """By device, by region/owner and by process, as plain rows with display columns."""
    s = lambda v: _printable(_text(v))  # noqa: E731 - a cell formatter
    regions = _records(by_region(findings))
    for r in regions:
        r["range"] = _fmt_range(r["region_start"], r["region_length"])
    return [
        _SummaryTable("By device", (
            Column("bdf", "BDF", s), Column("findings", "FINDINGS", s), Column("writes", "WRITES", s),
            Column("collision", "COLLISION", s), Column("exclusive", "EXCLUSIVE", s), Column("managed", "MANAGED", s),
            Column("tainting_writes", "TAINTING", s)), _records(by_device(findings))),
        _SummaryTable("By region", (
            Column("bdf", "BDF", s), Column("range", "RANGE", s), Column("kind", "KIND", s),
            Column("writes", "WRITES", s), Column("processes", "PROCS", s), Column("rule", "RULE", s),
            Column("owner", "OWNER", s)), regions),
        _SummaryTable("By process", (
            Column("pid", "PID", s), Column("comm", "COMM", s), Column("writes", "WRITES", s),
            Column("devices", "DEVICES", s), Column("collision", "COLLISION", s), Column("exclusive", "EXCLUSIVE", s),
            Column("tainting_writes", "TAINTING", s)), _records(by_process(findings))),
    ]


# ----------------------------------------------------------------------------------------------
# table
# ----------------------------------------------------------------------------------------------

def _fit_widths(natural: list[int], minima: list[int], budget: int) -> list[int]:
    """Shrink the widest columns (never below their minima) until the sum fits ``budget``."""
    w = list(natural)
    while sum(w) > budget:
        shrinkable = [i for i in range(len(w)) if w[i] > minima[i]]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: w[j] - minima[j])
        w[i] -= 1
    return w


def _render_table(report: Report) -> str:
    """Terminal text, no line longer than :data:`TABLE_WIDTH` characters."""
    width = TABLE_WIDTH
    meta = report.meta or {}
    lines = [_clip(_printable("cfgaudit: " + _meta_text(meta)), width)]
    traces = _traces(meta)
    if traces:
        lines.append(_clip(_printable("traces: " + ", ".join(traces)), width))
    blind = _blind(meta)
    if blind:
        lines += textwrap.wrap("note: " + blind, width, subsequent_indent="  ")
    lines.append("")
    rows = _display_rows(report.findings) if report.n_findings else []
    if not rows:
        lines.append(_no_findings_text(report.summary))
    else:
        spec = [d for d in _DISPLAY if d[0] in _TABLE_KEYS]
        sep = 2
        natural = []
        for key, title, cap, _ in spec:
            n = max([len(title)] + [len(r[key]) for r in rows])
            natural.append(min(n, cap) if cap else n)
        minima = [min(m, n) for (_, _, _, m), n in zip(spec, natural)]
        widths = _fit_widths(natural, minima, width - sep * (len(spec) - 1))  # minima always fit

        def line(cells: list[str]) -> str:
            return (" " * sep).join(_clip(c, w).ljust(w) for c, w in zip(cells, widths)).rstrip()[:width]

        lines.append(line([title for _, title, _, _ in spec]))
        for r in rows:
            lines.append(line([r[key] for key, _, _, _ in spec]))
            for note in r["NOTES"]:
                lines += textwrap.wrap(note, width, initial_indent="    ", subsequent_indent="      ",
                                       break_long_words=True, break_on_hyphens=False)
        for t in _summary_tables(report.findings):
            lines += ["", t.title + ":"]
            text = render_listing(t.rows, "table", t.columns).rstrip("\n")
            lines += [_clip(row_text, width) for row_text in text.split("\n")]
    unknown = unknown_device_lines(report.summary or {})
    if unknown:
        lines += ["", "Unknown devices (written to, not in the sources):"]
        for s in unknown:
            lines += textwrap.wrap(s, width, initial_indent="  ", subsequent_indent="    ")
    lines += ["", "Totals:"]
    for s in _summary_lines(report.summary or {}):
        lines += textwrap.wrap(s, width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# json, csv
# ----------------------------------------------------------------------------------------------

def _json_document(report: Report) -> dict[str, Any]:
    """The ``json`` format's object: findings (all columns), summary with breakdowns, meta."""
    f = report.findings
    summary = _plain(dict(report.summary or {}))
    summary.update({
        "by_device": _records(by_device(f)),
        "by_region": _records(by_region(f)),
        "by_process": _records(by_process(f)),
        "by_time": _records(by_time(f)),
    })
    return {"findings": _records(f, list(FINDING_COLUMNS)), "summary": summary,
            "meta": _plain(dict(report.meta or {}))}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def _render_json(report: Report) -> str:
    return _dumps(_json_document(report))


def _stream_json(out: IO[str]) -> JsonSink:
    """The json format, streamed: the document's start now, then each findings chunk's findings
    (made and written by a worker thread), then, at close, the summary and meta handed to the
    sink's ``finish`` (audit.render_report does): the same bytes as :func:`_render_json`."""
    return JsonSink(out, background=True, plain=_plain)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _render_csv(report: Report) -> str:
    """Header (all :data:`FINDING_COLUMNS`) plus one RFC 4180 record per finding."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(FINDING_COLUMNS)
    w.writerow(cols)
    for r in _records(report.findings, cols):
        w.writerow([_csv_cell(r[c]) for c in cols])
    return buf.getvalue()


def _stream_csv(out: IO[str]) -> CsvSink:
    """The csv format, streamed: the header record now, then each findings chunk's records
    (made and written by a worker thread while the caller analyses the next chunk)."""
    return CsvSink(out, background=True, header=list(FINDING_COLUMNS))


# ----------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def _md(v: Any) -> str:
    """Text safe inside a Markdown table cell: punctuation backslash-escaped, one line."""
    s = _printable(str(v)) if not isinstance(v, str) else _printable(v)
    return _MD_SPECIAL.sub(r"\\\1", s)


def _md_table(titles: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(_md(t) for t in titles) + " |", "|" + "---|" * len(titles)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def _render_markdown(report: Report) -> str:
    meta = report.meta or {}
    lines = ["# cfgaudit report", "", _md(_meta_text(meta))]
    traces = _traces(meta)
    if traces:
        lines[-1] += "; traces: " + ", ".join(_md(t) for t in traces)
    blind = _blind(meta)
    if blind:
        lines += ["", _md("Note: " + blind)]
    lines += ["", "## Summary", ""] + [f"- {_md(s)}" for s in _summary_lines(report.summary or {})]
    rows = _display_rows(report.findings)
    lines += ["", "## Findings", ""]
    if not rows:
        lines.append(_md(_no_findings_text(report.summary)))
    else:
        keys = [d[0] for d in _DISPLAY]
        titles = [d[1] for d in _DISPLAY] + ["NOTES"]
        lines += _md_table(titles, ([r[k] for k in keys] + ["; ".join(r["NOTES"])] for r in rows))
        for t in _summary_tables(report.findings):
            lines += ["", f"## {t.title}", ""]
            lines += _md_table([c.title for c in t.columns], ([c.fmt(r.get(c.key)) for c in t.columns]
                                                               for r in t.rows))
    unknown = unknown_device_lines(report.summary or {})
    if unknown:
        lines += ["", "## Unknown devices", ""] + [f"- {_md(s)}" for s in unknown]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# html
# ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}h3{font-size:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right}
tr.error td{background:#fbe3e2}tr.warning td{background:#fdf3e1}tr.note td{background:#eef3fc}
.meta{color:#555}.notes{color:#555;font-size:.9em}
code,td.mono{font-family:ui-monospace,monospace}
svg{border:1px solid #ddd;background:#fff;margin:.3em 0}
svg text{font-family:ui-monospace,monospace;font-size:10px;fill:#333}
"""


def _e(v: Any) -> str:
    return html.escape(_printable(str(v)), quote=True)


def _html_table(titles: Sequence[str], rows: Iterable[Sequence[Any]], row_classes: Iterable[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(t)}</th>" for t in titles) + "</tr>"
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(classes[i])}"' if classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return "<table>\n<thead>" + head + "</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _plot_devices(report: Report) -> list[str]:
    """Devices to plot: every bdf in the regions frame or the findings, sorted."""
    out: set[str] = set()
    for df in (report.regions, report.findings):
        if df is not None and not df.empty and "bdf" in df.columns:
            out.update(str(b) for b in df["bdf"].dropna().unique())
    return sorted(out)


def _device_svg(bdf: str, regions: list[dict[str, Any]], hist: list[dict[str, Any]],
                finding_offsets: list[int]) -> list[str]:
    """An inline SVG (as lines): owned ranges of ``bdf`` shaded by kind, writes per config offset (bytes)
    as bars with log-scaled height."""
    ends = ([_int(r.get("start")) + max(_int(r.get("length")) - 1, 0) for r in regions]
            + [_int(h.get("offset")) for h in hist] + finding_offsets)
    span = 4096 if any(e >= 0x100 for e in ends) else 256
    W, left, right, top, band, bars, axis = 900, 40, 10, 28, 18, 80, 30
    plot_w = W - left - right
    H = top + band + bars + axis
    x = lambda off: left + plot_w * min(max(off, 0), span) / span  # noqa: E731 - scale
    out = [f'<svg role="img" width="{W}" height="{H}" viewBox="0 0 {W} {H}" data-bdf="{_e(bdf)}" '
           f'aria-label="writes over config offsets of {_e(bdf)}">',
           f"<title>writes over config offsets of {_e(bdf)}</title>"]
    # legend
    lx = left
    for kind, color in KIND_COLORS.items():
        out.append(f'<rect class="legend" x="{lx}" y="6" width="12" height="10" fill="{color}" fill-opacity="0.6"/>'
                   f'<text x="{lx + 16}" y="15">{kind}</text>')
        lx += 90
    out.append(f'<rect class="legend" x="{lx}" y="6" width="3" height="10" fill="#333"/>'
               f'<text x="{lx + 8}" y="15">writes (log scale)</text>')
    # owned ranges, shaded over the whole plot height
    y0, y1 = top, top + band + bars
    for r in regions:
        kind = _text(r.get("kind"), "")
        start, length = _int(r.get("start")), max(_int(r.get("length")), 1)
        rx, rw = x(start), max(x(start + length) - x(start), 1.0)
        tip = f"{_hex(start)}+{length} {_text(r.get('owner'))} ({kind}, {_text(r.get('rule'))})"
        out.append(f'<rect class="region {_e(kind)}" data-kind="{_e(kind)}" x="{rx:.2f}" y="{y0}" '
                   f'width="{rw:.2f}" height="{y1 - y0}" fill="{KIND_COLORS.get(kind, _OTHER_COLOR)}" '
                   f'fill-opacity="0.35"><title>{_e(tip)}</title></rect>')
    # write counts
    peak = max((math.log2(1 + _int(h.get("writes"))) for h in hist), default=1.0) or 1.0
    bw = max(plot_w / span, 1.5)
    for h in hist:
        off, n = _int(h.get("offset")), _int(h.get("writes"))
        if n <= 0:
            continue
        bh = max(bars * math.log2(1 + n) / peak, 2.0)
        tip = f"{_hex(off)}: {_plural(n, 'write')}"
        out.append(f'<rect class="writes" x="{x(off):.2f}" y="{y1 - bh:.2f}" width="{bw:.2f}" height="{bh:.2f}" '
                   f'fill="#333"><title>{_e(tip)}</title></rect>')
    for off in sorted(set(finding_offsets)):
        out.append(f'<line class="finding" x1="{x(off):.2f}" x2="{x(off):.2f}" y1="{y0}" y2="{y0 + 6}" '
                   f'stroke="#000" stroke-width="1.5"/>')
    # axis
    out.append(f'<line x1="{left}" x2="{W - right}" y1="{y1}" y2="{y1}" stroke="#333"/>')
    step = 0x20 if span == 256 else 0x200
    for t in range(0, span + 1, step):
        out.append(f'<line x1="{x(t):.2f}" x2="{x(t):.2f}" y1="{y1}" y2="{y1 + 4}" stroke="#333"/>'
                   f'<text x="{x(t):.2f}" y="{y1 + 15}" text-anchor="middle">{_hex(t)}</text>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{H - 2}" text-anchor="middle">config offset (bytes)</text>')
    out.append("</svg>")
    return out


def _render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS and SVG, no scripts, no external references."""
    meta = report.meta or {}
    f = report.findings
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>cfgaudit report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>cfgaudit report</h1>", f'<p class="meta">{_e(_meta_text(meta))}</p>']
    traces = _traces(meta)
    if traces:
        parts.append('<p class="meta">traces: ' + ", ".join(f"<code>{_e(t)}</code>" for t in traces) + "</p>")
    blind = _blind(meta)
    if blind:
        parts.append(f'<p class="meta">note: {_e(blind)}</p>')
    parts += ["<h2>Summary</h2>", "<ul>"] + [f"<li>{_e(s)}</li>" for s in _summary_lines(report.summary or {})]
    parts.append("</ul>")
    rows = _display_rows(f)
    if rows:
        for t in _summary_tables(f):
            parts += [f"<h3>{_e(t.title)}</h3>",
                      _html_table([c.title for c in t.columns], ([c.fmt(r.get(c.key)) for c in t.columns]
                                                                 for r in t.rows))]
    parts.append("<h2>Findings</h2>")
    if not rows:
        parts.append(f"<p>{_e(_no_findings_text(report.summary))}</p>")
    else:
        keys = [d[0] for d in _DISPLAY]
        parts.append(_html_table([d[1] for d in _DISPLAY] + ["NOTES"],
                                 ([r[k] for k in keys] + ["; ".join(r["NOTES"])] for r in rows),
                                 [r["_level"] for r in rows]))
    unknown = unknown_device_lines(report.summary or {})
    if unknown:
        parts += ["<h2>Unknown devices</h2>", '<ul class="unknown-devices">']
        parts += [f'<li class="warning">{_e(s)}</li>' for s in unknown]
        parts.append("</ul>")
    devices = _plot_devices(report)
    if devices:
        parts.append("<h2>Writes over config offsets</h2>")
        regions = _records(report.regions)
        hist = _records(report.write_hist)
        frows = _records(f, ["bdf", "offset"])
        for bdf in devices:
            parts.append(f"<h3>{_e(bdf)}</h3>")
            parts += _device_svg(bdf, [r for r in regions if r.get("bdf") == bdf],
                                 [h for h in hist if h.get("bdf") == bdf],
                                 [_int(r["offset"]) for r in frows if r["bdf"] == bdf])
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# github, sarif, junit
# ----------------------------------------------------------------------------------------------

def _gh_escape(s: str) -> str:
    """Escape workflow-command data: ``%``, CR and LF (GitHub's rules)."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


_GH_COMMAND = {"error": "error", "warning": "warning", "note": "notice"}


def _render_github(report: Report) -> str:
    """GitHub Actions annotations: one per finding not allowed, then a summary notice."""
    lines = []
    for r in _records(report.findings, list(FINDING_COLUMNS)):
        if _is_allowed(r):
            continue
        cmd = _GH_COMMAND[_level(r)]
        lines.append(f"::{cmd} title=cfgaudit {_gh_escape(_text(r['kind'], 'unknown'))}::"
                     f"{_printable(_gh_escape(finding_message(r)))}")
    for d in _unknown_devices(report.summary):
        lines.append(f"::warning title=cfgaudit unknown device::{_gh_escape(unknown_device_line(d))}")
    lines.append(f"::notice title=cfgaudit::{_gh_escape(summary_text(report.summary or {}))}")
    return "\n".join(lines) + "\n"


def _rule_id(row: dict[str, Any]) -> str:
    if _text(row.get("kind"), "") == "collision":
        return COLLISION_RULE
    return _text(row.get("rule"), "unknown-rule")


def _tool_version() -> str | None:
    """cfgaudit's installed version (the SARIF log's tool version), or None when not installed."""
    import importlib.metadata  # lazy: 15-35 ms of start-up (email, zipfile, ...), for SARIF only

    try:
        return importlib.metadata.version("cfgaudit")
    except importlib.metadata.PackageNotFoundError:
        return None


def _sarif_document(report: Report) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; results in findings order, one rule per rule id."""
    rows = _records(report.findings, list(FINDING_COLUMNS))
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    results = []
    for r in rows:
        rid = _rule_id(r)
        if rid not in index:
            index[rid] = len(rules)
            kind = _text(r["kind"], "unknown")
            rule: dict[str, Any] = {
                "id": rid,
                "shortDescription": {"text": f"config range owned by {_text(r['owner'])} ({kind})"},
                "defaultConfiguration": {"level": SEVERITY.get(kind, "note")},
                "properties": {"kind": kind},
            }
            if kind == "collision":
                rule["shortDescription"] = {"text": "user space and the kernel's own DOE exchange on one mailbox"}
                rule["fullDescription"] = {"text": (
                    "A user write into a DOE mailbox while the kernel's own exchange on it was in flight, or the "
                    "kernel starting an exchange while a user's request was in progress: the kernel's exchange is "
                    "aborted or corrupted (drivers/pci/doe.c), and the kernel does not say so.")}
            elif not _missing(r["source"]):
                rule["fullDescription"] = {"text": _text(r["source"])}
            if not _missing(r["capability"]) and kind != "collision":
                rule["properties"]["capability"] = _text(r["capability"])
            rules.append(rule)
        loc = _location(r)
        result: dict[str, Any] = {
            "ruleId": rid,
            "ruleIndex": index[rid],
            "level": _level(r),
            "message": {"text": finding_message(r)},
            "locations": [{"logicalLocations": [{
                "name": loc, "kind": "resource",
                "fullyQualifiedName": f"pci/{_text(r['bdf'], '?')}/config@{_hex(r['offset'])}"}]}],
            "properties": {k: r[k] for k in ("pid", "tid", "comm", "ts_ns", "op", "size", "data", "via",
                                            "region_start", "region_length", "owner", "kind",
                                            "kernel_taints", "kernel_logs", "kernel_message",
                                            "allowed_by", "doe", "collision", "kernel_protocol",
                                            "kernel_exchange", "kernel_ret", "verdict_note")},
        }
        if _is_allowed(r):
            result["suppressions"] = [{"kind": "external", "justification": f"allowed by {_text(r['allowed_by'])}"}]
        results.append(result)
    unknown = _unknown_devices(report.summary)
    if unknown:
        index[UNKNOWN_DEVICE_RULE] = len(rules)
        rules.append({
            "id": UNKNOWN_DEVICE_RULE,
            "shortDescription": {"text": "write to a device not in the sources"},
            "fullDescription": {"text": "The device is in none of the sources (snapshot, lspci dumps, sysfs): "
                                        "the config ranges the kernel owns on it are unknown, so its writes "
                                        "could not be checked. Give the traced host's devices."},
            "defaultConfiguration": {"level": "warning"},
            "properties": {"kind": UNKNOWN_DEVICE_RULE},
        })
    for d in unknown:
        bdf = _text(d.get("bdf"), "?")
        results.append({
            "ruleId": UNKNOWN_DEVICE_RULE,
            "ruleIndex": index[UNKNOWN_DEVICE_RULE],
            "level": "warning",
            "message": {"text": unknown_device_line(d)},
            "locations": [{"logicalLocations": [{"name": bdf, "kind": "resource",
                                                 "fullyQualifiedName": f"pci/{bdf}"}]}],
            "properties": {"writes": _int(d.get("writes")), "first": _plain(d.get("first") or {})},
        })
    driver: dict[str, Any] = {"name": "cfgaudit", "rules": rules}
    ver = _tool_version()
    if ver:
        driver["version"] = ver
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": driver},
            "results": results,
            "properties": {"summary": _plain(dict(report.summary or {})), "meta": _plain(dict(report.meta or {}))},
        }],
    }


def _render_sarif(report: Report) -> str:
    return _dumps(_sarif_document(report))


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(s: str) -> str:
    """``s`` without characters XML 1.0 cannot carry (escaped as ``\\xNN``)."""
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _render_junit(report: Report) -> str:
    """JUnit XML: one test case per owned region written to; it fails when a write into an
    exclusive or managed region was not allowed. One failing test case per device not in the
    sources that was written to (what it owns is unknown: failing like a managed region)."""
    rows = _records(report.findings, list(FINDING_COLUMNS))
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="cfgaudit")
    cases = 0
    failures = 0
    key = ("bdf", "region_start", "region_length", "owner", "kind", "capability", "rule")
    for g in _records(by_region(report.findings)):
        cases += 1
        name = f"{_text(g['bdf'])} {_fmt_range(g['region_start'], g['region_length'])} {_text(g['owner'])}"
        case = ET.SubElement(suite, "testcase", name=_xml(name), classname=_xml(_text(g["bdf"])))
        mine = [r for r in rows if all(r[k] == g[k] for k in key)]
        bad = [r for r in mine if not _is_allowed(r) and r["kind"] in FAILING_KINDS]
        if bad:
            failures += 1
            n = len({r["event_index"] for r in bad})
            msg = (f"{_plural(n, 'write')} into {_text(g['kind'])} range owned by "
                   f"{_text(g['owner'])} ({_text(g['rule'])})")
            fail = ET.SubElement(case, "failure", message=_xml(msg), type=_xml(_text(g["kind"])))
            fail.text = _xml("\n".join(finding_message(r) for r in bad))
    for d in _unknown_devices(report.summary):
        cases += 1
        failures += 1
        bdf = _text(d.get("bdf"), "?")
        case = ET.SubElement(suite, "testcase", name=_xml(f"{bdf} unknown device"), classname=_xml(bdf))
        fail = ET.SubElement(case, "failure", type=UNKNOWN_DEVICE_RULE,
                             message=_xml(f"{_plural(_int(d.get('writes')), 'write')} to a device not in the sources"))
        fail.text = _xml(unknown_device_line(d))
    if cases == 0:
        cases = 1
        ET.SubElement(suite, "testcase", name="no conflicting writes", classname="cfgaudit")
    for el in (suites, suite):
        el.set("tests", str(cases))
        el.set("failures", str(failures))
        el.set("errors", "0")
    props = ET.Element("properties")
    for k, v in (("kernel", _text((report.meta or {}).get("kernel"), "")),
                 ("host", _text((report.meta or {}).get("host"), "")),
                 ("iomem", _iomem_text(report.meta or {})),
                 ("summary", summary_text(report.summary or {}))):
        ET.SubElement(props, "property", name=k, value=_xml(v))
    suite.insert(0, props)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

RENDERERS: dict[str, Renderer] = {r.name: r for r in (
    Renderer("table", "terminal text: findings, per-device/region/process summaries, totals", _render_table, "txt"),
    Renderer("json", "JSON object: findings (every column), summary with breakdowns, meta", _render_json, "json",
             stream=_stream_json),
    Renderer("csv", "CSV: a header of every finding column, one record per finding", _render_csv, "csv",
             stream=_stream_csv),
    Renderer("markdown", "Markdown: meta, summary, findings table and summary tables", _render_markdown, "md"),
    Renderer("html", "one self-contained HTML page with SVG plots of writes over config offsets",
             _render_html, "html"),
    Renderer("github", "GitHub Actions annotations (::error / ::warning) and a ::notice summary",
             _render_github, "txt"),
    Renderer("sarif", "SARIF 2.1.0 log for code-scanning tools", _render_sarif, "sarif"),
    Renderer("junit", "JUnit XML: one test case per owned region written to", _render_junit, "xml"),
)}


class _Names(Sequence[str]):
    """The row names of a table, read-only and live (a row added later is in it); compares
    equal to the tuple of the same names."""

    def __init__(self, table: Mapping[str, object]) -> None:
        self._table = table

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...

    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        return tuple(self._table)[i]

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._table))

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, _Names)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))


FORMATS: Sequence[str] = _Names(RENDERERS)
"""The format names, in table order (the CLI's ``--format`` choices); follows :data:`RENDERERS`."""


def render(report: Report, fmt: str) -> str:
    """Render ``report`` as ``fmt`` (one of :data:`FORMATS`); unknown formats raise
    :class:`~cfgaudit.errors.UsageError`."""
    try:
        r = RENDERERS[fmt]
    except KeyError:
        raise UsageError(f"unknown report format {fmt!r}; choose from {', '.join(FORMATS)}") from None
    return r.render(report)
