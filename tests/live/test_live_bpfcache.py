"""The compiled-program cache (probes/bpfcache.py) under a real session: a cache miss and a cache
hit record the same writes identically; -p is served by the same entry; a corrupted or tampered
entry and an unsafe directory fall back to compiling. Writes go to the fake sysfs/procfs tree."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes import bpfcache
from cfgaudit.probes.session import LiveOptions, table_events
from cfgaudit.probes.syscalls import SyscallSession

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("bpfcache") / "bpf")
    assert bpfcache.prepare_dir(d) is None
    return d


def opts(fake_tree, cache: str, **kw) -> LiveOptions:
    return LiveOptions(paths=HostPaths(sysfs=fake_tree["sysfs"], procfs=fake_tree["procfs"]), reads=True,
                       bpf_cache=cache, **kw)


def entries(cache: str) -> list[str]:
    return sorted(n for n in os.listdir(cache) if n.endswith(".entry"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def workload(fake_tree) -> None:
    """One of each way of writing (and reading) the config files, from this process."""
    fd = os.open(fake_tree["config"], os.O_RDWR)
    try:
        os.pwrite(fd, b"\x11\x22\x33\x44", 0x1A0)
        os.lseek(fd, 0x3C, os.SEEK_SET)
        os.write(fd, b"\x0c")
        os.pwritev(fd, [b"\x01\x02", b"\x03\x04"], 0x1A4)
        fd2 = os.dup(fd)
        os.pwrite(fd2, b"\xaa", 0x10)
        os.close(fd2)
        os.pread(fd, 4, 0)
    finally:
        os.close(fd)
    with open(fake_tree["proc_file"], "r+b", buffering=0) as fh:
        fh.seek(0x04)
        fh.write(b"\x06\x01")


def record(session, fake_tree, pid: int | None = None) -> list[tuple]:
    """The session's records of :func:`workload` (by this process, or by ``pid``), without the
    fields that differ from run to run (time, thread id)."""
    session.poll(10)
    workload(fake_tree)
    time.sleep(0.2)
    ev = table_events(session.poll(50).events) + table_events(session.drain().events)
    who = os.getpid() if pid is None else pid
    return [(e.op, e.bdf, e.offset, e.size, e.data, e.via, e.ret, e.comm, e.uid) for e in ev if e.pid == who]


def test_miss_then_hit_record_the_same(fake_tree, cache) -> None:
    before = open_fds()
    with SyscallSession(opts(fake_tree, cache)) as s:
        assert s.timings["cache"] == "miss" and s.warnings == [] and "compile" in s.timings
        cold = record(s, fake_tree)
    assert len(entries(cache)) == 1
    path = os.path.join(cache, entries(cache)[0])
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path).st_uid == os.geteuid()
    with SyscallSession(opts(fake_tree, cache, buffer_pages=64)) as s:  # another ring size: the same entry
        assert s.timings["cache"] == "hit" and s.warnings == [] and "compile" not in s.timings
        assert s.bpf[b"events"].max_entries == 64 * 4096
        warm = record(s, fake_tree)
    assert open_fds() == before  # maps, programs and attachments all closed
    assert warm == cold and len(cold) == 6, cold
    assert ("write", "0000:0d:00.0", 0x1A4, 4, "01020304", "sysfs", 4, cold[0][7], 0) in cold
    assert [r[5] for r in cold].count("procfs") == 1 and [r[0] for r in cold].count("read") == 1


def test_pid_filter_is_served_by_the_cache(fake_tree, cache) -> None:
    if not entries(cache):  # run alone: fill it first
        SyscallSession(opts(fake_tree, cache)).close()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with SyscallSession(opts(fake_tree, cache, pid=os.getpid())) as s:
            assert s.timings["cache"] == "hit", s.warnings
            mine = record(s, fake_tree)
        with SyscallSession(opts(fake_tree, cache, pid=child.pid)) as s:  # another process: none of ours
            assert s.timings["cache"] == "hit"
            assert record(s, fake_tree) == []
    finally:
        child.communicate(b"")
    assert len(mine) == 6 and len(entries(cache)) == 1


def test_corrupted_entry_is_compiled_again(fake_tree, cache) -> None:
    if not entries(cache):
        SyscallSession(opts(fake_tree, cache)).close()
    path = os.path.join(cache, entries(cache)[0])
    with open(path, "r+b") as fh:  # one byte of the body flipped
        fh.seek(-100, os.SEEK_END)
        b = fh.read(1)
        fh.seek(-100, os.SEEK_END)
        fh.write(bytes([b[0] ^ 0x40]))
    with SyscallSession(opts(fake_tree, cache)) as s:
        assert s.timings["cache"] == "miss" and "compile" in s.timings
        assert len(s.warnings) == 1 and "corrupted" in s.warnings[0] and "compiling it again" in s.warnings[0]
        assert len(record(s, fake_tree)) >= 6
    key = entries(cache)[0][: -len(".entry")]
    assert bpfcache.read_entry(cache, key) is not None  # saved again, whole


def test_entry_the_verifier_refuses_is_compiled_again(fake_tree, cache) -> None:
    """A well-formed entry (checksum and all) whose program the kernel does not accept: deleted,
    compiled, saved again."""
    if not entries(cache):
        SyscallSession(opts(fake_tree, cache)).close()
    key = entries(cache)[0][: -len(".entry")]
    entry = bpfcache.read_entry(cache, key)
    assert entry is not None
    # exit before r0 is set: "R0 !read_ok"
    entry["progs"][0]["insns"] = "lQAAAAAAAAA="  # base64 of one BPF_EXIT instruction
    entry["progs"][0]["relocs"] = []
    bpfcache.write_entry(cache, key, entry)
    with SyscallSession(opts(fake_tree, cache)) as s:
        assert s.timings["cache"] == "miss"
        assert len(s.warnings) == 1 and "does not load" in s.warnings[0], s.warnings
        assert len(record(s, fake_tree)) >= 6
    again = bpfcache.read_entry(cache, key)
    assert again is not None and again["progs"][0]["insns"] != "lQAAAAAAAAA="


def test_unsafe_directory_is_refused(fake_tree, tmp_path) -> None:
    d = tmp_path / "bpf"
    d.mkdir()
    os.chmod(d, 0o755)
    with SyscallSession(opts(fake_tree, str(d))) as s:
        assert s.timings["cache"] == "refused"
        assert len(s.warnings) == 1 and "mode 0755, not 0700" in s.warnings[0]
        assert len(record(s, fake_tree)) >= 6
    assert os.listdir(d) == [] and os.stat(d).st_mode & 0o777 == 0o755  # nothing written, nothing changed
