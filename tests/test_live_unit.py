"""Fast-tier checks of the live backends' pieces (no root, no bcc needed): the generated record
header, decoding, path resolution, finding bcc, detection that only looks, the session loop."""
from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pyarrow as pa
import pytest

from cfgaudit import probes
from cfgaudit.errors import BackendError
from cfgaudit.events import RECORD_FIELDS, RECORD_LAYOUTS, RECORD_TYPES, arrow_schema, c_header, record_size
from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes import bccutil, bpfcache, session, syscalls
from cfgaudit.probes.session import Batch, LiveOptions, Notice, SessionStats
from support import BDF, make_fake_tree, run_cli

BPF = os.path.join(os.path.dirname(__file__), "..", "src", "cfgaudit", "bpf")
HEADER = os.path.join(BPF, "cfgaudit_event.h")
C_SIZES = {"__u64": 8, "__s64": 8, "__u32": 4, "__s32": 4, "__u16": 2, "__u8": 1, "char": 1}


def _read(name: str) -> str:
    with open(os.path.join(BPF, name)) as fh:
        return fh.read()


# ------------------------------------------------------------------------- the record header
def test_c_header_is_generated_from_events() -> None:
    with open(HEADER) as fh:
        assert fh.read() == c_header(), "regenerate bpf/cfgaudit_event.h from events.c_header()"


def test_record_layouts_have_no_padding() -> None:
    # natural alignment: every field starts at a multiple of its size, the whole at a multiple of 8
    for layout in RECORD_LAYOUTS:
        off = 0
        for name, ctype, n, _ in RECORD_FIELDS + RECORD_LAYOUTS[layout].tail:
            assert off % C_SIZES[ctype] == 0, (layout, name)
            off += C_SIZES[ctype] * (n or 1)
        assert off == record_size(layout) and off % 8 == 0, layout
    assert record_size() == 144


def test_generated_header_covers_every_record_layout() -> None:
    """Every variant is a struct of the generated header whose size macro equals the numpy dtype
    the decoders use; the programs use those structs instead of keeping their own."""
    text = c_header()
    want = {"event": "CFGAUDIT_RECORD_SIZE", "open": "CFGAUDIT_OPEN_RECORD_SIZE",
            "kernel": "CFGAUDIT_KERNEL_RECORD_SIZE"}
    assert set(RECORD_LAYOUTS) == set(want)
    for layout, macro in want.items():
        lay = RECORD_LAYOUTS[layout]
        size = int(re.search(rf"^#define {macro} (\d+)$", text, re.M)[1])
        assert size == record_size(layout) == bccutil.record_dtype(layout).itemsize, layout
        assert f"struct {lay.c_name} {{" in text
        assert f"_Static_assert(sizeof(struct {lay.c_name}) == {macro}" in text
        for name, _, n, _ in lay.tail:
            assert re.search(rf"\t\w+ {name}\[{n}\];", text), (layout, name)
    assert bccutil.record_dtype("kernel").names[-1] == "dev" and bccutil.record_dtype("open").names[-1] == "path"
    kernel_c, sys_c = _read("cfgaudit_kernel.bpf.c"), _read("cfgaudit_syscalls.bpf.c")
    assert "struct cfgaudit_kernel_event *e" in kernel_c and "struct kernel_event" not in kernel_c
    assert not re.search(r"^#define (DEV_NAME_MAX|KV_)", kernel_c, re.M)
    assert "struct cfgaudit_open_event *e" in sys_c


def test_common_header_is_shared_and_defaults_are_one() -> None:
    common = _read(bccutil.COMMON_HEADER)
    for const in ("FOLLOW", "TRACE_READS", "RINGBUF_PAGES"):
        assert f"#ifndef {const}" in common
    assert "TARGET_PID" not in common and "BPF_ARRAY(target_pid, u32, 1)" in common  # -p: a map, filled at load
    assert re.search(r"#define RINGBUF_PAGES (\d+)", common)[1] == str(LiveOptions().buffer_pages)
    for prog in ("cfgaudit_kernel.bpf.c", "cfgaudit_syscalls.bpf.c"):
        src = _read(prog)
        assert '#include "cfgaudit_common.bpf.h"' in src
        for shared in ("BPF_RINGBUF_OUTPUT", "BPF_PERCPU_ARRAY(lost", "BPF_ARRAY(next_id", "BPF_HASH(traced",
                       "count_lost(void)", "#define RINGBUF_PAGES", "BPF_ARRAY(target_pid", "int wanted("):
            assert shared not in src, (prog, shared)


def test_program_text_puts_the_common_header_first() -> None:
    text = bccutil.program_text(syscalls.SYSCALL_PROGRAM)
    first, second = [m.start() for m in re.finditer(r'^#line 1 "', text, re.M)]
    assert first == 0 and text.index("CFGAUDIT_COMMON_BPF_H") < second < text.index("TRACEPOINT_PROBE")
    assert text.count("#line 1 ") == 2


# ------------------------------------------------------------------------- constants, options
def test_constants_are_compiler_flags_never_splicing() -> None:
    s = object.__new__(syscalls.SyscallSession)
    s.opts = LiveOptions(paths=HostPaths(sysfs="/x/sy\"s", procfs="/p"), pid=7, follow=True, buffer_pages=8)
    flags = bccutil.define_flags(s.constants())
    assert "-DFOLLOW=1" in flags and "-DTRACE_READS=0" in flags
    assert not any("TARGET_PID" in f for f in flags)  # the pid is a map value: one compile serves every -p
    assert "-DRINGBUF_PAGES=8" in flags and '-DPROCFS_PATH="/p"' in flags
    assert '-DSYSFS_PATH="/x/sy\\"s"' in flags
    with pytest.raises(BackendError, match="control characters"):
        bccutil.define_flags({"SYSFS_PATH": "/a\nb"})
    src = _read(syscalls.SYSCALL_PROGRAM)
    for const in ("SYSFS_PATH", "PROCFS_PATH"):
        assert f"#ifndef {const}" in src
    for mod in (session, syscalls, bccutil, bpfcache, probes.kernel):
        with open(mod.__file__) as fh:
            code = fh.read()
        assert ".replace(" not in code and not re.search(r"sys\.path\.(append|insert)|sys\.path\s*=", code), \
            mod.__name__


@pytest.mark.parametrize("pages", [0, 1, 3, 1000])
def test_buffer_pages_must_be_a_power_of_two(pages) -> None:
    with pytest.raises(BackendError, match="power of two"):
        syscalls.SyscallSession(LiveOptions(buffer_pages=pages))


# ------------------------------------------------------------------------- records
def _records(layout: str = "event", **kw) -> np.ndarray:
    r = np.zeros(1, dtype=bccutil.record_dtype(layout))
    base = dict(ts_ns=123, offset=0x198, ret=4, size=4, file_id=7, pid=1000, tid=1001, uid=0, fd=5, aux=0,
                type=RECORD_TYPES["EV_WRITE"], data_len=4, comm=b"setpci")
    base.update(kw)
    data = base.pop("data", b"\0\0\0\x80")
    for k, v in base.items():
        r[k] = v
    r["data"][0, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return r


def test_decode_record() -> None:
    rec = syscalls.decode_record(_records(data=b"\0\0\0\x80" + b"\xff" * 60).tobytes())
    assert (rec["ts_ns"], rec["offset"], rec["pid"], rec["comm"], rec["data"]) == \
        (123, 0x198, 1000, "setpci", b"\0\0\0\x80")
    opened = _records("open", type=RECORD_TYPES["EV_OPEN"], data_len=0, path=b"/sys/bus/pci/x").tobytes()
    assert len(opened) == record_size("open") and syscalls.decode_record(opened)["path"] == "/sys/bus/pci/x"


def test_resolve_config_path(tmp_path) -> None:
    d = tmp_path / "sys" / "devices" / "0000:0d:00.0"
    d.mkdir(parents=True)
    (d / "config").write_bytes(b"")
    proc = tmp_path / "proc" / "0d"
    proc.mkdir(parents=True)
    (proc / "00.0").write_bytes(b"")
    paths = HostPaths(sysfs=str(tmp_path / "sys"), procfs=str(tmp_path / "proc"))
    r = syscalls.resolve_config_path
    assert r(str(d / "config"), paths) == ("0000:0d:00.0", "sysfs")
    assert r(str(proc / "00.0"), paths) == ("0000:0d:00.0", "procfs")
    assert r(str(tmp_path / "config"), paths) is None
    assert r("/etc/passwd", paths) is None
    assert r("/sys/devices/pci0000:00/0000:00:02.0/config", HostPaths()) == \
        (("0000:00:02.0", "sysfs") if os.path.exists("/sys/bus/pci/devices/0000:00:02.0") else None)


class _FakeFds(dict):
    """Stands in for the program's ``fds`` map (what _on_open may delete from)."""

    def Key(self, *k):  # noqa: N802 (bcc's name)
        return k


class _FakeBpf:
    def __init__(self) -> None:
        self.maps = {b"fds": _FakeFds()}

    def __getitem__(self, name: bytes):
        return self.maps[name]


def test_syscall_decode_resolves_opens_and_decodes_runs(tmp_path) -> None:
    """OPEN records between runs of fixed-size records: the open is resolved (from PROC/PID/fd)
    before the writes after it are decoded; writes on other files are dropped and counted."""
    tree = make_fake_tree(str(tmp_path))
    s = object.__new__(syscalls.SyscallSession)
    s.opts = LiveOptions(paths=HostPaths(sysfs=tree["sysfs"], procfs=tree["procfs"]))
    s._files, s.dropped_other, s.unresolved, s.bpf = {}, 0, 0, _FakeBpf()
    fd = os.open(tree["config"], os.O_RDWR)
    try:
        me = os.getpid()
        opened = _records("open", type=RECORD_TYPES["EV_OPEN"], pid=me, fd=fd, file_id=9, data_len=0,
                          path=tree["config"].encode()).tobytes()
        w1 = _records(pid=me, fd=fd, file_id=9, offset=0x3c, size=1, ret=1, data_len=1, data=b"\x0b").tobytes()
        other = _records(pid=me, fd=99, file_id=4).tobytes()
        w2 = _records(pid=me, fd=fd, file_id=9, type=RECORD_TYPES["EV_READ"], data_len=0).tobytes()
        close = _records(pid=me, fd=fd, file_id=9, type=RECORD_TYPES["EV_CLOSE"], data_len=0).tobytes()
        b = s.decode([other, opened, w1, close, w2], odd=[1])
    finally:
        os.close(fd)
    rows = b.events.to_pylist()
    assert b.events.schema == arrow_schema() and b.notices == []
    assert [(r["op"], r["bdf"], r["offset"], r["data"], r["via"]) for r in rows] == \
        [("write", BDF, 0x3c, "0b", "sysfs"), ("read", BDF, 0x198, None, "sysfs")]
    assert s.dropped_other == 1 and s.unresolved == 0


def test_unmediated_records_become_notices() -> None:
    s = object.__new__(syscalls.SyscallSession)
    s.opts, s._files, s.dropped_other, s.unresolved = LiveOptions(), {}, 0, 0
    um = _records(type=RECORD_TYPES["EV_UNMEDIATED"], aux=1, offset=0xcf8, size=8, data_len=0).tobytes()
    b = s.decode([um], odd=[])
    assert b.events.num_rows == 0 and len(b.notices) == 1
    n = b.notices[0]
    assert n.what.startswith("ioperm(0xcf8, 8, 1)") and n.via == "ioport"
    assert Notice.from_record(n.to_record()) == n


# ------------------------------------------------------------------------- bcc
def _without_bcc(monkeypatch) -> None:
    for name in [n for n in sys.modules if n == "bcc" or n.startswith("bcc.")]:
        monkeypatch.delitem(sys.modules, name)


def _restore_modules(saved: dict) -> None:
    for name in [n for n in sys.modules if n == "bcc" or n.startswith("bcc.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_bcc_missing_gives_the_distribution_hint(monkeypatch) -> None:
    import importlib.util

    _without_bcc(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bcc" else real(name, *a))
    with pytest.raises(BackendError) as ei:
        bccutil.import_bcc(search=())
    assert "python3-bpfcc" in str(ei.value) and "python3-bcc" in str(ei.value) and "unrelated" in str(ei.value)


def test_a_bcc_that_is_not_bcc_is_named(tmp_path, monkeypatch) -> None:
    saved = {n: m for n, m in sys.modules.items() if n == "bcc" or n.startswith("bcc.")}
    (tmp_path / "bcc").mkdir()
    (tmp_path / "bcc" / "__init__.py").write_text('"""PyPI\'s unrelated bcc."""\n')
    _without_bcc(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(BackendError, match="is not BPF Compiler Collection.*unrelated"):
            bccutil.import_bcc()
    finally:
        _restore_modules(saved)


def test_bcc_is_found_without_changing_sys_path(monkeypatch) -> None:
    found = [d for pattern in bccutil.BCC_DIRS for d in __import__("glob").glob(pattern)
             if os.path.exists(os.path.join(d, "bcc", "__init__.py"))]
    if not found:
        pytest.skip("bcc is not installed here")
    saved = {n: m for n, m in sys.modules.items() if n == "bcc" or n.startswith("bcc.")}
    _without_bcc(monkeypatch)
    before = list(sys.path)
    try:
        mod = bccutil.import_bcc()
        assert hasattr(mod, "BPF") and sys.modules["bcc"] is mod
        assert hasattr(sys.modules["bcc.table"], "RingBuf")  # submodules load from the package directory
        assert sys.path == before
    finally:
        _restore_modules(saved)


# ------------------------------------------------------------------------- detection only looks
def test_detect_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in syscalls.detect_syscalls()
    rows = {r["backend"]: r for r in probes.backend_table()}
    assert not rows["syscalls"]["available"] and "root" in rows["syscalls"]["reason"]
    assert rows["replay"]["available"]
    with pytest.raises(BackendError, match="doctor"):
        probes.pick_backend("auto")


def test_doctor_cli_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, _ = run_cli("doctor", "--format", "json")
    rows = {r["backend"]: r for r in json.loads(out)}
    assert code == 0 and not rows["syscalls"]["available"] and "root" in rows["syscalls"]["reason"]


def test_detection_leaves_mounts_alone(tmp_path, monkeypatch) -> None:
    """Detection with tracefs pointing at an empty directory: available (the session would mount
    it at start, and the doctor row says so), and nothing is mounted or created."""
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    paths = HostPaths(sysfs=str(tmp_path / "sys"), procfs=str(tmp_path / "procbus"), proc=str(tmp_path / "proc"),
                      tracefs=(str(tracing),))

    def no_commands(*a, **k):
        raise AssertionError(f"detection ran a command: {a}")

    monkeypatch.setattr(bccutil.subprocess, "run", no_commands)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for mod in (syscalls, probes.kernel):
        monkeypatch.setattr(mod, "bcc_problem", lambda: None)
        monkeypatch.setattr(mod, "headers_problem", lambda: None)
    monkeypatch.setattr(probes.kernel, "kprobes_available", lambda tracefs=None: None)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "kallsyms").write_text("".join(f"0 T pci_user_write_config_{w}\n"
                                                        for w in ("byte", "word", "dword")))
    assert syscalls.detect_syscalls(paths) is None
    assert probes.kernel.detect_kernel(paths) is None
    rows = {r["backend"]: r for r in probes.backend_table(paths)}
    assert rows["syscalls"]["available"] and "mounts it when it starts" in rows["syscalls"]["note"]
    assert str(tracing) in rows["kernel"]["note"]
    assert list(tracing.iterdir()) == [] and not os.path.ismount(tracing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proc", "tracing"]
    # a session needs it mounted: not mountable (not root) is a reason, mountable-but-not-yet is not
    assert "not mounted" in bccutil.tracefs_problem(paths, syscalls.TRACEPOINTS, mountable_ok=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "not mounted" in bccutil.tracefs_problem(paths, syscalls.TRACEPOINTS, mountable_ok=True)


def test_prepare_host_mounts_what_is_missing(tmp_path, monkeypatch) -> None:
    (tmp_path / "tracing").mkdir()
    (tmp_path / "debug").mkdir()
    paths = HostPaths(tracefs=(str(tmp_path / "tracing"), str(tmp_path / "debug" / "tracing")))
    plan = [("tracefs", str(tmp_path / "tracing")), ("debugfs", str(tmp_path / "debug"))]
    assert bccutil.mount_plan(paths) == plan
    ran: list[list[str]] = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    monkeypatch.setattr(bccutil.subprocess, "run", lambda cmd, **k: ran.append(cmd) or Done())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert all(line.startswith("not root") for line in probes.prepare_host(paths)) and ran == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert probes.prepare_host(paths) == [f"mounted {t} on {w}" for t, w in plan]
    assert ran == [["mount", "-t", t, "nodev", w] for t, w in plan]
    (tmp_path / "tracing" / "events").mkdir()  # as if mounted
    assert bccutil.mount_plan(HostPaths(tracefs=(str(tmp_path / "tracing"),))) == []


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(BackendError, match="no live backend 'warp'"):
        probes.pick_backend("warp")
    with pytest.raises(BackendError, match="no live backend 'replay'"):
        probes.pick_backend("replay")


# ------------------------------------------------------------------------- the session loop
class _Scripted:
    """A Session that hands out scripted batches (the protocol without a kernel)."""

    name = "scripted"

    def __init__(self, batches: list[Batch], rest: Batch) -> None:
        self.batches, self.rest, self.calls = list(batches), rest, []

    def start(self) -> None:
        self.calls.append("start")

    def poll(self, timeout_ms: int = 100) -> Batch:
        self.calls.append(f"poll {timeout_ms}")
        return self.batches.pop(0) if self.batches else Batch.empty()

    def drain(self) -> Batch:
        self.calls.append("drain")
        return self.rest

    def stats(self) -> SessionStats:
        return SessionStats()

    def follow_pid(self, pid: int) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def test_run_hands_over_non_empty_batches_then_drains() -> None:
    one = Batch(_one_event(), [])
    note = Batch(session.EMPTY_EVENTS, [Notice(1, 2, "x", "what", "ioport")])
    s = _Scripted([one, Batch.empty(), note], Batch(_one_event(), []))
    assert isinstance(s, session.Session)
    got: list[Batch] = []
    polls = iter(range(10))
    session.run(s, got.append, lambda: next(polls) >= 4, poll_ms=7)
    assert s.calls == ["start"] + ["poll 7"] * 4 + ["drain"]
    assert got == [one, note, Batch(_one_event(), [])]


def _one_event() -> pa.Table:
    return pa.Table.from_pylist([dict(ts_ns=1, pid=7, comm="setpci", op="write", bdf=BDF, offset=0x198, size=4)],
                                schema=arrow_schema())
