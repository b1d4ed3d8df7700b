"""The syscall backend says where config writes were possible through paths it cannot follow:
io_uring_setup() and opens of /dev/vfio/*, live.

This host has no /dev/vfio, and nothing may be created under its real /dev: the child that opens
"VFIO" files runs in a private mount namespace of its own (unshare -m, propagation private) with a
tmpfs mounted over /dev there, and opens regular files it created in that tmpfs. No VFIO device
is touched and the host's mounts do not change."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

import pytest

from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes.session import LiveOptions, Notice
from cfgaudit.probes.syscalls import SyscallSession

pytestmark = pytest.mark.live

EXE = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
NOT_SEEN = "not visible to the syscall backend (the kernel backend sees them)"
URING_WHAT = f"set up io_uring: writes to config files submitted through io_uring are {NOT_SEEN}"

# The child, in its private mount namespace with a tmpfs on /dev. Prints what the kernel granted:
# {"uring": fd or -errno, "open2": fd or -errno of open(2), "openat2": ...}.
CHILD = r"""
import ctypes, json, os, platform, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_ret(r):
    return r if r >= 0 else -ctypes.get_errno()
out = {}
fd = os.open("/dev/vfio/7", os.O_RDWR)                     # openat: a VFIO group file
os.close(fd)
if platform.machine() == "x86_64":                        # open(2), syscall 2 on x86_64 only
    out["open2"] = sys_ret(libc.syscall(2, b"/dev/vfio/vfio", os.O_RDONLY))
    if out["open2"] >= 0:
        os.close(out["open2"])
how = struct.pack("QQQ", os.O_RDONLY, 0, 0)               # openat2 (437): iommufd's cdev form
out["openat2"] = sys_ret(libc.syscall(437, -100, b"/dev/vfio/devices/vfio0", how, len(how)))
if out["openat2"] >= 0:
    os.close(out["openat2"])
for p in ("/dev/vfiox", "/dev/vfio/", "/dev/vfio"):       # not under /dev/vfio/: never reported
    os.close(os.open(p, os.O_RDONLY))
try:
    os.open("/dev/vfio/99", os.O_RDONLY)                   # failed: never reported
except FileNotFoundError:
    pass
params = ctypes.create_string_buffer(120)                 # struct io_uring_params
out["uring"] = sys_ret(libc.syscall(425, 4, params))      # io_uring_setup, 425 on every arch
if out["uring"] >= 0:
    os.close(out["uring"])
print(json.dumps(out), flush=True)
"""
# The shell's own creations of the files (": > /dev/vfio/7") are opens under /dev/vfio/ too, and
# are reported as such (comm "sh"), before the child's.
SETUP = ("mount -t tmpfs cfgaudit-test /dev && mkdir -p /dev/vfio/devices && : > /dev/vfio/7 && "
         ": > /dev/vfio/vfio && : > /dev/vfio/devices/vfio0 && : > /dev/vfiox && exec \"$0\" -c \"$1\"")


def child_cmd() -> list[str]:
    """The child: a private mount namespace, a tmpfs over /dev in it, then :data:`CHILD`."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to make a private /dev/vfio")
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode == 0:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP, sys.executable, CHILD]
    # In a chroot whose root is not a mount point, "/"'s propagation cannot be changed (EINVAL):
    # make the namespace's own /dev private instead, before the tmpfs goes over it (if /dev is no
    # mount point there either, the chain stops before mounting anything)
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", "mount --make-rprivate /dev && " + SETUP,
            sys.executable, CHILD]


SH_CREATES = [f"opened {p}: config writes through a VFIO device are {NOT_SEEN}"
              for p in ("/dev/vfio/7", "/dev/vfio/vfio", "/dev/vfio/devices/vfio0")]


def expected(granted: dict[str, int]) -> list[str]:
    """The notices the Python child must cause, in order, given what the kernel granted it."""
    want = [f"opened /dev/vfio/7: config writes through a VFIO device are {NOT_SEEN}"]
    if granted.get("open2", -1) >= 0:
        want.append(f"opened /dev/vfio/vfio: config writes through a VFIO device are {NOT_SEEN}")
    if granted.get("openat2", -1) >= 0:
        want.append(f"opened /dev/vfio/devices/vfio0: config writes through a VFIO device are {NOT_SEEN}")
    if granted["uring"] >= 0:
        want.append(URING_WHAT)
    return want


def test_vfio_opens_and_io_uring_setup_become_notices(fake_tree) -> None:
    s = SyscallSession(LiveOptions(paths=HostPaths(sysfs=fake_tree["sysfs"], procfs=fake_tree["procfs"])))
    try:
        have = s.stats().extra
        assert have["HAVE_IO_URING"] == os.path.isdir("/sys/kernel/tracing/events/syscalls/sys_exit_io_uring_setup")
        s.poll(50)
        p = subprocess.run(child_cmd(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        granted = json.loads(p.stdout)
        time.sleep(0.3)
        notes: list[Notice] = []
        for _ in range(3):
            notes += s.poll(50).notices
        notes += s.drain().notices
    finally:
        s.close()
    assert granted["openat2"] >= 0 and (granted.get("open2", 0) >= 0)  # regular files on a tmpfs
    mine = [n for n in notes if n.comm == os.path.basename(sys.executable)[:15] and n.kind in ("vfio", "io_uring")
            and (n.what.startswith("opened /dev/vfio") or n.what == URING_WHAT)]
    pids = {n.pid for n in mine}
    assert len(pids) == 1, mine  # the one child (sh execs python: same pid)
    if not have["HAVE_IO_URING"]:
        granted["uring"] = -1
    if platform.machine() != "x86_64" or not have["HAVE_SYS_OPEN"]:
        granted.pop("open2", None)
    assert [n.what for n in mine] == expected(granted)
    assert all(n.via == ("vfio" if n.kind == "vfio" else "unknown") for n in mine)


def test_run_records_them_and_analyze_shows_them(fake_tree, tmp_path) -> None:
    out = str(tmp_path / "run.jsonl")
    p = subprocess.run([EXE, "run", "--backend", "syscalls", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0",
                        "-o", out, "--", *child_cmd()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    granted = json.loads(p.stdout)
    if platform.machine() != "x86_64" or "sys_enter_open" not in os.listdir("/sys/kernel/tracing/events/syscalls"):
        granted.pop("open2", None)
    if "sys_exit_io_uring_setup" not in os.listdir("/sys/kernel/tracing/events/syscalls"):
        granted["uring"] = -1
    want = SH_CREATES + expected(granted)
    n_vfio = sum(w.startswith("opened /dev/vfio") for w in want)
    n_uring = int(granted["uring"] >= 0)
    # live: one NOT SEEN line per notice (wrapped under 100 columns), and the closing counts
    err = p.stderr
    assert err.count("NOT SEEN") == len(want) and "UNMEDIATED" not in err, err
    assert all(len(x) <= 100 for x in err.splitlines() if not x.startswith("cfgaudit: "))  # the live lines
    assert f"{n_vfio} open(s) of /dev/vfio/*: config writes through VFIO devices are {NOT_SEEN}" in err
    if n_uring:
        assert f"1 io_uring set-up(s): writes to config files submitted through io_uring are {NOT_SEEN}" in err
    assert "grant(s) of unmediated access" not in err
    # the trace file: one notice line each, kind included
    recs = [json.loads(x) for x in open(out) if '"record":"unmediated"' in x]
    assert [r["what"] for r in recs] == want
    assert [r["comm"] for r in recs] == ["sh"] * len(SH_CREATES) + ["python"] * (len(want) - len(SH_CREATES))
    assert len({r["pid"] for r in recs}) == 1  # sh execs python
    assert [r["kind"] for r in recs] == ["vfio"] * n_vfio + ["io_uring"] * n_uring
    footer = json.loads(open(out).read().splitlines()[-1])
    assert footer["record"] == "footer" and footer["unmediated"] == len(want)
    # analyze: the totals name each one
    a = subprocess.run([EXE, "analyze", out], capture_output=True, text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    flat = " ".join(a.stdout.split())
    shown = [r for r in recs if r["kind"] == "vfio"][:5] + [r for r in recs if r["kind"] == "io_uring"][:5]
    for r in shown:  # the first five of each kind, one by one
        assert f"pid {r['pid']} ({r['comm']}) {r['what']}" in flat, a.stdout
    if n_vfio > 5:
        assert f"... and {n_vfio - 5} more" in flat
    j = subprocess.run([EXE, "analyze", out, "--format", "json"], capture_output=True, text=True, timeout=120)
    assert [d["what"] for d in json.loads(j.stdout)["summary"]["unmediated"]] == want


def test_a_parquet_recording_keeps_them(fake_tree, tmp_path) -> None:
    """A live run into Parquet records JSON Lines beside it and converts at the end: the notices
    go into the Parquet file's metadata (cfgaudit.notices)."""
    out = str(tmp_path / "run.parquet")
    p = subprocess.run([EXE, "run", "--backend", "syscalls", "--sysfs-path", fake_tree["sysfs"], "--kernel", "6.2.0",
                        "-o", out, "--", *child_cmd()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(out + ".partial.jsonl")
    j = subprocess.run([EXE, "analyze", out, "--format", "json"], capture_output=True, text=True, timeout=120)
    notes = json.loads(j.stdout)["summary"]["unmediated"]
    assert [n["what"] for n in notes][:len(SH_CREATES)] == SH_CREATES
    assert {n["kind"] for n in notes} <= {"vfio", "io_uring"} and len(notes) > len(SH_CREATES)
