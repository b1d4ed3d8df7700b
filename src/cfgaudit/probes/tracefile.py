"""Trace files: JSON Lines and Parquet, read in bounded chunks and written incrementally.

The formats are one table, :data:`TRACE_FORMATS` (like pciutils' ``pci_methods``): a row names a
format, its file-name extensions, its reader and writer classes and a line of help. Adding a
format is one row plus its :class:`TraceReader` and :class:`TraceWriter` subclasses;
``TraceReader(path)`` and ``TraceWriter(path, header)`` pick the row from the path.

JSON Lines: an optional header line ``{"record": "header", "format": "cfgaudit-trace", ...}``
(host, kernel release, boot flags, backend, an embedded device snapshot), one event per line
(keys: :data:`cfgaudit.events.FIELDS`, unknown keys kept), an optional footer line
``{"record": "footer", "ended_ns", "events", "lost", ...}``. A file of bare event lines is a
trace. Parquet: the same columns; header and footer live in the file's key/value metadata.

Reading never holds the whole trace: JSONL is parsed in byte blocks by pyarrow's JSON reader
(with a line-by-line pass only to name a bad line), Parquet in record batches.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from ..errors import InputError, OutputError
from ..events import (
    BDF_RE,
    FIELDS,
    GUARD_VERDICTS,
    INT64_MAX,
    OPS,
    REQUIRED,
    VIAS,
    ConfigAccess,
    arrow_schema,
    is_utf8_text,
    json_schema,
    validate_row,
)
from ..files import create_output as _create
from ..files import open_input
from ..hexarrow import is_hex

__all__ = ["TraceReader", "TraceWriter", "TraceFormat", "TRACE_FORMATS", "DEFAULT_TRACE_FORMAT", "TRACE_FORMAT",
           "TRACE_VERSION", "trace_kind", "make_header", "events_table", "jsonl_text",
           "PARTIAL_SUFFIX", "convert_trace"]

TRACE_FORMAT = "cfgaudit-trace"
TRACE_VERSION = 1
PARSE_BLOCK_BYTES = 1 << 20  # pieces pyarrow's JSON reader parses in parallel
BLOCK_BYTES = 16 << 20  # JSONL block handed to pyarrow at once
DICT_COLUMNS = ("comm", "op", "bdf", "via")  # read from Parquet as dictionaries
META_HEADER = b"cfgaudit.header"
META_FOOTER = b"cfgaudit.footer"
META_NOTICES = b"cfgaudit.notices"  # Parquet: the notice records ({"record": "unmediated", ...}), a JSON list
MAX_NOTICES = 10000  # notices kept per trace file (the rest are read past)
# A live recording into a format that is unreadable until closed (Parquet) writes JSON Lines to
# PATH + this suffix and converts at the end; a killed run leaves that file.
PARTIAL_SUFFIX = ".partial.jsonl"
CONFIG_SPACE_BYTES = 4096  # PCI_CFG_SPACE_EXP_SIZE: an access past it reaches no config byte
MAX_LINE_BYTES = 64 << 20  # a longer JSONL line is an error (the header with its snapshot is far smaller)

Warn = Callable[[str], None]


def trace_kind(path: str) -> str:
    """The :data:`TRACE_FORMATS` row for ``path``, by extension (none known: JSON Lines)."""
    low = path.lower()
    for fmt in TRACE_FORMATS.values():
        if low.endswith(fmt.extensions):
            return fmt.name
    return DEFAULT_TRACE_FORMAT


def make_header(**facts: Any) -> dict[str, Any]:
    """A header record with the format marker and the given facts."""
    return {"record": "header", "format": TRACE_FORMAT, "version": TRACE_VERSION, **facts}


@dataclass
class TraceStats:
    events: int = 0
    skipped: int = 0
    truncated_tail: bool = False
    skipped_lines: list[int] = field(default_factory=list)
    past_end: int = 0  # accesses reaching past byte 4095 of config space
    past_end_first: str = ""  # where the first one is ("line N" or "row N") and what it is


class TraceReader:
    """Read one trace file. ``header``/``footer`` are dicts (``{}`` when absent).

    ``TraceReader(path)`` is the reader of the path's format (:data:`TRACE_FORMATS`).
    ``skip_bad``: malformed events are skipped and counted instead of raising
    ``InputError("FILE:LINE: ...")``. A truncated last line (no newline, not JSON) is always
    tolerated with a warning: that is what a crash mid-write leaves.
    """

    kind: ClassVar[str] = ""

    def __new__(cls, path: str, *args: Any, **kw: Any) -> "TraceReader":
        if cls is TraceReader:
            cls = TRACE_FORMATS[trace_kind(path)].reader
        return super().__new__(cls)

    def __init__(self, path: str, skip_bad: bool = False, warn: Warn | None = None, block_bytes: int = BLOCK_BYTES,
                 batch_rows: int = 1 << 18) -> None:
        self.path = path
        self.skip_bad = skip_bad
        self.warn = warn or (lambda m: None)
        self.block_bytes = block_bytes
        self.batch_rows = batch_rows
        self.stats = TraceStats()
        self.header: dict[str, Any] = {}
        self.footer: dict[str, Any] = {}
        self.notices: list[dict[str, Any]] = []  # {"record": "unmediated", ...} lines
        self.header_line: int | None = None  # the header's line (JSON Lines: 1; Parquet: None, in the metadata)
        if not os.path.lexists(path) and os.path.isfile(path + PARTIAL_SUFFIX):
            raise InputError(f"no such trace file; a recording that did not finish left {path + PARTIAL_SUFFIX} "
                             "(JSON Lines, readable as it is): analyze that", path=path)
        with open_input(path, "trace"):  # a regular file (not a directory, FIFO, device or terminal)
            pass
        self._open()

    def _open(self) -> None:
        """Read the header and footer; leave the events for :meth:`tables`."""
        raise NotImplementedError

    def tables(self) -> Iterator[pa.Table]:
        """Event chunks as Arrow tables with at least the :data:`FIELDS` columns, in file order."""
        raise NotImplementedError

    def events(self) -> Iterator[ConfigAccess]:
        """Events one by one (for replay): the same rows :meth:`tables` gives."""
        names = [f.name for f in FIELDS]
        for t in self.tables():
            for row in t.to_pylist():
                extra = {k: v for k, v in row.items() if k not in names and v is not None}
                yield ConfigAccess(**{k: row.get(k) for k in names}, extra=extra)

    def _count_past_end(self, t: pa.Table, where: Callable[[int], str]) -> None:
        """Count the accesses of ``t`` that reach past the 4096 bytes of config space (the first
        one's place is ``where(row)``); :meth:`_warn_past_end` reports them once the file is read."""
        if not t.num_rows:
            return
        past = pc.fill_null(pc.greater(t.column("offset"), pc.subtract(CONFIG_SPACE_BYTES, t.column("size"))), False)
        n = int(pc.sum(past).as_py() or 0)
        if n:
            if not self.stats.past_end:
                i = int(pc.index(past, True).as_py())
                r = t.slice(i, 1).to_pylist()[0]
                self.stats.past_end_first = f"{where(i)}: a {r['op']} of {r['size']} bytes at offset {r['offset']:#x}"
            self.stats.past_end += n

    def _warn_past_end(self) -> None:
        if self.stats.past_end:
            self.warn(f"{self.path}:{self.stats.past_end_first} reaches past the {CONFIG_SPACE_BYTES} bytes of "
                      f"config space ({self.stats.past_end} such access(es) in this file); the kernel ignores bytes "
                      "past a device's config size, so only the bytes inside it are analysed")


class ParquetTraceReader(TraceReader):
    """Parquet: record batches, one row group at a time; header and footer in the metadata."""

    kind = "parquet"

    def _open(self) -> None:
        try:
            self._pf = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"not a readable Parquet file: {err}", path=self.path) from err
        meta = dict(self._pf.schema_arrow.metadata or {})
        meta.update(self._pf.metadata.metadata or {})
        for key, attr in ((META_HEADER, "header"), (META_FOOTER, "footer")):
            if key in meta:
                try:
                    setattr(self, attr, json.loads(meta[key]))
                except ValueError as err:
                    raise InputError(f"bad {attr} metadata: {err}", path=self.path) from err
                except RecursionError as err:
                    raise InputError(f"bad {attr} metadata: nested too deeply", path=self.path) from err
        if META_HEADER in meta:
            self.header = _checked_record(self.header, "header", self.path, None)
        if META_FOOTER in meta:
            self.footer = _checked_record(self.footer, "footer", self.path, None)
        if META_NOTICES in meta:
            try:
                notes = json.loads(meta[META_NOTICES])
            except (ValueError, RecursionError) as err:
                raise InputError(f"bad notices metadata: {err}", path=self.path) from err
            if not isinstance(notes, list):
                raise InputError("bad notices metadata: not a list", path=self.path)
            self.notices = [d for d in notes if isinstance(d, dict) and d.get("record") == "unmediated"][:MAX_NOTICES]
        names = set(self._pf.schema_arrow.names)
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise InputError(f"Parquet trace lacks column(s) {', '.join(missing)}", path=self.path)
        # Low-cardinality strings are read as dictionaries (much cheaper to decode and to
        # check), and turned back into plain strings once checked.
        sch = self._pf.schema_arrow
        dict_cols = [n for n in DICT_COLUMNS if n in names and pa.types.is_string(sch.field(n).type)]
        if dict_cols:
            try:
                self._pf = pq.ParquetFile(self.path, read_dictionary=dict_cols)
            except (OSError, pa.ArrowException) as err:
                raise InputError(f"not a readable Parquet file: {err}", path=self.path) from err

    def tables(self) -> Iterator[pa.Table]:
        try:
            # One reader per row group: a single iter_batches() over the whole file keeps
            # allocating (about 4 MB per batch with pyarrow 26), so memory would grow with the file.
            batches = (b for rg in range(self._pf.num_row_groups)
                       for b in self._pf.iter_batches(batch_size=self.batch_rows, row_groups=[rg]))
            for t in _coalesced(batches, self.batch_rows):
                try:
                    t.validate(full=True)  # strings that are not UTF-8 would fail later, far from here
                except pa.ArrowInvalid as err:
                    raise InputError(f"rows from {self.stats.events + self.stats.skipped}: invalid data "
                                     f"(text that is not UTF-8?): {err}", path=self.path) from err
                t = _conform(t, keep_dict=True)
                bad = _invalid_mask(t)
                t = _decode_dicts(t)
                if bad is not None:
                    first = int(pc.index(bad, True).as_py())
                    if not self.skip_bad:
                        row = {k: v for k, v in t.slice(first, 1).to_pylist()[0].items()}
                        raise InputError(f"row {self.stats.events + first}: {validate_row(row) or 'invalid event'}",
                                         path=self.path)
                    n_bad = int(pc.sum(bad).as_py())
                    self.stats.skipped += n_bad
                    t = t.filter(pc.invert(bad))
                base = self.stats.events
                self._count_past_end(t, lambda i: f" row {base + i}")
                self.stats.events += t.num_rows
                yield t
        except (OSError, pa.ArrowException) as err:  # a corrupt page: pyarrow raises OSError or ArrowInvalid
            raise InputError(f"cannot read Parquet: {' '.join(str(err).split())}", path=self.path) from err
        self._warn_past_end()


def _coalesced(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches gathered into tables of about ``rows`` rows: a file of many tiny row groups
    (one row each, say) must not cost one analysis chunk per row."""
    held: list[pa.RecordBatch] = []
    n = 0
    for b in batches:
        held.append(b)
        n += b.num_rows
        if n >= rows:
            yield pa.Table.from_batches(held)
            held, n = [], 0
    if held:
        yield pa.Table.from_batches(held)


class JsonlTraceReader(TraceReader):
    """JSON Lines: byte blocks parsed by pyarrow's JSON reader, with a line-by-line pass only to
    name (or skip) a bad line; header and footer are the first and last lines."""

    kind = "jsonl"

    def _open(self) -> None:
        self._size = os.path.getsize(self.path)
        self._body_start = 0
        self._body_end = self._size
        self._first_line = 1
        self._row_lines: list[int] | None = None  # lines of the last table's rows (line-by-line path)
        with open_input(self.path, "trace") as fh:
            first = fh.readline(MAX_LINE_BYTES + 1)
            if len(first) > MAX_LINE_BYTES:
                raise InputError(f"line longer than {MAX_LINE_BYTES >> 20} MiB: not a trace line", path=self.path,
                                 line=1)
            if first.strip():
                doc = _loads(first)
                if isinstance(doc, dict) and doc.get("record") == "header":
                    self.header = _checked_record(doc, "header", self.path, 1)
                    self.header_line = 1
                    self._body_start = len(first)
                    self._first_line = 2
            # The footer, if any, is the last complete line.
            tail_start = max(0, self._size - (1 << 16))
            fh.seek(tail_start)
            tail = fh.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if _loads(tail[cut + 1:]) is NOT_JSON:  # a crash mid-write: drop the partial line
                self.stats.truncated_tail = True
                self._body_end = tail_start + cut + 1
                self.warn(f"{self.path}: last line is truncated (crash while writing?): ignored")
        content = tail[: self._body_end - tail_start]
        body = content[:-1] if content.endswith(b"\n") else content
        idx = body.rfind(b"\n")
        doc = _loads(body[idx + 1:]) if body[idx + 1:].strip() else None
        if isinstance(doc, dict) and doc.get("record") == "footer" and tail_start + idx + 1 >= self._body_start:
            try:
                self.footer = _checked_record(doc, "footer", self.path, None)
            except InputError as err:  # name the footer's line (counted only now, on an error)
                raise InputError(err.message, path=self.path, line=_line_at(self.path, tail_start + idx + 1)) \
                    from err
            self._body_end = tail_start + idx + 1

    def tables(self) -> Iterator[pa.Table]:
        po = pj.ParseOptions(explicit_schema=json_schema(), unexpected_field_behavior="infer")
        with open_input(self.path, "trace") as fh:
            fh.seek(self._body_start)
            pos, line_no, carry = self._body_start, self._first_line, b""
            while pos < self._body_end or carry:
                want = min(self.block_bytes, self._body_end - pos)
                chunk = carry + (fh.read(want) if want > 0 else b"")
                pos += max(want, 0)
                if pos < self._body_end:
                    cut = chunk.rfind(b"\n") + 1
                    if cut == 0:
                        if len(chunk) > MAX_LINE_BYTES:
                            raise InputError(f"line longer than {MAX_LINE_BYTES >> 20} MiB: not a trace line",
                                             path=self.path, line=line_no)
                        carry = chunk
                        continue
                    block, carry = chunk[:cut], chunk[cut:]
                else:
                    block, carry = chunk, b""
                if not block.strip():
                    line_no += block.count(b"\n")
                    continue
                t = self._parse_block(block, line_no, po)
                first_line, line_no = line_no, line_no + block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                if t is not None and t.num_rows:
                    self._count_past_end(t, functools.partial(self._row_line, block, first_line))
                    self.stats.events += t.num_rows
                    yield t
        self._warn_past_end()

    def _row_line(self, block: bytes, first_line: int, row: int) -> str:
        """The line of row ``row`` of the table parsed from ``block`` (for a warning)."""
        if self._row_lines is not None:  # the line-by-line path kept them
            return str(self._row_lines[row])
        k = 0
        for j, line in enumerate(block.split(b"\n")):  # the fast path: every non-blank line is a row
            if line.strip():
                if k == row:
                    return str(first_line + j)
                k += 1
        return str(first_line)

    def _parse_block(self, block: bytes, first_line: int, po: pj.ParseOptions) -> pa.Table | None:
        if _objects_only(block) and _shallow(block):  # pyarrow's reader: objects only, never deep nesting
            try:
                t = _read_json_blocks(block, po)
                t.validate(full=True)  # text that is not UTF-8 (pyarrow lets some through): line by line
                t = _conform(t)
                if _invalid_mask(t) is None and not _has_header_records(t):
                    self._row_lines = None
                    return t
            except (pa.ArrowException, UnicodeDecodeError):  # a key that is not UTF-8 fails as a field name
                pass
        return self._parse_lines(block, first_line)

    def _parse_lines(self, block: bytes, first_line: int) -> pa.Table | None:
        """The slow, exact path: one line at a time, to name (or skip) the bad ones."""
        rows: list[dict] = []
        row_lines: list[int] = []
        self._row_lines = row_lines
        for i, line in enumerate(block.split(b"\n")):
            if not line.strip():
                continue
            ln = first_line + i
            doc = _loads(line)
            problem = (_not_json(line) if doc is NOT_JSON else validate_row(doc))
            if doc is not None and isinstance(doc, dict) and doc.get("record") == "unmediated":
                if len(self.notices) < MAX_NOTICES:
                    self.notices.append(doc)
                continue
            if doc is not None and isinstance(doc, dict) and doc.get("record") in ("header", "footer"):
                problem = f"a {doc['record']} record in the middle of the trace"
            if problem:
                if not self.skip_bad:
                    raise InputError(problem, path=self.path, line=ln)
                self.stats.skipped += 1
                if len(self.stats.skipped_lines) < 100:
                    self.stats.skipped_lines.append(ln)
                continue
            rows.append(doc)
            row_lines.append(ln)
        if not rows:
            return None
        return _conform(_rows_table(rows))


def events_table(events: list[ConfigAccess]) -> pa.Table:
    """Events as an Arrow table in the event schema (what the analyzer eats)."""
    return _conform(_rows_table([e.to_dict() for e in events])) if events else arrow_schema().empty_table()


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # what JSON must escape in a string (RE2 syntax)


def _jsonl_rows(t: pa.Table) -> str:
    return "".join(json.dumps({k: v for k, v in row.items() if v is not None}, separators=(",", ":")) + "\n"
                   for row in t.to_pylist())


def jsonl_text(t: pa.Table) -> str:
    """``t`` as JSON Lines (null values left out), built column-wise with Arrow compute;
    tables with strings that need JSON escaping take the row-by-row path."""
    if t.num_rows == 0:
        return ""
    pieces = []
    for name in t.column_names:
        col = t.column(name)
        if col.null_count == len(col):
            continue
        typ = col.type
        if pa.types.is_dictionary(typ):
            col, typ = col.cast(pa.string()), pa.string()
        if pa.types.is_string(typ):
            if pc.any(pc.match_substring_regex(col, _NEEDS_ESCAPE)).as_py():
                return _jsonl_rows(t)
            val = pc.binary_join_element_wise('"', col, '"', "")
        elif pa.types.is_boolean(typ):
            val = pc.if_else(col, "true", "false")
        elif pa.types.is_integer(typ):
            val = col.cast(pa.string())
        else:
            return _jsonl_rows(t)
        kv = pc.binary_join_element_wise(f'"{name}":', val, "")
        pieces.append(pc.fill_null(pc.binary_join_element_wise(kv, ",", ""), ""))
    body = pc.binary_join_element_wise(*pieces, "") if len(pieces) > 1 else pieces[0]
    body = pc.utf8_slice_codeunits(body, 0, -1)  # the last comma
    lines = pc.binary_join_element_wise("{", body, "}\n", "")
    out = []
    for chunk in (lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]):
        # every value ends in a newline: the lines are the string data between the first and
        # last offsets, with no per-row Python
        offs = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset: chunk.offset + len(chunk) + 1]
        out.append(chunk.buffers()[2].to_pybytes()[offs[0]: offs[-1]].decode())
    return "".join(out)


def _rows_table(rows: list[dict]) -> pa.Table:
    known = {f.name: pa.array([r.get(f.name) for r in rows], type=f.arrow) for f in FIELDS}
    extra_keys = sorted({k for r in rows for k in r} - set(known))
    for k in extra_keys:
        vals = [r.get(k) for r in rows]
        try:
            known[k] = pa.array(vals)
        except (pa.ArrowException, TypeError, OverflowError, UnicodeEncodeError):
            known[k] = pa.array([None if v is None else json.dumps(v) for v in vals], type=pa.string())
    return pa.table(known)


def _conform(t: pa.Table, keep_dict: bool = False) -> pa.Table:
    """Add missing optional columns (nulls) and cast known ones to their schema types
    (``keep_dict``: leave dictionary-encoded columns of the right value type for later)."""
    for f in arrow_schema():
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, type=f.type))
        elif keep_dict and pa.types.is_dictionary(t.schema.field(f.name).type) \
                and t.schema.field(f.name).type.value_type == f.type:
            continue
        elif t.schema.field(f.name).type != f.type:
            try:
                t = t.set_column(t.schema.get_field_index(f.name), f.name, t.column(f.name).cast(f.type))
            except pa.ArrowException as err:
                raise InputError(f"column {f.name!r} has type {t.schema.field(f.name).type}, want {f.type}") from err
    return t


def _has_header_records(t: pa.Table) -> bool:
    return "record" in t.column_names and t.column("record").null_count < t.num_rows


def _decode_dicts(t: pa.Table) -> pa.Table:
    """Dictionary-encoded known columns back to their schema types."""
    for i, f in enumerate(t.schema):
        if pa.types.is_dictionary(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(f.type.value_type))
    return t


def _per_value(col: pa.ChunkedArray, fn: Callable[[pa.Array], pa.Array]) -> pa.ChunkedArray:
    """``fn`` on every value; on a dictionary column, on its dictionary only (then taken)."""
    if not pa.types.is_dictionary(col.type):
        return fn(col)
    return pa.chunked_array([fn(c.dictionary).take(c.indices) for c in col.chunks], type=pa.bool_()) \
        if col.num_chunks else pa.chunked_array([], type=pa.bool_())


def _all_values(col: pa.ChunkedArray, fn: Callable[[pa.Array], pa.Array]) -> bool:
    """No nulls in ``col`` (nor in a dictionary), and ``fn`` true on every value (on a dictionary
    column: on every dictionary entry, used or not)."""
    if col.null_count:
        return False
    if not pa.types.is_dictionary(col.type):
        return bool(pc.all(fn(col)).as_py() is not False)
    return all(c.dictionary.null_count == 0 and pc.all(fn(c.dictionary)).as_py() is not False for c in col.chunks)


def _known_or_null(col: pa.ChunkedArray, values: pa.Array) -> bool:
    """Every non-null value of ``col`` is one of ``values`` (an optional field mostly null)."""
    if col.null_count == len(col):
        return True
    return int(pc.sum(pc.is_in(col, value_set=values)).as_py() or 0) == len(col) - col.null_count


def _surely_valid(t: pa.Table) -> bool:
    """A quick pass (aggregates, dictionaries): does every row keep the rules :func:`_invalid_mask`
    checks? ``False`` means "maybe not": the row-by-row masks decide."""
    if any(t.column(name).null_count for name in REQUIRED):
        return False
    for name in ("ts_ns", "pid", "offset", "size"):
        low = pc.min(t.column(name)).as_py()
        if low is not None and low < 0:
            return False
    ops, vias, guards = pa.array(OPS), pa.array(VIAS), pa.array(GUARD_VERDICTS)
    if not (_all_values(t.column("op"), lambda a: pc.is_in(a, value_set=ops))
            and _all_values(t.column("via"), lambda a: pc.is_in(a, value_set=vias))
            and _known_or_null(t.column("guard"), guards)
            and _all_values(t.column("bdf"), lambda a: pc.match_substring_regex(
                a, BDF_RE.pattern))):
        return False
    data = t.column("data")
    if pc.all(is_hex(data)).as_py() is False:
        return False
    return pc.any(pc.greater(pc.divide(pc.binary_length(data), 2), t.column("size"))).as_py() is not True


def _invalid_mask(t: pa.Table) -> pa.ChunkedArray | None:
    """Rows that break the schema's value rules, or ``None`` when every row is fine."""
    if _surely_valid(t):
        return None
    bad = None
    for name in REQUIRED:
        m = pc.is_null(t.column(name))
        bad = m if bad is None else pc.or_(bad, m)
    for name in ("ts_ns", "pid", "offset", "size"):
        bad = pc.or_(bad, pc.fill_null(pc.less(t.column(name), 0), False))
    ops, vias = pa.array(OPS), pa.array(VIAS)
    bad = pc.or_(bad, pc.invert(pc.fill_null(_per_value(t.column("op"), lambda a: pc.is_in(a, value_set=ops)), False)))
    via = t.column("via")
    bad = pc.or_(bad, pc.fill_null(pc.invert(_per_value(via, lambda a: pc.is_in(a, value_set=vias))), False))
    guards = pa.array(GUARD_VERDICTS)
    bad = pc.or_(bad, pc.fill_null(pc.invert(_per_value(t.column("guard"), lambda a: pc.is_in(a, value_set=guards))),
                                   False))
    bad = pc.or_(bad, pc.invert(pc.fill_null(_per_value(t.column("bdf"), lambda a: pc.match_substring_regex(
        a, BDF_RE.pattern)), False)))
    data = t.column("data")
    bad = pc.or_(bad, pc.fill_null(pc.invert(is_hex(data)), False))
    # more bytes of data than the access's size (fewer is fine: live traces keep the first 64)
    bad = pc.or_(bad, pc.fill_null(pc.greater(pc.divide(pc.binary_length(data), 2), t.column("size")), False))
    if not pc.any(bad).as_py():
        return None
    return bad


# The header's and footer's facts: (key, type, what it must be). Every key is optional; null is "unknown".
_TEXT = (str, "a string of UTF-8 text")
_COUNT = (int, "a non-negative integer below 2**63")
_RECORD_KEYS: dict[str, tuple[tuple[str, tuple[type, str]], ...]] = {
    "header": (("host", _TEXT), ("kernel_release", _TEXT), ("kernel_version", _TEXT),
               ("running_kernel_release", _TEXT), ("backend", _TEXT), ("note", _TEXT), ("doe_exchanges", _TEXT),
               ("iomem_relaxed", (bool, "true or false")), ("boot_flags", (list, "a list of strings")),
               ("argv", (list, "a list of strings")), ("started_ns", _COUNT), ("started_unix_ns", _COUNT),
               ("snapshot", (dict, "an object (a cfgaudit snapshot)")), ("guard", (dict, "an object"))),
    "footer": (("ended_ns", _COUNT), ("ended_unix_ns", _COUNT), ("events", _COUNT), ("lost", _COUNT)),
}


def _checked_record(doc: Any, kind: str, path: str, line: int | None) -> dict[str, Any]:
    """``doc`` when it is a valid header or footer record (``kind``), else an InputError naming
    ``path`` (and ``line``): the facts must have their types, counts must be int64 and not
    negative, and a header's ``version`` must be :data:`TRACE_VERSION` (missing means it)."""
    def bad(msg: str) -> InputError:
        return InputError(f"{kind}: {msg}", path=path, line=line)

    if not isinstance(doc, dict):
        raise bad(f"must be a JSON object, not {type(doc).__name__ if doc is not None else 'null'}")
    if kind == "header" and doc.get("format") != TRACE_FORMAT:
        raise bad(f"not a {TRACE_FORMAT} header (\"format\" is {doc.get('format')!r})")
    if kind == "header" and doc.get("version", TRACE_VERSION) != TRACE_VERSION:
        raise bad(f"version {doc['version']!r} is not supported (this cfgaudit reads version {TRACE_VERSION})")
    for key, (typ, what) in _RECORD_KEYS[kind]:
        v = doc.get(key)
        if v is None:
            continue
        ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if ok and typ is int:
            ok = 0 <= v <= INT64_MAX
        if ok and typ is list:
            ok = all(isinstance(x, str) and is_utf8_text(x) for x in v)
        if ok and typ is str:
            ok = is_utf8_text(v)
        if not ok:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise bad(f"{key!r} must be {what}, not {shown}")
    return doc


def _line_at(path: str, pos: int) -> int:
    """The 1-based line number of byte ``pos`` of the file ``path`` (reads the file up to ``pos``)."""
    n, done = 1, 0
    with open_input(path, "trace") as fh:
        while done < pos:
            b = fh.read(min(1 << 20, pos - done))
            if not b:
                break
            n += b.count(b"\n")
            done += len(b)
    return n


def _not_json(line: bytes) -> str:
    """Why a line :func:`_loads` could not read is bad."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return "not valid JSON"


NOT_JSON = object()  # what _loads gives for a line that is not JSON (a JSON ``null`` is None)


def _loads(line: bytes) -> Any:
    """The JSON value of ``line``, or :data:`NOT_JSON` when it is not JSON (or nested too deeply)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return NOT_JSON


_LINE_STARTS_OK = np.array([ord("{"), ord("\n")], dtype=np.uint8)


def _read_json_blocks(block: bytes, po: pj.ParseOptions) -> pa.Table:
    """``block`` (whole lines) parsed by pyarrow's JSON reader in PARSE_BLOCK_BYTES pieces on its
    thread pool; a line longer than a piece ("straddling") is parsed again as one piece."""
    try:
        return pj.read_json(io.BytesIO(block), parse_options=po,
                            read_options=pj.ReadOptions(block_size=PARSE_BLOCK_BYTES))
    except pa.ArrowInvalid as err:
        if "straddl" not in str(err):
            raise
    return pj.read_json(io.BytesIO(block), parse_options=po,
                        read_options=pj.ReadOptions(block_size=max(PARSE_BLOCK_BYTES, len(block) + 1)))


def _objects_only(block: bytes) -> bool:
    """True when every non-empty line of ``block`` starts with ``{``. Only such a block goes to
    pyarrow's JSON reader: a first value that is not an object crashes it (a line ``null``
    segfaults pyarrow 26's reader with an explicit schema); the others take the line-by-line path."""
    a = np.frombuffer(block, dtype=np.uint8)
    if a.size == 0:
        return True
    firsts = np.concatenate((a[:1], a[np.flatnonzero(a[:-1] == 0x0A) + 1]))
    return bool(np.isin(firsts, _LINE_STARTS_OK).all())


MAX_NESTING = 256  # levels of [ and { a block may reach and still go to pyarrow's reader (events are flat)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def _shallow(block: bytes) -> bool:
    """True when ``block`` nests ``[``/``{`` at most :data:`MAX_NESTING` levels deep. pyarrow's
    JSON reader recurses without a limit: a line nested about 20,000 levels deep overflows its
    stack (SIGSEGV). Brackets inside strings count too: a false alarm only costs the line-by-line
    path, where json.loads turns deep nesting into a named error."""
    brackets = block.translate(None, _NOT_BRACKETS)
    if not any(two in brackets for two in (b"{{", b"[[", b"{[", b"[{")):  # flat events: one level
        return True
    steps = _BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)].astype(np.int32)
    if steps.size <= MAX_NESTING:
        return True
    depth = np.cumsum(steps)
    return bool((depth - np.minimum.accumulate(np.minimum(depth, 0))).max() <= MAX_NESTING)


def os_reason(err: BaseException) -> str:
    """The system's words for a failed write ("No space left on device"), also when pyarrow
    wrapped the errno in a message of its own ("... Detail: [errno 28] ...")."""
    code = getattr(err, "errno", None)
    if not code:
        m = re.search(r"\[errno (\d+)\]", str(err), re.I)
        code = int(m[1]) if m else None
    return os.strerror(code) if code else " ".join(str(err).split())


class TraceWriter:
    """Write a trace incrementally; ``TraceWriter(path, header)`` is the writer of the path's
    format (:data:`TRACE_FORMATS`). Rows (:meth:`write`) or Arrow tables (:meth:`write_table`) go
    out at least every ``flush_s`` seconds where the format allows; :meth:`close` adds the footer.
    Files are created mode 0600."""

    kind: ClassVar[str] = ""

    def __new__(cls, path: str, *args: Any, **kw: Any) -> "TraceWriter":
        if cls is TraceWriter:
            cls = TRACE_FORMATS[trace_kind(path)].writer
        return super().__new__(cls)

    def __init__(self, path: str, header: dict[str, Any], flush_s: float = 1.0) -> None:
        self.path = path
        self.header = header
        self.flush_s = flush_s
        self.count = 0
        self.failed: str | None = None  # why a write failed (then every later write is refused)
        self._last_flush = time.monotonic()
        self._start(_create(path))

    def _refuse(self) -> None:
        if self.failed:
            raise OutputError(f"recording stopped earlier: {self.failed}", path=self.path)

    def write(self, ev: ConfigAccess | dict[str, Any]) -> None:
        """One event (or another record, such as a notice's ``to_record()``)."""
        self._refuse()
        self.count += 1
        self._write_row(ev.to_dict() if isinstance(ev, ConfigAccess) else ev)
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def write_table(self, t: pa.Table) -> None:
        """Append an Arrow table of events."""
        self._refuse()
        self.count += t.num_rows
        self._write_table(t)

    def flush(self) -> None:
        self._refuse()
        self._last_flush = time.monotonic()
        self._flush()

    def close(self, footer: dict[str, Any] | None = None) -> None:
        """Write the footer (``events`` written; ``ended_ns``: CLOCK_MONOTONIC like the header's
        ``started_ns`` and the events' ``ts_ns``; ``ended_unix_ns``: wall time) and close."""
        self._close({"record": "footer", "ended_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
                     "ended_unix_ns": time.time_ns(), "events": self.count, **(footer or {})})

    # what a format provides
    def _start(self, fd: int) -> None:
        raise NotImplementedError

    def _write_row(self, d: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write_table(self, t: pa.Table) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _close(self, footer: dict[str, Any]) -> None:
        raise NotImplementedError


class JsonlTraceWriter(TraceWriter):
    """JSON Lines: the header line first, then line by line, flushed as it goes; footer last.

    Whole lines only: a write that fails (no space left, quota, I/O error) is cut back to the
    last whole flush (``ftruncate``), so the file stays a valid trace of what came before; the
    failure is an :class:`~cfgaudit.errors.OutputError` and later writes are refused."""

    kind = "jsonl"

    def _start(self, fd: int) -> None:
        self._fd = fd
        self._buf: list[bytes] = []
        self._good = 0         # bytes: the file's length up to the last whole flush
        self._good_count = 0   # events in those bytes
        self._buf.append(json.dumps(self.header, separators=(",", ":")).encode() + b"\n")
        try:
            self._flush()
        except OutputError:  # not even the header fits (disk full): no writer, so no fd left open
            os.close(fd)
            raise

    def _write_row(self, d: dict[str, Any]) -> None:
        self._buf.append(json.dumps(d, separators=(",", ":")).encode() + b"\n")

    def _write_table(self, t: pa.Table) -> None:
        self._buf.append(jsonl_text(t).encode())

    def _flush(self) -> None:
        if not self._buf:
            return
        data = memoryview(b"".join(self._buf))
        self._buf = []
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as err:
            kept = bytes(data[:done])
            kept = kept[:kept.rfind(b"\n") + 1]  # whole lines only
            lines = kept.count(b"\n") - (1 if self._good == 0 and kept else 0)  # the header is no record
            self._good += len(kept)
            self._good_count += lines
            self._cut_back()
            self.failed = os_reason(err)
            self.count = self._good_count
            raise OutputError(f"cannot write: {self.failed}; the file keeps the {self._good_count} records "
                              "written before and is a valid trace", path=self.path) from err
        self._good += len(data)
        self._good_count = self.count

    def _cut_back(self) -> None:
        """After a failed write: drop the partial line (a regular file only; a pipe cannot)."""
        try:
            if stat.S_ISREG(os.fstat(self._fd).st_mode):
                os.ftruncate(self._fd, self._good)
                os.lseek(self._fd, self._good, os.SEEK_SET)
        except OSError:
            pass

    def _close(self, footer: dict[str, Any]) -> None:
        try:
            if not self.failed:
                self._buf.append(json.dumps(footer, separators=(",", ":")).encode() + b"\n")
                self._flush()
        finally:
            os.close(self._fd)


class ParquetTraceWriter(TraceWriter):
    """Parquet: row groups (rows gathered 65536 at a time); header, footer and notices in the
    metadata. Unreadable until closed."""

    kind = "parquet"
    ROW_GROUP_ROWS = 65536

    def _start(self, fd: int) -> None:
        os.close(fd)
        self._rows: list[dict] = []
        self._notices: list[dict] = []  # notice records: no rows, the metadata (META_NOTICES) at the end
        self._pw: pq.ParquetWriter | None = None

    def _write_row(self, d: dict[str, Any]) -> None:
        if d.get("record") == "unmediated":
            if len(self._notices) < MAX_NOTICES:
                self._notices.append(d)
            return
        self._rows.append(d)
        if len(self._rows) >= self.ROW_GROUP_ROWS:
            self._flush()

    def _write_table(self, t: pa.Table) -> None:
        self._flush()  # rows written before the table stay before it
        self._write_parquet_table(_conform(t))

    def _flush(self) -> None:
        if self._rows:
            t = _conform(_rows_table(self._rows))
            self._rows = []
            self._write_parquet_table(t)

    def _write_parquet_table(self, t: pa.Table) -> None:
        names = [f.name for f in FIELDS]
        t = t.select(names + [c for c in t.column_names if c not in names])
        with self._failing():
            if self._pw is None:
                schema = t.schema.with_metadata({META_HEADER: json.dumps(self.header).encode()})
                self._pw = pq.ParquetWriter(self.path, schema)
                self._schema = schema
            self._pw.write_table(t.cast(self._schema) if t.schema != self._schema else t)

    def _close(self, footer: dict[str, Any]) -> None:
        if self.failed:
            return
        self._flush()
        with self._failing():
            if self._pw is None:
                empty = arrow_schema().empty_table()
                self._schema = empty.schema.with_metadata({META_HEADER: json.dumps(self.header).encode()})
                self._pw = pq.ParquetWriter(self.path, self._schema)
            meta = {META_FOOTER: json.dumps(footer)}
            if self._notices:
                meta[META_NOTICES] = json.dumps(self._notices)
            self._pw.add_key_value_metadata(meta)
            self._pw.close()

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A failed write (no space left, ...) leaves no file: a Parquet file without its end is
        unreadable, so it is removed, and the failure is an OutputError."""
        try:
            yield
        except (OSError, pa.ArrowException) as err:
            if self._pw is not None:
                with contextlib.suppress(OSError, pa.ArrowException):
                    self._pw.close()
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            self.failed = os_reason(err)
            raise OutputError(f"cannot write: {self.failed}; the incomplete Parquet file was removed",
                              path=self.path) from err


# ------------------------------------------------------------------------------------------
# The formats
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceFormat:
    """One trace format. ``extensions``: lower-case file-name endings; ``appendable``: readable up
    to the last flush while being written (a crash leaves a usable file), so live runs can record
    straight into it (others are recorded as JSON Lines and converted at the end)."""

    name: str
    extensions: tuple[str, ...]
    reader: type[TraceReader]
    writer: type[TraceWriter]
    appendable: bool
    help: str


TRACE_FORMATS: dict[str, TraceFormat] = {
    "jsonl": TraceFormat("jsonl", (".jsonl", ".ndjson", ".json"), JsonlTraceReader, JsonlTraceWriter, True,
                         "JSON Lines: a header line, one event per line, a footer line; any other name"),
    "parquet": TraceFormat("parquet", (".parquet", ".pq"), ParquetTraceReader, ParquetTraceWriter, False,
                           "Parquet: the event columns; header and footer in the key/value metadata"),
}
DEFAULT_TRACE_FORMAT = "jsonl"  # for names with no known extension


# ------------------------------------------------------------------------------------------
# Conversion (a live recording's JSON Lines -> Parquet)
# ------------------------------------------------------------------------------------------
FooterFor = Callable[[TraceReader, int, "int | None"], dict[str, Any]]
TMP_SUFFIX = ".tmp"


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def convert_trace(src: str, dst: str, footer: dict[str, Any] | FooterFor | None = None,
                  warn: Warn | None = None) -> int:
    """Convert the trace ``src`` into ``dst`` (the format of ``dst``'s name), atomically: ``dst.tmp``
    is written and fsynced, renamed to ``dst`` (the directory fsynced), then ``src`` is removed.
    ``footer``: ``dst``'s footer: a dict; a function of (the reader, events copied, the last
    event's ``ts_ns`` or None), called after the copy; or None: ``src``'s own. Returns the events
    copied. :class:`InputError`: ``src`` is no readable trace; :class:`OutputError`: ``dst`` could
    not be written (disk full): ``src`` stays as it was and there is no ``dst``."""
    reader = TraceReader(src, warn=warn)
    tmp = dst + TMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a conversion a crash cut short
    try:
        out = TRACE_FORMATS[trace_kind(dst)].writer(tmp, reader.header)
    except InputError as err:  # the file could not be made (no space for an inode, ...)
        raise OutputError(err.message, path=tmp) from err
    events, last_ts = 0, None
    try:
        for t in reader.tables():
            out.write_table(t)
            events += t.num_rows
            hi = pc.max(t.column("ts_ns")).as_py()
            last_ts = hi if last_ts is None or (hi is not None and hi > last_ts) else last_ts
        for d in reader.notices:  # read with the tables; Parquet keeps them in its metadata
            out.write(d)
        out.close(reader.footer if footer is None else footer(reader, events, last_ts) if callable(footer)
                  else footer)
        _fsync_path(tmp)
        os.replace(tmp, dst)
        where = os.path.dirname(dst) or "."
        _fsync_path(where, directory=True)
        os.unlink(src)
        _fsync_path(where, directory=True)
    except (OSError, InputError, OutputError) as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, (InputError, OutputError)):
            raise
        raise OutputError(f"cannot write: {os_reason(err)}", path=tmp) from err
    return events
