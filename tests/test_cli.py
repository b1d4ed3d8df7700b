"""The command-line contract: JSON shapes, formats, exit codes, help with examples."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import click
import pytest

from cfgaudit.cli import cli
from support import CXL_BDF, DUMPS, QEMU_CXL, run_cli


def test_devices_json_contract() -> None:
    code, out, err = run_cli("devices", "--lspci-dump", QEMU_CXL, "--format", "json")
    assert code == 0, err
    (dev,) = json.loads(out)
    assert {"bdf", "vendor", "device", "class", "driver", "config_size", "capabilities", "anomalies"} <= set(dev)
    assert (dev["bdf"], dev["vendor"], dev["device"], dev["class"], dev["config_size"]) == (CXL_BDF, 0x8086, 0x0D93, 0x050210, 4096)
    caps = [(c["space"], c["offset"], c["id"], c["length"]) for c in dev["capabilities"]]
    assert caps == [("std", 0x40, 0x11, 12), ("std", 0x80, 0x10, 60), ("ext", 0x100, 0x23, 0x38),
                    ("ext", 0x138, 0x23, 0x24), ("ext", 0x15C, 0x23, 0x10), ("ext", 0x190, 0x2E, 0x18)]
    dvsec = [(c["dvsec_vendor"], c["dvsec_id"]) for c in dev["capabilities"] if c["id"] == 0x23]
    assert dvsec == [(0x1E98, 0), (0x1E98, 8), (0x1E98, 5)]
    assert all("dvsec_vendor" not in c for c in dev["capabilities"] if c["id"] != 0x23)


def test_regions_json_contract() -> None:
    code, out, _ = run_cli("regions", "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert all(set(r) == {"bdf", "start", "length", "owner", "kind", "capability", "rule", "source"} for r in rows)
    assert [(r["start"], r["length"]) for r in rows if r["kind"] == "exclusive"] == [(0x190, 0x18)]


def test_csv_has_one_header_and_a_row_per_region() -> None:
    code, out, _ = run_cli("regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    code2, out2, _ = run_cli("regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2.0", "--format", "json")
    assert code == code2 == 0 and len(rows) == len(json.loads(out2)) > 0
    assert rows[0]["bdf"] == CXL_BDF and int(rows[0]["start"]) >= 0


def test_table_fits_100_columns() -> None:
    for args in (["devices", "--lspci-dump", QEMU_CXL], ["regions", "--lspci-dump", QEMU_CXL, "--kernel", "6.2"],
                 ["devices", "--lspci-dump", f"{DUMPS}/odd/ext-long-cxl.txt"]):
        code, out, _ = run_cli(*args)
        assert code == 0 and max(len(l) for l in out.splitlines()) <= 100


@pytest.mark.parametrize("args,msg", [
    (["regions", "--lspci-dump", "/nonexistent/dump.txt", "--format", "json"], "/nonexistent/dump.txt"),
    (["regions", "--lspci-dump", QEMU_CXL, "--kernel", "banana"], "not a kernel release"),
    (["regions", "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0"], "BDF=NAME"),
    (["regions", "--lspci-dump", QEMU_CXL, "--driver", "0e:00.0=x"], "no such device"),
    (["devices", "--format", "yaml"], "yaml"),
    (["devices", "--no-such-option"], "no-such-option"),
    (["snapshot", "--lspci-dump", QEMU_CXL], "--output"),
])
def test_bad_input_is_one_line_exit_2(args, msg) -> None:
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1 and msg in err, err


def test_installed_script_no_traceback(tmp_path) -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "cfgaudit")
    p = subprocess.run([exe, "regions", "--lspci-dump", "/nonexistent/dump.txt"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("Error:") and "Traceback" not in p.stderr


def test_snapshot_roundtrip(tmp_path) -> None:
    snap = str(tmp_path / "s.json")
    code, _, err = run_cli("snapshot", "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "-o", snap)
    assert code == 0, err
    doc = json.load(open(snap))
    assert doc["format"] == "cfgaudit-snapshot" and doc["devices"][0]["driver"] == "cxl_pci"
    a = run_cli("regions", "--snapshot", snap, "--kernel", "6.2.0", "--format", "json")[1]
    b = run_cli("regions", "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--kernel", "6.2.0", "--format", "json")[1]
    assert json.loads(a) == json.loads(b)
    d1 = json.loads(run_cli("devices", "--snapshot", snap, "--format", "json")[1])
    d2 = json.loads(run_cli("devices", "--lspci-dump", QEMU_CXL, "--driver", "0d:00.0=cxl_pci", "--format", "json")[1])
    assert d1 == d2


def test_snapshot_keeps_unknown_bytes_unknown(tmp_path) -> None:
    snap = str(tmp_path / "s.json")
    assert run_cli("snapshot", "--lspci-dump", f"{DUMPS}/odd/x-64-byte-dump.txt", "-o", snap)[0] == 0
    dev = json.load(open(snap))["devices"][0]
    assert dev["known"] == [[0, 64]]
    d = json.loads(run_cli("devices", "--snapshot", snap, "--format", "json")[1])[0]
    assert "unknown-bytes" in [a["kind"] for a in d["anomalies"]]


def test_bad_snapshot_is_an_error(tmp_path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{"format": "cfgaudit-snapshot",\n "version": 1,\n "devices": [{"bdf": "0d:00.0", "config": "zz"}]\n')
    code, _, err = run_cli("devices", "--snapshot", str(p))
    assert code == 2 and str(p) in err and ":4:" in err  # JSON error names the line
    p.write_text('{"format": "something-else"}')
    assert run_cli("devices", "--snapshot", str(p))[0] == 2


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")


def test_every_command_has_help_with_examples() -> None:
    for name, cmd in _commands(cli):
        assert cmd.help and "Examples:" in cmd.help, f"{name} lacks help with examples"
        code, out, _ = run_cli(*name.split(), "--help")
        assert code == 0 and "Examples:" in out
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"{name} {p.opts} has no help"
