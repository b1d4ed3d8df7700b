"""cfgaudit record's pieces without root: names, sequence numbers, recovery, retention, metrics,
rotation, and the recorder itself over a scripted session (no kernel, no bcc)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import cfgaudit.live
from cfgaudit import record
from cfgaudit.errors import OutputError, UsageError
from cfgaudit.events import arrow_schema
from cfgaudit.hostpaths import HostPaths
from cfgaudit.live import LiveRun, TraceConfig
from cfgaudit.probes.session import Batch, Notice, SessionStats
from cfgaudit.probes.tracefile import PARTIAL_SUFFIX, TraceReader, TraceWriter, make_header
from cfgaudit.record import RecordConfig, Recorder
from support import BDF, make_fake_tree, run_cli

T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z

# Prometheus text format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/):
# metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*, label values with \\ \" \n escaped.
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)\})?'
                    r' (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|NaN|[-+]Inf))$')
COMMENT = re.compile(r"^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                     r"(?:counter|gauge|histogram|summary|untyped))$")


# ------------------------------------------------------------------------------- names, numbers
def test_host_is_sanitised_and_a_given_one_checked(monkeypatch) -> None:
    monkeypatch.setattr(record.socket, "gethostname", lambda: "web 01/a:b.example-1_x")
    assert record.host_name() == "web_01_a_b.example-1_x"
    assert record.host_name("db-7.lab") == "db-7.lab"
    for bad in ("", "a/b", "..", "x y", "h=1"):
        with pytest.raises(UsageError, match="--host"):
            record.host_name(bad)
    assert record.host_dir("/d", "h1") == "/d/host=h1"


def test_segment_names_sort_by_sequence() -> None:
    assert record.segment_name(7, T0) == "seg-00000007-20231114T221320Z.parquet"
    # a later segment may carry an earlier clock (the clock was set back): the sequence decides
    names = [record.segment_name(s, T0 - s * 10**9) for s in (1, 2, 9, 10, 99, 100, 12345678)]
    assert sorted(names) == names
    assert [record.segment_seq(n) for n in names] == [1, 2, 9, 10, 99, 100, 12345678]
    assert record.segment_seq(names[0] + PARTIAL_SUFFIX) == 1 and record.segment_seq("notes.txt") is None


def test_next_seq_continues_from_any_segment_file(tmp_path) -> None:
    assert record.next_seq(str(tmp_path)) == 1
    for name in ("seg-00000003-20231114T221320Z.parquet", "seg-00000005-20231114T231320Z.parquet.partial.jsonl",
                 "seg-00000004-20231114T231320Z.parquet.tmp", "README", ".cfgaudit-record.lock"):
        (tmp_path / name).write_text("x")
    assert record.next_seq(str(tmp_path)) == 6
    assert [s for s, _, _ in record.closed_segments(str(tmp_path))] == [3]


# ------------------------------------------------------------------------------- retention
def test_retention_deletes_oldest_first_never_the_open_one(tmp_path) -> None:
    d = str(tmp_path)
    for seq in (10, 2, 3, 4):  # created out of order: age is the sequence, not the mtime
        (tmp_path / record.segment_name(seq, T0)).write_bytes(b"x" * 100)
    partial = tmp_path / (record.segment_name(11, T0) + PARTIAL_SUFFIX)
    partial.write_bytes(b"y" * 10_000)
    assert record.enforce_retention(d, 0) == []  # 0: unbounded
    gone = record.enforce_retention(d, 250)
    assert [record.segment_seq(os.path.basename(p)) for p in gone] == [2, 3]
    assert [s for s, _, _ in record.closed_segments(d)] == [4, 10] and partial.exists()
    assert record.enforce_retention(d, 200) == []  # exactly at the bound: nothing more
    assert len(record.enforce_retention(d, 1)) == 2 and partial.exists()


# ------------------------------------------------------------------------------- recovery
def _events(n: int, offset: int = 0x198, ts: int = 1000) -> pa.Table:
    return pa.Table.from_pylist([dict(ts_ns=ts + i, pid=7, comm="setpci", op="write", bdf=BDF, offset=offset,
                                      size=4, data="01000000", via="sysfs") for i in range(n)],
                                schema=arrow_schema())


def _crashed_partial(path: str, n: int, notices: int = 0, footer: dict | None = None) -> None:
    """What a killed recorder leaves: a JSON Lines segment, flushed, with no footer (or with one)."""
    seq = record.segment_seq(os.path.basename(path))
    w = TraceWriter(path, make_header(host="h", started_ns=5, segment={"seq": seq, "started_unix_ns": T0}))
    for i in range(notices):
        w.write(Notice(2000 + i, 9, "iopl-user", "iopl(3)", "iopl", "iopl").to_record())
    w.write_table(_events(n))
    w.flush()
    if footer is not None:
        w.close(footer)
    else:
        os.close(w._fd)  # type: ignore[attr-defined]  # killed: no footer


def test_recover_converts_a_crashed_partial(tmp_path) -> None:
    final = str(tmp_path / record.segment_name(4, T0))
    _crashed_partial(final + PARTIAL_SUFFIX, 3, notices=1)
    with open(final + PARTIAL_SUFFIX, "a") as fh:
        fh.write('{"ts_ns":99,"pid":1,"co')  # killed mid-line
    said: list[str] = []
    assert record.recover_segments(str(tmp_path), said.append) == [final]
    assert not os.path.exists(final + PARTIAL_SUFFIX)
    r = TraceReader(final)
    assert sum(t.num_rows for t in r.tables()) == 3 and len(r.notices) == 1
    assert r.header["segment"] == {"seq": 4, "started_unix_ns": T0} and r.header["host"] == "h"
    f = r.footer
    assert (f["closed_by"], f["events"], f["unmediated"], f["lost"]) == ("recovered", 3, 1, None)
    assert f["ended_ns"] == 1002  # the last event's time, not the recovery's
    assert any("recovered" in m for m in said) and any("truncated" in m for m in said)
    assert stat.S_IMODE(os.stat(final).st_mode) == 0o600


def test_recover_keeps_a_closed_partials_counts_and_cleans_up(tmp_path) -> None:
    a = str(tmp_path / record.segment_name(1, T0))
    _crashed_partial(a + PARTIAL_SUFFIX, 2, footer={"lost": 5, "closed_by": "size", "events": 2})
    b = str(tmp_path / record.segment_name(2, T0))
    _crashed_partial(b + PARTIAL_SUFFIX, 1)
    os.link(b + PARTIAL_SUFFIX, str(tmp_path / "keep"))
    record.convert_segment(str(tmp_path / "keep"), b)  # crashed between rename and unlink
    (tmp_path / (record.segment_name(3, T0) + ".tmp")).write_bytes(b"half a parquet file")
    bad = tmp_path / (record.segment_name(5, T0) + PARTIAL_SUFFIX)
    bad.write_bytes(b'{"record":"header","format":"cfgaudit-trace"}\nnot json at all\n{"a":1}\n')
    assert record.recover_segments(str(tmp_path)) == [a]
    f = TraceReader(a).footer
    assert (f["lost"], f["closed_by"], f["recovered_from"]) == (5, "recovered", "size")
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(a), os.path.basename(b),
                                                    bad.name + ".unreadable"])


# ------------------------------------------------------------------------------- metrics
def _parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        key = m["name"] + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "host") + "}"
                           if len(labels) > 1 else "")
        out[key] = float(m["value"])
    return out


def test_metrics_text_format_and_atomic_write(tmp_path) -> None:
    c = record.RecorderCounters(accesses=12, lost=3, segments_closed=2, open_seq=3, last_rotation_unix_s=1.5e9)
    c.findings["exclusive"] = 4
    text = record.prometheus_text(c, 'we"ird\\h')
    assert 'host="we\\"ird\\\\h"' in text
    got = _parse_metrics(text)
    assert got["cfgaudit_accesses_total"] == 12 and got["cfgaudit_lost_events_total"] == 3
    assert got["cfgaudit_findings_total{kind=exclusive}"] == 4 and got["cfgaudit_findings_total{kind=managed}"] == 0
    assert {k.split("=")[1].rstrip("}") for k in got if k.startswith("cfgaudit_findings_total")} == \
        set(record.FINDING_KINDS)
    assert got["cfgaudit_open_segment_seq"] == 3 and got["cfgaudit_last_rotation_timestamp_seconds"] == 1.5e9
    for line in text.splitlines():  # every sample has its HELP and TYPE before it
        if not line.startswith("#"):
            name = line.split("{")[0]
            assert f"# TYPE {name} " in text.split(line)[0]
    old = os.umask(0o077)
    try:
        path = str(tmp_path / "cfgaudit.prom")
        record.write_metrics(path, text)
        record.write_metrics(path, text.replace(" 12\n", " 13\n"))
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["cfgaudit.prom"]  # no .tmp left
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert _parse_metrics(open(path).read())["cfgaudit_accesses_total"] == 13


# ------------------------------------------------------------------------------- the recorder
class _Scripted:
    """A session handing out scripted batches; ``lost`` grows as the script says."""

    name = "scripted"

    def __init__(self, script: list[tuple[Batch, int]]) -> None:
        self.script = list(script)
        self.lost = 0
        self.closed = False

    def start(self) -> None: ...

    def poll(self, timeout_ms: int = 100) -> Batch:
        if not self.script:
            return Batch.empty()
        b, lost = self.script.pop(0)
        self.lost += lost
        return b

    def drain(self) -> Batch:
        return Batch.empty()

    def stats(self) -> SessionStats:
        return SessionStats(lost=self.lost)

    def follow_pid(self, pid: int) -> None: ...

    def close(self) -> None:
        self.closed = True


class _Backend:
    name = "scripted"

    def __init__(self) -> None:
        self.session: _Scripted | None = None
        self.script: list[tuple[Batch, int]] = []

    def open(self, options) -> _Scripted:
        self.session = _Scripted(self.script)
        return self.session


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake(tmp_path, monkeypatch) -> dict:
    tree = make_fake_tree(str(tmp_path / "tree"))
    backend = _Backend()
    monkeypatch.setattr(cfgaudit.live, "pick_backend", lambda name, paths: backend)
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    return {"tree": tree, "backend": backend, "dir": str(tmp_path / "rec"), "machine_id": str(machine_id),
            "paths": HostPaths().with_(sysfs=tree["sysfs"], procfs=tree["procfs"])}


def _cfg(fake: dict, **kw) -> RecordConfig:
    kw.setdefault("host", "h1")
    return RecordConfig(directory=fake["dir"], trace=TraceConfig(paths=fake["paths"], kernel="6.2.0"),
                        machine_id_path=fake["machine_id"], **kw)


def _run(rec: Recorder, steps: list, reason: str = "sigterm", clock: _Clock | None = None) -> None:
    """Run ``rec`` polling once per step: a step is a callable run before the poll (or None)."""
    it = iter(steps)

    def stop() -> str | None:
        step = next(it, "end")
        if step == "end":
            return reason
        if step is not None:
            step()
        return None

    with rec:
        rec.run(stop, poll_ms=0)


def _analyze(path: str) -> dict:
    code, out, err = run_cli("analyze", path, "--format", "json")
    assert code in (0, 1), err
    return json.loads(out)


def test_rotation_by_size_makes_self_contained_segments(fake) -> None:
    fake["backend"].script = [(Batch(_events(20, ts=1000 * i), []), 0) for i in range(1, 7)]
    seen: list[record.SegmentInfo] = []
    rec = Recorder(_cfg(fake, rotate_bytes=5000), on_segment=seen.append)
    _run(rec, [None] * 8)
    assert fake["backend"].session.closed
    names = sorted(os.listdir(rec.dir))
    segs = [n for n in names if n.endswith(".parquet")]
    assert names == sorted(segs + [".cfgaudit-record.lock"])  # no partial, no .tmp left
    assert [record.segment_seq(n) for n in segs] == list(range(1, len(segs) + 1)) and len(segs) >= 3
    footers = [TraceReader(os.path.join(rec.dir, n)).footer for n in segs]
    assert [f["closed_by"] for f in footers] == ["size"] * (len(segs) - 1) + ["sigterm"]
    assert sum(f["events"] for f in footers) == 120 == rec.counters.accesses
    assert [s.seq for s in seen] == list(range(1, len(segs) + 1)) and all(s.converted for s in seen)
    for n, f in zip(segs, footers):
        r = TraceReader(os.path.join(rec.dir, n))
        h = r.header
        assert h["host"] == "h1" and h["machine_id"] == "0123456789abcdef0123456789abcdef"
        assert h["segment"]["seq"] == record.segment_seq(n) and "snapshot" in h and h["backend"] == "scripted"
        assert "boot_id" in h and h["kernel_release"] == "6.2.0"
        assert n == record.segment_name(h["segment"]["seq"], h["segment"]["started_unix_ns"])
        doc = _analyze(os.path.join(rec.dir, n))  # needs nothing else: the snapshot is in the header
        assert doc["summary"]["events"] == f["events"]
        assert len([x for x in doc["findings"] if x["kind"] == "exclusive"]) == f["events"]
    assert rec.counters.findings["exclusive"] == 120


def test_rotation_by_time_and_on_request(fake) -> None:
    clock = _Clock()
    fake["backend"].script = [(Batch(_events(1), []), 0)] * 3

    def later(s: float):
        return lambda: setattr(clock, "t", clock.t + s)

    rec = Recorder(_cfg(fake, rotate_seconds=60), clock=clock)
    _run(rec, [None, later(30), later(31), None, lambda: rec.rotate_soon("sighup"), None, later(59)], "duration")
    segs = sorted(n for n in os.listdir(rec.dir) if n.endswith(".parquet"))
    footers = [TraceReader(os.path.join(rec.dir, n)).footer for n in segs]
    assert [f["closed_by"] for f in footers] == ["time", "sighup", "duration"]
    # the first poll's batch went to segment 1; segment 2 opened at the 61 s tick, closed by SIGHUP
    assert [f["events"] for f in footers] == [2, 1, 0]


def test_losses_are_counted_per_segment_and_reach_analyze(fake, tmp_path) -> None:
    fake["backend"].script = [(Batch(_events(2), []), 4), (Batch(_events(1), []), 0), (Batch.empty(), 3)]
    metrics = str(tmp_path / "m.prom")
    rec = Recorder(_cfg(fake, metrics=metrics))
    _run(rec, [None, lambda: rec.rotate_soon("sighup"), None, None])
    segs = sorted(os.path.join(rec.dir, n) for n in os.listdir(rec.dir) if n.endswith(".parquet"))
    assert [TraceReader(p).footer["lost"] for p in segs] == [4, 3]
    for p in segs:
        assert _analyze(p)["summary"]["lost"] == TraceReader(p).footer["lost"]
    m = _parse_metrics(open(metrics).read())
    assert m["cfgaudit_lost_events_total"] == 7 and m["cfgaudit_accesses_total"] == 3
    assert m["cfgaudit_segments_closed_total"] == 2 and m["cfgaudit_open_segment_seq"] == 0
    assert m["cfgaudit_findings_total{kind=exclusive}"] == 3
    assert m["cfgaudit_disk_bytes"] == sum(os.path.getsize(p) for p in segs)


def test_notices_go_to_the_segment_they_occurred_in(fake) -> None:
    note = Notice(5000, 9, "iopl-user", "iopl(3)", "iopl", "iopl")
    fake["backend"].script = [(Batch(_events(1), []), 0), (Batch(_events(0), [note]), 0)]
    rec = Recorder(_cfg(fake))
    _run(rec, [None, lambda: rec.rotate_soon("sighup"), None, None])
    segs = sorted(os.path.join(rec.dir, n) for n in os.listdir(rec.dir) if n.endswith(".parquet"))
    readers = [TraceReader(p) for p in segs]
    assert [len(r.notices) for r in readers] == [0, 1] and [r.footer["unmediated"] for r in readers] == [0, 1]
    assert rec.live.notices == [] and rec.live.parts == [] and rec.live.n_notices == 1  # keep=False


def test_open_segment_is_readable_while_recording(fake) -> None:
    fake["backend"].script = [(Batch(_events(3), []), 0)]
    rec = Recorder(_cfg(fake))
    seen: list[dict] = []

    def look() -> None:
        seen.append(_analyze(rec.partial))

    _run(rec, [None, look])
    assert seen[0]["summary"]["events"] == 3 and seen[0]["summary"]["exclusive_writes"] == 3


def test_restart_recovers_and_continues_numbering(fake) -> None:
    hdir = record.host_dir(fake["dir"], "h1")
    os.makedirs(hdir)
    _crashed_partial(os.path.join(hdir, record.segment_name(7, T0) + PARTIAL_SUFFIX), 2)
    (open(os.path.join(hdir, record.segment_name(6, T0)), "wb")).close()  # an older one, whatever it holds
    said: list[str] = []
    rec = Recorder(_cfg(fake), warn=said.append)
    _run(rec, [None])
    assert sorted(n for n in os.listdir(hdir) if n.startswith("seg-"))[1:] == \
        [record.segment_name(7, T0), os.path.basename(rec.final)]
    assert record.segment_seq(os.path.basename(rec.final)) == 8
    assert TraceReader(os.path.join(hdir, record.segment_name(7, T0))).footer["closed_by"] == "recovered"
    assert any("recovered seg-00000007" in m for m in said)


def test_keep_bytes_deletes_oldest_while_recording(fake, tmp_path) -> None:
    fake["backend"].script = [(Batch(_events(30), []), 0)] * 6
    rec = Recorder(_cfg(fake, rotate_bytes=1, keep_bytes=1))  # every batch closes a segment; keep (nearly) none
    _run(rec, [None] * 7)
    left = record.closed_segments(rec.dir)
    assert rec.counters.segments_closed == 7 and rec.counters.segments_deleted == 7 - len(left)
    assert sum(n for _, _, n in left) <= 1


def test_keep_bytes_keeps_the_newest(fake) -> None:
    fake["backend"].script = [(Batch(_events(30), []), 0)] * 6
    rec = Recorder(_cfg(fake, rotate_bytes=1))
    _run(rec, [None] * 7)
    sizes = record.closed_segments(rec.dir)
    keep = sum(n for _, _, n in sizes[-3:])
    assert record.enforce_retention(rec.dir, keep) and [s for s, _, _ in record.closed_segments(rec.dir)] == \
        [s for s, _, _ in sizes[-3:]]


def test_a_failed_write_suspends_recording_then_resumes(fake, monkeypatch) -> None:
    clock = _Clock()
    fake["backend"].script = [(Batch(_events(1), []), 0)] * 4
    said: list[str] = []
    rec = Recorder(_cfg(fake, rotate_seconds=3600), warn=said.append, clock=clock)
    real_flush = TraceWriter.flush
    fail = {"on": False}

    def flush(self) -> None:
        if fail["on"]:
            fail["on"] = False
            raise OutputError("cannot write: No space left on device", path=self.path)
        real_flush(self)

    monkeypatch.setattr(TraceWriter, "flush", flush)

    def tick(s: float):
        return lambda: setattr(clock, "t", clock.t + s)

    _run(rec, [None, lambda: fail.update(on=True), None, tick(61), None, None])
    segs = sorted(os.path.join(rec.dir, n) for n in os.listdir(rec.dir) if n.endswith(".parquet"))
    footers = [TraceReader(p).footer for p in segs]
    assert [f["closed_by"] for f in footers] == ["error", "sigterm"]
    assert "No space left" in footers[0]["error"] and footers[0]["events"] == 1
    # the batch that failed and the one after it were seen, not recorded; the 61 s tick opened segment 2
    assert rec.counters.unrecorded == 2 and rec.counters.write_errors == 1 and rec.counters.accesses == 4
    assert footers[1]["events"] == 1
    assert any("tracing goes on without recording" in m for m in said) and any("resumed" in m for m in said)


def test_one_recorder_per_directory_and_bad_directories(fake, tmp_path) -> None:
    rec = Recorder(_cfg(fake))
    try:
        with pytest.raises(UsageError, match="another cfgaudit record"):
            Recorder(_cfg(fake))
    finally:
        rec._unlock()
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        Recorder(RecordConfig(directory=str(afile)))
    with pytest.raises(OutputError, match="no such directory"):
        Recorder(_cfg(fake, metrics=str(tmp_path / "nope" / "m.prom")))


@pytest.mark.parametrize("args,msg", [
    (["--rotate-bytes", "0"], "is not a size above 0"),
    (["--rotate-bytes", "12Q"], "is not a size"),
    (["--keep-bytes", "-1"], "is not a size 0 or more"),
    (["--rotate-seconds", "0"], "is not a number of seconds above 0"),
    (["--host", "a/b"], "--host 'a/b'"),
])
def test_bad_record_options_are_usage_errors(tmp_path, args: list[str], msg: str) -> None:
    code, out, err = run_cli("record", str(tmp_path), *args)
    assert code == 2 and msg in err and err.count("\n") == 1, err


def test_a_file_as_dir_is_one_error_line(tmp_path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    code, out, err = run_cli("record", str(f), "--host", "h")
    assert (code, err) == (2, f"Error: {f}: not a directory\n")


def test_sizes_take_units() -> None:
    from cfgaudit.cli import _size

    check = _size(zero_ok=True)
    assert [check(None, None, v) for v in ("0", "512", "4K", "64M", "1.5G", "2GiB", "3kb")] == \
        [0, 512, 4096, 64 << 20, 3 << 29, 2 << 30, 3072]


def test_keep_false_leaves_trace_and_run_as_they_were(fake) -> None:
    fake["backend"].script = [(Batch(_events(2), [Notice(1, 2, "x", "iopl(3)", "iopl", "iopl")]), 0)]
    live = LiveRun(TraceConfig(paths=fake["paths"], kernel="6.2.0"))
    with live:
        polls = iter(range(3))
        live.run(lambda: next(polls) >= 2, poll_ms=0)
        rep = live.finish()
    assert len(live.notices) == 1 and rep.n_findings == 2 and len(rep.summary["unmediated"]) == 1


def test_metrics_are_rewritten_as_counters_change(fake, tmp_path) -> None:
    clock = _Clock()
    metrics = str(tmp_path / "m.prom")
    fake["backend"].script = [(Batch(_events(1), []), 0)] * 3
    rec = Recorder(_cfg(fake, metrics=metrics), clock=clock)
    got: list[float] = []

    def read() -> None:
        got.append(_parse_metrics(open(metrics).read())["cfgaudit_accesses_total"])

    def tick() -> None:
        clock.t += record.METRICS_EVERY_S

    _run(rec, [None, read, tick, None, read, None, read])
    assert got[0] == 0 and got[1] == 2  # the second batch within the same second waited for the next write
    assert _parse_metrics(open(metrics).read())["cfgaudit_accesses_total"] == 3
    assert time.time() - os.stat(metrics).st_mtime < 60


# ------------------------------------------------------------------------------- the systemd unit
UNIT = os.path.join(os.path.dirname(__file__), "..", "contrib", "cfgaudit-record.service")
# What a bcc recorder needs (docs/record.md "The systemd unit" lists each with its reason).
RECORD_CAPABILITIES = {"CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}


def _unit_values(key: str) -> list[str]:
    return [ln.split("=", 1)[1].strip() for ln in open(UNIT).read().splitlines() if ln.startswith(key + "=")]


def _verify(text: str, tmp_path) -> tuple[int, str]:
    """systemd-analyze verify on a copy of the unit whose ExecStart runs this venv's cfgaudit
    (verify wants the program to exist); returns its code and everything it said."""
    exe = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
    path = tmp_path / "cfgaudit-record.service"
    path.write_text(text.replace("/usr/local/bin/cfgaudit", exe))
    p = subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).strip()


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (scripts/deps.sh installs it)")
def test_unit_passes_systemd_analyze_verify(tmp_path) -> None:
    text = open(UNIT).read()
    assert _verify(text, tmp_path) == (0, "")
    code, said = _verify(text.replace("ProtectSystem=strict", "ProtectSystem=stricter"), tmp_path)
    assert "stricter" in said  # the check can fail: a bad value is named


def test_unit_capabilities_are_the_documented_set() -> None:
    (bounding,) = _unit_values("CapabilityBoundingSet")
    (ambient,) = _unit_values("AmbientCapabilities")
    assert set(bounding.split()) == set(ambient.split()) == RECORD_CAPABILITIES
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "record.md")).read()
    assert set(re.findall(r"^\| `(CAP_[A-Z_]+)` \|", doc, re.M)) == RECORD_CAPABILITIES
    unit = open(UNIT).read()
    for cap in RECORD_CAPABILITIES:  # each one said why in the unit too
        assert re.search(rf"^#\s+{cap}\s+\S", unit, re.M), cap
    assert _unit_values("KillSignal") == ["SIGTERM"]
    assert _unit_values("ProtectSystem") == ["strict"] and _unit_values("NoNewPrivileges") == ["yes"]
    assert not _unit_values("ProtectKernelModules")  # it hides /usr/lib/modules: bcc's kernel headers
    exec_start = _unit_values("ExecStart")[0].split()
    assert exec_start[1:3] == ["record", "/var/lib/cfgaudit"] and _unit_values("StateDirectory") == ["cfgaudit"]
    metrics_dir = os.path.dirname(exec_start[exec_start.index("--metrics") + 1])
    assert _unit_values("ReadWritePaths") == ["-" + metrics_dir]


def test_unit_reload_sends_sighup_to_the_main_process() -> None:
    """ExecReload= as systemd runs it (its quoting is the shell's here; $MAINPID in the environment,
    systemd.service(5)) delivers SIGHUP to the main process, with no program a minimal system lacks."""
    (reload_cmd,) = _unit_values("ExecReload")
    main = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                             "signal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\nprint('ready', flush=True)\n"
                             "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert main.stdout is not None and main.stdout.readline() == "ready\n"
        subprocess.run(shlex.split(reload_cmd), env={"MAINPID": str(main.pid), "PATH": "/usr/bin:/bin"},
                       check=True, timeout=30)
        assert main.wait(timeout=30) == 7
    finally:
        main.kill()
