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
    import cfgaudit.cli

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cfgaudit.cli, "open_devices", boom)
    code, out, err = run_cli("devices", "--lspci-dump", QEMU_CXL)
    assert code == EXIT_INTERNAL and code not in (0, 1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: internal error at test_reliability.py:")
    assert "RuntimeError: simulated bug" in lines[0] and "Traceback" not in err
    code, out, err = run_cli("--debug", "devices", "--lspci-dump", QEMU_CXL)
    assert code == EXIT_INTERNAL and "Traceback (most recent call last)" in err and "simulated bug" in err
