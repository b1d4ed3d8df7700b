"""Capability offsets must equal what the system's lspci prints, for every dump under tests/
and for this machine's own devices through the real sysfs (read only)."""
from __future__ import annotations

import os
import re

import pytest

from cfgaudit.regions import device_views, load_devices, load_lspci_dump, walk
from support import all_dumps, lspci_caps


@pytest.mark.parametrize("dump", all_dumps(), ids=lambda p: os.path.relpath(p, os.path.dirname(__file__)))
def test_dump_matches_lspci(dump: str, lspci: str) -> None:
    want = lspci_caps(lspci, ["-F", dump])
    devs = {cs.bdf: cs for cs in load_lspci_dump(dump)}
    assert set(devs) == set(want), "device sets differ"
    for bdf, cs in devs.items():
        caps = walk(cs).caps
        assert [(c.space, c.offset) for c in caps] == [(s, o) for s, o, _ in want[bdf]], bdf
        for c, (_, _, text) in zip(caps, want[bdf]):
            m = re.match(r"Designated Vendor-Specific: Vendor=([0-9a-f]+) ID=([0-9a-f]+) Rev=\d+ Len=(\d+)", text)
            if m:
                assert (c.dvsec_vendor, c.dvsec_id, c.length) == (int(m[1], 16), int(m[2], 16), int(m[3])), text
            m = re.match(r"MSI: Enable. Count=\S+ Maskable(.) 64bit(.)", text)
            if m:
                assert c.length == {("-", "-"): 10, ("-", "+"): 14, ("+", "-"): 20, ("+", "+"): 24}[(m[1], m[2])]
            m = re.match(r"Vendor Specific Information: Len=([0-9a-f]+)", text)
            if m and c.space == "std":
                assert c.length == int(m[1], 16)
            if text.startswith("Data Object Exchange"):
                assert (c.id, c.length) == (0x2E, 0x18)


def test_every_dump_kind_is_covered() -> None:
    names = {os.path.basename(p) for p in all_dumps()}
    for odd in ("std-loop.txt", "ext-loop.txt", "ext-aliased.txt", "std-misaligned.txt", "ext-below-0x100.txt"):
        assert odd in names
    assert any("0d_00.0" in n for n in names), "the QEMU CXL device dump is missing"


def test_live_sysfs_matches_lspci(lspci: str) -> None:
    """This machine's devices, read through the real /sys/bus/pci (reads only)."""
    want = lspci_caps(lspci, [])
    ds = load_devices(sysfs_path="/sys/bus/pci")
    views = {v.cs.bdf: v for v in device_views(ds)}
    assert set(views) == set(want)
    for bdf, v in views.items():
        assert [(c.space, c.offset) for c in v.caps.caps] == [(s, o) for s, o, _ in want[bdf]], bdf
        if os.geteuid() == 0:
            assert v.cs.is_known(0, v.cs.config_size), f"{bdf}: root reads the whole config space"
