"""Fast-tier checks of the kernel-function backend's pieces (no root, no bcc, no kprobes)."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from cfgaudit import probes
from cfgaudit.errors import BackendError
from cfgaudit.events import KERNEL_VIAS, RECORD_TYPES, arrow_schema, c_header, record_size
from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes import kernel
from cfgaudit.probes.session import table_events

PROG = os.path.join(os.path.dirname(__file__), "..", "src", "cfgaudit", "bpf", "cfgaudit_kernel.bpf.c")

# available_filter_functions of a 6.1-like kernel (trimmed), vfio_pci_core loaded
AFF = """\
pci_user_read_config_byte
pci_user_read_config_word
pci_user_read_config_dword
pci_user_write_config_byte
pci_user_write_config_word
pci_user_write_config_dword
pci_read_config
pci_write_config
proc_bus_pci_read
proc_bus_pci_write
resource_is_exclusive
iomem_is_exclusive
vfio_pci_config_rw [vfio_pci_core]
"""

# /proc/kallsyms lines: an older kernel without resource_is_exclusive; pci_write_config only as
# a GCC clone (plus its .cold part), a data symbol that must not count
KALLSYMS = """\
ffffffff81c8ace0 T pci_user_write_config_byte
ffffffff81c8ad40 T pci_user_write_config_word
ffffffff81c8ada0 T pci_user_write_config_dword
ffffffff81230597 t pci_write_config.cold
ffffffff81cac160 t pci_write_config.isra.0
ffffffff81cac400 t proc_bus_pci_write.part.0
ffffffff82a00000 d proc_bus_pci_write
ffffffff8136cde0 T iomem_is_exclusive
"""


def test_attach_points_from_available_filter_functions() -> None:
    got = kernel.find_attach_points(AFF)
    assert got["write_byte"] == "pci_user_write_config_byte"
    assert got["sysfs_write"] == got["sysfs_write_ret"] == "pci_write_config"
    assert got["procfs_write"] == "proc_bus_pci_write"
    assert got["vfio_rw"] == "vfio_pci_config_rw"
    assert got["verdict"] == "resource_is_exclusive"
    assert "sysfs_read" not in got  # read probes only with --reads
    reads = kernel.find_attach_points(AFF, reads=True)
    assert reads["sysfs_read"] == "pci_read_config" and reads["procfs_read_ret"] == "proc_bus_pci_read"


def test_attach_points_from_kallsyms_clones_and_missing() -> None:
    got = kernel.find_attach_points(KALLSYMS)
    assert got["write_dword"] == "pci_user_write_config_dword"
    assert got["sysfs_write"] == "pci_write_config.isra.0"  # the entry clone, never .cold
    assert got["procfs_write"] is None  # .part.N is a piece; 'd' is data
    assert got["verdict"] is None  # before 278294798ac9 (v6.2 / 6.1.53) there is no such function
    assert got["vfio_rw"] is None


def test_resolve_symbol() -> None:
    syms = {"f.constprop.0.isra.0", "g.cold", "g.part.1", "h", "h.isra.0"}
    assert kernel.resolve_symbol("f", syms) == "f.constprop.0.isra.0"
    assert kernel.resolve_symbol("g", syms) is None
    assert kernel.resolve_symbol("h", syms) == "h"


def test_kprobes_available(tmp_path) -> None:
    assert kernel.kprobes_available(str(tmp_path / "nope"), str(tmp_path)) is not None
    (tmp_path / "kprobe_events").write_text("")
    assert kernel.kprobes_available(str(tmp_path / "nope"), str(tmp_path)) is None
    pmu = tmp_path / "pmu"
    pmu.mkdir()
    assert kernel.kprobes_available(str(pmu), str(tmp_path / "none")) is None


def test_detect_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in kernel.detect_kernel()
    with pytest.raises(BackendError):
        kernel.KernelSession(kernel.LiveOptions())


def test_detect_names_missing_accessors(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernel, "kprobes_available", lambda tracefs=None: None)
    monkeypatch.setattr(kernel, "bcc_problem", lambda: None)
    monkeypatch.setattr(kernel, "headers_problem", lambda: None)
    monkeypatch.setattr(kernel, "tracefs_problem", lambda *a, **k: None)
    monkeypatch.setattr(kernel, "attachable_text", lambda paths: "pci_user_write_config_byte\n")
    why = kernel.detect_kernel()
    assert "pci_user_write_config_word" in why and "pci_user_write_config_dword" in why
    monkeypatch.setattr(kernel, "attachable_text", lambda paths: AFF)
    assert kernel.detect_kernel() is None


def test_attachable_text_from_tracefs_else_kallsyms(tmp_path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "kallsyms").write_text(KALLSYMS)
    tracing = tmp_path / "tracing"
    paths = HostPaths(proc=str(tmp_path / "proc"), tracefs=(str(tracing),))
    assert kernel.attachable_text(paths) == KALLSYMS  # tracefs not mounted
    (tracing / "events").mkdir(parents=True)
    (tracing / "available_filter_functions").write_text(AFF)
    assert kernel.attachable_text(paths) == AFF


def test_auto_prefers_kernel_then_syscalls(monkeypatch) -> None:
    assert probes.LIVE_ORDER[0] == "kernel" and "syscalls" in probes.LIVE_ORDER
    calls = []
    fake = dict(probes.BACKENDS)
    fake["kernel"] = probes.Backend("kernel", "", True, lambda p: calls.append("k") or "no kprobes", lambda o: None)
    fake["syscalls"] = probes.Backend("syscalls", "", True, lambda p: calls.append("s") or None, lambda o: None)
    monkeypatch.setattr(probes, "BACKENDS", fake)
    assert probes.pick_backend("auto").name == "syscalls" and calls == ["k", "s"]
    fake["kernel"] = probes.Backend("kernel", "", True, lambda p: None, lambda o: None)
    assert probes.pick_backend("auto").name == "kernel"


# ------------------------------------------------------------------------- records
def _c_define(name: str) -> int:
    m = re.search(rf"^#define {name} (\d+)", c_header(), re.M)
    assert m, name
    return int(m[1])


def test_program_constants_match_python() -> None:
    """The via codes, verdicts and the device-name tail come from events.py through the
    generated header; the program uses them and keeps no copies."""
    assert _c_define("CFGAUDIT_DEV_NAME_MAX") == kernel.DEV_NAME_MAX
    for code, via in kernel.VIA_CODES.items():
        assert _c_define(f"KV_{via.upper()}") == code == KERNEL_VIAS[f"KV_{via.upper()}"]
    assert {_c_define(f"KVERDICT_{v}") for v in ("NONE", "FALSE", "TRUE")} == set(kernel.VERDICTS)
    assert kernel.KERNEL_RECORD_SIZE == record_size("kernel") == record_size() + kernel.DEV_NAME_MAX
    with open(PROG) as fh:
        src = fh.read()
    for ap in kernel.ATTACH_POINTS:  # every probe function exists in the program
        assert re.search(rf"^int {ap.fn}\(struct pt_regs \*ctx", src, re.M), ap.fn


def _rec(**kw):
    r = np.zeros(1, dtype=kernel.kernel_dtype())
    base = dict(ts_ns=1, offset=0x198, ret=4, size=4, file_id=1, pid=100, tid=101, uid=0, fd=-1, aux=1,
                type=RECORD_TYPES["EV_WRITE"], data_len=4, comm=b"setpci", dev=b"0000:0d:00.0")
    base.update(kw)
    data = base.pop("data", b"\0\0\0\x80")
    for k, v in base.items():
        r[k] = v
    r["data"][0, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return r.tobytes()


def test_decode_via_and_verdict() -> None:
    raw = (_rec(aux=1 | 2 << 8) + _rec(ts_ns=2, aux=2 | 1 << 8, comm=b"cfgpoke") + _rec(ts_ns=3, aux=3)
           + _rec(ts_ns=4, aux=0, offset=0x3c, size=1, ret=1, data_len=1, data=b"\x0b"))
    t, dropped = kernel.decode_kernel_records(raw)
    rows = t.to_pylist()
    assert dropped == 0 and len(rows) == 4
    assert [r["via"] for r in rows] == ["sysfs", "procfs", "vfio", "unknown"]
    assert [r["kernel_verdict"] for r in rows] == [True, False, None, None]
    assert rows[0]["data"] == "00000080" and rows[0]["bdf"] == "0000:0d:00.0" and rows[0]["op"] == "write"
    assert rows[3]["data"] == "0b" and rows[3]["offset"] == 0x3c and rows[3]["size"] == 1
    assert rows[1]["comm"] == "cfgpoke" and rows[1]["tid"] == 101 and rows[1]["ret"] == 4
    assert t.schema == arrow_schema()


def test_decode_filters_and_drops() -> None:
    raw = (_rec() + _rec(dev=b"") + _rec(comm=b"other") + _rec(dev=b"0000:00:02.0")
           + _rec(type=RECORD_TYPES["EV_READ"], data_len=0, ret=-14))
    t, dropped = kernel.decode_kernel_records(raw)
    assert dropped == 1 and t.num_rows == 4
    rd = t.to_pylist()[-1]
    assert rd["op"] == "read" and rd["data"] is None and rd["ret"] == -14
    t, _ = kernel.decode_kernel_records(raw, comm="setpci", bdfs=frozenset({"0000:0d:00.0"}))
    assert t.num_rows == 2
    t, _ = kernel.decode_kernel_records(_rec(dev=b""))
    assert t.num_rows == 0


def test_events_equal_syscall_rows() -> None:
    """A kernel record decodes to the row the syscall backend makes for the same pwrite."""
    t, _ = kernel.decode_kernel_records(_rec(ts_ns=5, offset=0x18e, size=4, ret=4, data=b"\x01\x02\x03\x04"))
    ev = table_events(t)[0]
    assert (ev.bdf, ev.offset, ev.size, ev.data, ev.via, ev.ret, ev.op) == \
        ("0000:0d:00.0", 0x18e, 4, "01020304", "sysfs", 4, "write")


def test_debian_proc_version_is_the_kernels_not_the_compilers() -> None:
    # /proc/version of the e2e guest: the compiler's "Debian 12.2.0-14" comes first
    from cfgaudit.regions.kernel import upstream_from_proc_version

    text = ("Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) "
            "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)")
    assert upstream_from_proc_version(text) == "6.1.192"
    assert upstream_from_proc_version("Linux version 6.18.44 (gcc 13.2.0) #1 SMP") is None
