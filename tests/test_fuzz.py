"""Fuzzed config spaces and dump texts: the walk terminates and only cfgaudit errors escape."""
from __future__ import annotations

import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfgaudit.errors import CfgauditError
from cfgaudit.regions import ConfigSpace, build_registry, load_lspci_dump, walk
from cfgaudit.regions.configspace import DeviceSet


@st.composite
def config_spaces(draw) -> ConfigSpace:
    size = draw(st.sampled_from([64, 256, 4096]))
    raw = bytearray(draw(st.binary(min_size=size, max_size=size)))
    # Bias towards real chains: a capability list bit, pointers into the space, ext headers.
    if draw(st.booleans()):
        raw[6] |= 0x10
        raw[0x34] = draw(st.integers(0, 255))
    if size == 4096 and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 12))):
            off = draw(st.integers(0x100, 0xFFC)) & ~3
            hdr = draw(st.integers(0, 0x3A)) | (draw(st.integers(0, 15)) << 16) | (draw(st.integers(0, 0xFFF)) << 20)
            struct.pack_into("<I", raw, off, hdr)
    cs = ConfigSpace(bdf="0000:01:00.0")
    cs.set_bytes(0, raw)
    if draw(st.booleans()):
        for i in draw(st.lists(st.integers(0, size - 1), max_size=20)):
            cs.known[i] = 0
    return cs


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_spaces(), st.sampled_from(["6.1.0", "6.2.0", "6.15.0", "6.18.0"]), st.sampled_from([None, "cxl_pci", "vfio-pci"]))
def test_walk_and_rules_never_raise(cs: ConfigSpace, kernel: str, driver: str | None) -> None:
    cmap = walk(cs)
    offs = [(c.space, c.offset) for c in cmap.caps]
    assert len(offs) == len(set(offs)), "a loop was followed twice"
    assert len(cmap.caps) <= 48 + 1024
    for c in cmap.caps:
        assert 0 <= c.offset < 4096
        assert c.length is None or c.length >= 0
    cs.driver = driver
    ds = DeviceSet()
    ds.add(cs)
    res = build_registry(ds, kernel=kernel)
    for r in res.registry.regions():
        assert r.length > 0


line = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF: .>\t\r-xyz", max_size=70),
    st.sampled_from(["0d:00.0 CXL: dev", "0000:0d:00.0 x", "00: 86 80 93 0d", "\tKernel driver in use: cxl_pci", "",
                     "100: 2e 00 01 00", "ff0: 00", "> 10: 00 00", "fff: 00 00", "00: zz"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(line, max_size=40))
def test_mangled_dumps_raise_only_cfgaudit_errors(lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(lines))
        path = fh.name
    try:
        try:
            devs = load_lspci_dump(path, warn=lambda m: None)
        except CfgauditError as err:
            assert str(err).startswith(path + ":"), "errors name the file"
            return
        for cs in devs:
            walk(cs)
    finally:
        os.unlink(path)
