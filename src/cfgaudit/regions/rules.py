"""The ownership table: which part of the kernel claims or manages which bytes, and when.

Each :class:`Rule` is data: which devices it matches (driver, vendor, class, header type),
which kernel releases it holds on, which bytes it covers (a header register, or a range
inside a capability found by the walk), and the kernel source it models. Evaluating the
table for a device set and a release gives :class:`~cfgaudit.regions.registry.Region` rows.

Kinds:
  exclusive  claimed with pci_request_config_region_exclusive(): the kernel itself checks
             sysfs writes there (warn once, taint).
  managed    programmed or cached by the kernel without a reservation: a user write
             silently desynchronises it (restored on resume/reset, or overwritten, or
             breaks the driver's view). The kernel says nothing.
  user       handed to user space (vfio-pci, or an administrator's claim file).

Offsets of registers inside capabilities: include/uapi/linux/pci_regs.h.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..pci_regs import (
    AMD_VENDOR,
    CXL_VENDOR,
    HYGON_VENDOR,
    PCI_CAP_ID_EXP,
    PCI_CLASS_BRIDGE_HOST,
    PCI_DOE_CAP_SIZEOF,
    PCI_EXT_CAP_ID_DOE,
    PCI_EXT_CAP_ID_DVSEC,
    PCI_EXT_CAP_ID_LTR,
)
from .capabilities import Capability, CapMap
from .configspace import ConfigSpace
from .kernel import KernelRange, KernelVersion
from .registry import Region

__all__ = ["Rule", "Abs", "InCap", "Match", "RULES", "DeviceView", "evaluate", "VFIO_DRIVERS"]

VFIO_DRIVERS = frozenset({"vfio-pci"})


@dataclass
class DeviceView:
    """A device as rules see it: bytes, decoded capabilities, and its place in the topology."""

    cs: ConfigSpace
    caps: CapMap

    @property
    def driver(self) -> str | None:
        return self.cs.driver


@dataclass(frozen=True)
class Match:
    """Which devices a rule applies to. ``None`` fields match anything.

    ``bound``: True = some driver other than vfio-pci is bound; ``drivers``: one of these.
    ``class_code`` compares the 16-bit base/sub class (``class_code >> 8``).
    """

    drivers: frozenset[str] | None = None
    bound: bool | None = None
    vendors: frozenset[int] | None = None
    classes: frozenset[int] | None = None
    header_types: frozenset[int] | None = None
    devfn: int | None = None
    root_bus: bool | None = None
    express_types: frozenset[int] | None = None
    test: Callable[[DeviceView], bool] | None = None

    def __call__(self, d: DeviceView) -> bool:
        cs = d.cs
        drv = cs.driver
        if self.bound is not None and (bool(drv) and drv not in VFIO_DRIVERS) != self.bound:
            return False
        if self.drivers is not None and drv not in self.drivers:
            return False
        if self.vendors is not None and cs.vendor not in self.vendors:
            return False
        if self.classes is not None and (cs.class_code is None or (cs.class_code >> 8) not in self.classes):
            return False
        if self.header_types is not None and cs.header_type not in self.header_types:
            return False
        if self.devfn is not None and cs.devfn != self.devfn:
            return False
        if self.root_bus is not None and cs.on_root_bus is not None and cs.on_root_bus != self.root_bus:
            return False
        if self.express_types is not None and d.caps.express_type not in self.express_types:
            return False
        if self.test is not None and not self.test(d):
            return False
        return True


@dataclass(frozen=True)
class Abs:
    """An absolute byte range of the header: ``[offset, offset+length)``."""

    offset: int
    length: int
    label: str

    def resolve(self, d: DeviceView) -> list[tuple[int, int, str | None]]:
        return [(self.offset, self.length, self.label)]


@dataclass(frozen=True)
class InCap:
    """A range inside every kernel-visible capability with this ID (and DVSEC vendor/ID).

    ``length=None`` means the capability's whole length (skipped when unknown).
    ``when`` can drop capabilities whose registers do not exist (e.g. no slot).
    """

    space: str
    cap_id: int
    offset: int = 0
    length: int | None = None
    label: str | None = None
    dvsec_vendor: int | None = None
    dvsec_id: int | None = None
    when: Callable[[DeviceView, Capability], bool] | None = None
    ranges: Callable[[DeviceView, Capability], list[tuple[int, int, str]]] | None = None

    def resolve(self, d: DeviceView) -> list[tuple[int, int, str | None]]:
        out: list[tuple[int, int, str | None]] = []
        for c in d.caps.caps:
            if c.space != self.space or c.id != self.cap_id or not c.kernel_visible:
                continue
            if self.dvsec_vendor is not None and c.dvsec_vendor != self.dvsec_vendor:
                continue
            if self.dvsec_id is not None and c.dvsec_id != self.dvsec_id:
                continue
            if self.when is not None and not self.when(d, c):
                continue
            base = f"{c.dvsec_name or c.tag}@{c.offset:#x}"
            if self.ranges is not None:
                out += [(c.offset + o, n, f"{base} {lab}") for o, n, lab in self.ranges(d, c)]
                continue
            n = self.length if self.length is not None else c.length
            if not n:
                continue
            out.append((c.offset + self.offset, n, f"{base} {self.label}" if self.label else base))
        return out


@dataclass(frozen=True)
class Rule:
    """One row of the ownership table."""

    id: str
    kind: str
    owner: str  # who owns the bytes; "{driver}" is replaced by the bound driver's name
    target: Abs | InCap
    source: str
    match: Match = field(default_factory=Match)
    kernels: KernelRange = field(default_factory=KernelRange)
    note: str = ""

    def regions(self, d: DeviceView, kernel: KernelVersion) -> list[Region]:
        if not self.kernels.contains(kernel) or not self.match(d):
            return []
        owner = self.owner.replace("{driver}", d.driver or "no driver")
        return [Region(d.cs.bdf, start, length, owner, self.kind, cap, self.id, self.source)
                for start, length, cap in self.target.resolve(d)]


# ---- helpers for register-level targets ------------------------------------------------------
def _exp_flags(d: DeviceView, c: Capability) -> int:
    return d.cs.word(c.offset + 2) or 0


def _slot_implemented(d: DeviceView, c: Capability) -> bool:
    return bool(_exp_flags(d, c) & 0x0100)  # PCI_EXP_FLAGS_SLOT


def _has_link(d: DeviceView, c: Capability) -> bool:
    # Root-complex integrated endpoints (type 0x9) and event collectors (0xa) have no link.
    return ((_exp_flags(d, c) >> 4) & 0xF) not in (0x9, 0xA)


def _is_root(d: DeviceView, c: Capability) -> bool:
    return ((_exp_flags(d, c) >> 4) & 0xF) in (0x4, 0xA)  # PCI_EXP_TYPE_ROOT_PORT, _RC_EC


def _exp_v2(d: DeviceView, c: Capability) -> bool:
    return (_exp_flags(d, c) & 0xF) >= 2


def _rebar_ctrls(d: DeviceView, c: Capability) -> list[tuple[int, int, str]]:
    # pci_regs.h PCI_REBAR_CTRL 8, one 8-byte (cap, ctrl) pair per BAR; NBAR in ctrl bits 7:5.
    v = d.cs.dword(c.offset + 8)
    n = ((v or 0) >> 5) & 7
    return [(8 + 8 * i, 4, f"BAR {i} Control") for i in range(n if 1 <= n <= 6 else 0)]


def _msi_all(d: DeviceView, c: Capability) -> list[tuple[int, int, str]]:
    return [(2, (c.length or 2) - 2, "Control, address, data, mask")]


ALWAYS = Match()
BOUND = Match(bound=True)
NOT_VFIO = Match(test=lambda d: d.driver not in VFIO_DRIVERS)
T0 = frozenset({0})
T1 = frozenset({1})

RULES: list[Rule] = [
    # ---------------- kernel-exclusive claims ---------------------------------------------
    Rule("cxl-pci-doe-exclusive", "exclusive", "cxl_pci",
         InCap("ext", PCI_EXT_CAP_ID_DOE, 0, PCI_DOE_CAP_SIZEOF, "DOE mailbox"),
         "drivers/cxl/pci.c devm_cxl_pci_create_doe(): pci_request_config_region_exclusive(pdev, off, "
         "PCI_DOE_CAP_SIZEOF, ...); added by 487d828d751d 'cxl/doe: Request exclusive DOE access' (v6.2), "
         "removed by af0a6c3587dc 'cxl/pci: Use CDAT DOE mailbox created by PCI core' (v6.4)",
         Match(drivers=frozenset({"cxl_pci"})), KernelRange("6.2-rc1", "6.4-rc1")),
    Rule("amd-node-root-exclusive", "exclusive", "amd_node",
         Abs(0x00, 0x100, "conventional config space (SMN index/data 0x60/0x64, HSMP 0xC4/0xC8, 0xB8/0xBC)"),
         "arch/x86/kernel/amd_node.c reserve_root_config_spaces() from amd_smn_init() (Zen CPUs only): "
         "pci_request_config_region_exclusive(root, 0, PCI_CFG_SPACE_SIZE, NULL) on devfn 00.0 of each root "
         "bus; 83518453074d 'x86/amd_node: Add SMN offsets to exclusive region access' (v6.15, stable 6.14.9)",
         Match(vendors=frozenset({AMD_VENDOR, HYGON_VENDOR}), devfn=0, root_bus=True),
         KernelRange("6.15-rc1", "6.18-rc5", also=(("6.14.9", "6.15-rc1"),)),
         note="cfgaudit cannot see the CPU family in a dump: it assumes a Zen host"),
    Rule("amd-node-hostbridge-exclusive", "exclusive", "amd_node",
         Abs(0x00, 0x100, "conventional config space (SMN index/data 0x60/0x64, HSMP 0xC4/0xC8, 0xB8/0xBC)"),
         "arch/x86/kernel/amd_node.c get_next_root(): every host bridge (class 0x060000) at devfn 0 on any "
         "bus; 0a4b61d9c2e4 'x86/amd_node: Fix AMD root device caching' (v6.18-rc5)",
         Match(vendors=frozenset({AMD_VENDOR, HYGON_VENDOR}), devfn=0,
               test=lambda d: d.cs.class_code == PCI_CLASS_BRIDGE_HOST << 8),
         KernelRange("6.18-rc5", None)),
    # ---------------- DOE: managed without a claim ----------------------------------------
    Rule("cxl-pci-doe-managed", "managed", "cxl_pci",
         InCap("ext", PCI_EXT_CAP_ID_DOE, 0, PCI_DOE_CAP_SIZEOF, "DOE mailbox"),
         "drivers/cxl/pci.c creates DOE mailboxes with pci_doe_create_mb() for CDAT (v6.0, 6.1) "
         "and makes no reservation before 6.2",
         Match(drivers=frozenset({"cxl_pci"})), KernelRange("6.0-rc1", "6.2-rc1")),
    Rule("pci-doe-managed", "managed", "PCI core",
         InCap("ext", PCI_EXT_CAP_ID_DOE, 0, PCI_DOE_CAP_SIZEOF, "DOE mailbox"),
         "drivers/pci/doe.c pci_doe_init(): the PCI core creates a mailbox for every DOE capability at "
         "enumeration (v6.4) and reserves nothing; a user write corrupts an exchange in flight",
         NOT_VFIO, KernelRange("6.4-rc1", None)),
    # ---------------- header ---------------------------------------------------------------
    Rule("command-enable", "managed", "{driver}",
         Abs(0x04, 2, "Command"),
         "drivers/pci/pci.c pci_enable_device()/pci_set_master(): the kernel sets I/O, memory and "
         "bus-master enables for a bound driver and caches them (dev->is_busmaster, enable_cnt)",
         BOUND),
    Rule("bars-type0", "managed", "PCI core",
         Abs(0x10, 24, "BAR 0-5"),
         "drivers/pci/setup-res.c pci_update_resource()/pci_std_update_resource(): BAR addresses mirror "
         "the kernel's resource tree; a changed BAR leaves the kernel mapping the old address",
         Match(header_types=T0, test=lambda d: d.driver not in VFIO_DRIVERS)),
    Rule("rom-type0", "managed", "PCI core",
         Abs(0x30, 4, "Expansion ROM"),
         "drivers/pci/setup-res.c pci_std_update_resource() (ROM BAR), drivers/pci/rom.c pci_enable_rom()",
         Match(header_types=T0, test=lambda d: d.driver not in VFIO_DRIVERS)),
    Rule("rom-type1", "managed", "PCI core",
         Abs(0x38, 4, "Expansion ROM"),
         "drivers/pci/setup-res.c pci_std_update_resource() (PCI_ROM_ADDRESS1 0x38 of a bridge)",
         Match(header_types=T1)),
    Rule("bars-type1", "managed", "PCI core",
         Abs(0x10, 8, "BAR 0-1"),
         "drivers/pci/setup-res.c pci_update_resource()", Match(header_types=T1)),
    Rule("bridge-buses", "managed", "PCI core",
         Abs(0x18, 3, "Primary/secondary/subordinate bus"),
         "drivers/pci/probe.c pci_scan_bridge_extend(): the kernel assigns and records bus numbers",
         Match(header_types=T1)),
    Rule("bridge-windows", "managed", "PCI core",
         Abs(0x1C, 2, "I/O base/limit"),
         "drivers/pci/setup-bus.c pci_setup_bridge_io()", Match(header_types=T1)),
    Rule("bridge-windows-mem", "managed", "PCI core",
         Abs(0x20, 16, "Memory and prefetchable base/limit"),
         "drivers/pci/setup-bus.c pci_setup_bridge_mmio()/pci_setup_bridge_mmio_pref()", Match(header_types=T1)),
    Rule("bridge-windows-io-upper", "managed", "PCI core",
         Abs(0x30, 4, "I/O base/limit upper 16 bits"),
         "drivers/pci/setup-bus.c pci_setup_bridge_io()", Match(header_types=T1)),
    Rule("bridge-control", "managed", "PCI core",
         Abs(0x3E, 2, "Bridge Control"),
         "drivers/pci/pci.c pci_reset_secondary_bus() (secondary bus reset), probe.c pci_scan_bridge_extend() "
         "(master abort mode); saved/restored by pci_save_state()", Match(header_types=T1)),
    # ---------------- MSI / MSI-X ------------------------------------------------------------
    Rule("msi", "managed", "{driver}",
         InCap("std", 0x05, ranges=_msi_all),
         "drivers/pci/msi/msi.c msi_capability_init()/pci_msi_update_mask()/__pci_write_msi_msg(): "
         "address, data, mask and enable are programmed and cached in the msi_desc",
         BOUND),
    Rule("msix", "managed", "{driver}",
         InCap("std", 0x11, 2, 2, "Message Control"),
         "drivers/pci/msi/msi.c msix_capability_init()/pci_msix_clear_and_set_ctrl(): enable and "
         "function-mask bits (the vector table lives in a BAR, not in config space)",
         BOUND),
    # ---------------- PCI Express capability ----------------------------------------------------
    Rule("pcie-devctl", "managed", "PCI core",
         InCap("std", PCI_CAP_ID_EXP, 0x08, 2, "Device Control"),
         "drivers/pci/probe.c pcie_set_mps()/pcie_set_readrq() via pci_configure_device(); "
         "pcie/aer.c pci_enable_pcie_error_reporting(); saved by pci_save_pcie_state()",
         NOT_VFIO),
    Rule("pcie-lnkctl", "managed", "PCI core",
         InCap("std", PCI_CAP_ID_EXP, 0x10, 2, "Link Control", when=_has_link),
         "drivers/pci/pcie/aspm.c pcie_config_aspm_dev()/pcie_aspm_configure_common_clock(): ASPM, "
         "common clock and clock PM state is tracked in struct pcie_link_state",
         NOT_VFIO),
    Rule("pcie-sltctl", "managed", "pciehp",
         InCap("std", PCI_CAP_ID_EXP, 0x18, 2, "Slot Control", when=_slot_implemented),
         "drivers/pci/hotplug/pciehp_hpc.c pcie_write_cmd(): hot-plug interrupts, power and "
         "indicators; pciehp tracks the command in flight", NOT_VFIO),
    Rule("pcie-rtctl", "managed", "PCI core",
         InCap("std", PCI_CAP_ID_EXP, 0x1C, 2, "Root Control", when=_is_root),
         "drivers/pci/pcie/pme.c pcie_pme_interrupt_enable(); pcie/aer.c (system error enables)", NOT_VFIO),
    Rule("pcie-devctl2", "managed", "PCI core",
         InCap("std", PCI_CAP_ID_EXP, 0x28, 2, "Device Control 2", when=_exp_v2),
         "drivers/pci/pci.c pci_enable_atomic_ops_to_root(), pci_configure_ari(); pcie/aspm.c LTR enable; "
         "probe.c pci_configure_ltr()/pci_configure_eetlp_prefix(); saved by pci_save_pcie_state()", NOT_VFIO),
    Rule("pcie-lnkctl2", "managed", "PCI core",
         InCap("std", PCI_CAP_ID_EXP, 0x30, 2, "Link Control 2", when=lambda d, c: _exp_v2(d, c) and _has_link(d, c)),
         "drivers/pci/pcie/bwctrl.c pcie_set_target_speed() (v6.13); saved by pci_save_pcie_state()", NOT_VFIO),
    # ---------------- power management -----------------------------------------------------------
    Rule("pm-pmcsr", "managed", "PCI core",
         InCap("std", 0x01, 0x04, 2, "PMCSR"),
         "drivers/pci/pci.c pci_set_power_state()/pci_raw_set_power_state(): dev->current_state mirrors "
         "the PMCSR state; PME enable from pci_pme_active()", NOT_VFIO),
    # ---------------- extended capabilities --------------------------------------------------------
    Rule("aer", "managed", "PCI core",
         InCap("ext", 0x01, 0x08, 0x14, "masks, severity, capabilities and control"),
         "drivers/pci/pcie/aer.c pci_aer_init()/aer_enable_rootport(): mask, severity and ECRC settings; "
         "saved by pci_save_aer_state()", NOT_VFIO),
    Rule("aer-root", "managed", "PCI core",
         InCap("ext", 0x01, 0x2C, 4, "Root Error Command", when=lambda d, c: d.caps.express_type in (0x4, 0xA)),
         "drivers/pci/pcie/aer.c aer_enable_rootport()/aer_disable_rootport()", NOT_VFIO),
    Rule("dpc", "managed", "PCI core",
         InCap("ext", 0x1D, 0x06, 2, "DPC Control"),
         "drivers/pci/pcie/dpc.c dpc_probe()/pci_dpc_init(); saved by pci_save_dpc_state()", NOT_VFIO),
    Rule("acs", "managed", "PCI core",
         InCap("ext", 0x0D, 0x06, 2, "ACS Control"),
         "drivers/pci/pci.c pci_enable_acs(): IOMMU isolation depends on it", NOT_VFIO),
    Rule("ats", "managed", "IOMMU",
         InCap("ext", 0x0F, 0x06, 2, "ATS Control"),
         "drivers/pci/ats.c pci_enable_ats()/pci_disable_ats() (dev->ats_enabled)", NOT_VFIO),
    Rule("pri", "managed", "IOMMU",
         InCap("ext", 0x13, 0x04, 2, "PRI Control"),
         "drivers/pci/ats.c pci_enable_pri()/pci_reset_pri()", NOT_VFIO),
    Rule("pri-alloc", "managed", "IOMMU",
         InCap("ext", 0x13, 0x0C, 4, "Outstanding Page Request Allocation"),
         "drivers/pci/ats.c pci_enable_pri()", NOT_VFIO),
    Rule("pasid", "managed", "IOMMU",
         InCap("ext", 0x1B, 0x06, 2, "PASID Control"),
         "drivers/pci/ats.c pci_enable_pasid()/pci_disable_pasid()", NOT_VFIO),
    Rule("sriov", "managed", "{driver}",
         InCap("ext", 0x10, 0x08, 2, "SR-IOV Control"),
         "drivers/pci/iov.c sriov_enable()/sriov_disable() (VF Enable, VF MSE, ARI Capable Hierarchy)",
         BOUND),
    Rule("sriov-numvfs", "managed", "{driver}",
         InCap("ext", 0x10, 0x10, 2, "NumVFs"),
         "drivers/pci/iov.c sriov_enable() (pci_iov_set_numvfs())", BOUND),
    Rule("sriov-vf-bars", "managed", "PCI core",
         InCap("ext", 0x10, 0x24, 24, "VF BAR 0-5"),
         "drivers/pci/iov.c pci_iov_update_resource()", NOT_VFIO),
    Rule("l1ss", "managed", "PCI core",
         InCap("ext", 0x1E, 0x08, 8, "L1 PM Substates Control 1/2"),
         "drivers/pci/pcie/aspm.c aspm_calc_l12_info()/pcie_config_aspm_l1ss(); saved by "
         "pci_save_aspm_l1ss_state()", NOT_VFIO),
    Rule("ltr", "managed", "PCI core",
         InCap("ext", PCI_EXT_CAP_ID_LTR, 0x04, 4, "Max Snoop/No-Snoop Latency"),
         "drivers/pci/pci.c pci_bridge_reconfigure_ltr()/pci_save_ltr_state(); pcie/aspm.c", NOT_VFIO),
    Rule("ptm", "managed", "PCI core",
         InCap("ext", 0x1F, 0x08, 4, "PTM Control"),
         "drivers/pci/pcie/ptm.c pci_enable_ptm()/pci_restore_ptm_state()", NOT_VFIO),
    Rule("rebar", "managed", "PCI core",
         InCap("ext", 0x15, ranges=_rebar_ctrls),
         "drivers/pci/pci.c pci_rebar_set_size()/pci_restore_rebar_state()", NOT_VFIO),
    # ---------------- CXL DVSECs -----------------------------------------------------------------
    Rule("cxl-dvsec", "managed", "cxl_pci",
         InCap("ext", PCI_EXT_CAP_ID_DVSEC, dvsec_vendor=CXL_VENDOR),
         "drivers/cxl/pci.c + drivers/cxl/core/pci.c cxl_dvsec_rr_decode()/cxl_hdm_decode_init(): "
         "Mem_Enable, range registers and lock bits of the CXL device DVSECs",
         Match(drivers=frozenset({"cxl_pci"})), KernelRange("5.12-rc1", None)),
    # ---------------- user space ---------------------------------------------------------------
    Rule("vfio-user", "user", "vfio-pci",
         Abs(0x00, 0x1000, "whole config space, mediated by VFIO"),
         "drivers/vfio/pci/vfio_pci_config.c vfio_pci_config_rw(): a vfio-pci device belongs to its "
         "user; VFIO applies its own per-capability permissions",
         Match(drivers=VFIO_DRIVERS)),
]


def evaluate(devices: Iterable[DeviceView], kernel: KernelVersion, rules: list[Rule] | None = None) -> list[Region]:
    """All regions the table gives for ``devices`` on ``kernel`` (claims in table order)."""
    out: list[Region] = []
    for d in devices:
        for rule in rules if rules is not None else RULES:
            for r in rule.regions(d, kernel):
                if r.kind == "user" and d.cs.config_size:
                    r = Region(r.bdf, r.start, min(r.length, d.cs.config_size), r.owner, r.kind, r.capability,
                               r.rule, r.source)
                out.append(r)
    return out
