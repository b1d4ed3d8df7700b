"""cfgaudit record as a service runs: rotation by size, time and SIGHUP, SIGTERM and SIGKILL, a
restart that recovers and continues the numbering, --keep-bytes, losses, the metrics file. Writes
go to the fake tree's regular files only (setpci -A linux-sysfs -O sysfs.path=FAKE), never to
this machine's config space."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cfgaudit import record
from cfgaudit.probes.tracefile import PARTIAL_SUFFIX, TraceReader

pytestmark = pytest.mark.live

EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
HOST = "live-test"


def setpci(tree: dict, *regs: str) -> None:
    subprocess.run(["setpci", "-A", "linux-sysfs", "-O", f"sysfs.path={tree['sysfs']}", "-s", "0d:00.0", *regs],
                   check=True)


def start(tree: dict, out: str, *args: str) -> subprocess.Popen:
    p = subprocess.Popen([EXE, "record", out, "--host", HOST, "--sysfs-path", tree["sysfs"], "--procfs-path",
                          tree["procfs"], "--kernel", "6.2.0", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("Recording config-space accesses into"):
        p.kill()
        pytest.fail(line + p.stderr.read())
    return p


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    if sig != signal.SIGKILL:
        assert p.returncode == 0, err
    return out, err


def segments(out: str) -> list[str]:
    hdir = record.host_dir(out, HOST)
    return [os.path.join(hdir, n) for n in sorted(os.listdir(hdir)) if n.endswith(".parquet")]


def analyze(path: str) -> tuple[int, dict]:
    a = subprocess.run([EXE, "analyze", path, "--format", "json"], capture_output=True, text=True, timeout=120)
    assert a.returncode in (0, 1), a.stderr
    return a.returncode, json.loads(a.stdout)


def metrics(path: str) -> dict[str, float]:
    got = {}
    for line in open(path).read().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            got[re.sub(r'host="[^"]*",?', "", name).replace("{}", "")] = float(value)
    return got


def check_segment(path: str, want_seq: int) -> dict:
    """A closed segment on its own: header facts, footer counts, and analyze agreeing with them."""
    r = TraceReader(path)
    h, f = r.header, r.footer
    assert h["host"] == HOST and h["segment"]["seq"] == want_seq and h["backend"] == "syscalls"
    assert h["boot_id"] == open("/proc/sys/kernel/random/boot_id").read().strip() and h["snapshot"]["devices"]
    assert f["closed_by"] in record.CLOSED_BY and f["events"] == sum(t.num_rows for t in r.tables())
    code, doc = analyze(path)
    assert doc["summary"]["events"] == f["events"] and doc["summary"]["lost"] == (f["lost"] or 0)
    owned = [x for x in doc["findings"] if x["kind"] == "exclusive" and x["offset"] == 0x198]
    assert len(owned) == len(doc["findings"]) == f["events"] and code == (1 if f["events"] else 0)
    return f


def test_size_sighup_sigterm_and_metrics(fake_tree, tmp_path) -> None:
    out, prom = str(tmp_path / "rec"), str(tmp_path / "cfgaudit.prom")
    p = start(fake_tree, out, "--rotate-bytes", "12K", "--metrics", prom)
    n = 0
    for _ in range(6):  # 20 writes a call: each batch adds some 3 KB to the open segment
        setpci(fake_tree, *["0x198.L=0x1"] * 20)
        n += 20
        time.sleep(0.3)
    time.sleep(0.5)
    p.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    setpci(fake_tree, "0x198.L=0x1")
    n += 1
    time.sleep(0.5)
    _, err = stop(p)
    segs = segments(out)
    footers = [check_segment(s, i) for i, s in enumerate(segs, 1)]
    why = [f["closed_by"] for f in footers]
    assert why[-1] == "sigterm" and why[-2] == "sighup" and why.count("size") >= 2, why
    assert sum(f["events"] for f in footers) == n and footers[-1]["events"] == 1
    assert not [x for x in os.listdir(os.path.dirname(segs[0])) if x.endswith((PARTIAL_SUFFIX, ".tmp"))]
    assert f"segment {len(segs)} closed (sigterm)" in err
    m = metrics(prom)
    assert m["cfgaudit_accesses_total"] == n == m['cfgaudit_findings_total{kind="exclusive"}']
    assert m["cfgaudit_segments_closed_total"] == len(segs) and m["cfgaudit_open_segment_seq"] == 0
    assert m["cfgaudit_lost_events_total"] == sum(f["lost"] for f in footers) == 0
    assert m["cfgaudit_disk_bytes"] == sum(os.path.getsize(s) for s in segs)
    assert oct(os.stat(prom).st_mode & 0o777) == "0o644" and not os.path.exists(prom + ".tmp")


def test_time_sigkill_restart_and_keep_bytes(fake_tree, tmp_path) -> None:
    out = str(tmp_path / "rec")
    p = start(fake_tree, out, "--rotate-seconds", "2")
    setpci(fake_tree, "0x198.L=0x1")
    time.sleep(2.6)  # segment 1 closes by age
    setpci(fake_tree, "0x198.L=0x1", "0x198.L=0x2")
    time.sleep(0.6)  # flushed every batch
    stop(p, signal.SIGKILL)
    (closed,) = segments(out)
    assert check_segment(closed, 1)["closed_by"] == "time"
    partial = [os.path.join(os.path.dirname(closed), x) for x in os.listdir(os.path.dirname(closed))
               if x.endswith(PARTIAL_SUFFIX)]
    assert len(partial) == 1 and record.segment_seq(os.path.basename(partial[0])) == 2
    code, doc = analyze(partial[0])  # the open segment a crash left is readable as it is
    assert code == 1 and doc["summary"]["events"] == 2 and len(doc["findings"]) == 2

    # a restart converts it and continues the numbering
    p = start(fake_tree, out, "--rotate-seconds", "2")
    setpci(fake_tree, "0x198.L=0x1")
    time.sleep(0.5)
    _, err = stop(p, signal.SIGINT)
    segs = segments(out)
    assert [record.segment_seq(os.path.basename(s)) for s in segs] == [1, 2, 3]
    rec = check_segment(segs[1], 2)
    assert (rec["closed_by"], rec["events"], rec["lost"]) == ("recovered", 2, None)
    assert "recovered seg-00000002" in err and check_segment(segs[2], 3)["closed_by"] == "sigint"

    # --keep-bytes: the oldest go first; the newest stay
    sizes = [os.path.getsize(s) for s in segs]
    p = start(fake_tree, out, "--keep-bytes", str(sizes[2] + max(sizes) + 100))
    time.sleep(0.3)
    stop(p)
    left = [record.segment_seq(os.path.basename(s)) for s in segments(out)]
    assert left == [3, 4], left


def test_losses_are_counted_in_footers_and_metrics(fake_tree, tmp_path) -> None:
    """A four-page ring buffer and a burst: every write is in a segment or counted lost."""
    out, prom = str(tmp_path / "rec"), str(tmp_path / "m.prom")
    p = start(fake_tree, out, "--buffer-pages", "4", "--comm", "burst-writer", "--metrics", prom)
    n = 20000
    burst = ("import os, sys, time, ctypes\n"
             "ctypes.CDLL(None).prctl(15, b'burst-writer', 0, 0, 0)\n"  # PR_SET_NAME: the comm -n follows
             "fd = os.open(sys.argv[1], os.O_RDWR)\ntime.sleep(0.3)\n"
             f"for i in range({n}):\n    os.pwrite(fd, b'\\x00', 0x198)\n"
             "time.sleep(1.0)\nos.close(fd)\n")
    subprocess.run([sys.executable, "-c", burst, fake_tree["config"]], check=True)
    time.sleep(0.5)
    stop(p)
    footers = [TraceReader(s).footer for s in segments(out)]
    lost = sum(f["lost"] for f in footers)
    assert lost > 0, "the burst must overflow a four-page buffer"
    got = sum(f["events"] for f in footers)
    # every write is recorded or counted lost (lost counts every record the buffer refused, also
    # those of other syscalls: opens, closes, other processes before the user-space filter)
    assert got < n <= got + lost < n + 100
    for s, f in zip(segments(out), footers):
        assert analyze(s)[1]["summary"]["lost"] == f["lost"]
    m = metrics(prom)
    assert m["cfgaudit_lost_events_total"] == lost and m["cfgaudit_accesses_total"] == got
