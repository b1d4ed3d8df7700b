"""Rendering of listings (devices, regions, doctor): one table of formats, :data:`LISTINGS`.

Rows are plain dicts; a column spec says which keys a text table shows, how wide, and how
to format values (hex for offsets and IDs, as lspci does). Offsets and sizes in the rows are
bytes; the ``table`` format is at most ``max_width`` characters wide (the last column wraps).
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import UsageError

__all__ = ["Column", "render_listing", "LISTINGS", "LISTING_FORMATS"]


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


def _json(rows: Sequence[dict], cols: Sequence[Column], csv_keys: Sequence[str] | None) -> str:
    return json.dumps(list(rows), indent=1) + "\n"


def _csv(rows: Sequence[dict], cols: Sequence[Column], csv_keys: Sequence[str] | None) -> str:
    keys = list(csv_keys or (rows[0].keys() if rows else [c.key for c in cols]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        w.writerow([_csv_value(r.get(k)) for k in keys])
    return buf.getvalue()


def _text_table(rows: Sequence[dict], cols: Sequence[Column], csv_keys: Sequence[str] | None) -> str:
    return _table(rows, cols)


LISTINGS: dict[str, Callable[[Sequence[dict], Sequence[Column], Sequence[str] | None], str]] = {
    "table": _text_table,  # aligned text columns, at most 100 characters wide
    "json": _json,         # a JSON array of the rows, every key
    "csv": _csv,           # a header of the keys (csv_keys, else the first row's), one record per row
}
LISTING_FORMATS: tuple[str, ...] = tuple(LISTINGS)


def render_listing(rows: Sequence[dict], fmt: str, cols: Sequence[Column],
                   csv_keys: Sequence[str] | None = None) -> str:
    """Render ``rows`` as ``fmt`` (one of :data:`LISTING_FORMATS`); ``csv_keys`` fixes the CSV
    columns (default: the first row's keys)."""
    try:
        fn = LISTINGS[fmt]
    except KeyError:
        raise UsageError(f"unknown listing format {fmt!r}; choose from {', '.join(LISTINGS)}") from None
    return fn(rows, cols, csv_keys)
