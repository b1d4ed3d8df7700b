"""Vendor and device names from pci.ids (regions/pciids.py) and in `cfgaudit devices`; lspci is the oracle."""
from __future__ import annotations

import glob
import gzip
import json
import os
import re
import subprocess

import pytest

from cfgaudit.regions.pciids import PciIds, find_pci_ids
from support import ROOT
from support.cli import run_cli

DUMPS = os.path.join(ROOT, "tests", "data", "dumps")

SMALL = """\
# a comment line, then a vendor with devices and a subsystem
8086  Intel Corporation
\t0d93  Test CXL Type 3 device
\t\t1af4 1100  A subsystem name (not a device)
\t29c0  82G33/G31/P35/P31 Express DRAM Controller
1af4  Red Hat, Inc.
\t1045  Virtio 1.0 memory balloon
zzzz  not a vendor line
\t1111  a device under a bad vendor line
C 06  Bridge
\t00  Host bridge
"""


def test_parse_vendors_devices_and_skips_subsystems_and_classes() -> None:
    ids = PciIds.parse(SMALL)
    assert ids.vendor_name(0x8086) == "Intel Corporation"
    assert ids.device_name(0x8086, 0x0d93) == "Test CXL Type 3 device"
    assert ids.device_name(0x8086, 0x29c0) == "82G33/G31/P35/P31 Express DRAM Controller"
    assert ids.device_name(0x1af4, 0x1045) == "Virtio 1.0 memory balloon"
    assert ids.device_name(0x8086, 0x1af4) is None  # the subsystem line is not a device
    assert (0x1af4, 0x1111) not in ids.devices  # its vendor line was malformed
    assert 0x0006 not in ids.vendors and 0x06 not in ids.vendors  # the class list is not read
    assert ids.describe(0x8086, 0x0d93) == "Intel Corporation Test CXL Type 3 device"
    assert ids.describe(0x8086, 0x1234) == "Intel Corporation Device 1234"  # lspci's wording
    assert ids.describe(0x1234, 0x1111) == "Vendor 1234 Device 1111"
    assert ids.describe(None, 0x1111) == "-"


def test_load_plain_gz_missing_and_bad(tmp_path) -> None:
    plain = tmp_path / "pci.ids"
    plain.write_text(SMALL)
    packed = tmp_path / "pci.ids.gz"
    packed.write_bytes(gzip.compress(SMALL.encode()))
    assert PciIds.load(str(plain)).devices == PciIds.load(str(packed)).devices != {}
    assert PciIds.load(str(plain)).path == str(plain)
    bad = tmp_path / "bad.ids.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(Exception, match="not a gzip file"):
        PciIds.load(str(bad))
    with pytest.raises(Exception, match="no such pci.ids file"):
        PciIds.load(str(tmp_path / "absent"))
    assert find_pci_ids((str(tmp_path / "absent"), str(packed))) == str(packed)
    assert find_pci_ids((str(tmp_path / "absent"),)) is None
    assert find_pci_ids((str(tmp_path),)) is None  # a directory is not the database


def test_devices_command_names_from_given_database(tmp_path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text(SMALL)
    dump = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
    code, out, err = run_cli("devices", "--lspci-dump", dump, "--pci-ids", str(ids), "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["vendor_name"], row["device_name"]) == ("Intel Corporation", "Test CXL Type 3 device")
    code, out, _ = run_cli("devices", "--lspci-dump", dump, "--pci-ids", str(ids))
    assert "Intel Corporation Test CXL Type 3 device:" in out
    code, out, err = run_cli("devices", "--lspci-dump", dump, "--pci-ids", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("Error: ") and "nope" in err and "Traceback" not in err


@pytest.mark.parametrize("dumpdir", ["qemu-6.1", "qemu-6.12", "host"])
def test_names_agree_with_lspci(lspci, dumpdir, tmp_path) -> None:
    """Every device's names are lspci's own (-mm, the same pci.ids, udev's hwdb off)."""
    db = find_pci_ids()
    if db is None:
        db = str(tmp_path / "pci.ids")  # no system database: compare on the small one
        with open(db, "w") as fh:
            fh.write(SMALL)
    files = sorted(glob.glob(os.path.join(DUMPS, dumpdir, "*.txt")))
    assert files
    both = tmp_path / "all.txt"
    both.write_text("".join(open(f).read().rstrip("\n") + "\n\n" for f in files))
    p = subprocess.run([lspci, "-F", str(both), "-mm", "-D", "-i", db, "-O", "hwdb.disable=1"],
                       capture_output=True, text=True, check=True)
    theirs = {}
    for line in p.stdout.splitlines():
        m = re.match(r'(\S+) "[^"]*" "([^"]*)" "([^"]*)"', line)
        assert m, line
        theirs[m.group(1)] = f"{m.group(2)} {m.group(3)}"
    args = [a for f in files for a in ("--lspci-dump", f)]
    code, out, err = run_cli("devices", *args, "--pci-ids", db, "--format", "json")
    assert code == 0, err
    ours = {r["bdf"]: PciIds.load(db).describe(r["vendor"], r["device"]) for r in json.loads(out)}
    assert ours == theirs
