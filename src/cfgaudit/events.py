"""THE event schema: one field table from which everything else is derived.

From :data:`FIELDS` come the :class:`ConfigAccess` dataclass, the JSON keys of trace files,
the Arrow schema of Parquet traces and pyarrow's JSON reader, and (for the live backends) the
C record header.

Most events are user-space accesses (``op`` write or read). The kernel's own DOE exchanges are
events too (:data:`DOE_OPS`, issue 11): ``doe_start`` when the kernel begins an exchange on a
mailbox (``offset``: the DOE capability's offset; ``size``: request bytes; ``doe_vendor`` and
``doe_type``: the data object protocol) and ``doe_end`` when it is over (``size``: response bytes
asked for; ``ret``: bytes received or -errno), both ``via`` ``kernel`` with the kernel context's
pid and comm (a kworker). One mailbox runs one exchange at a time (drivers/pci/doe.c: an ordered
workqueue per mailbox), so a start pairs with the next end on the same (bdf, offset).

Offsets and sizes are bytes; ``ts_ns`` is nanoseconds (CLOCK_MONOTONIC for live traces, since
boot); ``ret`` is bytes done or ``-errno``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .errors import is_utf8_text  # here for the trace reader; in errors.py so regions/ need no pyarrow

__all__ = ["Field", "FIELDS", "REQUIRED", "OPS", "USER_OPS", "DOE_OPS", "VIAS", "GUARD_VERDICTS", "ConfigAccess",
           "arrow_schema", "event_table", "json_schema",
           "validate_row", "BDF_RE", "INT64_MAX", "is_utf8_text"]

USER_OPS = ("write", "read")  # a user-space access
DOE_OPS = ("doe_start", "doe_end")  # the kernel's own DOE exchange on a mailbox (issue 11)
OPS = USER_OPS + DOE_OPS
VIAS = ("sysfs", "procfs", "vfio", "ioport", "devmem", "unknown", "kernel")
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
    Field("op", pa.string(), True, "'write' or 'read'; the kernel's DOE exchanges: 'doe_start', 'doe_end'"),
    Field("bdf", pa.string(), True, "device, DDDD:BB:DD.F"),
    Field("offset", pa.int64(), True, "config-space offset of the first byte, bytes"),
    Field("size", pa.int64(), True, "bytes the process asked to write or read"),
    Field("tid", pa.int64(), False, "thread ID"),
    Field("uid", pa.int64(), False, "user ID"),
    Field("data", pa.string(), False, "hex of the bytes written (or read), in file order, lower case"),
    Field("via", pa.string(), False,
          "path: sysfs, procfs, vfio, ioport, devmem, unknown; kernel (its own DOE exchanges)"),
    Field("ret", pa.int64(), False, "bytes done, or -errno"),
    Field("kernel_verdict", pa.bool_(), False, "resource_is_exclusive()'s own answer, where a probe saw it"),
    Field("doe_vendor", pa.int64(), False, "doe_start: the data object's vendor ID (PCI-SIG 0x0001, CXL 0x1e98)"),
    Field("doe_type", pa.int64(), False, "doe_start: the data object type (e.g. 0 discovery, 2 CXL table access)"),
    Field("guard", pa.string(), False,
          "the guard's verdict on a write (issue 12): 'refused' (it returned -EPERM; the write never reached the "
          "device) or 'dry-run' (it would have been refused; it went on)"),
)
GUARD_VERDICTS = ("refused", "dry-run")
REQUIRED = tuple(f.name for f in FIELDS if f.required)
_BY_NAME = {f.name: f for f in FIELDS}


def arrow_schema() -> pa.Schema:
    """The Arrow schema of the known event columns (Parquet column types)."""
    return pa.schema([pa.field(f.name, f.arrow, nullable=not f.required) for f in FIELDS])


def event_table(cols: dict[str, pa.Array], n: int) -> pa.Table:
    """Event columns (``n`` rows) as a table of :func:`arrow_schema`: the fields not in ``cols``
    (optional ones: a live backend records no DOE protocol, say) are null."""
    return pa.table({f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.arrow) for f in FIELDS},
                    schema=arrow_schema())


def json_schema() -> pa.Schema:
    """Schema handed to pyarrow's JSON reader: every field nullable (checked afterwards)."""
    return pa.schema([pa.field(f.name, f.arrow) for f in FIELDS])


@dataclass
class ConfigAccess:
    """One config-space access by user space, or a kernel DOE exchange's start or end (a row of
    a trace). Unknown keys go to ``extra``."""

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
    doe_vendor: int | None = None
    doe_type: int | None = None
    guard: str | None = None
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


INT64_MAX = (1 << 63) - 1  # every integer field is an Arrow int64


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
        if not _is_int(d[name]) or not 0 <= d[name] <= INT64_MAX:
            return f"{name!r} must be a non-negative integer below 2**63, not {d[name]!r}"
    for name in ("tid", "uid", "ret", "doe_vendor", "doe_type"):
        if d.get(name) is not None and (not _is_int(d[name]) or not -INT64_MAX - 1 <= d[name] <= INT64_MAX):
            return f"{name!r} must be a 64-bit integer, not {d[name]!r}"
    for k, v in d.items():
        if not is_utf8_text(k) or (isinstance(v, str) and not is_utf8_text(v)):
            return f"{k!r} is not valid UTF-8 text (a surrogate code point)"
    if d["op"] not in OPS:
        return f"'op' must be one of {', '.join(OPS)}, not {d['op']!r}"
    if not isinstance(d["bdf"], str) or not BDF_RE.match(d["bdf"]):
        return f"'bdf' must look like 0000:0d:00.0, not {d['bdf']!r}"
    if not isinstance(d["comm"], str):
        return "'comm' must be a string"
    if d.get("via") is not None and d["via"] not in VIAS:
        return f"'via' must be one of {', '.join(VIAS)}, not {d['via']!r}"
    data = d.get("data")
    if data is not None and (not isinstance(data, str) or len(data) % 2 or not re.fullmatch(r"[0-9a-f]*", data)):
        return "'data' must be lower-case hex, two digits a byte"
    if data is not None and len(data) // 2 > d["size"]:
        return f"'data' holds {len(data) // 2} bytes, more than 'size' ({d['size']})"
    if d.get("kernel_verdict") is not None and not isinstance(d["kernel_verdict"], bool):
        return "'kernel_verdict' must be true or false"
    if d.get("guard") is not None and d["guard"] not in GUARD_VERDICTS:
        return f"'guard' must be one of {', '.join(GUARD_VERDICTS)}, not {d['guard']!r}"
    return None


def field_names() -> list[str]:
    return [f.name for f in FIELDS]


__all__.append("field_names")


# ------------------------------------------------------------------------------------------
# The kernel-to-user records of the live backends (bpf/cfgaudit_event.h is generated from these
# tables; probes/bccutil.record_dtype() builds the numpy dtypes from the same tables)
# ------------------------------------------------------------------------------------------
# (C name, C type, array length or 0, what it holds). Order = layout; sizes are natural so the
# C structs have no padding (checked by tests against numpy and by _Static_assert in the header).
RecordField = tuple[str, str, int, str]
RECORD_FIELDS: tuple[RecordField, ...] = (
    ("ts_ns", "__u64", 0, "bpf_ktime_get_ns() at the syscall's exit, ns since boot"),
    ("offset", "__s64", 0, "file position of the first byte (bytes); -1 when unknown"),
    ("ret", "__s64", 0, "syscall return value: bytes done or -errno"),
    ("size", "__u64", 0, "bytes the process asked for"),
    ("file_id", "__u64", 0, "the tracer's id of the open file description (dup'ed fds share it)"),
    ("pid", "__u32", 0, "thread group ID"),
    ("tid", "__u32", 0, "thread ID"),
    ("uid", "__u32", 0, "real user ID"),
    ("fd", "__s32", 0, "file descriptor"),
    ("aux", "__u32", 0,
     "DUP: the new fd; OPEN: open flags; UNMEDIATED: what (UM_*); kernel: via | verdict << 8; DOE: vid | type << 16"),
    ("type", "__u16", 0, "EV_* record type"),
    ("data_len", "__u16", 0, "bytes of data captured"),
    ("comm", "char", 16, "task comm"),
    ("data", "__u8", 64, "the first bytes written or read"),
)
DATA_MAX = 64  # bytes of data in a record
RECORD_PATH_MAX = 256  # bytes of path after the record, in OPEN records
DEV_NAME_MAX = 32  # bytes of device name after the record, in kernel-program records
RECORD_TYPES = {"EV_WRITE": 1, "EV_READ": 2, "EV_OPEN": 3, "EV_CLOSE": 4, "EV_DUP": 5, "EV_UNMEDIATED": 6,
                "EV_EXIT": 7,
                # kernel program, the kernel's own DOE exchanges (issue 11): offset = DOE capability,
                # aux = vendor | type << 16; START: size = request bytes; END: size = response bytes
                # asked for, ret = bytes received or -errno
                "EV_DOE_START": 8, "EV_DOE_END": 9,
                # guard program (issue 12): a write refused (or, with --dry-run, that would have
                # been): offset, size = the write's range (bytes), ret = -EPERM or 0, aux = device
                # code | GUARD_* flags << 16
                "EV_GUARD": 10}
# UNMEDIATED: what was granted or opened that the syscall backend cannot follow. VFIO: an open of
# /dev/vfio/* (config writes go through a VFIO device fd's region); IO_URING: io_uring_setup()
# (a write to a config file submitted through io_uring is not a write/pwrite syscall).
UNMEDIATED_KINDS = {"UM_IOPERM": 1, "UM_IOPL": 2, "UM_DEVMEM": 3, "UM_DEVPORT": 4, "UM_VFIO": 5, "UM_IO_URING": 6}
# kernel program: aux = via (KV_*) | verdict (KVERDICT_*) << 8
KERNEL_VIAS = {"KV_UNKNOWN": 0, "KV_SYSFS": 1, "KV_PROCFS": 2, "KV_VFIO": 3}
KERNEL_VERDICTS = {"KVERDICT_NONE": 0, "KVERDICT_FALSE": 1, "KVERDICT_TRUE": 2}  # resource_is_exclusive()
_C_SIZES = {"__u64": 8, "__s64": 8, "__u32": 4, "__s32": 4, "__u16": 2, "__u8": 1, "char": 1}


@dataclass(frozen=True)
class RecordLayout:
    """One record variant: ``struct <c_name>`` = the base record (``ev``), then ``tail``."""

    c_name: str
    tail: tuple[RecordField, ...]
    doc: str


RECORD_LAYOUTS: dict[str, RecordLayout] = {
    "event": RecordLayout("cfgaudit_event", (), "every record (the only one of most record types)"),
    "open": RecordLayout("cfgaudit_open_event", (
        ("path", "char", RECORD_PATH_MAX, "the path as the process passed it"),),
        "syscalls program: OPEN records and UNMEDIATED opens of /dev/mem, /dev/port"),
    "kernel": RecordLayout("cfgaudit_kernel_event", (
        ("dev", "char", DEV_NAME_MAX, "the device's name, DDDD:BB:DD.F (its kobject name); empty: unknown"),),
        "kernel program: every record"),
}


def record_fields(layout: str = "event") -> tuple[RecordField, ...]:
    """Every field of a record variant in layout order (the base record's, then its tail)."""
    return RECORD_FIELDS + RECORD_LAYOUTS[layout].tail


def record_size(layout: str = "event") -> int:
    """Bytes of one record of the variant ``layout`` (``event``: without any tail)."""
    return sum(_C_SIZES[t] * (n or 1) for _, t, n, _ in record_fields(layout))


def _c_field(f: RecordField) -> str:
    name, ctype, n, doc = f
    return f"\t{ctype} {name}{f'[{n}]' if n else ''};\t/* {doc} */"


def c_header() -> str:
    """The text of bpf/cfgaudit_event.h: constants, every record variant, size checks."""
    lines = ["/* Generated from src/cfgaudit/events.py (RECORD_FIELDS, RECORD_LAYOUTS); do not edit by hand.",
             " * tests/test_live_unit.py fails when this file and events.py drift apart. */",
             "#ifndef CFGAUDIT_EVENT_H", "#define CFGAUDIT_EVENT_H", ""]
    for table in (RECORD_TYPES, UNMEDIATED_KINDS, KERNEL_VIAS, KERNEL_VERDICTS):
        lines += [f"#define {k} {v}" for k, v in table.items()]
    lines += [f"#define CFGAUDIT_DATA_MAX {DATA_MAX}", f"#define CFGAUDIT_PATH_MAX {RECORD_PATH_MAX}",
              f"#define CFGAUDIT_DEV_NAME_MAX {DEV_NAME_MAX}"]
    for name in RECORD_LAYOUTS:
        lines.append(f"#define {_size_macro(name)} {record_size(name)}")
    for name, lay in RECORD_LAYOUTS.items():
        lines += ["", f"/* {lay.doc} */", f"struct {lay.c_name} {{"]
        if name == "event":
            lines += [_c_field(f) for f in RECORD_FIELDS]
        else:
            lines += ["\tstruct cfgaudit_event ev;"] + [_c_field(f) for f in lay.tail]
        lines.append("};")
    lines.append("")
    for name, lay in RECORD_LAYOUTS.items():
        lines.append(f'_Static_assert(sizeof(struct {lay.c_name}) == {_size_macro(name)}, "{lay.c_name} layout");')
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def _size_macro(layout: str) -> str:
    return "CFGAUDIT_RECORD_SIZE" if layout == "event" else f"CFGAUDIT_{layout.upper()}_RECORD_SIZE"


__all__ += ["RECORD_FIELDS", "RECORD_TYPES", "UNMEDIATED_KINDS", "KERNEL_VIAS", "KERNEL_VERDICTS", "RecordLayout",
            "RECORD_LAYOUTS", "record_fields", "record_size", "c_header", "DATA_MAX", "RECORD_PATH_MAX",
            "DEV_NAME_MAX"]
