"""THE event schema: one field table from which everything else is derived.

From :data:`FIELDS` come the :class:`ConfigAccess` dataclass, the JSON keys of trace files,
the Arrow schema of Parquet traces and pyarrow's JSON reader, and (for the live backends) the
C record header. Offsets and sizes are bytes; ``ts_ns`` is nanoseconds (CLOCK_MONOTONIC for live
traces, since boot); ``ret`` is bytes done or ``-errno``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

__all__ = ["Field", "FIELDS", "REQUIRED", "OPS", "VIAS", "ConfigAccess", "arrow_schema", "json_schema",
           "validate_row", "BDF_RE"]

OPS = ("write", "read")
VIAS = ("sysfs", "procfs", "vfio", "ioport", "devmem", "unknown")
BDF_RE = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")


@dataclass(frozen=True)
class Field:
    name: str
    arrow: pa.DataType
    required: bool
    doc: str


FIELDS: tuple[Field, ...] = (
    Field("ts_ns", pa.int64(), True, "time of the access, ns"),
    Field("pid", pa.int64(), True, "process (thread group) ID"),
    Field("comm", pa.string(), True, "process name (up to 15 characters)"),
    Field("op", pa.string(), True, "'write' or 'read'"),
    Field("bdf", pa.string(), True, "device, DDDD:BB:DD.F"),
    Field("offset", pa.int64(), True, "config-space offset of the first byte, bytes"),
    Field("size", pa.int64(), True, "bytes the process asked to write or read"),
    Field("tid", pa.int64(), False, "thread ID"),
    Field("uid", pa.int64(), False, "user ID"),
    Field("data", pa.string(), False, "hex of the bytes written (or read), in file order, lower case"),
    Field("via", pa.string(), False, "path: sysfs, procfs, vfio, ioport, devmem, unknown"),
    Field("ret", pa.int64(), False, "bytes done, or -errno"),
    Field("kernel_verdict", pa.bool_(), False, "resource_is_exclusive()'s own answer, where a probe saw it"),
)
REQUIRED = tuple(f.name for f in FIELDS if f.required)
_BY_NAME = {f.name: f for f in FIELDS}


def arrow_schema() -> pa.Schema:
    """The Arrow schema of the known event columns (Parquet column types)."""
    return pa.schema([pa.field(f.name, f.arrow, nullable=not f.required) for f in FIELDS])


def json_schema() -> pa.Schema:
    """Schema handed to pyarrow's JSON reader: every field nullable (checked afterwards)."""
    return pa.schema([pa.field(f.name, f.arrow) for f in FIELDS])


@dataclass
class ConfigAccess:
    """One user-space config-space access (a row of a trace). Unknown keys go to ``extra``."""

    ts_ns: int
    pid: int
    comm: str
    op: str
    bdf: str
    offset: int
    size: int
    tid: int | None = None
    uid: int | None = None
    data: str | None = None
    via: str | None = None
    ret: int | None = None
    kernel_verdict: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in FIELDS if getattr(self, f.name) is not None or f.required}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConfigAccess":
        problem = validate_row(d)
        if problem:
            raise ValueError(problem)
        known = {k: d[k] for k in _BY_NAME if k in d}
        extra = {k: v for k, v in d.items() if k not in _BY_NAME}
        return cls(**known, extra=extra)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_row(d: Any) -> str | None:
    """Why ``d`` is not a valid event, or ``None``."""
    if not isinstance(d, dict):
        return "an event must be a JSON object"
    for name in REQUIRED:
        if name not in d or d[name] is None:
            return f"missing required key {name!r}"
    for name in ("ts_ns", "pid", "offset", "size"):
        if not _is_int(d[name]) or d[name] < 0:
            return f"{name!r} must be a non-negative integer, not {d[name]!r}"
    for name in ("tid", "uid", "ret"):
        if d.get(name) is not None and not _is_int(d[name]):
            return f"{name!r} must be an integer, not {d[name]!r}"
    if d["op"] not in OPS:
        return f"'op' must be 'write' or 'read', not {d['op']!r}"
    if not isinstance(d["bdf"], str) or not BDF_RE.match(d["bdf"]):
        return f"'bdf' must look like 0000:0d:00.0, not {d['bdf']!r}"
    if not isinstance(d["comm"], str):
        return "'comm' must be a string"
    if d.get("via") is not None and d["via"] not in VIAS:
        return f"'via' must be one of {', '.join(VIAS)}, not {d['via']!r}"
    data = d.get("data")
    if data is not None and (not isinstance(data, str) or len(data) % 2 or not re.fullmatch(r"[0-9a-f]*", data)):
        return "'data' must be lower-case hex, two digits a byte"
    if d.get("kernel_verdict") is not None and not isinstance(d["kernel_verdict"], bool):
        return "'kernel_verdict' must be true or false"
    return None


def field_names() -> list[str]:
    return [f.name for f in FIELDS]


__all__.append("field_names")
