"""Rendering of listings (devices, regions): ``table``, ``json`` and ``csv``.

Rows are plain dicts; a column spec says which keys a text table shows, how wide, and how
to format values (hex for offsets and IDs, as lspci does).
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["Column", "render_listing", "LISTING_FORMATS"]

LISTING_FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: Callable[[Any], str] = lambda v: "-" if v is None else str(v)
    width: int | None = None  # None: as wide as the widest value; the last column wraps


def _table(rows: Sequence[dict], cols: Sequence[Column], max_width: int = 100) -> str:
    cells = [[c.fmt(r.get(c.key)) for c in cols] for r in rows]
    widths = [max([len(c.title)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    for i, c in enumerate(cols):
        if c.width:
            widths[i] = c.width
    lead = sum(widths[:-1]) + 2 * (len(cols) - 1)
    last = max(20, max_width - lead)
    lines = ["  ".join(c.title.ljust(widths[i]) for i, c in enumerate(cols)).rstrip()]
    for row in cells:
        head = "  ".join(v.ljust(widths[i])[: widths[i]] if cols[i].width else v.ljust(widths[i])
                         for i, v in enumerate(row[:-1]))
        wrapped = textwrap.wrap(row[-1], last) or [""]
        lines.append((head + "  " + wrapped[0]).rstrip())
        lines += [" " * lead + w for w in wrapped[1:]]
    return "\n".join(lines) + "\n"


def _csv_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else v


def render_listing(rows: Sequence[dict], fmt: str, cols: Sequence[Column], csv_keys: Sequence[str] | None = None) -> str:
    """Render ``rows`` as ``fmt`` (one of :data:`LISTING_FORMATS`)."""
    if fmt == "json":
        return json.dumps(list(rows), indent=1) + "\n"
    if fmt == "csv":
        keys = list(csv_keys or (rows[0].keys() if rows else [c.key for c in cols]))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for r in rows:
            w.writerow([_csv_value(r.get(k)) for k in keys])
        return buf.getvalue()
    if fmt == "table":
        return _table(rows, cols)
    raise ValueError(f"unknown listing format {fmt!r}")
