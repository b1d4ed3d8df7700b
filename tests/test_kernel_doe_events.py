"""The kernel's own DOE exchanges as trace events (issue 11, step 1, offline): ``doe_start`` and
``doe_end`` rows are valid events in JSONL and Parquet traces, read back with their protocol
fields, counted as the kernel's exchanges, and never taken for user-space writes or reads."""
from __future__ import annotations

import json

import pytest

from cfgaudit.events import DOE_OPS, OPS, ConfigAccess, validate_row
from cfgaudit.probes.tracefile import TraceReader, TraceWriter
from support import run_cli
from support.kdoe import doe_sample_trace

CXL = "0000:0d:00.0"
DOE_CAP = 0x190  # the sample device's DOE capability
KW = {"pid": 97, "tid": 97, "uid": 0, "comm": "kworker/u8:2", "bdf": CXL, "offset": DOE_CAP, "via": "kernel"}


def _start(ts: int) -> dict:
    return {"ts_ns": ts, "op": "doe_start", "size": 8, "doe_vendor": 0x1E98, "doe_type": 2, **KW}


def _end(ts: int, ret: int = 12) -> dict:
    return {"ts_ns": ts, "op": "doe_end", "size": 16, "ret": ret, **KW}


def _user(ts: int, op: str = "write", off: int = 0x198) -> dict:
    return {"ts_ns": ts, "pid": 812, "tid": 812, "uid": 0, "comm": "doe-tool", "op": op, "bdf": CXL, "offset": off,
            "size": 4, "via": "sysfs", "ret": 4, "data": "00000000"}


def test_doe_ops_are_events() -> None:
    assert set(DOE_OPS) <= set(OPS)
    assert validate_row(_start(1)) is None and validate_row(_end(2)) is None
    assert ConfigAccess.from_dict(_start(1)).doe_vendor == 0x1E98
    assert "'op' must be one of write, read, doe_start, doe_end" in (validate_row({**_start(1), "op": "doe"}) or "")
    assert "'doe_type'" in (validate_row({**_start(1), "doe_type": "two"}) or "")


def _trace(tmp_path, rows: list[dict]) -> str:
    return doe_sample_trace(tmp_path, rows)


ROWS = [_user(10, "read", 0x19C), _start(20), _user(30), _end(40), _user(50, "read", 0x19C), _start(60), _end(70),
        _user(80)]


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_kernel_exchanges_are_counted_not_taken_for_user_accesses(tmp_path, ext: str) -> None:
    path = _trace(tmp_path, ROWS)
    if ext == "parquet":  # the same events through the Parquet writer
        src = TraceReader(path)
        out = str(tmp_path / "t.parquet")
        w = TraceWriter(out, src.header)
        for t in src.tables():
            w.write_table(t)
        w.close()
        back = [r for t in TraceReader(out).tables() for r in t.to_pylist()]
        assert [(r["op"], r["doe_vendor"], r["doe_type"]) for r in back][1:3] == [("doe_start", 0x1E98, 2),
                                                                                  ("write", None, None)]
        path = out
    code, out_text, err = run_cli("analyze", path, "--format", "json", "-o", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    s = doc["summary"]
    assert (s["events"], s["writes"], s["reads"], s["kernel_doe_exchanges"]) == (8, 2, 2, 2)
    assert {f["op"] for f in doc["findings"]} == {"write"} and len({f["event_index"] for f in doc["findings"]}) == 2
    code, out_text, err = run_cli("analyze", path)
    assert "the kernel's own DOE exchanges in the trace: 2" in out_text


def test_traces_without_kernel_exchanges_say_nothing_of_them(tmp_path) -> None:
    code, out_text, _ = run_cli("analyze", _trace(tmp_path, [_user(10)]))
    assert "DOE exchanges in the trace" not in out_text
