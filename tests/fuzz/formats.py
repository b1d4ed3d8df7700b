"""The fuzzed formats: one row each in :data:`FORMATS`, a generator and the commands that read it.

A generator turns ``(rng, seeds, directory)`` into a :class:`FuzzInput` (files written into the
directory); ``commands`` lists every offline command line that reads the input (the runner picks
some per input). Commands never name the live /sys/bus/pci: every one gets a source (a dump, a
snapshot or the trace's own header), and outputs go into the input's directory.
"""
from __future__ import annotations

import copy
import io
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from cfgaudit.probes.tracefile import TraceWriter, make_header

from .mutate import (
    INTERESTING_INTS,
    INTERESTING_STRS,
    deep,
    dump_json,
    mutate_bytes,
    mutate_lines,
    mutate_tree,
    odd_value,
)
from .seeds import KERNELS, Seeds, TraceSeed

__all__ = ["FuzzInput", "Format", "FORMATS"]

EVENT_KEYS = ("ts_ns", "pid", "tid", "uid", "comm", "op", "bdf", "offset", "size", "data", "via", "ret",
              "kernel_verdict", "record")
HEADER_KEYS = ("record", "format", "version", "host", "kernel_release", "kernel_version", "running_kernel_release",
               "boot_flags", "iomem_relaxed", "backend", "started_ns", "started_unix_ns", "snapshot")
FOOTER_KEYS = ("record", "ended_ns", "events", "lost")
SNAPSHOT_KEYS = ("format", "version", "created_ns", "host", "kernel_release", "kernel_version", "iomem_relaxed",
                 "devices", "bdf", "driver", "config_size", "on_root_bus", "config", "known", "notes")
REPORT_FORMATS = ("table", "json", "csv", "markdown", "html", "github", "sarif", "junit")
LIST_FORMATS = ("table", "json", "csv")

ODD_TRACE_LINES: list[bytes] = [
    b"null", b" null", b"[]", b"[1]", b"1", b"-1", b'"text"', b"true", b"{}", b"{", b"}", b"{}{}", b"\x00",
    b"\xff\xfe", b"\r", b"   ", b"#", b"NaN", b"Infinity", b'{"record":"header","format":"cfgaudit-trace","version":1}',
    b'{"record":"footer","ended_ns":1,"events":1,"lost":0}', b'{"record":"unmediated"}',
    b'{"record":"unmediated","ts_ns":1,"pid":1,"comm":"\\u001b[2J","what":"iopl(3)","via":"ioport"}',
    b'{"record":"nonsense"}', b'{"record":null}', b'{"record":[1]}', deep(2000).encode(), deep(100000).encode(),
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":9223372036854775808,"size":4}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"read","bdf":"0000:0d:00.0","offset":4096,"size":4,"data":"00000000"}',
    b'{"ts_ns":2,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":4096,"size":4,"data":"00000000"}',
    b'{"ts_ns":1,"pid":1,"comm":"\xff\xfe","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":0}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":1000000000000}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"data":"00"}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":4094,"size":4,"data":"01020304"}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"data":"zz"}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:ff:1f.7","offset":4,"size":2,"data":"0600"}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"extra":{"a":[1]}}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"ret":-22}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":1.5,"size":4}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":1e400,"size":4}',
    b'{"ts_ns":1,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"ts_ns":2}',
    b'{"ts_ns":9000000000000000000,"pid":1,"comm":"x","op":"write","bdf":"0000:0d:00.0","offset":1,"size":1}',
]


@dataclass
class FuzzInput:
    """One generated input: ``path`` is what the commands read (a file in ``files``, or a special
    path such as a directory); ``note`` says how it was made; ``has_snapshot``: a trace whose
    header embeds a snapshot (commands may then name no source)."""

    path: str
    files: list[str]
    note: str
    has_snapshot: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """A fuzzed format: ``make(rng, seeds, dir) -> FuzzInput`` and
    ``commands(rng, input, seeds, dir) -> [argv, ...]`` (every command that reads it)."""

    name: str
    make: Callable[[random.Random, Seeds, str], FuzzInput]
    commands: Callable[[random.Random, FuzzInput, Seeds, str], list[list[str]]]
    help: str


MAX_INPUT = 4 << 20  # bytes: a bigger generated input is cut here (a truncated file is a fine input too)


def _write(d: str, name: str, data: bytes) -> str:
    p = os.path.join(d, name)
    data = data[:MAX_INPUT]
    with open(p, "wb") as fh:
        fh.write(data)
    return p


def _kernel(rng: random.Random) -> list[str]:
    return ["--kernel", rng.choice(KERNELS)] if rng.random() < 0.8 else []


def _source(rng: random.Random, seeds: Seeds) -> list[str]:
    """Well-formed device source options (never the live sysfs)."""
    r = rng.random()
    if r < 0.6:
        return ["--lspci-dump", seeds.side["cxl"], "--lspci-dump", seeds.side["rp"], "--driver", "0d:00.0=cxl_pci"]
    if r < 0.9:
        return ["--snapshot", seeds.side["snapshot"]]
    return ["--lspci-dump", seeds.side["cxl"]]


def _special_path(rng: random.Random, d: str) -> tuple[str, str]:
    """A trace path that is not a regular file with events: a directory, nothing, an empty file,
    /dev/null, a FIFO, an unreadable file."""
    kind = rng.choice(("dir", "missing", "empty", "devnull", "fifo", "unreadable", "name"))
    if kind == "dir":
        p = os.path.join(d, "adir.jsonl")
        os.mkdir(p)
    elif kind == "missing":
        p = os.path.join(d, "missing.jsonl")
    elif kind == "empty":
        p = _write(d, "empty.parquet" if rng.random() < 0.5 else "empty.jsonl", b"")
    elif kind == "devnull":
        p = os.devnull
    elif kind == "fifo":
        p = os.path.join(d, "fifo.jsonl")
        os.mkfifo(p)
    elif kind == "unreadable":
        p = _write(d, "unreadable.jsonl", b"{}\n")
        os.chmod(p, 0)
    else:
        p = _write(d, rng.choice(("t", "t.PARQUET", "t.pq.jsonl", "-", "t.json", ".parquet")), b'{"ts_ns":1}\n')
    return p, f"special:{kind}"


# ----------------------------------------------------------------------------------------------
# traces
# ----------------------------------------------------------------------------------------------
def _pick_trace(rng: random.Random, seeds: Seeds) -> TraceSeed:
    small = [t for t in seeds.traces if not t.big]
    big = [t for t in seeds.traces if t.big]
    return copy.deepcopy(rng.choice(big if big and rng.random() < 0.04 else small))


def _random_event(rng: random.Random) -> dict[str, Any]:
    size = rng.choice((1, 2, 4, 4, 4, 8, 3, 0, 4096))
    off = rng.choice((0x04, 0x3C, 0x50, 0x198, 0x19C, 0x1A0, 0x1A4, 0x100, 0xFFC, 0xFFE, 4096, 4100,
                      rng.randrange(0, 4096)))
    ev: dict[str, Any] = {"ts_ns": rng.randrange(0, 10**10), "pid": rng.randrange(1, 5000), "comm": "t",
                          "op": rng.choice(("write", "write", "read")),
                          "bdf": rng.choice(("0000:0d:00.0", "0000:0c:00.0", "0000:00:00.0", "0000:0e:00.0")),
                          "offset": off, "size": size,
                          "via": rng.choice(("sysfs", "procfs", "vfio", "ioport", "devmem", "unknown"))}
    if rng.random() < 0.7:
        ev["data"] = "".join(rng.choice("0123456789abcdef") for _ in range(2 * min(size, 64)))
    if rng.random() < 0.5:
        ev["ret"] = rng.choice((size, -1, -22, 0))
    return ev


def _mutate_trace(t: TraceSeed, rng: random.Random, header_focus: bool = False) -> list[str]:
    """Structural mutations of a trace seed in place; returns what was done."""
    notes = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.random()
        if header_focus or r < 0.12:
            if t.header and rng.random() < 0.75:
                t.header = mutate_tree(t.header, rng, HEADER_KEYS + SNAPSHOT_KEYS)
                notes.append("header")
            else:
                t.footer = mutate_tree(t.footer or {"record": "footer", "events": 1, "lost": 0}, rng, FOOTER_KEYS)
                notes.append("footer")
        elif r < 0.55 and t.records:
            i = rng.randrange(len(t.records))
            t.records[i] = mutate_tree(t.records[i], rng, EVENT_KEYS)
            notes.append(f"event{i}")
        elif r < 0.75:
            for _ in range(rng.choice((1, 2, 5, 20))):
                t.records.insert(rng.randrange(len(t.records) + 1), _random_event(rng))
            notes.append("events+")
        elif r < 0.85 and t.records:
            i = rng.randrange(len(t.records))
            t.records[i:i + 1] = [copy.deepcopy(t.records[i])] * rng.choice((2, 10, 300))
            notes.append("repeat")
        else:
            for r2 in t.records:
                if rng.random() < 0.5:
                    mutate_tree(r2, rng, EVENT_KEYS, n=1)
            notes.append("many")
    return notes


def _jsonl_bytes(t: TraceSeed, rng: random.Random) -> bytes:
    """The trace as JSON Lines; one line at most nests deeply."""
    lines = ([t.header] if t.header else []) + t.records + ([t.footer] if t.footer else [])
    out, deep_left = [], 1
    for r in lines:
        b = dump_json(r, rng, deep_left)
        deep_left = 0 if len(b) > 20000 else deep_left
        out.append(b + b"\n")
    return b"".join(out)


def make_trace_jsonl(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    if rng.random() < 0.03:
        p, note = _special_path(rng, d)
        return FuzzInput(p, [], note)
    r = rng.random()
    if r < 0.35:  # bytes of a seed
        data = rng.choice(seeds.jsonl)
        data = mutate_bytes(data, rng, seeds.jsonl) if rng.random() < 0.6 else mutate_lines(data, rng, ODD_TRACE_LINES)
        note = "bytes/lines of a seed"
    else:  # structure, then maybe bytes or lines on top
        t = _pick_trace(rng, seeds)
        note = "structure:" + ",".join(_mutate_trace(t, rng))
        data = _jsonl_bytes(t, rng)
        if rng.random() < 0.25:
            data = mutate_lines(data, rng, ODD_TRACE_LINES)
            note += "+lines"
        elif rng.random() < 0.15:
            data = mutate_bytes(data, rng)
            note += "+bytes"
    name = rng.choice(("t.jsonl", "t.jsonl", "t.ndjson", "t.json", "trace"))
    p = _write(d, name, data)
    return FuzzInput(p, [p], note, has_snapshot=b'"snapshot"' in data[:200000])


def trace_commands(rng: random.Random, inp: FuzzInput, seeds: Seeds, d: str) -> list[list[str]]:
    """analyze (every report format, -o or stdout), check (every --fail-on), replay --speed 0."""
    def src() -> list[str]:
        if inp.has_snapshot and rng.random() < 0.75:
            return ["--driver", "0d:00.0=cxl_pci"] if rng.random() < 0.1 else []
        return _source(rng, seeds)

    def opts() -> list[str]:
        o = src() + _kernel(rng)
        if rng.random() < 0.3:
            o.append("--skip-bad")
        if rng.random() < 0.2:
            o.append("--reads")
        if rng.random() < 0.1:
            o += ["--claims", seeds.side["claims"]] if "claims" in seeds.side else []
        if rng.random() < 0.1:
            o.append(rng.choice(("--iomem-relaxed", "--strict-iomem")))
        return o

    fmt = rng.choice(REPORT_FORMATS)
    out = ["-o", os.path.join(d, f"report.{fmt}")] if rng.random() < 0.3 else []
    return [
        ["analyze", inp.path, *opts(), "--format", fmt, *out],
        ["check", inp.path, *opts(), "--fail-on", rng.choice(("exclusive", "managed", "never")),
         "--format", rng.choice(REPORT_FORMATS)],
        ["replay", inp.path, *opts(), "--speed", "0", *(["-v"] if rng.random() < 0.5 else [])],
    ]


# ---- Parquet ------------------------------------------------------------------------------------
_ARROW_TYPES = (pa.int64(), pa.int32(), pa.uint64(), pa.float64(), pa.string(), pa.large_string(), pa.binary(),
                pa.bool_(), pa.null(), pa.list_(pa.int64()), pa.dictionary(pa.int32(), pa.string()),
                pa.timestamp("ns"), pa.struct([("a", pa.int64())]))


def _valid(s: str) -> str:
    """``s`` with lone surrogates replaced (Arrow strings must be valid UTF-8)."""
    return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _column(rng: random.Random, typ: pa.DataType, n: int, good: list[Any]) -> pa.Array:
    """``n`` values of ``typ``: the good ones cast where possible, else odd values of that type."""
    try:
        if rng.random() < 0.6:
            return pa.array(good, type=typ) if typ != pa.dictionary(pa.int32(), pa.string()) else \
                pa.array([None if v is None else _valid(str(v)) for v in good]).dictionary_encode()
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    if pa.types.is_integer(typ):
        info = (0, 2**64 - 1) if typ == pa.uint64() else (-(2**31), 2**31 - 1) if typ == pa.int32() else \
            (-(2**63), 2**63 - 1)
        vals = [rng.choice([v for v in INTERESTING_INTS if info[0] <= v <= info[1]] + [None]) for _ in range(n)]
    elif pa.types.is_floating(typ):
        vals = [rng.choice((0.5, -1.0, 1e300, float("nan"), float("inf"), None, 4096.0)) for _ in range(n)]
    elif pa.types.is_boolean(typ):
        vals = [rng.choice((True, False, None)) for _ in range(n)]
    elif pa.types.is_null(typ):
        return pa.nulls(n)
    elif pa.types.is_list(typ):
        vals = [rng.choice(([1], [], None, [2**62, -5])) for _ in range(n)]
    elif pa.types.is_struct(typ):
        vals = [rng.choice(({"a": 1}, None)) for _ in range(n)]
    elif pa.types.is_timestamp(typ):
        vals = [rng.choice((0, 2**62, None)) for _ in range(n)]
    elif pa.types.is_binary(typ):
        vals = [rng.choice((b"\xff\xfe", b"", None, b"0000:0d:00.0")) for _ in range(n)]
    else:
        vals = [rng.choice(INTERESTING_STRS + (None,)) for _ in range(n)]
        vals = [_valid(v) if isinstance(v, str) else v for v in vals]
        if pa.types.is_dictionary(typ):
            return pa.array(vals, type=pa.string()).dictionary_encode()
    return pa.array(vals, type=typ)


def _parquet_bytes(table: pa.Table, rng: random.Random, header: bytes | None, footer: bytes | None) -> bytes:
    meta = dict(table.schema.metadata or {})
    if header is not None:
        meta[b"cfgaudit.header"] = header
    if footer is not None:
        meta[b"cfgaudit.footer"] = footer
    table = table.replace_schema_metadata(meta)
    opts = dict(row_group_size=rng.choice((1, 3, 1000)), compression=rng.choice(("none", "snappy", "zstd", "gzip")),
                use_dictionary=rng.random() < 0.5, data_page_version=rng.choice(("1.0", "2.0")),
                write_statistics=rng.random() < 0.5)
    buf = io.BytesIO()
    try:
        pq.write_table(table, buf, **opts)
    except pa.ArrowNotImplementedError:  # some dictionary arrays cannot be written: plain strings then
        table = pa.table({n: c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
                          for n, c in zip(table.column_names, table.columns)}).replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf, **opts)
    return buf.getvalue()


def _odd_meta(rng: random.Random, doc: dict[str, Any] | None, focus: tuple[str, ...]) -> bytes | None:
    """Metadata bytes for a header or footer: the document mutated, or odd JSON, or not JSON."""
    r = rng.random()
    if r < 0.5 and doc is not None:
        return dump_json(mutate_tree(copy.deepcopy(doc), rng, focus), rng)
    if r < 0.8:
        return rng.choice((b"null", b"[]", b"[1]", b"1", b'"x"', b"{}", b"", b"\xff\xfe", b"{", b"NaN",
                           deep(5000).encode(), deep(100000).encode(), b'{"snapshot":null}',
                           b'{"snapshot":[1]}', b'{"kernel_release":6.2}', b'{"version":99}', b'{"lost":-5}'))
    return None if doc is None else dump_json(doc, rng)


def make_trace_parquet(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    if rng.random() < 0.02:
        p, note = _special_path(rng, d)
        return FuzzInput(p, [], note)
    r = rng.random()
    name = rng.choice(("t.parquet", "t.parquet", "t.pq"))
    if r < 0.35:  # corrupt a valid Parquet trace written by TraceWriter: pages, footer, truncation
        data = rng.choice(seeds.parquet)
        where = rng.random()
        data = mutate_bytes(data, rng, tail=rng.choice((64, 512, 2048)) if where < 0.4 else None)
        note = "bytes of a TraceWriter file" + (" (footer)" if where < 0.4 else "")
        p = _write(d, name, data)
        return FuzzInput(p, [p], note, has_snapshot=True)
    t = _pick_trace(rng, seeds)
    if r < 0.55:  # well-formed random events (findings, reads before writes, offsets near 4096)
        t.records = [_random_event(rng) for _ in range(rng.choice((1, 5, 30, 200)))]
        note = "random events"
        if rng.random() < 0.3:
            note += ":" + ",".join(_mutate_trace(t, rng))
    else:
        note = "rows:" + ",".join(_mutate_trace(t, rng))
    if r < 0.7:  # rows through cfgaudit's own writer (falls back to pyarrow's inference)
        p = os.path.join(d, name)
        rows = [x for x in t.records if isinstance(x, dict) and "record" not in x]
        try:
            w = TraceWriter(p, t.header if isinstance(t.header, dict) and t.header else make_header())
            for x in rows:
                w.write(x)
            w.close()
            return FuzzInput(p, [p], note + " (TraceWriter)", has_snapshot="snapshot" in (t.header or {}))
        except Exception:  # noqa: BLE001 - the writer refuses odd rows: write them with pyarrow instead
            if os.path.exists(p):
                os.unlink(p)
        try:
            table = pa.Table.from_pylist([{k: v for k, v in x.items() if not isinstance(v, (list, dict))}
                                          for x in rows] or [{"ts_ns": 1}])
        except (pa.ArrowException, TypeError, ValueError, OverflowError):  # UnicodeError is a ValueError
            table = pa.table({k: pa.array([_valid(str(x.get(k))) for x in rows] or ["1"]) for k in EVENT_KEYS[:9]})
        hdr = dump_json(t.header, rng) if isinstance(t.header, dict) and t.header else None
        data = _parquet_bytes(table, rng, hdr, None)
        note += " (pyarrow)"
    else:  # a table of typed columns: wrong types, nulls, missing and extra columns, odd metadata
        rows = [x for x in t.records if isinstance(x, dict) and "record" not in x] or [_random_event(rng)]
        rows = rows[: rng.choice((1, 5, 40))]
        cols: dict[str, pa.Array] = {}
        for k in EVENT_KEYS[:-1] + ("extra",):
            if rng.random() < 0.07 and k != "extra":
                continue  # a missing column
            good = [x.get(k) for x in rows]
            typ = rng.choice(_ARROW_TYPES) if rng.random() < 0.35 else None
            if typ is None:
                try:
                    cols[k] = pa.array(good)
                    continue
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    typ = pa.string()
            cols[k] = _column(rng, typ, len(rows), good)
        table = pa.table(cols)
        hdr = _odd_meta(rng, t.header or None, HEADER_KEYS + SNAPSHOT_KEYS) if rng.random() < 0.5 else \
            (dump_json(t.header, rng) if t.header else None)
        ftr = _odd_meta(rng, t.footer or None, FOOTER_KEYS) if rng.random() < 0.3 else None
        data = _parquet_bytes(table, rng, hdr, ftr)
        note = "typed columns"
    if rng.random() < 0.1:
        data = mutate_bytes(data, rng)
        note += "+bytes"
    p = _write(d, name, data)
    return FuzzInput(p, [p], note, has_snapshot=b"snapshot" in data)


# ----------------------------------------------------------------------------------------------
# trace headers (and footers): JSONL header lines and Parquet key/value metadata
# ----------------------------------------------------------------------------------------------
def make_trace_header(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    t = copy.deepcopy(rng.choice([x for x in seeds.traces if x.header and not x.big]))
    r = rng.random()
    if r < 0.15 and seeds.snapshots:  # another (mutated) snapshot in the header
        t.header["snapshot"] = mutate_tree(copy.deepcopy(rng.choice(seeds.snapshots)), rng, SNAPSHOT_KEYS)
        note = "snapshot swapped"
    elif r < 0.25:
        t.footer = mutate_tree(t.footer or {"record": "footer", "events": 1, "lost": 0}, rng, FOOTER_KEYS)
        note = "footer"
    else:
        snap = t.header.get("snapshot")
        if isinstance(snap, dict) and rng.random() < 0.5:
            t.header["snapshot"] = mutate_tree(snap, rng, SNAPSHOT_KEYS)
            note = "header.snapshot"
        else:
            t.header = mutate_tree(t.header, rng, HEADER_KEYS)
            note = "header"
    if rng.random() < 0.3:  # Parquet: the same documents as key/value metadata
        table = pa.Table.from_pylist([x for x in t.records if "record" not in x])
        hdr = _odd_meta(rng, None, ()) if rng.random() < 0.15 else dump_json(t.header, rng)
        ftr = dump_json(t.footer, rng) if t.footer and rng.random() < 0.7 else None
        data = _parquet_bytes(table, rng, hdr, ftr)
        p = _write(d, "h.parquet", data)
        return FuzzInput(p, [p], "parquet " + note, has_snapshot=True)
    data = _jsonl_bytes(t, rng)
    if rng.random() < 0.1:
        first, _, rest = data.partition(b"\n")
        data = mutate_bytes(first, rng) + b"\n" + rest
        note += "+bytes"
    p = _write(d, "h.jsonl", data)
    return FuzzInput(p, [p], "jsonl " + note, has_snapshot=True)


def header_commands(rng: random.Random, inp: FuzzInput, seeds: Seeds, d: str) -> list[list[str]]:
    """The trace commands with no source option (the header's snapshot is the source), mostly."""
    def opts() -> list[str]:
        o: list[str] = []
        if rng.random() < 0.5:
            o += _kernel(rng)
        if rng.random() < 0.15:
            o += ["--driver", rng.choice(("0d:00.0=cxl_pci", "0000:0c:00.0=vfio-pci", "ff:1f.7=x"))]
        if rng.random() < 0.1:
            o += _source(rng, seeds)
        return o
    return [
        ["analyze", inp.path, *opts(), "--format", rng.choice(REPORT_FORMATS)],
        ["check", inp.path, *opts(), "--fail-on", rng.choice(("exclusive", "managed"))],
        ["replay", inp.path, *opts(), "--speed", "0"],
    ]


# ----------------------------------------------------------------------------------------------
# lspci dumps
# ----------------------------------------------------------------------------------------------
def _hex_row(rng: random.Random, off: int, n: int = 16) -> bytes:
    return (f"{off:02x}: " + " ".join(f"{rng.randrange(256):02x}" for _ in range(n))).encode()


def _odd_dump_lines(rng: random.Random) -> list[bytes]:
    return [
        _hex_row(rng, 0), _hex_row(rng, 0x40), _hex_row(rng, 0x100), _hex_row(rng, 0xFF0), _hex_row(rng, 0x1000, 1),
        _hex_row(rng, 0xFF8), _hex_row(rng, 0x10, 17), _hex_row(rng, 0x10, 4), _hex_row(rng, 0x34, 1),
        _hex_row(rng, rng.randrange(0, 0x10000), rng.randrange(0, 18)), b"fff: 00 00", b"0: 00", b"00:", b"00: 0",
        b"00: 000", b"00: zz", b"00:\t11 22", b"  00: 00", b"\t00: 00", b"> 00: 11 22", b">> 10: 22", b">",
        b"0d:00.0 CXL: thing", b"0000:0d:00.0 Y", b"ffffff:ff:1f.7 Z", b"0d:00.8 bad function", b"00:00.0",
        b"0d:00.0", b"\tKernel driver in use: cxl_pci", b"\tKernel driver in use: ", b"\tKernel driver in use: \xff",
        b"Kernel driver in use: vfio-pci", b"\tKernel modules: cxl_pci", b"00 11 22 33", b"44 55 66 77 88",
        b"\tCapabilities: [40] Power Management", b"\r", b"\x00", b"\xed\xa0\x80", b"\xff" * 10, b"", b"",
        b"x" * 5000, b"00: " + b"00 " * 5000, b"12345678: 00", b"ffffffff: 00", b"00 :00",
    ]


def make_dump(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    r = rng.random()
    if r < 0.15:  # synthetic: device lines with odd-sized dumps
        out = []
        for k in range(rng.choice((1, 1, 2, 3))):
            out.append(f"{rng.choice(('', '0000:', 'abcd:'))}{rng.randrange(256):02x}:{rng.randrange(32):02x}."
                       f"{rng.randrange(8)} Dev {k}".encode())
            rows = rng.choice((1, 4, 16, 256))
            start = rng.choice((0, 0, 0x10, 0x100))
            for i in range(rows):
                if start + 16 * i + 16 <= 4096 or rng.random() < 0.02:
                    out.append(_hex_row(rng, start + 16 * i))
            if rng.random() < 0.3:
                out.append(b"\tKernel driver in use: " + rng.choice((b"cxl_pci", b"vfio-pci", b"pcieport", b"x")))
            out.append(b"")
        data = b"\n".join(out)
        note = "synthetic"
    else:
        data = rng.choice(seeds.dumps)
        if r < 0.7:
            data = mutate_lines(data, rng, _odd_dump_lines(rng))
            note = "lines"
        else:
            data = mutate_bytes(data, rng, seeds.dumps)
            note = "bytes"
        if rng.random() < 0.2:
            data = mutate_lines(data, rng, _odd_dump_lines(rng))
            note += "+lines"
    p = _write(d, rng.choice(("dump.txt", "dump", "d.lspci")), data)
    return FuzzInput(p, [p], note)


def dump_commands(rng: random.Random, inp: FuzzInput, seeds: Seeds, d: str) -> list[list[str]]:
    """devices, regions, snapshot -o, and analyze/check/replay of a well-formed bare trace."""
    def srcs() -> list[str]:
        s = ["--lspci-dump", inp.path]
        if rng.random() < 0.2:
            s += ["--lspci-dump", seeds.side["cxl"]] if rng.random() < 0.5 else ["--lspci-dump", inp.path]
        if rng.random() < 0.3:
            s += ["--driver", rng.choice(("0d:00.0=cxl_pci", "0c:00.0=pcieport", "00:00.0=vfio-pci"))]
        return s
    return [
        ["devices", *srcs(), "--format", rng.choice(LIST_FORMATS)],
        ["regions", *srcs(), *_kernel(rng), "--format", rng.choice(LIST_FORMATS)],
        ["snapshot", *srcs(), "-o", os.path.join(d, "snap-out.json"), *_kernel(rng)],
        ["analyze", seeds.side["bare"], *srcs(), *_kernel(rng), "--format", rng.choice(REPORT_FORMATS)],
        ["check", seeds.side["bare"], *srcs(), *_kernel(rng), "--fail-on", "managed"],
        ["replay", seeds.side["bare"], *srcs(), *_kernel(rng), "--speed", "0"],
    ]


# ----------------------------------------------------------------------------------------------
# claims (TOML)
# ----------------------------------------------------------------------------------------------
def _toml_str(s: str, rng: random.Random) -> str:
    if rng.random() < 0.2 and "'" not in s and "\n" not in s:
        return f"'{s}'"
    out = json.dumps(s, ensure_ascii=rng.random() < 0.5)
    return out


def _toml_value(v: Any, rng: random.Random, depth: int = 0) -> str:
    """``v`` as a TOML value (TOML has no null: a null becomes something odd)."""
    if v is None:
        return rng.choice(("''", "[]", "{}", "nan", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27"))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return rng.choice((str(v), hex(v) if v >= 0 else str(v), f"{v:_}" if abs(v) > 999 else str(v),
                           oct(v).replace("0o", "0o") if v >= 0 else str(v)))
    if isinstance(v, float):
        return "nan" if v != v else "inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v)
    if isinstance(v, str):
        if v == "\x00__fuzz_deep__\x00":
            return deep(rng.choice((100, 1000, 20000)))
        return _toml_str(v.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), rng)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x, rng, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x, rng, depth + 1)}" for k, x in v.items()) + "}"
    return "0"


_CLAIM_GOOD: dict[str, Callable[[random.Random], Any]] = {
    "kind": lambda r: r.choice(("exclusive", "managed", "user")),
    "owner": lambda r: r.choice(("acme", "spdm", "x" * 40)),
    "bdf": lambda r: r.choice(("0000:0d:00.0", "0d:00.0", "0000:0c:00.0", "ff:1f.7")),
    "vendor": lambda r: r.choice((0x8086, 0x1022, 0x1E98)),
    "device": lambda r: r.choice((0x0D93, 0x7075)),
    "class": lambda r: r.choice((0x0502, 0x050210, 0x0604)),
    "driver": lambda r: r.choice(("cxl_pci", "pcieport", "vfio-pci")),
    "capability": lambda r: r.choice(("doe", "msi", "msix", "pcie", "aer", "std:0x10", "ext:0x2e", "dvsec:1e98:0",
                                      "dvsec:1e98:3", "ext:0x23", "std:0x09")),
    "offset": lambda r: r.choice((0, 4, 8, 0x10, 0x198, 0xFFC, 4000)),
    "length": lambda r: r.choice((1, 2, 4, 8, 64)),
    "kernels": lambda r: r.choice((">=6.2", "<6.4", ">=6.1, <6.19", ">=7.3")),
    "name": lambda r: "label",
    "note": lambda r: "note",
}


def _claims_text(rng: random.Random) -> str:
    """A generated claims file: [[claim]] tables with good and odd values, odd keys, odd layout."""
    parts = []
    n = rng.choice((1, 1, 2, 3, 8))
    odd = [0] * n
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        odd[rng.randrange(n)] += 1
    for i in range(n):
        c: dict[str, Any] = {k: g(rng) for k, g in _CLAIM_GOOD.items() if rng.random() < 0.5}
        c.setdefault("kind", _CLAIM_GOOD["kind"](rng))
        c.setdefault("owner", "o")
        for _ in range(odd[i]):
            k = rng.choice(tuple(_CLAIM_GOOD) + ("x", "Kind", ""))
            c[k] = rng.choice((odd_value(rng), _tweak_claim(c.get(k), rng)))
        body = "".join(f"{json.dumps(k) if not k.isidentifier() else k} = {_toml_value(v, rng)}\n"
                       for k, v in c.items())
        parts.append(rng.choice(("[[claim]]\n", "[[ claim ]]\n", "[[claim]] # c\n")) + body)
    text = "\n".join(parts)
    r = rng.random()
    if r < 0.05:
        text = rng.choice(("claim = [1]\n", "claim = 'x'\n", "[claim]\nkind='user'\n", "claim = []\n",
                           "claim = [{}]\n", "[[claim.x]]\na=1\n", "[other]\n", "x = 1\n" + text,
                           "claim = [[1]]\n", "claim = [{kind='user', owner='o', bdf='0d:00.0', offset=1}]\n"))
    elif r < 0.08:
        text = "a = " + deep(rng.choice((100, 1000, 50000))) + "\n" + text
    elif r < 0.10:
        text = "claim = " + "[" * rng.choice((50, 5000)) + "{}" + "]" * 5 + "\n"
    return text


def _tweak_claim(v: Any, rng: random.Random) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return rng.choice((v + 4096, -v, v * 2**70, 2**63, str(v)))
    if isinstance(v, str):
        return rng.choice((v.upper(), v + "\x00", "", v * 1000, ">=" * 5, ":".join([v] * 3)))
    return odd_value(rng)


_ODD_TOML_LINES: list[bytes] = [
    b"[[claim]]", b"[claim]", b"[[claim]", b"kind = ", b'kind = "user"', b"owner = 'o'",
    b"offset = 0xFFFFFFFFFFFFFFFFFF",
    b"length = -1", b"length = 0", b"offset = 1e400", b"offset = inf", b"offset = nan", b"bdf = 1",
    b"capability = 'std:0x'", b"capability = 'dvsec:zz:1'", b"capability = 'ext:99999999999999999999'",
    b"kernels = '>=6.2,<'", b"kernels = '>= 99999999999999999999.1'", b'"kind" = "exclusive"', b"a.b.c = 1",
    b"x = 1979-05-27T07:32:00Z", b'vendor = """', b"\xef\xbb\xbf", b"\xff", b"# \xed\xa0\x80", b"\x00",
    b'owner = "\\u0000"', b"offset = [1]", b"offset = {a = 1}", b"class = 0x1000000", b"device = 0x10000",
    b"a = " + deep(3000).encode(), b"kind = 'exclusive'\nkind = 'user'", b"\r", b"[[claim]]\r",
]


def make_claims(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    r = rng.random()
    if r < 0.45:
        data = _claims_text(rng).encode("utf-8", "surrogatepass")
        note = "generated"
    elif r < 0.8:
        data = mutate_lines(rng.choice(seeds.claims), rng, _ODD_TOML_LINES)
        note = "lines"
    else:
        data = mutate_bytes(rng.choice(seeds.claims), rng, seeds.claims)
        note = "bytes"
    p = _write(d, rng.choice(("claims.toml", "c.toml", "claims")), data)
    return FuzzInput(p, [p], note)


def claims_commands(rng: random.Random, inp: FuzzInput, seeds: Seeds, d: str) -> list[list[str]]:
    """regions, analyze, check and replay with --claims FILE."""
    def cl() -> list[str]:
        c = ["--claims", inp.path]
        return c + (["--claims", inp.path] if rng.random() < 0.05 else [])
    return [
        ["regions", *_source(rng, seeds), *_kernel(rng), *cl(), "--format", rng.choice(LIST_FORMATS)],
        ["analyze", seeds.side["bare"], *_source(rng, seeds), *_kernel(rng), *cl(), "--format",
         rng.choice(REPORT_FORMATS)],
        ["check", seeds.side["trace"], *_kernel(rng), *cl(), "--fail-on", rng.choice(("exclusive", "managed"))],
        ["replay", seeds.side["trace"], *cl(), "--speed", "0"],
    ]


# ----------------------------------------------------------------------------------------------
# snapshots
# ----------------------------------------------------------------------------------------------
def make_snapshot(rng: random.Random, seeds: Seeds, d: str) -> FuzzInput:
    small = [s for s in seeds.snapshots if len(s.get("devices", [])) <= 3]
    doc = copy.deepcopy(rng.choice(seeds.snapshots if rng.random() < 0.05 else small))
    r = rng.random()
    if r < 0.15 and doc.get("devices"):  # config bytes and known ranges
        dev = rng.choice(doc["devices"])
        k = rng.random()
        cfg = dev.get("config", "")
        if k < 0.3:
            dev["config"] = cfg + rng.choice(("0", "zz", "00" * rng.choice((1, 3840, 4096, 100000)), " ", "\u00e9"))
        elif k < 0.6:
            dev["known"] = rng.choice(([[0, 4097]], [[-1, 4]], [[0, 2**63]], [[0]], [[0, 1, 2]], [["0", "4"]],
                                       [[0, 1.5]], [[4096, 0]], [[0, 256]] * 500, [None], 5, "x", [[0, 0]]))
        else:
            dev["config_size"] = rng.choice((-1, 0, 255, 256, 4096, 4097, "256", 2**64, 1.5, None, [256]))
        note = "config/known/size"
        data = dump_json(doc, rng)
    elif r < 0.85:
        doc = mutate_tree(doc, rng, SNAPSHOT_KEYS)
        note = "structure"
        data = dump_json(doc, rng)
    else:
        data = mutate_bytes(json.dumps(doc, indent=rng.choice((None, 1))).encode(), rng)
        note = "bytes"
    p = _write(d, rng.choice(("snap.json", "snapshot", "s.json")), data)
    return FuzzInput(p, [p], note)


def snapshot_commands(rng: random.Random, inp: FuzzInput, seeds: Seeds, d: str) -> list[list[str]]:
    """devices, regions, snapshot -o, and analyze/check/replay of a bare trace with --snapshot."""
    def drv() -> list[str]:
        return ["--driver", rng.choice(("0d:00.0=cxl_pci", "0c:00.0=vfio-pci"))] if rng.random() < 0.2 else []
    return [
        ["devices", "--snapshot", inp.path, *drv(), "--format", rng.choice(LIST_FORMATS)],
        ["regions", "--snapshot", inp.path, *drv(), *(_kernel(rng) if rng.random() < 0.5 else []),
         "--format", rng.choice(LIST_FORMATS)],
        ["snapshot", "--snapshot", inp.path, "-o", os.path.join(d, "snap-out.json")],
        ["analyze", seeds.side["bare"], "--snapshot", inp.path, *drv(), "--format", rng.choice(REPORT_FORMATS)],
        ["check", seeds.side["bare"], "--snapshot", inp.path, "--fail-on", "managed"],
        ["replay", seeds.side["bare"], "--snapshot", inp.path, "--speed", "0"],
    ]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("trace-jsonl", make_trace_jsonl, trace_commands, "JSON Lines traces: events, notices, odd lines, bytes"),
    Format("trace-parquet", make_trace_parquet, trace_commands,
           "Parquet traces: corrupt pages/footers of TraceWriter files, wrong column types, odd metadata"),
    Format("lspci-dump", make_dump, dump_commands, "lspci -x/-xxx/-xxxx dumps with odd lines and bytes"),
    Format("claims", make_claims, claims_commands, "claims files: generated and mutated TOML"),
    Format("snapshot", make_snapshot, snapshot_commands, "snapshot files: wrong field types, config bytes, JSON"),
    Format("trace-header", make_trace_header, header_commands,
           "trace headers and footers (embedded snapshot) as a JSONL line or Parquet metadata"),
)}
