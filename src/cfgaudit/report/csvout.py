"""Findings tables (Arrow, from :meth:`cfgaudit.analyze.Analyzer.feed_arrow`) as CSV bytes.

Writes exactly what the ``csv`` report format (report/render.py ``_render_csv``) writes for the
same findings: ``true``/``false`` for booleans, nothing for missing values, a field quoted
(quotes doubled) only when it holds a comma, a quote or a line-terminator character (the csv
module's QUOTE_MINIMAL with ``lineterminator="\\n"``), but it builds the text with Arrow's
string kernels instead of a Python loop per row. :class:`CsvSink` is that format's streaming
hook (the ``stream`` of its RENDERERS row): findings chunk by chunk, in bounded memory.
"""
from __future__ import annotations

import codecs
import csv
import io
import queue
import threading
from typing import IO, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["findings_csv", "header_line", "CsvSink", "SLICE_ROWS"]

SLICE_ROWS = 1 << 16  # rows turned into text at once (some 28 MiB of text: bounded memory, far below 2 GiB)


def _quote_pattern() -> str:
    """The characters that make the csv module quote a field (lineterminator "\\n")."""
    chars = [",", '"', "\n"]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["a\rb"])
    if buf.getvalue().startswith('"'):
        chars.append("\r")
    return "[" + "".join({"\n": "\\n", "\r": "\\r"}.get(c, c) for c in chars) + "]"


_NEEDS_QUOTES = _quote_pattern()


_QUOTE_BYTES = np.frombuffer(_NEEDS_QUOTES[1:-1].encode().decode("unicode_escape").encode(), dtype=np.uint8)


def _maybe_special(a: pa.Array) -> bool:
    """Could some value need quotes? (One pass over the string bytes; no per-value work.)"""
    if a.null_count == len(a):
        return False
    bufs = a.buffers()
    if len(bufs) < 3 or bufs[2] is None:
        return False
    offs = np.frombuffer(bufs[1], dtype=np.int32, count=len(a) + 1, offset=a.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offs[0]:offs[-1]]
    return any(bool((data == c).any()) for c in _QUOTE_BYTES)


def _quoted(a: pa.Array) -> pa.Array:
    if not _maybe_special(a):
        return a
    needs = pc.match_substring_regex(a, _NEEDS_QUOTES)
    if not pc.any(needs).as_py():
        return a
    q = pc.binary_join_element_wise(pa.scalar('"'), pc.replace_substring(a, '"', '""'), pa.scalar('"'), "")
    return pc.if_else(needs, q, a)


def _field(a: pa.Array) -> pa.Array:
    """One column as CSV fields (strings; null stays null and is written as nothing)."""
    t = a.type
    if pa.types.is_dictionary(t):
        d = a.dictionary
        is_text = pa.types.is_string(d.type) or pa.types.is_large_string(d.type)
        d = _quoted(d.cast(pa.string())) if is_text else _field(d)
        return d.take(a.indices)
    if pa.types.is_boolean(t):
        return pc.if_else(a, pa.scalar("true"), pa.scalar("false"))
    if pa.types.is_integer(t):
        return pc.cast(a, pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _quoted(a.cast(pa.string()))
    if pa.types.is_null(t):
        return pa.nulls(len(a), pa.string())
    raise TypeError(f"no CSV rendering for a {t} column")


def _one_chunk(c: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The column as one array (a single chunk as it is: buffers shared with other columns stay shared)."""
    if isinstance(c, pa.ChunkedArray):
        return c.chunk(0) if c.num_chunks == 1 else c.combine_chunks()
    return c


def _same_indices(a: pa.Array, b: pa.Array) -> bool:
    """Are ``a`` and ``b`` dictionary arrays over the very same index buffer (no nulls)?"""
    if not (pa.types.is_dictionary(a.type) and pa.types.is_dictionary(b.type)):
        return False
    ia, ib = a.indices, b.indices
    if ia.null_count or ib.null_count or ia.type != ib.type or len(ia) != len(ib) or ia.offset != ib.offset:
        return False
    ba, bb = ia.buffers()[1], ib.buffers()[1]
    return ba is not None and bb is not None and ba.address == bb.address


def _fragment(run: list[pa.Array]) -> pa.Array:
    """Consecutive dictionary columns sharing their indices (e.g. a region's owner, kind, ...,
    source) as one field text per dictionary entry, ``,``-joined, taken once per row."""
    parts = [_field(a.dictionary) for a in run]
    text = pc.binary_join_element_wise(*parts, ",", null_handling="replace", null_replacement="")
    return text.take(run[0].indices)


def _fields(cols: list[pa.Array]) -> list[pa.Array]:
    """The columns as CSV fields; a run of dictionary columns over one index array becomes a
    single (already comma-joined) field column."""
    out: list[pa.Array] = []
    i = 0
    while i < len(cols):
        j = i + 1
        while j < len(cols) and _same_indices(cols[i], cols[j]):
            j += 1
        out.append(_fragment(cols[i:j]) if j - i > 1 else _field(cols[i]))
        i = j
    return out


def findings_csv(t: pa.Table) -> pa.Buffer:
    """The CSV rows (no header) of a findings table, as UTF-8 bytes."""
    if t.num_rows == 0:
        return pa.py_buffer(b"")
    cols = _fields([_one_chunk(c) for c in t.columns])
    cols[-1] = pc.binary_join_element_wise(cols[-1], pa.scalar(""), "\n",
                                           null_handling="replace", null_replacement="")
    line = pc.binary_join_element_wise(*cols, ",", null_handling="replace", null_replacement="")
    if isinstance(line, pa.ChunkedArray):
        line = line.combine_chunks()
    offs = np.frombuffer(line.buffers()[1], dtype=np.int32, count=len(line) + 1, offset=line.offset * 4)
    return line.buffers()[2].slice(int(offs[0]), int(offs[-1] - offs[0]))


def header_line(columns: Sequence[str]) -> str:
    """The CSV header record for ``columns`` (as csv.writer writes it, ``\\n``-terminated)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(list(columns))
    return buf.getvalue()


class CsvSink:
    """Writes findings tables to a text stream as CSV rows; counts rows and failing findings
    (kind collision, exclusive or managed, not allowed by a user claim).

    With ``header`` (column names), the header record is written first, at construction (it
    is there even when no findings follow). With ``background``, the text is made and written
    by a worker thread (in order) while the caller analyses the next chunk; at most ``depth``
    tables wait for it. Call :meth:`close` at the end (it waits for the worker and raises what
    it raised)."""

    def __init__(self, out: IO[str], background: bool = False, depth: int = 1,
                 header: Sequence[str] | None = None) -> None:
        self.out = out
        self.rows = 0
        self.failing = 0
        if header is not None:
            out.write(header_line(header))
        enc = getattr(out, "encoding", None)
        self._raw = getattr(out, "buffer", None) if enc and codecs.lookup(enc).name == "utf-8" else None
        self._q: queue.Queue | None = None
        self._err: BaseException | None = None
        if background:
            self._q = queue.Queue(maxsize=depth)
            self._worker = threading.Thread(target=self._run, name="cfgaudit-csv", daemon=True)
            self._worker.start()

    def __call__(self, f: pa.Table) -> None:
        """Write one findings table (columns of FINDING_COLUMNS, in order)."""
        if f.num_rows == 0:
            return
        self.rows += f.num_rows
        self.failing += _failing(f)
        if self._q is None:
            self._write(f)
            return
        if self._err is not None:
            self.close()
        self._q.put(f)

    def _run(self) -> None:
        assert self._q is not None
        while True:
            f = self._q.get()
            if f is None:
                return
            if self._err is None:
                try:
                    self._write(f)
                except BaseException as err:  # handed to the caller in close()
                    self._err = err

    def close(self) -> None:
        """Wait for the worker (if any) and raise what it raised; the stream stays open."""
        if self._q is not None:
            self._q.put(None)
            self._worker.join()
            self._q = None
        if self._err is not None:
            err, self._err = self._err, None
            raise err

    def _write(self, f: pa.Table) -> None:
        for start in range(0, f.num_rows, SLICE_ROWS):
            buf = findings_csv(f.slice(start, SLICE_ROWS))
            if self._raw is not None:
                self.out.flush()
                self._raw.write(memoryview(buf))
            else:
                self.out.write(buf.to_pybytes().decode("utf-8"))


def _failing(f: pa.Table) -> int:
    kind = f.column("kind").combine_chunks()
    vs = pa.array(["collision", "exclusive", "managed"])
    if pa.types.is_dictionary(kind.type):
        hit = pc.is_in(kind.dictionary, value_set=vs).to_numpy(zero_copy_only=False)
        idx = kind.indices.to_numpy(zero_copy_only=False)
        m = hit[idx]
    else:
        m = pc.fill_null(pc.is_in(kind, value_set=vs), False).to_numpy(zero_copy_only=False)
    free = pc.is_null(f.column("allowed_by")).to_numpy(zero_copy_only=False)
    return int((m & free).sum())
