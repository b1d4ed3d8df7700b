"""Regressions from the fuzz tier (tests/fuzz): inputs that crashed cfgaudit, now `Error: FILE[:LINE]: ...`, exit 2.

Crash cases that were signals run cfgaudit in a child process, so a segfault fails the test instead of the run.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cfgaudit.errors import EXIT_ERROR
from cfgaudit.probes.tracefile import MAX_NESTING, _shallow
from support import QEMU_CXL, run_cli

EVENT = {"ts_ns": 1, "pid": 7, "comm": "setpci", "op": "write", "bdf": "0000:0d:00.0", "offset": 408, "size": 4,
         "via": "sysfs"}


def _one_error(err: str, prefix: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and "internal error" not in err, err


@pytest.mark.parametrize("line", [
    b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}",    # pyarrow's JSON reader overflowed its stack: SIGSEGV
    b'{"a":' + b'{"a":' * 30000 + b"1" + b"}" * 30001,
    b'{"record":"header","format":"cfgaudit-trace","version":1,"x":' + b"[" * 50000 + b"]" * 50000 + b"}",
])
def test_deeply_nested_object_line_is_a_named_error(tmp_path, line: bytes) -> None:
    p = tmp_path / "t.jsonl"
    p.write_bytes(json.dumps(EVENT).encode() + b"\n" + line + b"\n")
    r = subprocess.run([sys.executable, "-m", "cfgaudit.cli", "check", str(p), "--lspci-dump", QEMU_CXL,
                        "--kernel", "6.2.0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_ERROR, (r.returncode, r.stderr)
    _one_error(r.stderr, f"Error: {p}:2: ")


def test_shallow_gate() -> None:
    flat = json.dumps(EVENT).encode() + b"\n"
    assert _shallow(flat * 1000) and _shallow(b"") and _shallow(b'{"comm":"[[[["}\n' * 10)
    assert _shallow(b'{"a":' + b"[" * (MAX_NESTING - 1) + b"]" * (MAX_NESTING - 1) + b"}")  # the { counts too
    assert not _shallow(b'{"a":' + b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1) + b"}")
    assert not _shallow(b"]" * 5000 + b"\n" + b"{" * (MAX_NESTING + 2))  # closers before do not hide it


def test_deeply_nested_snapshot_is_a_named_error(tmp_path) -> None:
    p = tmp_path / "s.json"
    p.write_text('{"format":"cfgaudit-snapshot","devices":' + "[" * 100000 + "]" * 100000 + "}")
    code, out, err = run_cli("devices", "--snapshot", str(p))
    assert code == EXIT_ERROR
    _one_error(err, f"Error: {p}: ")


@pytest.mark.parametrize("key", [b"cfgaudit.header", b"cfgaudit.footer"])
def test_deeply_nested_parquet_metadata_is_a_named_error(tmp_path, key: bytes) -> None:
    p = tmp_path / "t.parquet"
    t = pa.Table.from_pylist([EVENT])
    pq.write_table(t.replace_schema_metadata({key: b"[" * 100000 + b"]" * 100000}), p)
    code, out, err = run_cli("check", str(p), "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    assert code == EXIT_ERROR
    _one_error(err, f"Error: {p}: ")


def test_a_device_repeated_thousands_of_times_loads_quickly(tmp_path) -> None:
    """A dump repeating one device line 20,000 times took about 2 ms per copy (4096 Python steps
    to merge each): 40 s, a hang. Known bytes are merged as runs now."""
    import time

    from cfgaudit.regions import load_devices

    with open(QEMU_CXL) as fh:
        dump = fh.read()
    p = tmp_path / "d.txt"
    p.write_text(dump + "\n" + "\n\n".join(["0d:00.0 again"] * 20000) + "\n")
    t0 = time.monotonic()
    ds = load_devices(lspci_dumps=[str(p)])
    assert time.monotonic() - t0 < 10
    assert list(ds.devices) == ["0000:0d:00.0"] and ds.devices["0000:0d:00.0"].is_known(0, 256)


def test_merging_copies_of_a_device_keeps_known_bytes_and_warns_on_conflict() -> None:
    from cfgaudit.regions.configspace import ConfigSpace, DeviceSet

    a, b, c = ConfigSpace("0000:01:00.0"), ConfigSpace("0000:01:00.0"), ConfigSpace("0000:01:00.0")
    a.set_bytes(0, b"\x86\x80\x93\x0d")
    b.set_bytes(2, b"\x93\x0d\x01")           # agrees where both are known
    c.set_bytes(3, b"\xff")                    # disagrees at byte 3
    ds = DeviceSet()
    ds.add(a)
    ds.add(b, "b: ")
    assert not ds.warnings and bytes(a.data[:5]) == b"\x86\x80\x93\x0d\x01"
    ds.add(c, "c: ")
    assert len(ds.warnings) == 1 and ds.warnings[0].startswith("c: device 0000:01:00.0 given twice")
    assert a.data[3] == 0xFF and a.is_known(0, 5) and not a.is_known(5)


def test_a_key_that_is_not_utf8_is_a_named_error(tmp_path) -> None:
    """pyarrow's reader took the key as a column name; naming the column raised UnicodeDecodeError (exit 3)."""
    p = tmp_path / "t.jsonl"
    ev = json.dumps(EVENT).encode()
    p.write_bytes(ev + b"\n" + ev[:-1] + b',"\x9ek":1}\n')
    code, out, err = run_cli("check", str(p), "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0")
    assert code == EXIT_ERROR
    _one_error(err, f"Error: {p}:2: ")
