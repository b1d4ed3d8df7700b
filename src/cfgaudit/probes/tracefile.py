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

import errno
import io
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from ..errors import InputError
from ..events import FIELDS, OPS, REQUIRED, VIAS, ConfigAccess, arrow_schema, json_schema, validate_row
from ..hexarrow import is_hex

__all__ = ["TraceReader", "TraceWriter", "TraceFormat", "TRACE_FORMATS", "DEFAULT_TRACE_FORMAT", "TRACE_FORMAT",
           "TRACE_VERSION", "trace_kind", "make_header", "events_table", "jsonl_text"]

TRACE_FORMAT = "cfgaudit-trace"
TRACE_VERSION = 1
BLOCK_BYTES = 16 << 20  # JSONL block handed to pyarrow at once
DICT_COLUMNS = ("comm", "op", "bdf", "via")  # read from Parquet as dictionaries
META_HEADER = b"cfgaudit.header"
META_FOOTER = b"cfgaudit.footer"

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
        if not os.path.exists(path):
            raise InputError("no such trace file", path=path)
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
            for batch in batches:
                t = _conform(pa.Table.from_batches([batch]), keep_dict=True)
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
                self.stats.events += t.num_rows
                yield t
        except pa.ArrowException as err:
            raise InputError(f"cannot read Parquet: {err}", path=self.path) from err


class JsonlTraceReader(TraceReader):
    """JSON Lines: byte blocks parsed by pyarrow's JSON reader, with a line-by-line pass only to
    name (or skip) a bad line; header and footer are the first and last lines."""

    kind = "jsonl"

    def _open(self) -> None:
        self._size = os.path.getsize(self.path)
        self._body_start = 0
        self._body_end = self._size
        self._first_line = 1
        with open(self.path, "rb") as fh:
            first = fh.readline()
            if first.strip():
                doc = _loads(first)
                if isinstance(doc, dict) and doc.get("record") == "header":
                    if doc.get("format") != TRACE_FORMAT:
                        raise InputError(f"header is not a {TRACE_FORMAT} header", path=self.path, line=1)
                    self.header = doc
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
            self.footer = doc
            self._body_end = tail_start + idx + 1

    def tables(self) -> Iterator[pa.Table]:
        po = pj.ParseOptions(explicit_schema=json_schema(), unexpected_field_behavior="infer")
        with open(self.path, "rb") as fh:
            fh.seek(self._body_start)
            pos, line_no, carry = self._body_start, self._first_line, b""
            while pos < self._body_end or carry:
                want = min(self.block_bytes, self._body_end - pos)
                chunk = carry + (fh.read(want) if want > 0 else b"")
                pos += max(want, 0)
                if pos < self._body_end:
                    cut = chunk.rfind(b"\n") + 1
                    if cut == 0:
                        carry = chunk
                        continue
                    block, carry = chunk[:cut], chunk[cut:]
                else:
                    block, carry = chunk, b""
                if not block.strip():
                    line_no += block.count(b"\n")
                    continue
                t = self._parse_block(block, line_no, po)
                line_no += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                if t is not None and t.num_rows:
                    self.stats.events += t.num_rows
                    yield t

    def _parse_block(self, block: bytes, first_line: int, po: pj.ParseOptions) -> pa.Table | None:
        if _objects_only(block):  # pyarrow's reader never sees a line that is not an object
            try:
                t = _conform(pj.read_json(io.BytesIO(block), parse_options=po,
                                          read_options=pj.ReadOptions(block_size=max(1 << 20, len(block) + 1))))
                if _invalid_mask(t) is None and not _has_header_records(t):
                    return t
            except pa.ArrowException:
                pass
        return self._parse_lines(block, first_line)

    def _parse_lines(self, block: bytes, first_line: int) -> pa.Table | None:
        """The slow, exact path: one line at a time, to name (or skip) the bad ones."""
        rows: list[dict] = []
        for i, line in enumerate(block.split(b"\n")):
            if not line.strip():
                continue
            ln = first_line + i
            doc = _loads(line)
            problem = "not valid JSON" if doc is NOT_JSON else validate_row(doc)
            if doc is not None and isinstance(doc, dict) and doc.get("record") == "unmediated":
                if len(self.notices) < 10000:
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
        except (pa.ArrowException, TypeError):
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


def _invalid_mask(t: pa.Table) -> pa.ChunkedArray | None:
    """Rows that break the schema's value rules, or ``None`` when every row is fine."""
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
    bad = pc.or_(bad, pc.invert(pc.fill_null(_per_value(t.column("bdf"), lambda a: pc.match_substring_regex(
        a, r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")), False)))
    data = t.column("data")
    bad = pc.or_(bad, pc.fill_null(pc.invert(is_hex(data)), False))
    if not pc.any(bad).as_py():
        return None
    return bad


NOT_JSON = object()  # what _loads gives for a line that is not JSON (a JSON ``null`` is None)


def _loads(line: bytes) -> Any:
    """The JSON value of ``line``, or :data:`NOT_JSON` when it is not JSON (or nested too deeply)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return NOT_JSON


_LINE_STARTS_OK = np.array([ord("{"), ord("\n")], dtype=np.uint8)


def _objects_only(block: bytes) -> bool:
    """True when every non-empty line of ``block`` starts with ``{``. Only such a block goes to
    pyarrow's JSON reader: a first value that is not an object crashes it (a line ``null``
    segfaults pyarrow 26's reader with an explicit schema); the others take the line-by-line path."""
    a = np.frombuffer(block, dtype=np.uint8)
    if a.size == 0:
        return True
    firsts = np.concatenate((a[:1], a[np.flatnonzero(a[:-1] == 0x0A) + 1]))
    return bool(np.isin(firsts, _LINE_STARTS_OK).all())


def _create(path: str) -> int:
    """Open ``path`` for a new trace (fd). A new file is made mode 0600 (traces hold config bytes
    non-root cannot read); an existing file is truncated and keeps its mode; a symbolic link is
    refused (no writing through a link); a device (``/dev/null``) is written, never chmodded."""
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            return fd
        except FileExistsError:
            fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError("is a symbolic link: give the real path (cfgaudit does not write through links)",
                             path=path) from err
        raise InputError(f"cannot create trace: {err.strerror}", path=path) from err
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.ftruncate(fd, 0)
    return fd


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
        self._last_flush = time.monotonic()
        self._start(_create(path))

    def write(self, ev: ConfigAccess | dict[str, Any]) -> None:
        """One event (or another record, such as a notice's ``to_record()``)."""
        self.count += 1
        self._write_row(ev.to_dict() if isinstance(ev, ConfigAccess) else ev)
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def write_table(self, t: pa.Table) -> None:
        """Append an Arrow table of events."""
        self.count += t.num_rows
        self._write_table(t)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        self._flush()

    def close(self, footer: dict[str, Any] | None = None) -> None:
        """Write the footer (``events`` written, ``ended_ns`` and the given facts) and close."""
        self._close({"record": "footer", "ended_ns": time.time_ns(), "events": self.count, **(footer or {})})

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
    """JSON Lines: the header line first, then line by line, flushed as it goes; footer last."""

    kind = "jsonl"

    def _start(self, fd: int) -> None:
        self._fh = os.fdopen(fd, "w", buffering=1 << 16)
        self._fh.write(json.dumps(self.header, separators=(",", ":")) + "\n")
        self._fh.flush()

    def _write_row(self, d: dict[str, Any]) -> None:
        self._fh.write(json.dumps(d, separators=(",", ":")) + "\n")

    def _write_table(self, t: pa.Table) -> None:
        self._fh.write(jsonl_text(t))

    def _flush(self) -> None:
        self._fh.flush()

    def _close(self, footer: dict[str, Any]) -> None:
        self._fh.write(json.dumps(footer, separators=(",", ":")) + "\n")
        self._fh.close()


class ParquetTraceWriter(TraceWriter):
    """Parquet: row groups (rows gathered 65536 at a time); header and footer in the metadata.
    Unreadable until closed."""

    kind = "parquet"
    ROW_GROUP_ROWS = 65536

    def _start(self, fd: int) -> None:
        os.close(fd)
        self._rows: list[dict] = []
        self._pw: pq.ParquetWriter | None = None

    def _write_row(self, d: dict[str, Any]) -> None:
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
        if self._pw is None:
            schema = t.schema.with_metadata({META_HEADER: json.dumps(self.header).encode()})
            self._pw = pq.ParquetWriter(self.path, schema)
            self._schema = schema
        self._pw.write_table(t.cast(self._schema) if t.schema != self._schema else t)

    def _close(self, footer: dict[str, Any]) -> None:
        self._flush()
        if self._pw is None:
            empty = arrow_schema().empty_table()
            self._schema = empty.schema.with_metadata({META_HEADER: json.dumps(self.header).encode()})
            self._pw = pq.ParquetWriter(self.path, self._schema)
        self._pw.add_key_value_metadata({META_FOOTER: json.dumps(footer)})
        self._pw.close()


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
