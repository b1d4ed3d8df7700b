"""Fast-tier checks of the guard's session pieces (issue 12; no root, no bcc, no BPF-LSM): the
refusal records' decoding, device numbers, detection, and the command line's refusals to start."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cfgaudit.errors import BackendError
from cfgaudit.events import RECORD_TYPES, validate_row
from cfgaudit.hostpaths import HostPaths
from cfgaudit.probes import guard
from cfgaudit.probes.bccutil import record_dtype
from cfgaudit.probes.session import LiveOptions
from cfgaudit.regions import guard as policy
from support import run_cli

BDFS = ["0000:0c:00.0", "0000:0d:00.0"]


def _rec(code: int, via: int, flags: int, pos: int = 0x198, count: int = 4, comm: bytes = b"doe-tool") -> np.ndarray:
    r = np.zeros(1, dtype=record_dtype("event"))
    r["type"], r["ts_ns"], r["pid"], r["tid"], r["uid"], r["comm"] = RECORD_TYPES["EV_GUARD"], 5, 812, 813, 0, comm
    r["offset"], r["size"], r["ret"], r["aux"] = pos, count, -1 if flags & 1 else 0, code | via << 16 | flags << 24
    return r


def test_decode_refusals() -> None:
    raw = np.concatenate([_rec(1, guard.VIA_SYSFS, 1), _rec(1, guard.VIA_PROCFS, 2, pos=0x1a0),
                          _rec(7, guard.VIA_SYSFS, 1), _rec(0, guard.VIA_SYSFS, 1 | 4, pos=0x190)]).tobytes()
    rows = guard.decode_guard_records(raw, BDFS).to_pylist()
    assert [(r["bdf"], r["via"], r["offset"], r["size"], r["ret"], r["guard"]) for r in rows] == [
        ("0000:0d:00.0", "sysfs", 0x198, 4, -1, "refused"),     # refused: -EPERM
        ("0000:0d:00.0", "procfs", 0x1a0, 4, None, "dry-run"),  # dry run: the write went on, its result unknown
        ("0000:0c:00.0", "sysfs", 0x190, 4, -1, "refused"),     # code 7: not a policy device, dropped
    ]
    assert all(r["op"] == "write" and r["comm"] == "doe-tool" and r["tid"] == 813 for r in rows)
    assert all(validate_row({k: v for k, v in r.items() if v is not None}) is None for r in rows)
    assert guard.decode_guard_records(b"", BDFS).num_rows == 0


def test_guard_verdicts_in_traces() -> None:
    row = {"ts_ns": 1, "pid": 2, "comm": "x", "op": "write", "bdf": "0000:0d:00.0", "offset": 0, "size": 1}
    assert validate_row({**row, "guard": "refused"}) is None
    assert "must be one of refused, dry-run" in (validate_row({**row, "guard": "blocked"}) or "")


def test_kernel_dev_numbers() -> None:
    """sb->s_dev is MKDEV(major, minor) = major << 20 | minor (include/linux/kdev_t.h)."""
    assert guard.kernel_dev(os.makedev(0, 23)) == 23
    assert guard.kernel_dev(os.makedev(8, 1)) == (8 << 20) | 1
    assert guard.kernel_dev(os.makedev(259, 70000)) == (259 << 20) | 70000


def test_the_bitmap_is_the_policy_s() -> None:
    assert guard.BITMAP_BYTES == policy.BITMAP_BYTES


def test_detection(tmp_path, monkeypatch) -> None:
    sec = tmp_path / "security"
    sec.mkdir()
    (sec / "lsm").write_text("capability,landlock,lockdown,yama,apparmor")
    paths = HostPaths(securityfs=str(sec))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert guard.lsm_list(paths) == ["capability", "landlock", "lockdown", "yama", "apparmor"]
    why = guard.detect_guard(paths) or ""
    assert "BPF-LSM is not active: 'bpf' is not in the kernel's LSM list" in why and "lsm=" in why
    assert guard.lsm_list(HostPaths(securityfs=str(tmp_path / "none"))) is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (guard.detect_guard(paths) or "")


def test_bitmaps_must_be_whole() -> None:
    with pytest.raises(BackendError, match="512"):
        guard.GuardSession(LiveOptions(), {"0000:0d:00.0": bytes(3)}, {})


def test_guard_cli_refuses_to_start_without_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = run_cli("guard", "-d", "1")
    assert code == 2 and err.startswith("Error: guard: needs root"), err
    code, out, err = run_cli("run", "--guard", "--", "true")
    assert code == 2 and "guard: needs root" in err
    code, out, err = run_cli("guard", "--level", "bogus")
    assert code == 2 and "bogus" in err
    code, out, _ = run_cli("doctor", "--format", "json")
    rows = {r["backend"]: r for r in json.loads(out)}
    assert not rows["guard"]["available"] and "needs root" in rows["guard"]["reason"]
