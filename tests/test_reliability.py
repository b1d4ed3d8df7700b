"""Regressions from the reliability pass (issue 9): inputs that crashed cfgaudit or gave a traceback.

Crash cases run cfgaudit in a child process, so a segfault fails the test instead of the run.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from cfgaudit.errors import EXIT_ERROR, EXIT_INTERNAL
from cfgaudit.probes.tracefile import _objects_only
from support import QEMU_CXL, run_cli

HEADER = b'{"record":"header","format":"cfgaudit-trace","version":1}\n'
EVENT = b'{"ts_ns":1,"pid":7,"comm":"setpci","op":"write","bdf":"0000:0d:00.0","offset":408,"size":4,"via":"sysfs"}\n'


def _check(path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cfgaudit.cli", "check", path, "--lspci-dump", QEMU_CXL,
                           "--kernel", "6.2.0", *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("body,line", [
    (b"null\n", 1),                         # pyarrow's JSON reader segfaulted on this (exit 139)
    (HEADER + b"null\n", 2),
    (b" null\n", 1),
    (EVENT * 3 + b"null\n" + EVENT, 4),
    (b"1\n", 1),
    (b"[1]\n", 1),
    (b'"text"\n', 1),
    (b"[" * 100000 + b"\n", 1),             # nested past the recursion limit
])
def test_non_object_lines_are_named_errors(tmp_path, body: bytes, line: int) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(body)
    r = _check(str(p))
    assert r.returncode == EXIT_ERROR, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and err[0].startswith(f"Error: {p}:{line}: "), r.stderr


def test_skip_bad_skips_a_null_line(tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(HEADER + b"null\n" + EVENT)
    r = _check(str(p), "--skip-bad", "--format", "json", "--driver", "0d:00.0=cxl_pci")
    assert r.returncode == 1, r.stderr  # the one event writes the DOE control register of cxl_pci's claim
    assert "skipped 1 malformed trace line" in r.stderr and "Traceback" not in r.stderr


def test_objects_only_prescan() -> None:
    assert _objects_only(b"") and _objects_only(EVENT * 2) and _objects_only(EVENT + b"\n" + EVENT)
    assert not _objects_only(b"null\n") and not _objects_only(EVENT + b"null") and not _objects_only(EVENT + b" {}\n")


def test_internal_error_has_its_own_exit_code(monkeypatch) -> None:
    import cfgaudit

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cfgaudit, "open_devices", boom)  # the CLI looks library names up when a command runs
    code, out, err = run_cli("devices", "--lspci-dump", QEMU_CXL)
    assert code == EXIT_INTERNAL and code not in (0, 1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: internal error at test_reliability.py:")
    assert "RuntimeError: simulated bug" in lines[0] and "Traceback" not in err
    code, out, err = run_cli("--debug", "devices", "--lspci-dump", QEMU_CXL)
    assert code == EXIT_INTERNAL and "Traceback (most recent call last)" in err and "simulated bug" in err


# ---- item 5: -o never writes through a symlink, never chmods what cfgaudit did not create ----------
@pytest.mark.parametrize("name", ["t.jsonl", "t.parquet"])
def test_trace_output_refuses_a_symlink(tmp_path, name: str) -> None:
    from cfgaudit.errors import InputError
    from cfgaudit.probes.tracefile import TraceWriter, make_header

    target = tmp_path / "precious"
    target.write_text("keep me\n")
    target.chmod(0o644)
    link = tmp_path / name
    link.symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"):
        TraceWriter(str(link), make_header())
    assert target.read_text() == "keep me\n" and (target.stat().st_mode & 0o777) == 0o644


def test_trace_output_modes(tmp_path) -> None:
    import os
    import stat

    from cfgaudit.probes.tracefile import TraceWriter, make_header

    old = os.umask(0)
    try:
        new = tmp_path / "new.jsonl"
        TraceWriter(str(new), make_header()).close()
        assert (new.stat().st_mode & 0o777) == 0o600  # config bytes: not for other users
        mine = tmp_path / "mine.jsonl"
        mine.write_text("old contents that are longer than a header line " * 20)
        mine.chmod(0o640)
        TraceWriter(str(mine), make_header()).close()
        assert (mine.stat().st_mode & 0o777) == 0o640 and "old contents" not in mine.read_text()
    finally:
        os.umask(old)
    before = os.stat("/dev/null")
    TraceWriter("/dev/null", make_header()).close()  # a device is written, never chmodded
    after = os.stat("/dev/null")
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)


# ---- item 8: names from unprivileged processes never reach a terminal raw -----------------------
def test_control_characters_are_escaped_in_live_lines_and_github() -> None:
    import pandas as pd

    from cfgaudit.analyze.findings import empty_findings
    from cfgaudit.report.frames import Report
    from cfgaudit.report.live import event_lines, live_lines, notice_line
    from cfgaudit.report.render import render

    evil = "\x1b[2J\x1b]0;pwn\x07x"
    row = {c: None for c in empty_findings().columns}
    row.update(ts_ns=1, pid=7, comm=evil, op="write", bdf="0000:0d:00.0", offset=0x198, size=4, data="00000000",
               via="sysfs", region_start=0x190, region_length=0x18, owner="cxl_pci", kind="exclusive",
               rule="cxl-doe", kernel_taints=True, kernel_logs=True, kernel_message=f"cxl_pci: {evil}: Unexpected",
               severity="error", doe=f"pid 7 ({evil}) wrote", event_index=0)
    f = pd.concat([empty_findings(), pd.DataFrame([row])], ignore_index=True).astype(empty_findings().dtypes)
    text = "\n".join(live_lines(f, 0) + [notice_line(7, evil, f"opened /dev/mem{evil}")]
                     + event_lines([{"ts_ns": 1, "pid": 7, "comm": evil, "bdf": "0000:0d:00.0", "offset": 0,
                                     "size": 1, "data": "00", "op": "write"}], 0))
    gh = render(Report(f, pd.DataFrame(), pd.DataFrame(), {}, {}), "github")
    for out in (text, gh):
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b" in out


# ---- low items: options that ran for ever or did nothing, now usage errors before any probe loads ----
@pytest.mark.parametrize("args,msg", [
    (["trace", "-d", "nan"], "not a number of seconds above 0"),
    (["trace", "-d", "1e400"], "not a number of seconds above 0"),
    (["trace", "-d", "0"], "not a number of seconds above 0"),
    (["trace", "-p", "0"], "--pid"),
    (["trace", "-p", "-5"], "--pid"),
    (["trace", "-p", "4194305"], "no such process"),  # above PID_MAX_LIMIT: never a process
    (["run", "--", "/tmp"], "is a directory"),
    (["run", "--", "/nonexistent/tool"], "command not found"),
    (["regions", "--lspci-dump", QEMU_CXL, "--kernel", ""], "must not be empty"),
    (["analyze", "x.jsonl", "--kernel", " "], "must not be empty"),
])
def test_bad_live_options_are_usage_errors(args: list[str], msg: str) -> None:
    code, out, err = run_cli(*args)
    assert code == EXIT_ERROR, (code, err)
    assert err.startswith("Error: ") and msg in err and "Traceback" not in err


def test_interrupt_is_an_error_line(monkeypatch) -> None:
    import cfgaudit

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cfgaudit, "open_devices", interrupted)
    code, out, err = run_cli("devices", "--lspci-dump", QEMU_CXL)
    assert code == 130 and err.strip() == "Error: interrupted"


# ---- item 4: a full disk keeps what was recorded valid -------------------------------------------
_FULL_DISK_CHILD = r"""
import json, os, resource, signal, sys
from cfgaudit.errors import OutputError
from cfgaudit.probes.tracefile import TraceWriter, make_header
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
ev = {"ts_ns": 1, "pid": 7, "comm": "setpci", "op": "write", "bdf": "0000:0d:00.0", "offset": 408, "size": 4,
      "data": "00000000", "via": "sysfs"}
w = TraceWriter(sys.argv[1], make_header())
try:
    for i in range(2000):
        w.write(dict(ev, ts_ns=i))
        if i % 50 == 0:
            w.flush()
    w.close({})
    print("no error")
except OutputError as err:
    print(err)
    try:
        w.write(ev)
        w.flush()
    except OutputError as again:
        print(again)
"""


@pytest.mark.parametrize("name", ["t.jsonl", "t.parquet"])
def test_a_failed_write_leaves_a_valid_file_or_none(tmp_path, name: str) -> None:
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(out)], capture_output=True, text=True,
                       timeout=60)
    first, *rest = r.stdout.splitlines()
    assert first.startswith(f"{out}: cannot write: File too large"), r.stdout + r.stderr
    if name == "t.parquet":
        assert "incomplete Parquet file was removed" in first and not out.exists()
        return
    assert rest and "recording stopped earlier" in rest[0], "later writes are refused"
    kept = int(first.split("keeps the ")[1].split()[0])
    data = out.read_bytes()
    assert 0 < len(data) <= 20000 and data.endswith(b"\n"), "whole lines only"
    assert len(data.splitlines()) == kept + 1  # the header and the kept records
    r = subprocess.run([sys.executable, "-m", "cfgaudit.cli", "analyze", str(out), "--lspci-dump", QEMU_CXL,
                        "--kernel", "6.2.0", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1) and __import__("json").loads(r.stdout)["summary"]["events"] == kept


def test_writing_to_dev_full_is_an_output_error() -> None:
    from cfgaudit.errors import OutputError
    from cfgaudit.probes.tracefile import TraceWriter, make_header

    with pytest.raises(OutputError, match="^/dev/full: cannot write: No space left on device"):
        TraceWriter("/dev/full", make_header())


def test_footer_times_are_monotonic_like_the_header(tmp_path) -> None:
    import json
    import time

    from cfgaudit.probes.tracefile import TraceWriter, make_header

    out = tmp_path / "t.jsonl"
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    TraceWriter(str(out), make_header(started_ns=t0)).close()
    foot = json.loads(out.read_text().splitlines()[-1])
    assert t0 <= foot["ended_ns"] <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert abs(foot["ended_unix_ns"] - time.time_ns()) < 60e9


# ---- low items: replay pauses, ring size, trace paths checked before the probes load ---------------
def test_replay_pauses_are_capped(tmp_path) -> None:
    from cfgaudit.probes.replay import MAX_PAUSE_S, ReplayOptions, ReplaySession

    p = tmp_path / "gap.jsonl"
    p.write_bytes(EVENT + EVENT.replace(b'"ts_ns":1', b'"ts_ns":9000000000000000000')
                  + EVENT.replace(b'"ts_ns":1', b'"ts_ns":9000000000500000000'))
    pauses: list[float] = []
    s = ReplaySession(ReplayOptions(paths=[str(p)], speed=1.0, sleep=pauses.append))
    assert sum(t.num_rows for _, t in s.paced()) == 3
    assert pauses == [MAX_PAUSE_S, 0.5]  # a 285-year gap is cut; a half-second one is kept


@pytest.mark.parametrize("speed", ["nan", "-1"])
def test_replay_speed_must_be_a_number(speed: str) -> None:
    code, out, err = run_cli("replay", "x.jsonl", "--lspci-dump", QEMU_CXL, "--speed", speed)
    assert code == EXIT_ERROR and err.startswith("Error: --speed must be a number, 0 or more"), err


@pytest.mark.parametrize("pages", [1048576, 3, 1])
def test_buffer_pages_limits_are_named(pages: int) -> None:
    from cfgaudit.errors import BackendError
    from cfgaudit.probes.bccutil import MAX_BUFFER_PAGES, check_buffer_pages

    with pytest.raises(BackendError, match=f"power of two from 2 to {MAX_BUFFER_PAGES} .*not {pages}$"):
        check_buffer_pages(pages)
    check_buffer_pages(MAX_BUFFER_PAGES)


@pytest.mark.parametrize("case", ["link", "dir", "nodir"])
def test_live_trace_path_is_checked_before_the_probes_load(tmp_path, case: str) -> None:
    from cfgaudit import LiveRun, TraceConfig
    from cfgaudit.errors import InputError

    out = {"link": tmp_path / "l.jsonl", "dir": tmp_path, "nodir": tmp_path / "no" / "t.jsonl"}[case]
    if case == "link":
        out.symlink_to(tmp_path / "target")
    # no root, no bcc needed: the path is refused before a backend is even picked
    with pytest.raises(InputError, match={"link": "symbolic link", "dir": "is a directory",
                                          "nodir": "no such directory"}[case]):
        LiveRun(TraceConfig(output=str(out), backend="no-such-backend"))


def test_a_killed_parquet_recording_points_to_its_partial_file(tmp_path) -> None:
    partial = tmp_path / "k.parquet.partial.jsonl"
    partial.write_bytes(HEADER + EVENT)  # what SIGKILL leaves: the JSON Lines recorded beside the Parquet path
    r = _check(str(tmp_path / "k.parquet"))
    assert r.returncode == EXIT_ERROR and f"a recording that did not finish left {partial}" in r.stderr, r.stderr


def test_many_tiny_parquet_row_groups_are_read_as_few_chunks(tmp_path) -> None:
    """Found by make fuzz: a Parquet trace of one-row row groups cost one analysis chunk (and one
    empty findings frame) per row: 0.1 s a row."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cfgaudit.probes.tracefile import TraceReader

    ev = json.loads(EVENT)
    t = pa.Table.from_pylist([dict(ev, ts_ns=i) for i in range(3000)])
    p = tmp_path / "tiny.parquet"
    pq.write_table(t, p, row_group_size=1)
    assert pq.ParquetFile(p).num_row_groups == 3000
    chunks = list(TraceReader(str(p), batch_rows=1000).tables())
    assert [c.num_rows for c in chunks] == [1000, 1000, 1000]
    assert [r["ts_ns"] for c in chunks for r in c.select(["ts_ns"]).to_pylist()] == list(range(3000))
