"""Trace files: JSONL and Parquet, header/footer, bad lines, truncation, streaming."""
from __future__ import annotations

import json
import os
import stat

import pyarrow as pa
import pytest

import cfgaudit
from cfgaudit.errors import InputError, OutputError, UsageError
from cfgaudit.events import ConfigAccess
from cfgaudit.probes import BACKENDS, ReplayOptions
from cfgaudit.probes.session import Notice, Session
from cfgaudit.probes.tracefile import (
    TRACE_FORMATS,
    TraceReader,
    TraceWriter,
    convert_trace,
    make_header,
    trace_kind,
)
from support import CXL_BDF, QEMU_CXL, run_cli

EV = dict(ts_ns=1, pid=7, comm="setpci", op="write", bdf=CXL_BDF, offset=0x198, size=4, data="00000000", via="sysfs",
          ret=4)


def _lines(tmp_path, lines: list[str], name: str = "t.jsonl") -> str:
    p = tmp_path / name
    p.write_text("".join(lines))
    return str(p)


def _ev(**kw) -> str:
    return json.dumps({**EV, **kw}) + "\n"


def test_bare_event_lines_are_a_trace(tmp_path) -> None:
    p = _lines(tmp_path, [_ev(ts_ns=i, extra_key="kept") for i in range(5)])
    r = TraceReader(p)
    rows = [e for e in r.events()]
    assert len(rows) == 5 and r.header == {} and r.footer == {}
    assert rows[0].extra == {"extra_key": "kept"}


def test_line_longer_than_a_parse_piece_is_read(tmp_path, monkeypatch) -> None:
    """Blocks are parsed in PARSE_BLOCK_BYTES pieces on pyarrow's threads; a line longer than a
    piece is parsed again as one piece, not dropped to the slow path or refused."""
    import cfgaudit.probes.tracefile as tf

    monkeypatch.setattr(tf, "PARSE_BLOCK_BYTES", 4096)
    monkeypatch.setattr(tf.JsonlTraceReader, "_parse_lines", lambda *a: pytest.fail("the slow path was taken"))
    lines = [_ev(ts_ns=i, comm="c" * (10_000 if i == 3 else 5)) for i in range(40)]
    r = TraceReader(_lines(tmp_path, lines))
    t = pa.concat_tables(r.tables())
    assert t.column("ts_ns").to_pylist() == list(range(40)) and len(t.column("comm")[3].as_py()) == 10_000
    monkeypatch.setattr(tf, "PARSE_BLOCK_BYTES", 1 << 20)
    assert pa.concat_tables(TraceReader(_lines(tmp_path, lines, "u.jsonl")).tables()).equals(t)


def test_header_and_footer(tmp_path) -> None:
    h = json.dumps(make_header(kernel_release="6.2.0", boot_flags=["iomem=relaxed"])) + "\n"
    f = json.dumps({"record": "footer", "events": 2, "lost": 3}) + "\n"
    r = TraceReader(_lines(tmp_path, [h, _ev(), _ev(ts_ns=2), f]))
    assert sum(t.num_rows for t in r.tables()) == 2
    assert r.header["kernel_release"] == "6.2.0" and r.footer["lost"] == 3


def test_truncated_last_line_is_tolerated(tmp_path) -> None:
    warnings: list[str] = []
    p = _lines(tmp_path, [_ev(), _ev(ts_ns=2), _ev(ts_ns=3)[:40]])
    r = TraceReader(p, warn=warnings.append)
    assert sum(t.num_rows for t in r.tables()) == 2
    assert r.stats.truncated_tail and "truncated" in warnings[0]


@pytest.mark.parametrize("bad,what", [
    ('{"ts_ns": 1, "pid": 7\n', "not valid JSON"),
    (_ev(op="poke"), "'op' must be"),
    (_ev(offset=-1), "non-negative"),
    (_ev(bdf="0d:00.0"), "'bdf' must look like"),
    (_ev(data="ZZ"), "'data' must be"),
    (_ev(via="smoke"), "'via' must be"),
    (json.dumps({k: v for k, v in EV.items() if k != "pid"}) + "\n", "missing required key 'pid'"),
    (_ev(size="4"), "'size' must be"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, what) -> None:
    p = _lines(tmp_path, [_ev(), _ev(ts_ns=2), bad, _ev(ts_ns=4)])
    with pytest.raises(InputError) as ei:
        list(TraceReader(p).tables())
    assert str(ei.value).startswith(f"{p}:3: ") and what in str(ei.value)
    r = TraceReader(p, skip_bad=True)
    assert sum(t.num_rows for t in r.tables()) == 3 and r.stats.skipped == 1 and r.stats.skipped_lines == [3]


def test_bad_line_deep_in_a_big_file_is_located(tmp_path) -> None:
    lines = [_ev(ts_ns=i) for i in range(30000)]
    lines[23456] = _ev(op="poke")
    p = _lines(tmp_path, lines)
    with pytest.raises(InputError, match=rf"{p}:23457: "):
        list(TraceReader(p, block_bytes=100_000).tables())


def test_cli_bad_trace_exit_2_and_skip_bad(tmp_path) -> None:
    p = _lines(tmp_path, [_ev(), "garbage\n", _ev(ts_ns=3)])
    code, out, err = run_cli("analyze", p, "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    assert code == 2 and err == f"Error: {p}:2: not valid JSON\n"
    code, out, err = run_cli("analyze", p, "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel",
                             "6.2.0", "--skip-bad", "--format", "json")
    assert code == 1 and json.loads(out)["summary"]["skipped"] == 1 and "skipped 1" in err


def test_parquet_roundtrip_and_metadata(tmp_path) -> None:
    p = str(tmp_path / "t.parquet")
    w = TraceWriter(p, make_header(kernel_release="6.2.0"))
    for i in range(70000):
        w.write(ConfigAccess(**{**EV, "ts_ns": i}))
    w.close({"lost": 5})
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    r = TraceReader(p, batch_rows=10000)
    assert sum(t.num_rows for t in r.tables()) == 70000
    assert r.header["kernel_release"] == "6.2.0" and r.footer["lost"] == 5 and r.footer["events"] == 70000
    j = str(tmp_path / "t.jsonl")
    w = TraceWriter(j, make_header())
    for t in TraceReader(p).tables():
        w.write_table(t)
    w.close()
    assert stat.S_IMODE(os.stat(j).st_mode) == 0o600
    src = cfgaudit.Sources(lspci_dumps=[QEMU_CXL], drivers=["0d:00.0=cxl_pci"])
    a = cfgaudit.analyze_traces(p, src, kernel="6.2.0")
    b = cfgaudit.analyze_traces(j, src, kernel="6.2.0")
    assert len(a) == len(b) == 70000 and a.equals(b)


def test_jsonl_writer_flushes_as_it_goes(tmp_path) -> None:
    p = str(tmp_path / "live.jsonl")
    w = TraceWriter(p, make_header(), flush_s=0.0)
    w.write(ConfigAccess(**EV))
    r = TraceReader(p)  # readable before close: a crash loses at most the last flush interval
    assert sum(t.num_rows for t in r.tables()) == 1
    w.close()


def test_load_trace_dataframe_and_replay_pacing(tmp_path) -> None:
    p = _lines(tmp_path, [_ev(ts_ns=0), _ev(ts_ns=1_000_000_000), _ev(ts_ns=3_000_000_000)])
    df = cfgaudit.load_trace(p)
    assert list(df["ts_ns"]) == [0, 1_000_000_000, 3_000_000_000]
    slept: list[float] = []
    rs = BACKENDS["replay"].open(ReplayOptions(paths=[p], speed=2.0, sleep=slept.append))
    assert [ts for ts, _ in rs.paced()] == [0, 1_000_000_000, 3_000_000_000]
    assert slept == [0.5, 1.0]


def test_trace_with_embedded_snapshot_needs_no_source() -> None:
    code, out, err = run_cli("analyze", "sample-traces/cxl-doe-6.2/trace.jsonl", "--format", "json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["summary"]["exclusive_writes"] == 12 and doc["summary"]["kernel_logs"] == 1


def test_missing_snapshot_and_no_default_devices_is_a_usage_error(tmp_path) -> None:
    # No snapshot and no source: the default source (the sysfs tree) is read; with no devices
    # there, the error says what to give (tests/test_reliability_inputs.py: the default works).
    from cfgaudit.hostpaths import HostPaths
    from cfgaudit.inventory import Sources

    p = _lines(tmp_path, [_ev()])
    (tmp_path / "sysfs" / "devices").mkdir(parents=True)
    with pytest.raises(UsageError, match="embeds no device snapshot"):
        cfgaudit.open_analysis([p], Sources(paths=HostPaths(sysfs=str(tmp_path / "sysfs"))))


def test_columnwise_jsonl_equals_row_by_row() -> None:
    import random

    from cfgaudit.probes.tracefile import _conform, _jsonl_rows, _rows_table, jsonl_text

    rng = random.Random(7)
    for _ in range(30):
        rows = []
        for i in range(rng.randrange(1, 40)):
            r = dict(EV, ts_ns=i, pid=rng.randrange(1, 1 << 40), comm=rng.choice(["setpci", "a b", "ü", "x"]),
                     ret=rng.choice([None, 4, -22]), data=rng.choice([None, "00", "deadbeef"]),
                     kernel_verdict=rng.choice([None, True, False]))
            rows.append({k: v for k, v in r.items() if v is not None})
        t = _conform(_rows_table(rows))
        assert jsonl_text(t) == _jsonl_rows(t).replace("\\u00fc", "ü")
    t = _conform(_rows_table([dict(EV, comm='q"\\x')]))
    assert json.loads(jsonl_text(t))["comm"] == 'q"\\x'


# ------------------------------------------------------------------------- the formats table
@pytest.mark.parametrize("name,fmt", [("a.jsonl", "jsonl"), ("A.JSONL", "jsonl"), ("t.ndjson", "jsonl"),
                                      ("trace", "jsonl"), ("x.txt", "jsonl"), ("t.parquet", "parquet"),
                                      ("T.PQ", "parquet")])
def test_format_is_found_by_extension(name, fmt) -> None:
    assert trace_kind(name) == fmt
    assert trace_kind(name) in TRACE_FORMATS


def test_every_format_has_a_distinct_extension() -> None:
    exts = [e for f in TRACE_FORMATS.values() for e in f.extensions]
    assert len(exts) == len(set(exts)) and all(e == e.lower() and e.startswith(".") for e in exts)
    for name, f in TRACE_FORMATS.items():
        assert f.name == name and f.help and f.reader.kind == name and f.writer.kind == name
        assert trace_kind("x" + f.extensions[0]) == name


@pytest.mark.parametrize("fmt", sorted(TRACE_FORMATS))
def test_each_format_round_trips(tmp_path, fmt) -> None:
    """Rows and tables written through a row's writer come back through its reader, with the
    header and the footer; TraceReader/TraceWriter pick the row's classes from the name."""
    row = TRACE_FORMATS[fmt]
    p = str(tmp_path / ("t" + row.extensions[0]))
    w = TraceWriter(p, make_header(kernel_release="6.2.0", host="h"))
    assert type(w) is row.writer
    w.write(ConfigAccess(**EV))
    w.write(dict(EV, ts_ns=2, kernel_verdict=True, data=None))
    w.write_table(pa.Table.from_pylist([dict(EV, ts_ns=3, comm="cfgpoke")]))
    w.close({"lost": 4})
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    r = TraceReader(p)
    assert type(r) is row.reader and r.kind == fmt
    rows = [e for t in r.tables() for e in t.to_pylist()]
    assert [(e["ts_ns"], e["comm"], e["data"], e["kernel_verdict"]) for e in rows] == \
        [(1, "setpci", "00000000", None), (2, "setpci", None, True), (3, "cfgpoke", "00000000", None)]
    assert r.header["kernel_release"] == "6.2.0" and r.header["host"] == "h"
    assert r.footer["lost"] == 4 and r.footer["events"] == 3


# ------------------------------------------------------------------------- replay as a session
def test_replay_is_a_session(tmp_path) -> None:
    note = json.dumps({"record": "unmediated", "ts_ns": 5, "pid": 7, "comm": "x", "what": "iopl(3)", "via": "ioport"})
    h = json.dumps(make_header()) + "\n"
    f = json.dumps({"record": "footer", "events": 3, "lost": 2}) + "\n"
    a = _lines(tmp_path, [h, _ev(ts_ns=1), note + "\n", _ev(ts_ns=2), f], "a.jsonl")
    b = _lines(tmp_path, [_ev(ts_ns=3), _ev(ts_ns=4)], "b.jsonl")
    with BACKENDS["replay"].open(ReplayOptions(paths=[a, b])) as s:
        assert isinstance(s, Session) and s.name == "replay"
        s.start()
        first = s.poll()
        assert first.events.column("ts_ns").to_pylist() == [1, 2]
        assert first.notices == [Notice(5, 7, "x", "iopl(3)", "ioport")]
        rest = s.drain()
        assert rest.events.column("ts_ns").to_pylist() == [3, 4] and rest.notices == []
        assert s.poll().is_empty()
        st = s.stats()
        assert (st.lost, st.skipped) == (2, 0)
    with pytest.raises(InputError, match="no trace file"):
        BACKENDS["replay"].open(ReplayOptions(paths=[]))
    with pytest.raises(UsageError, match="--speed"):
        BACKENDS["replay"].open(ReplayOptions(paths=[a], speed=-1))


def test_convert_trace_is_atomic_and_keeps_the_source_on_failure(tmp_path) -> None:
    """JSON Lines -> Parquet: every event, notice and the footer; the source goes only once the
    result is in place; a result that cannot be written leaves the source and no result."""
    src = str(tmp_path / "t.parquet.partial.jsonl")
    w = TraceWriter(src, make_header(host="h"))
    for i in range(3):
        w.write(ConfigAccess(**{**EV, "ts_ns": i}))
    w.write({"record": "unmediated", "ts_ns": 9, "pid": 1, "comm": "x", "what": "/dev/vfio/1", "via": "vfio",
             "kind": "vfio"})
    w.close({"lost": 2})
    dst = str(tmp_path / "t.parquet")
    assert convert_trace(src, dst, footer=lambda r, n, last: dict(r.footer, copied=n, last=last)) == 3
    assert not os.path.exists(src) and not os.path.exists(dst + ".tmp")
    r = TraceReader(dst)
    assert sum(t.num_rows for t in r.tables()) == 3 and len(r.notices) == 1
    assert (r.header["host"], r.footer["lost"], r.footer["copied"], r.footer["last"]) == ("h", 2, 3, 2)
    w = TraceWriter(src, make_header())
    w.close()
    with pytest.raises(OutputError):
        convert_trace(src, str(tmp_path / "no-such-dir" / "t.parquet"))
    assert os.path.exists(src) and not (tmp_path / "no-such-dir").exists()
