"""The ownership table, release by release, on real and synthetic config spaces."""
from __future__ import annotations

import pytest

from cfgaudit.regions import build_registry, load_devices, parse_kernel
from cfgaudit.regions.kernel import KernelRange
from cfgaudit.regions.rules import RULES
from support import CXL_BDF, QEMU_CXL, QEMU_RP, devset, make_device


def _excl(res):
    return sorted((r.bdf, r.start, r.length, r.owner) for r in res.registry.regions(kind="exclusive"))


@pytest.mark.parametrize("kernel,want", [
    ("6.1.0-56-amd64", []), ("6.1.0", []), ("6.2-rc1", [(CXL_BDF, 0x190, 0x18, "cxl_pci")]),
    ("6.2.0", [(CXL_BDF, 0x190, 0x18, "cxl_pci")]), ("6.3.13", [(CXL_BDF, 0x190, 0x18, "cxl_pci")]),
    ("6.4-rc1", []), ("6.4.0", []), ("6.12.95", []),
])
def test_cxl_pci_doe_claim_by_release(kernel, want) -> None:
    ds = load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"})
    assert _excl(build_registry(ds, kernel=kernel)) == want


def test_doe_without_cxl_pci_is_not_claimed_and_core_manages_it_from_6_4() -> None:
    ds = load_devices(lspci_dumps=[QEMU_CXL])
    assert _excl(build_registry(ds, kernel="6.2.0")) == []
    doe = [r for r in build_registry(ds, kernel="6.4.0").registry.regions(kind="managed") if r.start == 0x190]
    assert [(r.length, r.owner, r.rule) for r in doe] == [(0x18, "PCI core", "pci-doe-managed")]
    doe61 = [r for r in build_registry(load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"}),
                                       kernel="6.1.0").registry.regions() if r.start == 0x190]
    assert [(r.kind, r.owner) for r in doe61] == [("managed", "cxl_pci")]


def test_registry_answers_like_the_qemu_guest() -> None:
    """The per-write table of ../shared/qemu-cxl/README.md (6.1 with the 6.2-style claim)."""
    ds = load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "cxl_pci"})
    reg = build_registry(ds, kernel="6.2.0").registry
    table = {(0x198, 4): True, (0x3C, 1): False, (0x18F, 1): False, (0x1A8, 1): False, (0x18E, 4): True,
             (0x1A7, 1): True, (0x1A6, 4): True, (0x190, 4): True}
    assert {k: reg.is_exclusive(CXL_BDF, *k) for k in table} == table
    relaxed = build_registry(ds, kernel="6.2.0", iomem_relaxed=True).registry
    assert not any(relaxed.is_exclusive(CXL_BDF, *k) for k in table)
    assert reg.release(CXL_BDF, 0x190, 0x18) and not reg.is_exclusive(CXL_BDF, 0x198, 4)  # B15


AMD_ROOT = dict(vendor=0x1022, device=0x14D8, klass=0x060000)


@pytest.mark.parametrize("kernel,claimed", [
    ("6.14.8", False), ("6.14.9", True), ("6.15.0", True), ("6.17.3", True), ("6.18-rc4", True),
    ("6.18-rc5", True), ("6.18.0", True),
])
def test_amd_root_complex_claim(kernel, claimed) -> None:
    ds = devset(make_device("0000:00:00.0", **AMD_ROOT, on_root_bus=True),
                make_device("0000:00:00.2", 0x1022, 0x14D9, 0x080600, on_root_bus=True))
    got = _excl(build_registry(ds, kernel=kernel))
    assert got == ([("0000:00:00.0", 0, 0x100, "amd_node")] if claimed else [])


def test_amd_device_selection_changed_in_6_18_rc5() -> None:
    # A host bridge at devfn 0 behind another bus (not a root bus), and a root-bus 00.0 that is no host bridge.
    ds = devset(make_device("0000:40:00.0", **AMD_ROOT, on_root_bus=False),
                make_device("0000:80:00.0", 0x1022, 0x14DA, 0x060400, htype=1, on_root_bus=True),
                make_device("0000:c0:00.0", 0x1D94, 0x14D8, 0x060000, on_root_bus=True))
    before = {b for b, *_ in _excl(build_registry(ds, kernel="6.18-rc4"))}
    after = {b for b, *_ in _excl(build_registry(ds, kernel="6.18.0"))}
    assert before == {"0000:80:00.0", "0000:c0:00.0"}
    assert after == {"0000:40:00.0", "0000:c0:00.0"}


def test_intel_host_bridge_is_never_claimed() -> None:
    ds = devset(make_device("0000:00:00.0", 0x8086, 0x29C0, 0x060000, on_root_bus=True))
    assert _excl(build_registry(ds, kernel="6.18.0")) == []


def test_vfio_bound_device_belongs_to_user_space() -> None:
    ds = load_devices(lspci_dumps=[QEMU_CXL], drivers={CXL_BDF: "vfio-pci"})
    regs = build_registry(ds, kernel="6.12.0").registry.regions()
    assert [(r.kind, r.start, r.length, r.owner) for r in regs] == [("user", 0, 4096, "vfio-pci")]


def test_root_port_registers() -> None:
    ds = load_devices(lspci_dumps=[QEMU_RP])
    regs = {(r.rule, r.start, r.length) for r in build_registry(ds, kernel="6.12.0").registry.regions()}
    # PCIe cap at 0x48: Slot Control 0x60, Root Control 0x64; AER at 0x100: Root Error Command 0x12c
    assert {("pcie-sltctl", 0x60, 2), ("pcie-rtctl", 0x64, 2), ("aer-root", 0x12C, 4), ("bridge-control", 0x3E, 2)} <= regs
    assert not any(r[0] == "command-enable" for r in regs), "no driver bound in the dump: no Command claim"


def test_every_rule_cites_a_source() -> None:
    for r in RULES:
        assert r.source and ("/" in r.source or "." in r.source), r.id
        assert r.kind in ("exclusive", "managed", "user")
    assert len({r.id for r in RULES}) == len(RULES)


def test_kernel_parsing_and_ranges() -> None:
    assert parse_kernel("6.1.0-56-amd64", "6.1.192").patch == 192
    assert parse_kernel("6.18-rc5") < parse_kernel("6.18.0") < parse_kernel("6.18.1")
    kr = KernelRange("6.15-rc1", None, also=(("6.14.9", "6.15-rc1"),))
    assert kr.contains(parse_kernel("6.14.9")) and not kr.contains(parse_kernel("6.14.8"))
