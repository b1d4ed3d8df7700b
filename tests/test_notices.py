"""Notices of the syscall backend: grants of unmediated access (ioperm/iopl, /dev/mem, /dev/port)
and the paths to config space it cannot follow (opens of /dev/vfio/*, io_uring_setup()). From the
raw record to the live line, the trace file (JSON Lines and Parquet) and `cfgaudit analyze`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cfgaudit.audit import open_analysis, run_analysis
from cfgaudit.events import RECORD_TYPES, UNMEDIATED_KINDS
from cfgaudit.inventory import Sources
from cfgaudit.probes import bccutil, syscalls
from cfgaudit.probes.session import LiveOptions, Notice
from cfgaudit.probes.tracefile import TraceReader, TraceWriter, make_header
from cfgaudit.report.live import notice_line, notice_summary_lines, summary_lines
from support import CXL_BDF, QEMU_CXL, run_cli

SRC = ("--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0")
NOT_SEEN = "not visible to the syscall backend (the kernel backend sees them)"
VFIO_WHAT = f"opened /dev/vfio/12: config writes through a VFIO device are {NOT_SEEN}"
URING_WHAT = f"set up io_uring: writes to config files submitted through io_uring are {NOT_SEEN}"


def _record(layout: str = "event", path: bytes | None = None, **kw) -> bytes:
    r = np.zeros(1, dtype=bccutil.record_dtype(layout))
    base = dict(ts_ns=5000, offset=-1, ret=0, size=0, file_id=0, pid=4242, tid=4242, uid=0, fd=-1, aux=0,
                type=RECORD_TYPES["EV_UNMEDIATED"], data_len=0, comm=b"qemu-system-x86")
    base.update(kw)
    for k, v in base.items():
        r[k] = v
    if path is not None:
        r["path"] = path
    return r.tobytes()


def _session() -> syscalls.SyscallSession:
    s = object.__new__(syscalls.SyscallSession)
    s.opts, s._files, s.dropped_other, s.unresolved = LiveOptions(), {}, 0, 0
    return s


def _notices() -> list[Notice]:
    """One notice of each kind, decoded from raw records as the probe sends them."""
    s = _session()
    raws = [
        _record(aux=UNMEDIATED_KINDS["UM_IOPL"], size=3, comm=b"io"),
        _record("open", aux=UNMEDIATED_KINDS["UM_VFIO"], fd=7, ret=7, path=b"/dev/vfio/12"),
        _record(aux=UNMEDIATED_KINDS["UM_IO_URING"], fd=5, ret=5, comm=b"fio"),
        _record("open", aux=UNMEDIATED_KINDS["UM_DEVMEM"], fd=3, ret=3, path=b"/dev/mem", comm=b"io"),
    ]
    odd = [i for i, r in enumerate(raws) if len(r) != bccutil.record_dtype("event").itemsize]
    b = s.decode(raws, odd)
    assert b.events.num_rows == 0 and s.dropped_other == 0
    return b.notices


def test_vfio_and_io_uring_records_decode_into_honest_notices() -> None:
    iopl, vfio, uring, devmem = _notices()
    assert (vfio.pid, vfio.comm, vfio.what, vfio.via, vfio.kind) == \
        (4242, "qemu-system-x86", VFIO_WHAT, "vfio", "vfio")
    assert (uring.comm, uring.what, uring.via, uring.kind) == ("fio", URING_WHAT, "unknown", "io_uring")
    assert (iopl.kind, iopl.via, devmem.kind, devmem.via) == ("iopl", "ioport", "devmem", "devmem")
    assert iopl.what == "iopl(3): every I/O port reachable, config ports included"
    for n in (iopl, vfio, uring, devmem):
        assert Notice.from_record(json.loads(json.dumps(n.to_record()))) == n


def test_every_unmediated_kind_has_a_name() -> None:
    assert set(syscalls.UM_NAMES.values()) == {"ioperm", "iopl", "devmem", "devport", "vfio", "io_uring"}


def test_a_notice_without_kind_is_an_older_trace_grant() -> None:
    old = {"record": "unmediated", "ts_ns": 1, "pid": 2, "comm": "io", "what": "iopl(3)", "via": "ioport"}
    n = Notice.from_record(old)
    assert n.kind == "" and n.to_record() == old
    assert notice_summary_lines({"unmediated": [old]}) == \
        ["1 grant(s) of unmediated access (ioperm/iopl, /dev/mem, /dev/port)"]


def test_live_lines_say_not_seen_and_stay_under_100_columns() -> None:
    _, vfio, uring, devmem = _notices()
    for n in (vfio, uring):
        text = notice_line(n.pid, n.comm, n.what, n.kind)
        lines = text.split("\n")
        assert "NOT SEEN" in lines[0] and "UNMEDIATED" not in text and len(lines) > 1
        assert all(len(x) <= 100 for x in lines)
        assert " ".join(x.strip() for x in lines).endswith(n.what)
    text = notice_line(devmem.pid, devmem.comm, devmem.what, devmem.kind)
    assert "UNMEDIATED opened /dev/mem" in text and " ".join(x.strip() for x in text.split("\n")).endswith(devmem.what)


def test_live_summary_counts_grants_apart_from_paths_not_followed() -> None:
    s = {"unmediated": [n.to_record() for n in _notices()]}
    lines = summary_lines(s)
    assert "2 grant(s) of unmediated access (ioperm/iopl, /dev/mem, /dev/port)" in lines
    assert f"1 open(s) of /dev/vfio/*: config writes through VFIO devices are {NOT_SEEN}" in lines
    assert f"1 io_uring set-up(s): writes to config files submitted through io_uring are {NOT_SEEN}" in lines
    only_uring = summary_lines({"unmediated": [_notices()[2].to_record()]})
    assert not any("grant(s)" in x for x in only_uring)


@pytest.fixture(params=["jsonl", "parquet"])
def trace(request, tmp_path) -> str:
    """A trace (of each format) with one write and one notice of each kind."""
    path = str(tmp_path / f"t.{request.param}")
    w = TraceWriter(path, make_header(kernel_release="6.2.0"))
    notes = _notices()
    w.write(notes[0].to_record())
    w.write({"ts_ns": 6000, "pid": 4242, "comm": "setpci", "op": "write", "bdf": CXL_BDF, "offset": 0x3c,
             "size": 1, "data": "0b", "via": "sysfs"})
    for n in notes[1:]:
        w.write(n.to_record())
    w.close({"lost": 0})
    return path


def test_notices_round_trip_through_trace_files(trace) -> None:
    r = TraceReader(trace)
    rows = [e for t in r.tables() for e in t.to_pylist()]
    assert [e["comm"] for e in rows] == ["setpci"]
    assert [Notice.from_record(d) for d in r.notices] == _notices()


def test_analyze_shows_the_notices(trace) -> None:
    rep = run_analysis(open_analysis([trace], Sources(lspci_dumps=[QEMU_CXL], drivers=["0d:00.0=cxl_pci"])))
    assert [Notice.from_record(d) for d in rep.summary["unmediated"]] == _notices()
    code, out, err = run_cli("analyze", trace, *SRC)
    assert code in (0, 1), err
    flat = " ".join(out.split())
    assert f"pid 4242 (qemu-system-x86) {VFIO_WHAT}" in flat
    assert f"pid 4242 (fio) {URING_WHAT}" in flat
    assert "2 grant(s) of unmediated access" in flat and "pid 4242 (io) opened /dev/mem" in flat
    code, out, err = run_cli("analyze", trace, *SRC, "--format", "json")
    kinds = [d.get("kind") for d in json.loads(out)["summary"]["unmediated"]]
    assert kinds == ["iopl", "vfio", "io_uring", "devmem"]


def test_analyze_of_a_trace_without_notices_has_no_notice_key(tmp_path) -> None:
    path = str(tmp_path / "t.jsonl")
    w = TraceWriter(path, make_header(kernel_release="6.2.0"))
    w.write({"ts_ns": 1, "pid": 1, "comm": "setpci", "op": "write", "bdf": CXL_BDF, "offset": 0x3c, "size": 1})
    w.close({"lost": 0})
    code, out, _ = run_cli("analyze", path, *SRC, "--format", "json")
    assert "unmediated" not in json.loads(out)["summary"]


def test_many_notices_are_counted_and_the_first_shown() -> None:
    vfio = _notices()[1].to_record()
    lines = notice_summary_lines({"unmediated": [vfio] * 8}, shown=5)
    assert lines[0].startswith("8 open(s) of /dev/vfio/*") and len(lines) == 7 and lines[-1] == "  ... and 3 more"
