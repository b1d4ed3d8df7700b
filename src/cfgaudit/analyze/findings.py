"""THE findings schema: one field table, beside :data:`cfgaudit.events.FIELDS`.

A finding is one (write, region) pair: the write's event fields, the region it overlaps, and
the kernel's own verdict on the write. A *collision* (kind ``collision``, :mod:`.collisions`) is a
write into a DOE mailbox while the kernel's own exchange on it is in flight, or the kernel's start
of an exchange (a ``doe_start`` event row) while a user's request is in progress there: its row
replaces the write's rows of the regions that overlap the mailbox (one row with no region when
none does). From :data:`FINDING_FIELDS` come :data:`FINDING_COLUMNS`
(name -> pandas dtype, in output order), :func:`findings_schema` (the Arrow types),
:func:`empty_findings`, :func:`assemble` (the Arrow table :meth:`Analyzer.feed_arrow` returns)
and :func:`findings_frame` (that table as a DataFrame). :data:`SEVERITY` maps a region kind to
the severity of its findings.

Offsets, sizes and lengths are bytes; times are ns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events import FIELDS as EVENT_FIELDS
from ..ondemand import frame, load_pandas
from ..regions.registry import KINDS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FindingField", "FINDING_FIELDS", "FINDING_COLUMNS", "FINDING_KINDS", "SEVERITY", "SEVERITY_LEVELS",
           "RowValues", "assemble", "empty_findings", "findings_frame", "findings_schema", "severity_column"]

_EVENT_ARROW = {f.name: f.arrow for f in EVENT_FIELDS}


@dataclass(frozen=True)
class FindingField:
    """One column of the findings: its name, Arrow type (columns may come dictionary-encoded
    from :meth:`Analyzer.feed_arrow`), pandas dtype, where its value comes from and what it means.

    ``origin``: ``event`` (copied from the write's event row), ``region`` (the region it overlaps),
    ``kernel`` (the kernel's verdict model), ``known`` (bytes known before the write), ``doe``
    (the DOE decoder), ``trace`` (position in the trace), ``collision`` (the kernel's DOE exchange a
    collision is with: :mod:`.collisions`).
    """

    name: str
    arrow: pa.DataType
    pandas: str
    origin: str
    doc: str


def _event(name: str, pandas: str, doc: str) -> FindingField:
    return FindingField(name, _EVENT_ARROW[name], pandas, "event", doc)


FINDING_FIELDS: tuple[FindingField, ...] = (
    _event("ts_ns", "int64", "time of the write, ns"),
    _event("pid", "int64", "process (thread group) ID"),
    _event("tid", "Int64", "thread ID"),
    _event("uid", "Int64", "user ID"),
    _event("comm", "string", "process name"),
    _event("op", "string", '"write" (or "read" with --reads)'),
    _event("bdf", "string", "device, DDDD:BB:DD.F"),
    _event("offset", "int64", "first byte written, bytes"),
    _event("size", "int64", "bytes written"),
    _event("data", "string", "hex of the bytes written, file order"),
    _event("via", "string", "sysfs | procfs | vfio | ioport | devmem | unknown"),
    _event("ret", "Int64", "bytes done or -errno"),
    _event("guard", "string", "the guard's verdict on the write: refused (-EPERM; it never reached the device) "
           "or dry-run (it would have been refused); empty without a guard"),
    FindingField("region_start", pa.int64(), "Int64", "region",
                 "first byte of the region, bytes (empty: a collision in a mailbox no region covers)"),
    FindingField("region_length", pa.int64(), "Int64", "region", "length of the region, bytes"),
    FindingField("owner", pa.string(), "string", "region", "driver or tool owning the region"),
    FindingField("kind", pa.string(), "string", "region",
                 "collision | exclusive | managed | user (collision: see the kernel_* columns)"),
    FindingField("capability", pa.string(), "string", "region", "capability the region lies in"),
    FindingField("rule", pa.string(), "string", "region", "ownership rule (or claim) that made the region"),
    FindingField("source", pa.string(), "string", "region", "kernel source the rule models"),
    FindingField("kernel_taints", pa.bool_(), "bool", "kernel", "the kernel would add TAINT_USER for this write"),
    FindingField("kernel_logs", pa.bool_(), "bool", "kernel", "... and print its once-per-boot warning"),
    FindingField("kernel_message", pa.string(), "string", "kernel", "that warning, as dmesg would show it"),
    FindingField("allowed_by", pa.string(), "string", "region",
                 "a user region covering the write (then not a finding to fail on)"),
    FindingField("severity", pa.string(), "string", "region",
                 "error (collision, exclusive) | warning (managed) | note (allowed)"),
    FindingField("old_value", pa.string(), "string", "known", "hex of the bytes before the write, when known"),
    FindingField("changed_bits", pa.string(), "string", "known", "hex mask of the bits the write changed, when known"),
    FindingField("doe", pa.string(), "string", "doe", "DOE protocol sense for writes into a DOE mailbox"),
    FindingField("collision", pa.string(), "string", "collision",
                 "kind collision: what the write does to the kernel's DOE exchange (or what the kernel's start "
                 "does to the user's request), and how the kernel's exchange ended"),
    FindingField("kernel_protocol", pa.string(), "string", "collision",
                 "kind collision: the kernel exchange's data object protocol, e.g. CXL table access (CDAT)"),
    FindingField("kernel_exchange", pa.int64(), "Int64", "collision",
                 "kind collision: event_index of the kernel exchange's doe_start event"),
    FindingField("kernel_ret", pa.int64(), "Int64", "collision",
                 "kind collision: the kernel exchange's result (its doe_end's ret: bytes received or -errno); "
                 "empty when the trace does not show its end"),
    FindingField("verdict_note", pa.string(), "string", "kernel",
                 "caveats on the kernel verdict for this release/path"),
    FindingField("event_index", pa.int64(), "int64", "trace", "position of the write in the trace (0-based)"),
)

# Column -> pandas dtype, in output order.
FINDING_COLUMNS: dict[str, str] = {f.name: f.pandas for f in FINDING_FIELDS}
# Finding kind -> severity; a finding inside a user region is a "note" (a collision never is).
SEVERITY: dict[str, str] = {"collision": "error", "exclusive": "error", "managed": "warning", "user": "note"}
# The kinds of findings, strictest first: collision ranks above exclusive everywhere.
FINDING_KINDS: tuple[str, ...] = ("collision", *KINDS)
SEVERITY_LEVELS: tuple[str, ...] = ("error", "warning", "note")
_NAMES = list(FINDING_COLUMNS)
_SEV_DICT = pa.array(SEVERITY_LEVELS, type=pa.string())
_SEV_OF_KIND = np.array([SEVERITY_LEVELS.index(SEVERITY[k]) for k in KINDS], dtype=np.int32)  # by kind code
_NOTE = SEVERITY_LEVELS.index("note")
_ERROR = SEVERITY_LEVELS.index("error")


def findings_schema() -> pa.Schema:
    """The Arrow schema of the findings, every column plain (not dictionary-encoded)."""
    return pa.schema([pa.field(f.name, f.arrow) for f in FINDING_FIELDS])


_EMPTY: list[pd.DataFrame] = []  # built once (some 20 ms): a stream of chunks without findings asks often


def empty_findings() -> pd.DataFrame:
    """No findings: an empty DataFrame with the columns and dtypes of :data:`FINDING_COLUMNS`
    (a fresh copy each call)."""
    pd = load_pandas()
    if not _EMPTY:
        _EMPTY.append(pd.DataFrame({c: pd.Series(dtype=t) for c, t in FINDING_COLUMNS.items()}))
    return _EMPTY[0].copy()


def findings_frame(f: pa.Table) -> pd.DataFrame:
    """A findings table from :meth:`Analyzer.feed_arrow` as a DataFrame with :data:`FINDING_COLUMNS` dtypes."""
    cols = [pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in f.columns]
    df = frame(pa.Table.from_arrays(cols, names=f.column_names))
    return df.astype({c: tp for c, tp in FINDING_COLUMNS.items()})[_NAMES].reset_index(drop=True)


def severity_column(kind_codes: np.ndarray, allowed: np.ndarray,
                    collision: np.ndarray | None = None) -> pa.DictionaryArray:
    """Severity per finding from its region's kind code (index into ``regions.registry.KINDS``);
    ``allowed[j]``: finding ``j`` lies in a user region, which makes it a note; ``collision[j]``:
    finding ``j`` is a collision (an error, whatever the region)."""
    sev = _SEV_OF_KIND[kind_codes]
    sev[allowed] = _NOTE
    if collision is not None:
        sev[collision] = _ERROR
    return pa.DictionaryArray.from_arrays(pa.array(sev), _SEV_DICT)


@dataclass
class RowValues:
    """String values for some rows of a chunk (``rows``: chunk row numbers, distinct), e.g. the
    old values of some writes or the DOE sentences of mailbox writes."""

    rows: np.ndarray
    values: pa.Array

    @classmethod
    def empty(cls) -> "RowValues":
        return cls(np.empty(0, np.int64), pa.array([], pa.string()))

    def take(self, n: int, rows: np.ndarray) -> pa.Array:
        """The values at chunk rows ``rows`` (of a chunk of ``n`` rows); null where there is none."""
        if self.rows.size == 0:
            return pa.nulls(rows.size, pa.string())
        at = np.full(n, -1, dtype=np.int64)
        at[self.rows] = np.arange(self.rows.size)
        i = at[rows]
        if not (i >= 0).any():
            return pa.nulls(rows.size, pa.string())
        return self.values.take(pa.array(i, mask=i < 0))


def assemble(events: pa.Table, rows: np.ndarray, computed: Mapping[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    """The findings table: one row per entry of ``rows`` (chunk rows of ``events``). Columns of
    origin ``event`` are taken from ``events`` unless ``computed`` has them; every other column
    must be in ``computed``. Columns come in :data:`FINDING_FIELDS` order."""
    take = pa.array(rows)
    arrays = []
    for f in FINDING_FIELDS:
        if f.name in computed:
            col = computed[f.name]
        elif f.origin == "event":
            col = events.column(f.name).take(take)
        else:
            raise KeyError(f"findings column {f.name!r} was not computed")
        arrays.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return pa.Table.from_arrays(arrays, names=_NAMES)
