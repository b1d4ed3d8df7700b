"""Fast-tier checks of the live backend's pieces (no root, no bcc needed)."""
from __future__ import annotations

import os
import struct

import pytest

from cfgaudit import probes
from cfgaudit.errors import BackendError
from cfgaudit.events import RECORD_FIELDS, RECORD_TYPES, c_header, record_size
from cfgaudit.probes import live
from common import run_cli

HEADER = os.path.join(os.path.dirname(__file__), "..", "src", "cfgaudit", "bpf", "cfgaudit_event.h")


def test_c_header_is_generated_from_events() -> None:
    with open(HEADER) as fh:
        assert fh.read() == c_header(), "regenerate bpf/cfgaudit_event.h from events.c_header()"


def test_record_layout_has_no_padding() -> None:
    # natural alignment: every field starts at a multiple of its size
    off = 0
    sizes = {"__u64": 8, "__s64": 8, "__u32": 4, "__s32": 4, "__u16": 2, "__u8": 1, "char": 1}
    for name, ctype, n, _ in RECORD_FIELDS:
        assert off % sizes[ctype] == 0, name
        off += sizes[ctype] * (n or 1)
    assert off == record_size() == live.record_struct().size == 144
    assert off % 8 == 0


def test_decode_record_roundtrip() -> None:
    st = live.record_struct()
    raw = st.pack(123, 0x198, 4, 4, 7, 1000, 1001, 0, 5, 0, RECORD_TYPES["EV_WRITE"], 4, b"setpci\0",
                  b"\x00\x00\x00\x80" + b"\xff" * 60)
    rec = live.decode_record(raw)
    assert (rec["ts_ns"], rec["offset"], rec["pid"], rec["comm"], rec["data"]) == (123, 0x198, 1000, "setpci", b"\0\0\0\x80")
    opened = st.pack(1, -1, 3, 0, 9, 1, 1, 0, 3, 2, RECORD_TYPES["EV_OPEN"], 0, b"x\0", b"") + b"/sys/bus/pci/x\0junk"
    assert live.decode_record(opened)["path"] == "/sys/bus/pci/x"


def test_resolve_config_path(tmp_path) -> None:
    d = tmp_path / "sys" / "devices" / "0000:0d:00.0"
    d.mkdir(parents=True)
    (d / "config").write_bytes(b"")
    proc = tmp_path / "proc" / "0d"
    proc.mkdir(parents=True)
    (proc / "00.0").write_bytes(b"")
    r = live.resolve_config_path
    assert r(str(d / "config"), str(tmp_path / "sys"), str(tmp_path / "proc")) == ("0000:0d:00.0", "sysfs")
    assert r(str(proc / "00.0"), str(tmp_path / "sys"), str(tmp_path / "proc")) == ("0000:0d:00.0", "procfs")
    assert r(str(tmp_path / "config"), str(tmp_path / "sys"), str(tmp_path / "proc")) is None
    assert r("/etc/passwd", str(tmp_path / "sys"), str(tmp_path / "proc")) is None
    assert r("/sys/devices/pci0000:00/0000:00:02.0/config", "/sys/bus/pci", "/proc/bus/pci") == \
        (("0000:00:02.0", "sysfs") if os.path.exists("/sys/bus/pci/devices/0000:00:02.0") else None)


def test_detect_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in live.detect_syscalls()
    code, out, _ = run_cli("doctor", "--format", "json")
    import json
    rows = {r["backend"]: r for r in json.loads(out)}
    assert code == 0 and not rows["syscalls"]["available"] and "root" in rows["syscalls"]["reason"]
    assert rows["replay"]["available"]
    with pytest.raises(BackendError, match="doctor"):
        probes.pick_backend("auto")


def test_bcc_missing_gives_the_distribution_hint(monkeypatch) -> None:
    import builtins
    import glob
    import sys

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "bcc":
            raise ImportError("no bcc")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(glob, "glob", lambda p: [])
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    monkeypatch.delitem(sys.modules, "bcc", raising=False)
    with pytest.raises(BackendError) as ei:
        live.import_bcc()
    assert "python3-bpfcc" in str(ei.value) and "python3-bcc" in str(ei.value) and "unrelated" in str(ei.value)


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(BackendError, match="no live backend 'warp'"):
        probes.pick_backend("warp")


def test_bpf_sources_use_constants_not_splicing() -> None:
    """Filters go in as -D constants; the C source is never edited at run time."""
    src = open(os.path.join(live.BPF_DIR, live.SYSCALL_PROGRAM)).read()
    for const in ("TARGET_PID", "FOLLOW", "TRACE_READS", "RINGBUF_PAGES", "SYSFS_PATH", "PROCFS_PATH"):
        assert f"#ifndef {const}" in src
    code = open(live.__file__).read()
    assert ".replace(" not in code
