"""cfgaudit trace / run as a user runs them: exit codes, signals, trace files, lost events."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes.session import LiveOptions, table_events
from cfgaudit.probes.syscalls import SyscallSession
from support import BDF

pytestmark = pytest.mark.live

EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")


def setpci(tree: dict, *regs: str) -> list[str]:
    return ["setpci", "-A", "linux-sysfs", "-O", f"sysfs.path={tree['sysfs']}", "-s", "0d:00.0", *regs]


def cfg(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, **kw)


def test_run_reports_doe_write_on_6_2_live_and_in_trace(fake_tree, tmp_path) -> None:
    out = str(tmp_path / "run.jsonl")
    p = cfg("run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "-o", out, "--",
            *setpci(fake_tree, "0x198.L=0x80000000"))
    assert p.returncode == 1, p.stderr
    assert "exclusive+taint+log" in p.stderr and "0x198" in p.stderr
    assert "Unexpected write to kernel-exclusive config offset 198" in p.stderr
    a = cfg("analyze", out, "--format", "json")
    doc = json.loads(a.stdout)
    assert a.returncode == 1
    (f,) = [x for x in doc["findings"] if x["kind"] == "exclusive"]
    assert (f["bdf"], f["offset"], f["size"], f["comm"], f["kernel_taints"], f["kernel_logs"]) == \
        (BDF, 0x198, 4, "setpci", True, True)
    assert doc["meta"]["kernel"] == "6.2.0"


@pytest.mark.parametrize("cmd,fail_on,want", [
    (["sh", "-c", "exit 3"], "exclusive", 3),                    # clean: the command's own code
    (None, "exclusive", 1),                                       # exclusive finding
    (None, "never", 0),                                           # findings, but --fail-on never
    (["no-such-command-xyz"], "exclusive", 2),                    # cfgaudit error
])
def test_run_exit_codes(fake_tree, cmd, fail_on, want) -> None:
    cmd = cmd or setpci(fake_tree, "0x198.L=0x1")
    p = cfg("run", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "--fail-on", fail_on, "--", *cmd)
    assert p.returncode == want, p.stderr


def test_run_follows_grandchildren(fake_tree) -> None:
    inner = " ".join(setpci(fake_tree, "0x3c.B=0x7"))
    p = cfg("run", "--sysfs-path", fake_tree["sysfs"], "--fail-on", "managed", "-v", "--",
            "sh", "-c", f"sh -c '{inner}'; true")
    assert "0x3c" in p.stderr and "setpci" in p.stderr, p.stderr


def _start_trace(fake_tree, out: str) -> subprocess.Popen:
    p = subprocess.Popen([EXE, "trace", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0", "-o", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("Tracing config-space writes ... Ctrl-C to end."), line + p.stderr.read()
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signals_leave_a_readable_trace(fake_tree, tmp_path, sig) -> None:
    out = str(tmp_path / f"t-{sig.name}.jsonl")
    p = _start_trace(fake_tree, out)
    subprocess.run(setpci(fake_tree, "0x198.L=0x1", "0x19c.L=0x2"), check=True)
    time.sleep(1.5)  # the writer flushes at least once a second
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    a = cfg("analyze", out, "--format", "json")
    assert a.returncode == 1, a.stderr
    doc = json.loads(a.stdout)
    assert sorted(x["offset"] for x in doc["findings"]) == [0x198, 0x19C]
    last = open(out).read().splitlines()[-1]
    if sig == signal.SIGKILL:
        assert '"record":"footer"' not in last
    else:
        assert p.returncode == 0 and '"record":"footer"' in last
        assert "0 events lost" in stdout and "exclusive+taint+log" in stdout
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"


def test_parquet_output(fake_tree, tmp_path) -> None:
    out = str(tmp_path / "t.parquet")
    p = _start_trace(fake_tree, out)
    subprocess.run(setpci(fake_tree, "0x198.L=0x1"), check=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert not os.path.exists(out + ".partial.jsonl")
    doc = json.loads(cfg("analyze", out, "--format", "json").stdout)
    assert [x["offset"] for x in doc["findings"]] == [0x198]


def test_tiny_ring_buffer_counts_every_lost_event(fake_tree) -> None:
    """captured + lost = written, exactly, when the buffer overflows."""
    s = SyscallSession(LiveOptions(paths=HostPaths(sysfs=fake_tree["sysfs"]), buffer_pages=4, pid=os.getpid()))
    try:
        fd = os.open(fake_tree["config"], os.O_RDWR)
        s.poll(50)  # the open is resolved before the burst
        n = 20000
        for i in range(n):
            os.pwrite(fd, b"\x00", 0x40 + (i % 16))
        got = []
        for _ in range(3):
            got += table_events(s.poll(50).events)
        got += table_events(s.drain().events)
        os.close(fd)  # after the count: its CLOSE record would compete for the full buffer too
        writes = [e for e in got if e.op == "write"]
        lost = s.stats().lost
        assert lost > 0, "the burst must overflow a four-page buffer"
        assert len(writes) > 0 and len(writes) + lost == n
    finally:
        s.close()
