"""Fast-tier checks of the kernel backend's DOE-exchange probes (issue 11): member offsets from BTF
(probes/btf.py), the attach points, and the decoding of EV_DOE_START/EV_DOE_END records."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from cfgaudit.events import RECORD_TYPES
from cfgaudit.probes import kernel
from cfgaudit.probes.btf import VMLINUX_BTF, Btf, BtfError

INT, PTR, STRUCT, TYPEDEF = 1, 2, 4, 8


class BtfWriter:
    """A minimal BTF blob: ints, pointers, typedefs and structs (member offsets in bits)."""

    def __init__(self) -> None:
        self.strings = b"\0"
        self.types: list[bytes] = []

    def _str(self, s: str) -> int:
        off = len(self.strings)
        self.strings += s.encode() + b"\0"
        return off

    def _add(self, blob: bytes) -> int:
        self.types.append(blob)
        return len(self.types)  # type IDs count from 1

    def int_(self, name: str, size: int) -> int:
        return self._add(struct.pack("<III", self._str(name), INT << 24, size) + struct.pack("<I", size * 8))

    def ptr(self) -> int:
        return self._add(struct.pack("<III", 0, PTR << 24, 0))

    def typedef(self, name: str, tid: int) -> int:
        return self._add(struct.pack("<III", self._str(name), TYPEDEF << 24, tid))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        blob = struct.pack("<III", self._str(name) if name else 0, STRUCT << 24 | len(members), size)
        for mname, tid, byte_off in members:
            blob += struct.pack("<III", self._str(mname) if mname else 0, tid, byte_off * 8)
        return self._add(blob)

    def blob(self) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return hdr + types + self.strings


def doe_btf(member: str = "prot", work_size: int = 32) -> bytes:
    """struct pci_doe_task and pci_doe_mb as Debian 6.1.192's BTF lays them out (work_struct of
    ``work_size`` bytes shifts what follows it); ``member``: "prot" (to 6.14) or "feat" (6.15+)."""
    w = BtfWriter()
    u8, u16, u64, i32 = w.int_("u8", 1), w.int_("u16", 2), w.int_("unsigned long", 8), w.int_("int", 4)
    size_t, p = w.typedef("size_t", u64), w.ptr()
    proto = w.struct("pci_doe_" + ("protocol" if member == "prot" else "feature"), 4, [("vid", u16, 0), ("type", u8, 2)])
    work = w.struct("work_struct", work_size, [("data", u64, 0), ("func", p, work_size - 8)])
    after = 64 + work_size
    w.struct("pci_doe_task", after + 8, [
        (member, proto, 0), ("request_pl", p, 8), ("request_pl_sz", size_t, 16), ("response_pl", p, 24),
        ("response_pl_sz", size_t, 32), ("rv", i32, 40), ("complete", p, 48), ("private", p, 56), ("work", work, 64),
        ("doe_mb", p, after)])
    w.struct("pci_doe_mb", 72, [("pdev", p, 0), ("cap_offset", u16, 8), ("", w.struct("", 8, [("flags", u64, 0)]), 16)])
    return w.blob()


def test_offsets_from_btf_match_debian_6_1() -> None:
    got = kernel.doe_offsets(Btf(doe_btf()))
    assert got == {"DOE_TASK_VID": 0, "DOE_TASK_TYPE": 2, "DOE_TASK_REQ_SZ": 16, "DOE_TASK_RSP_SZ": 32,
                   "DOE_TASK_RV": 40, "DOE_TASK_WORK": 64, "DOE_TASK_MB": 96, "DOE_MB_PDEV": 0, "DOE_MB_CAP": 8}


def test_offsets_follow_the_layout_not_a_table() -> None:
    """v6.15 renamed prot to feat; a lockdep kernel's work_struct is bigger: both come from BTF."""
    got = kernel.doe_offsets(Btf(doe_btf("feat", work_size=72)))
    assert got["DOE_TASK_VID"] == 0 and got["DOE_TASK_TYPE"] == 2 and got["DOE_TASK_MB"] == 64 + 72


def test_btf_anonymous_members_and_errors() -> None:
    b = Btf(doe_btf())
    assert b.struct_member_offset("pci_doe_mb", "flags") == 16  # through the anonymous struct
    assert b.struct_size("pci_doe_mb") == 72
    with pytest.raises(BtfError, match="no struct nosuch"):
        b.struct_member_offset("nosuch", "x")
    with pytest.raises(BtfError, match="has no member rv.x"):
        b.struct_member_offset("pci_doe_task", "rv.x")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="too short"):
        Btf(b"")
    with pytest.raises(BtfError, match="cannot read"):
        Btf.read("/nonexistent/btf")


@pytest.mark.skipif(not os.path.exists(VMLINUX_BTF), reason="this kernel exposes no BTF")
def test_btf_of_the_running_kernel() -> None:
    """work_struct {atomic_long_t data; struct list_head entry; work_func_t func; ...}: func at
    byte 24 on every 64-bit kernel (include/linux/workqueue_types.h)."""
    b = Btf.read()
    assert b.struct_member_offset("work_struct", "func") == 24
    assert b.struct_member_offset("list_head", "prev") == 8


AFF_DOE = "pci_user_write_config_byte\ndoe_statemachine_work\npci_doe_task_complete\npci_doe\n"


def test_doe_attach_points() -> None:
    got = kernel.find_attach_points(AFF_DOE)
    assert got["doe_start"] == got["doe_end"] == "doe_statemachine_work"
    assert got["doe_result"] == "pci_doe_task_complete" and got["doe_result_cxl"] is None
    assert "doe_start" not in kernel.find_attach_points(AFF_DOE, doe=False)


def _rec(typ: str, ts: int, dev: bytes = b"0000:0d:00.0", comm: bytes = b"kworker/u4:1", offset: int = 0x190,
         size: int = 4, ret: int = 0, aux: int = 0) -> np.ndarray:
    r = np.zeros(1, dtype=kernel.kernel_dtype())
    r["type"], r["ts_ns"], r["dev"], r["comm"] = RECORD_TYPES[typ], ts, dev, comm
    r["offset"], r["size"], r["ret"], r["aux"], r["pid"], r["tid"] = offset, size, ret, aux, 77, 77
    return r


def test_decode_doe_records() -> None:
    raw = np.concatenate([
        _rec("EV_DOE_START", 10, size=8, aux=0x1E98 | 2 << 16),
        _rec("EV_WRITE", 11, comm=b"cfgpoke", offset=0x198, aux=1, size=4, ret=4),
        _rec("EV_DOE_END", 12, size=16, ret=-5, aux=0x1E98 | 2 << 16 | kernel.DOE_RV_SEEN),
        _rec("EV_DOE_START", 13, aux=1),
        _rec("EV_DOE_END", 14, size=4, ret=0, aux=1),  # no result seen: ret unknown
        _rec("EV_DOE_START", 15, dev=b"0000:0e:00.0"),
    ]).tobytes()
    t, dropped = kernel.decode_kernel_records(raw, comm="cfgpoke", bdfs=frozenset({"0000:0d:00.0"}))
    assert dropped == 0
    rows = t.to_pylist()
    assert [r["op"] for r in rows] == ["doe_start", "write", "doe_end", "doe_start", "doe_end"]
    s, w, e, s2, e2 = rows
    assert s["via"] == "kernel" and s["doe_vendor"] == 0x1E98 and s["doe_type"] == 2 and s["size"] == 8
    assert s["ret"] is None and s["kernel_verdict"] is None and s["data"] is None and s["offset"] == 0x190
    assert e["ret"] == -5 and e["size"] == 16 and e["doe_vendor"] is None
    assert s2["doe_vendor"] == 1 and s2["doe_type"] == 0 and e2["ret"] is None
    assert w["via"] == "sysfs" and w["comm"] == "cfgpoke" and w["ret"] == 4 and w["doe_vendor"] is None


def test_doctor_says_whether_doe_exchanges_are_traced(tmp_path, monkeypatch) -> None:
    """doctor: the kernel backend traces the kernel's DOE exchanges only where the kernel has the
    worker function and BTF describing its structs; the syscall backend never does."""
    from cfgaudit import probes
    from cfgaudit.hostpaths import HostPaths
    from cfgaudit.report.inventory import render_doctor

    proc = tmp_path / "proc"
    proc.mkdir()
    paths = HostPaths(sysfs=str(tmp_path / "sys"), procfs=str(tmp_path / "pb"), proc=str(proc), tracefs=())
    monkeypatch.setattr(kernel, "detect_kernel", lambda paths: None)
    (proc / "kallsyms").write_text("0 T pci_user_write_config_byte\n")
    assert "no probe-able doe_statemachine_work" in kernel.doe_status(paths)
    (proc / "kallsyms").write_text("0 T pci_user_write_config_byte\n0 t doe_statemachine_work\n")
    btf = tmp_path / "vmlinux"
    btf.write_bytes(doe_btf())
    assert kernel.doe_setup(paths, str(btf)) == (kernel.doe_offsets(Btf(doe_btf())), None)
    assert kernel.doe_status(paths, str(btf)) == "traced"
    consts, why = kernel.doe_setup(paths, str(tmp_path / "none"))
    assert consts == {} and "layout of the kernel's DOE structs is unknown" in (why or "")
    rows = probes.backend_table(paths)
    text = render_doctor(rows)
    assert "collision detection needs them" in text
    assert "syscalls: not traced: system calls do not show the kernel's own DOE exchanges" in text
