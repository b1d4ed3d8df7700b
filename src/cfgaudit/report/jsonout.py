"""The ``json`` report format, streamed: findings tables (Arrow) -> the document's text, chunk by chunk.

Writes exactly what the ``json`` format's renderer (report/render.py ``_render_json``) writes for
the same analysis: ``json.dumps(document, indent=1, ensure_ascii=False)`` of ``{"findings": [...],
"summary": {...}, "meta": {...}}``, byte for byte, in bounded memory. The findings text is built
with Arrow's string kernels, as report/csvout.py does for CSV, with no Python step per finding:
integers as decimal text, booleans ``true``/``false`` (a missing one ``false``, as the pandas
frame's ``bool`` dtype makes it), missing values ``null``, strings as JSON string literals escaped
as :func:`json.dumps` escapes them with ``ensure_ascii=False`` (``"``, ``\\`` and the control
characters U+0000..U+001F; nothing else). A dictionary-encoded column is rendered once per
dictionary value and taken per row; a run of dictionary columns over one index array (a region's
start, length, owner, ..., source) becomes one text fragment per region.

The summary and meta follow the findings, so the sink needs them at the end: the caller hands
them over with :meth:`JsonSink.finish` before :meth:`~JsonSink.close` (``audit.render_report``
does), and the findings-derived summary keys and the ``by_device`` / ``by_region`` /
``by_process`` / ``by_time`` breakdowns come from the sink's own
:class:`~cfgaudit.report.summary.FindingsSummary` of the findings it wrote.
"""
from __future__ import annotations

import json
from typing import IO, Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..analyze.findings import FINDING_COLUMNS
from .csvout import CsvSink, _one_chunk, _same_indices
from .summary import FindingsSummary

__all__ = ["JsonSink", "findings_json", "json_string_literals", "document_start", "document_end",
           "DUMPS_OPTIONS", "SLICE_ROWS"]

DUMPS_OPTIONS: dict[str, Any] = {"indent": 1, "ensure_ascii": False, "allow_nan": False, "default": str}
"""The options the json renderer (render.py ``_dumps``) gives :func:`json.dumps`."""
SLICE_ROWS = 1 << 16  # findings turned into text at once (some 70 MiB of text; far below 2 GiB)

# The bytes JSON escapes (in UTF-8 they stand only for themselves) and their escapes, as json.dumps
# writes them. The backslash comes first: the other escapes bring backslashes in.
_ESCAPED = [0x5C, 0x22, *range(0x20)]
_ESCAPES = {b: json.dumps(chr(b), ensure_ascii=False)[1:-1] for b in _ESCAPED}


def _special_bytes(a: pa.Array) -> list[int]:
    """The bytes of ``a``'s string data (a ``string`` array) that JSON escapes, in the order to
    replace them (one pass over the bytes; no per-value work)."""
    bufs = a.buffers()
    if a.null_count == len(a) or len(bufs) < 3 or bufs[2] is None:
        return []
    offs = np.frombuffer(bufs[1], dtype=np.int32, count=len(a) + 1, offset=a.offset * 4)
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offs[0]:offs[-1]]
    hit = data < 0x20
    hit |= data == 0x22
    hit |= data == 0x5C
    if not hit.any():
        return []
    present = set(np.unique(data[hit]).tolist())
    return [b for b in _ESCAPED if b in present]


def json_string_literals(a: pa.Array) -> pa.Array:
    """Each string of ``a`` as a JSON string literal (quotes included) exactly as
    ``json.dumps(s, ensure_ascii=False)`` writes it; null stays null."""
    if pa.types.is_large_string(a.type):
        a = a.cast(pa.string())
    for b in _special_bytes(a):
        a = pc.replace_substring(a, chr(b), _ESCAPES[b])
    return pc.binary_join_element_wise(pa.scalar('"'), a, pa.scalar('"'), "")


def _values(a: pa.Array) -> pa.Array:
    """One column as JSON value text (strings; a missing value stays null, written as ``null``)."""
    t = a.type
    if pa.types.is_dictionary(t):
        return _values(a.dictionary).take(a.indices)
    if pa.types.is_boolean(t):
        return pc.if_else(pc.fill_null(a, False), pa.scalar("true"), pa.scalar("false"))
    if pa.types.is_integer(t):
        return pc.cast(a, pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return json_string_literals(a)
    if pa.types.is_null(t):
        return pa.nulls(len(a), pa.string())
    raise TypeError(f"no JSON rendering for a {t} column")


_NAMES = list(FINDING_COLUMNS)
_KEYS = [json.dumps(c, ensure_ascii=False) for c in _NAMES]
# Before each value: the finding's opening (first key) or the separator and key of the next.
_BEFORE = [",\n  {\n   " + _KEYS[0] + ": "] + [",\n   " + k + ": " for k in _KEYS[1:]]
_CLOSE = "\n  }"


def _join(pieces: list[pa.Array | pa.Scalar]) -> pa.Array:
    """The pieces (text arrays and literal scalars) concatenated row by row; null -> ``null``."""
    return pc.binary_join_element_wise(*pieces, "", null_handling="replace", null_replacement="null")


def _column(t: pa.Table, name: str) -> pa.Array:
    """Column ``name`` of ``t`` as one array; a column the table lacks is all null."""
    if name not in t.column_names:
        return pa.nulls(t.num_rows, pa.string())
    return _one_chunk(t.column(name))


def findings_json(t: pa.Table) -> pa.Buffer:
    """The findings of ``t`` as the json document writes them inside its ``findings`` list, as
    UTF-8 bytes: each finding ``,\\n  {\\n   "ts_ns": 1, ...\\n  }`` (the first finding of the
    document is written without its leading comma). Keys are :data:`FINDING_COLUMNS`, in order."""
    if t.num_rows == 0:
        return pa.py_buffer(b"")
    cols = [_column(t, c) for c in _NAMES]
    pieces: list[pa.Array | pa.Scalar] = []
    i = 0
    while i < len(cols):
        j = i + 1
        while j < len(cols) and _same_indices(cols[i], cols[j]):
            j += 1
        pieces.append(pa.scalar(_BEFORE[i]))
        if j - i > 1:  # one fragment per dictionary entry, taken once per row
            frag: list[pa.Array | pa.Scalar] = [_values(cols[i].dictionary)]
            for k in range(i + 1, j):
                frag += [pa.scalar(_BEFORE[k]), _values(cols[k].dictionary)]
            pieces.append(_join(frag).take(cols[i].indices))
        else:
            pieces.append(_values(cols[i]))
        i = j
    pieces.append(pa.scalar(_CLOSE))
    text = _join(pieces)
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    offs = np.frombuffer(text.buffers()[1], dtype=np.int32, count=len(text) + 1, offset=text.offset * 4)
    return text.buffers()[2].slice(int(offs[0]), int(offs[-1] - offs[0]))


def document_start() -> str:
    """The document's text before the first finding."""
    return '{\n "findings": ['


def document_end(summary: Mapping[str, Any], meta: Mapping[str, Any], rows: bool) -> str:
    """The document's text after the last finding (``rows``: were there any?): the list's end,
    then ``summary`` and ``meta`` (plain JSON-able values) as json.dumps writes them."""
    tail = json.dumps({"summary": summary, "meta": meta}, **DUMPS_OPTIONS)
    return ("\n ]" if rows else "]") + "," + tail[1:] + "\n"


class JsonSink(CsvSink):
    """Writes the json document to a text stream: its start now, then each findings table's
    findings (:func:`findings_json`), then, at :meth:`close`, the summary and meta given to
    :meth:`finish`. Counts ``rows`` and ``failing`` as :class:`~cfgaudit.report.csvout.CsvSink`
    does, whose worker thread (``background``) and UTF-8 fast path it shares.

    ``plain`` turns the summary's and meta's values into JSON-able Python (render.py hands its
    ``_plain``; default: as they are). :attr:`summary` is the :class:`FindingsSummary` of the
    findings written (9 bytes per finding; see there). Without :meth:`finish`, :meth:`close`
    leaves the document unterminated: an analysis that failed never reads as a complete one.
    """

    def __init__(self, out: IO[str], background: bool = False, depth: int = 1,
                 plain: Callable[[Any], Any] | None = None) -> None:
        self.summary = FindingsSummary()
        self._plain: Callable[[Any], Any] = plain or (lambda v: v)
        self._first = True
        self._end: tuple[dict[str, Any], dict[str, Any]] | None = None
        out.write(document_start())
        super().__init__(out, background=background, depth=depth)

    def finish(self, summary: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Hand over the report's ``summary`` (trace counts, ``unknown_device_*``, ...; its
        findings-derived keys are replaced by the sink's own) and ``meta``; they are copied now
        and written by :meth:`close`."""
        self._end = (dict(self._plain(dict(summary))), dict(self._plain(dict(meta))))

    def close(self) -> None:
        """Wait for the worker (raising what it raised), then write the document's end if
        :meth:`finish` was called; the stream stays open."""
        super().close()
        if self._end is None:
            return
        summary, meta = self._end
        self._end = None
        summary.update(self.summary.summary())
        summary.update(self.summary.breakdowns())
        self.out.write(document_end(summary, meta, not self._first))

    def _write(self, f: pa.Table) -> None:
        self.summary.feed(f)
        for start in range(0, f.num_rows, SLICE_ROWS):
            buf = findings_json(f.slice(start, SLICE_ROWS))
            if self._first:
                buf, self._first = buf.slice(1), False  # the first finding: no comma before it
            if self._raw is not None:
                self.out.flush()
                self._raw.write(memoryview(buf))
            else:
                self.out.write(buf.to_pybytes().decode("utf-8"))
