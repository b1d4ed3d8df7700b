"""Capability lists: the standard list (from 0x34) and the extended list (from 0x100).

The walk follows pciutils' lspci (ls-caps.c show_caps(), ls-ecaps.c show_ext_caps()) so the
offsets it lists equal what ``lspci -vvv`` prints, and it also records which entries the
kernel's own walk reaches (drivers/pci/pci.c __pci_find_next_cap_ttl() and
pci_find_next_ext_capability()): those are the ones drivers and the PCI core can claim.
Loops, misaligned or out-of-range pointers, all-ones/zero headers and extended space that
aliases the header come back as :class:`Anomaly` rows, never as exceptions.

Capability IDs and names: include/uapi/linux/pci_regs.h (PCI_CAP_ID_*, PCI_EXT_CAP_ID_*),
completed from the PCIe Base Spec r6.0 sec 7 and pciutils lib/header.h for IDs the kernel
does not define. Lengths: the kernel's ``*_SIZEOF`` constants where it has one, otherwise
the register layout in the spec section named beside the rule. Offsets and lengths are bytes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from ..pci_regs import (
    CXL_VENDOR,
    PCI_CAP_ID_EXP,
    PCI_CAP_ID_PCIX,
    PCI_CAPABILITY_LIST,
    PCI_CB_CAPABILITY_LIST,
    PCI_CFG_SPACE_EXP_SIZE,
    PCI_CFG_SPACE_SIZE,
    PCI_DOE_CAP_SIZEOF,
    PCI_EXT_CAP_ID_DOE,
    PCI_EXT_CAP_ID_DVSEC,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
)
from .configspace import ConfigSpace, ext_space_aliased

__all__ = [
    "Capability",
    "Anomaly",
    "CapMap",
    "CapSpec",
    "STD_CAPS",
    "EXT_CAPS",
    "CXL_DVSEC_IDS",
    "CXL_VENDOR",
    "walk",
    "std_cap_name",
    "ext_cap_name",
]

PCI_FIND_CAP_TTL = 48  # drivers/pci/pci.c
PCI_EXT_WALK_TTL = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) // 8  # 480, pci_find_next_ext_capability()

# CXL DVSEC IDs: CXL 3.1 sec 8.1 table 8-2; drivers/cxl/cxlpci.h CXL_DVSEC_*.
CXL_DVSEC_IDS: dict[int, str] = {
    0x0: "Device",
    0x2: "Non-CXL Function Map",
    0x3: "Extensions for Ports",
    0x4: "GPF for Ports",
    0x5: "GPF for Devices",
    0x7: "Flex Bus Port",
    0x8: "Register Locator",
    0x9: "MLD",
    0xA: "Test Capability",
}

SizeRule = Callable[["_Ctx", int], "int | None"]


@dataclass(frozen=True)
class CapSpec:
    """One capability ID: its short kernel-style tag, its name, and how long it is."""

    tag: str
    name: str
    size: SizeRule | int | None = None


@dataclass
class Capability:
    """One entry of a capability list. ``length`` in bytes, ``None`` when it cannot be known."""

    space: str  # "std" | "ext"
    offset: int
    id: int
    name: str
    length: int | None
    version: int | None = None  # extended capabilities only
    tag: str = ""  # short kernel-style name (PCI_CAP_ID_<tag> / PCI_EXT_CAP_ID_<tag>)
    kernel_visible: bool = True
    dvsec_vendor: int | None = None
    dvsec_id: int | None = None
    dvsec_name: str | None = None

    @property
    def end(self) -> int | None:
        """One past the last byte (``offset + length``), or ``None``."""
        return None if self.length is None else self.offset + self.length

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.dvsec_vendor is None:
            for k in ("dvsec_vendor", "dvsec_id", "dvsec_name"):
                d.pop(k)
        return d


@dataclass
class Anomaly:
    """Something odd in a chain: ``kind`` is a stable token, ``message`` says it for people."""

    # loop | misaligned | broken | header-pointer | below-ext | unknown-bytes | all-ones | aliased | no-ext-space
    # | truncated
    kind: str
    space: str  # "std" | "ext" | "header"
    offset: int | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CapMap:
    """Both lists of one function, in chain order, plus the anomalies met on the way."""

    caps: list[Capability] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    express_type: int | None = None  # PCIe device/port type (PCIe cap flags bits 7:4)

    def note(self, kind: str, space: str, offset: int | None, message: str) -> None:
        """Record an :class:`Anomaly` met on the walk."""
        self.anomalies.append(Anomaly(kind, space, offset, message))

    def find(self, space: str, cap_id: int) -> list[Capability]:
        return [c for c in self.caps if c.space == space and c.id == cap_id]


class _Ctx:
    """What size rules may look at: the bytes and what the walk learnt so far."""

    def __init__(self, cs: ConfigSpace) -> None:
        self.cs = cs
        self.express: int | None = None  # offset of the PCIe capability
        self.express_type: int | None = None

    def lanes(self) -> int | None:
        """Maximum link width from Link Capabilities (PCIe cap +0x0C bits 9:4)."""
        if self.express is None:
            return None
        v = self.cs.dword(self.express + 0x0C)
        return None if v is None else (v >> 4) & 0x3F

    def is_root_like(self) -> bool:
        # PCI_EXP_TYPE_ROOT_PORT 0x4, PCI_EXP_TYPE_RC_EC 0xa (pci_regs.h)
        return self.express_type in (0x4, 0xA)


def _r4(n: int) -> int:
    return (n + 3) & ~3


# ---- size rules: standard capabilities ----------------------------------------------------
def _msi_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h: PCI_MSI_FLAGS_64BIT 0x0080, PCI_MSI_FLAGS_MASKBIT 0x0100;
    # data at 8 (32-bit) / 12 (64-bit), pending bits end at 20 / 24.
    fl = c.cs.word(off + 2)
    if fl is None:
        return None
    is64, mask = bool(fl & 0x80), bool(fl & 0x100)
    if mask:
        return 24 if is64 else 20
    return 14 if is64 else 10


def _vndr_len(c: _Ctx, off: int) -> int | None:
    # Vendor-specific capability: length byte at +2 (PCI_CAP_FLAGS, PCI Local Bus 3.0 sec 6.8.4)
    return c.cs.byte(off + 2)


def _pcix_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_CAP_PCIX_SIZEOF_V0 8, _V1 24 (endpoints); bridges use another layout.
    if c.cs.header_type == 1:
        return None
    st = c.cs.dword(off + 4)
    if st is None:
        return None
    return 8 if ((st >> 28) & 3) == 0 else 24


def _exp_size(c: _Ctx, off: int) -> int | None:
    # PCIe Base 6.0 sec 7.5.3: v1 structure ends after Root Status (0x24), v2 after Slot Status 2 (0x3C).
    fl = c.cs.word(off + 2)
    if fl is None:
        return None
    return 0x24 if (fl & 0xF) == 1 else 0x3C


def _sata_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_SATA_SIZEOF_SHORT 8, _LONG 16 (BAR location 0xF: index/data pair in config space)
    v = c.cs.dword(off + 4)
    if v is None:
        return None
    return 16 if (v & 0xF) == 0xF else 8


def _ea_size(c: _Ctx, off: int) -> int | None:
    # PCI Enhanced Allocation ECN: entries after a 4-byte header (8 for type 1); each entry's
    # first dword bits 2:0 give the number of dwords after it.
    n = c.cs.byte(off + 2)
    if n is None:
        return None
    pos = off + (8 if c.cs.header_type == 1 else 4)
    for _ in range(n & 0x3F):
        d = c.cs.dword(pos)
        if d is None or pos >= PCI_CFG_SPACE_SIZE:
            return None
        pos += 4 + 4 * (d & 7)
    return pos - off


# ---- size rules: extended capabilities ----------------------------------------------------
def _aer_size(c: _Ctx, off: int) -> int | None:
    # PCIe 6.0 sec 7.8.4: header log ends at 0x2C; root ports and RCECs add root command,
    # status and source ID (pci_regs.h PCI_ERR_ROOT_COMMAND 0x2c .. PCI_ERR_ROOT_ERR_SRC 0x34);
    # the TLP prefix log (0x38, 16 bytes) exists when End-End TLP Prefix is supported
    # (Device Capabilities 2 bit 21).
    if c.express is None:
        return None
    end = 0x38 if c.is_root_like() else 0x2C
    cap2 = c.cs.dword(c.express + 0x24)
    if cap2 is not None and cap2 & (1 << 21):
        end = 0x48
    return end


def _vc_size(c: _Ctx, off: int) -> int | None:
    # PCIe 6.0 sec 7.9.1: resource registers at 0x10 + 12*n for VC0..VCn (Extended VC Count,
    # Port VC Capability 1 bits 2:0); arbitration tables elsewhere are not counted.
    v = c.cs.dword(off + 4)
    if v is None:
        return None
    return 0x1C + 12 * (v & 7)


def _rcld_size(c: _Ctx, off: int) -> int | None:
    # PCIe 6.0 sec 7.9.8: 16-byte link entries from 0x10; count in Element Self Description bits 15:8.
    v = c.cs.dword(off + 4)
    if v is None:
        return None
    return 0x10 + 16 * ((v >> 8) & 0xFF)


def _rcec_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_RCEC_RCIEP_BITMAP 4, PCI_RCEC_BUSN 8 (version 2 and later)
    h = c.cs.dword(off)
    return None if h is None else (12 if ((h >> 16) & 0xF) >= 2 else 8)


def _vsec_len(c: _Ctx, off: int) -> int | None:
    # Vendor-specific extended capability: VSEC length in header 1 bits 31:20 (PCIe 6.0 sec 7.9.5)
    v = c.cs.dword(off + 4)
    return None if v is None else v >> 20


def _acs_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_EXT_CAP_ACS_SIZEOF 8, plus the egress control vector when ACS capability
    # bit 5 (PCI_ACS_EC) is set: vector size bits 15:8, 0 meaning 256 bits.
    v = c.cs.word(off + 4)
    if v is None:
        return None
    if not v & 0x20:
        return 8
    bits = (v >> 8) & 0xFF or 256
    return 8 + 4 * ((bits + 31) // 32)


def _mcast_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_EXT_CAP_MCAST_ENDPOINT_SIZEOF 40; ports add the overlay registers (0x30).
    if c.express_type is None:
        return None
    return 40 if c.express_type in (0x0, 0x1, 0x9) else 0x30


def _rebar_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_REBAR_CTRL 8, PCI_REBAR_CTRL_NBAR_MASK 0xE0: 4 + 8 bytes per resizable BAR.
    v = c.cs.dword(off + 8)
    if v is None:
        return None
    n = (v >> 5) & 7
    return 4 + 8 * n if 1 <= n <= 6 else None


def _dpa_size(c: _Ctx, off: int) -> int | None:
    # PCIe 6.0 sec 7.9.12: allocation array of Substate_Max+1 bytes from 0x10.
    v = c.cs.dword(off + 4)
    return None if v is None else 0x10 + _r4((v & 0x1F) + 1)


def _tph_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h PCI_TPH_CAP_LOC_MASK 0x600 (1 = table in this capability), table size bits 26:16.
    v = c.cs.dword(off + 4)
    if v is None:
        return None
    if (v >> 9) & 3 == 1:
        return 0x0C + _r4(2 * (((v >> 16) & 0x7FF) + 1))
    return 0x0C


def _per_lane(base: int, per: int) -> SizeRule:
    def rule(c: _Ctx, off: int) -> int | None:
        n = c.lanes()
        return None if not n else base + _r4(per * n)
    return rule


def _dpc_size(c: _Ctx, off: int) -> int | None:
    # pci_regs.h: DPC status/source at 8; with RP Extensions (DPC cap bit 5) the RP PIO
    # registers and logs run to the TLP prefix log at 0x34 (16 bytes).
    v = c.cs.word(off + 4)
    if v is None:
        return None
    return 0x44 if v & 0x20 else 0x0C


def _dvsec_len(c: _Ctx, off: int) -> int | None:
    # DVSEC header 1 bits 31:20 (PCIe 6.0 sec 7.9.6; pci_regs.h PCI_DVSEC_HEADER1_LEN)
    v = c.cs.dword(off + 4)
    return None if v is None else v >> 20


STD_CAPS: dict[int, CapSpec] = {
    0x00: CapSpec("NULL", "Null", None),
    0x01: CapSpec("PM", "Power Management", 8),  # PCI_PM_SIZEOF
    0x02: CapSpec("AGP", "AGP", 12),  # PCI_AGP_SIZEOF
    0x03: CapSpec("VPD", "Vital Product Data", 8),  # address + data registers
    0x04: CapSpec("SLOTID", "Slot Identification", 4),
    0x05: CapSpec("MSI", "MSI", _msi_size),
    0x06: CapSpec("CHSWP", "CompactPCI HotSwap", 4),
    0x07: CapSpec("PCIX", "PCI-X", _pcix_size),
    0x08: CapSpec("HT", "HyperTransport", None),
    0x09: CapSpec("VNDR", "Vendor-Specific", _vndr_len),
    0x0A: CapSpec("DBG", "Debug port", 4),
    0x0B: CapSpec("CCRC", "CompactPCI Central Resource Control", None),
    0x0C: CapSpec("SHPC", "PCI Standard Hot-Plug Controller", 8),
    0x0D: CapSpec("SSVID", "Bridge subsystem vendor/device ID", 8),
    0x0E: CapSpec("AGP3", "AGP 8x", None),
    0x0F: CapSpec("SECDEV", "Secure Device", None),
    0x10: CapSpec("EXP", "PCI Express", _exp_size),
    0x11: CapSpec("MSIX", "MSI-X", 12),  # PCI_CAP_MSIX_SIZEOF
    0x12: CapSpec("SATA", "SATA HBA", _sata_size),
    0x13: CapSpec("AF", "PCI Advanced Features", 6),  # PCI_CAP_AF_SIZEOF
    0x14: CapSpec("EA", "Enhanced Allocation", _ea_size),
}

EXT_CAPS: dict[int, CapSpec] = {
    0x00: CapSpec("NULL", "Null", None),
    0x01: CapSpec("ERR", "Advanced Error Reporting", _aer_size),
    0x02: CapSpec("VC", "Virtual Channel", _vc_size),
    0x03: CapSpec("DSN", "Device Serial Number", 12),  # PCI_EXT_CAP_DSN_SIZEOF
    0x04: CapSpec("PWR", "Power Budgeting", 16),
    0x05: CapSpec("RCLD", "Root Complex Link Declaration", _rcld_size),
    0x06: CapSpec("RCILC", "Root Complex Internal Link Control", None),
    0x07: CapSpec("RCEC", "Root Complex Event Collector", _rcec_size),
    0x08: CapSpec("MFVC", "Multi-Function VC", None),
    0x09: CapSpec("VC9", "Virtual Channel", _vc_size),
    0x0A: CapSpec("RCRB", "Root Complex Register Block", None),
    0x0B: CapSpec("VNDR", "Vendor-Specific", _vsec_len),
    0x0C: CapSpec("CAC", "Config Access Correlation", None),
    0x0D: CapSpec("ACS", "Access Control Services", _acs_size),
    0x0E: CapSpec("ARI", "Alternative Routing-ID Interpretation", 8),  # PCI_EXT_CAP_ARI_SIZEOF
    0x0F: CapSpec("ATS", "Address Translation Services", 8),  # PCI_EXT_CAP_ATS_SIZEOF
    0x10: CapSpec("SRIOV", "Single Root I/O Virtualization", 0x40),  # PCI_EXT_CAP_SRIOV_SIZEOF
    0x11: CapSpec("MRIOV", "Multi Root I/O Virtualization", None),
    0x12: CapSpec("MCAST", "Multicast", _mcast_size),
    0x13: CapSpec("PRI", "Page Request Interface", 16),  # PCI_EXT_CAP_PRI_SIZEOF
    0x14: CapSpec("AMD_XXX", "Reserved for AMD", None),
    0x15: CapSpec("REBAR", "Resizable BAR", _rebar_size),
    0x16: CapSpec("DPA", "Dynamic Power Allocation", _dpa_size),
    0x17: CapSpec("TPH", "TPH Requester", _tph_size),
    0x18: CapSpec("LTR", "Latency Tolerance Reporting", 8),  # PCI_EXT_CAP_LTR_SIZEOF
    0x19: CapSpec("SECPCI", "Secondary PCI Express", _per_lane(0x0C, 2)),  # lane eq control, 2 bytes/lane
    0x1A: CapSpec("PMUX", "Protocol Multiplexing", None),
    0x1B: CapSpec("PASID", "Process Address Space ID", 8),  # PCI_EXT_CAP_PASID_SIZEOF
    0x1C: CapSpec("LNR", "LN Requester", 8),
    0x1D: CapSpec("DPC", "Downstream Port Containment", _dpc_size),
    0x1E: CapSpec("L1SS", "L1 PM Substates", 0x10),  # PCI_L1SS_CTL2 0x0c + 4
    0x1F: CapSpec("PTM", "Precision Time Measurement", 12),  # PCI_EXT_CAP_PTM_SIZEOF
    0x20: CapSpec("M_PCIE", "PCI Express over M-PHY", None),
    0x21: CapSpec("FRS", "FRS Queueing", None),
    0x22: CapSpec("RTR", "Readiness Time Reporting", None),
    0x23: CapSpec("DVSEC", "Designated Vendor-Specific", _dvsec_len),
    0x24: CapSpec("VF_REBAR", "VF Resizable BAR", _rebar_size),
    0x25: CapSpec("DLF", "Data Link Feature", 12),
    0x26: CapSpec("PL_16GT", "Physical Layer 16.0 GT/s", _per_lane(0x20, 1)),
    0x27: CapSpec("LMR", "Lane Margining at the Receiver", _per_lane(0x08, 4)),
    0x28: CapSpec("HIER_ID", "Hierarchy ID", None),
    0x29: CapSpec("NPEM", "Native PCIe Enclosure Management", 0x10),
    0x2A: CapSpec("PL_32GT", "Physical Layer 32.0 GT/s", _per_lane(0x20, 1)),
    0x2B: CapSpec("ALT_PROT", "Alternate Protocol", None),
    0x2C: CapSpec("SFI", "System Firmware Intermediary", None),
    0x2D: CapSpec("SHADOW", "Shadow Functions", None),
    PCI_EXT_CAP_ID_DOE: CapSpec("DOE", "Data Object Exchange", PCI_DOE_CAP_SIZEOF),
    0x2F: CapSpec("DEV3", "Device 3", 0x10),  # PCI_DEV3_STA 0xc + 4
    0x30: CapSpec("IDE", "Integrity and Data Encryption", None),
    0x31: CapSpec("PL_64GT", "Physical Layer 64.0 GT/s", None),
    0x32: CapSpec("FLIT_LOG", "Flit Logging", None),
    0x33: CapSpec("FLIT_PM", "Flit Performance Measurement", None),
    0x34: CapSpec("FLIT_EI", "Flit Error Injection", None),
    0x35: CapSpec("SVC", "Streamlined Virtual Channel", None),
    0x36: CapSpec("MMIO_RBL", "MMIO Register Block Locator", None),
    0x37: CapSpec("NOP_FLIT", "NOP Flit", None),
    0x38: CapSpec("SIOV", "Scalable I/O Virtualization", None),
    0x39: CapSpec("PL_128GT", "Physical Layer 128.0 GT/s", None),
    0x3A: CapSpec("CAPT_D", "Captured Data", None),
}


def std_cap_name(cap_id: int) -> str:
    spec = STD_CAPS.get(cap_id)
    return spec.name if spec else f"Capability {cap_id:#04x}"


def ext_cap_name(cap_id: int) -> str:
    spec = EXT_CAPS.get(cap_id)
    return spec.name if spec else f"Extended Capability {cap_id:#06x}"


def _size(spec: CapSpec | None, ctx: _Ctx, off: int) -> int | None:
    if spec is None or spec.size is None:
        return None
    if isinstance(spec.size, int):
        return spec.size
    return spec.size(ctx, off)


def _kernel_std_positions(cs: ConfigSpace, ptr_reg: int) -> set[int]:
    """Offsets the kernel's __pci_find_next_cap_ttl() walk reaches (any capability ID)."""
    seen: set[int] = set()
    pos = cs.byte(ptr_reg)
    ttl = PCI_FIND_CAP_TTL
    while pos is not None and ttl > 0:
        ttl -= 1
        if pos < 0x40:
            break
        pos &= ~3
        ent = cs.word(pos)
        if ent is None or (ent & 0xFF) == 0xFF:
            break
        seen.add(pos)
        pos = ent >> 8
    return seen


def _kernel_ext_positions(cs: ConfigSpace) -> set[int]:
    """Offsets pci_find_next_ext_capability() reaches (for a 4096-byte function)."""
    seen: set[int] = set()
    pos = PCI_CFG_SPACE_SIZE
    header = cs.dword(pos)
    if header is None or header == 0:
        return seen
    ttl = PCI_EXT_WALK_TTL
    while ttl > 0:
        ttl -= 1
        seen.add(pos)
        pos = (header >> 20) & 0xFFC
        if pos < PCI_CFG_SPACE_SIZE:
            break
        header = cs.dword(pos)
        if header is None:
            break
    return seen


def walk(cs: ConfigSpace) -> CapMap:
    """Decode both capability lists of ``cs``. Never raises for odd bytes."""
    out = CapMap()
    ctx = _Ctx(cs)
    status = cs.word(PCI_STATUS)
    htype = cs.header_type
    if status is None or htype is None:
        out.note("unknown-bytes", "header", 0, "header bytes unknown: no capability list decoded")
        return out
    can_have_ext = False
    if status & PCI_STATUS_CAP_LIST:
        ptr_reg = PCI_CB_CAPABILITY_LIST if htype == 2 else PCI_CAPABILITY_LIST
        kernel_seen = _kernel_std_positions(cs, ptr_reg)
        raw = cs.byte(ptr_reg)
        if raw is None:
            out.note("unknown-bytes", "std", ptr_reg, f"capability pointer at {ptr_reg:#04x} lies in bytes not read")
        if raw is not None and raw & 3:
            out.note("misaligned", "std", ptr_reg,
                     f"capability pointer {raw:#04x} is not dword-aligned (low bits ignored)")
        where = (raw or 0) & ~3
        seen: set[int] = set()
        while where:
            if not cs.is_known(where, 4):
                out.note("unknown-bytes", "std", where, f"capability at {where:#04x} lies in bytes not read")
                break
            cap_id = cs.byte(where) or 0
            nxt_raw = cs.byte(where + 1) or 0
            if where in seen:
                out.note("loop", "std", where, f"capability chain loops back to {where:#04x}")
                break
            seen.add(where)
            if cap_id == 0xFF:
                out.note("broken", "std", where, f"capability ID 0xff at {where:#04x}: chain broken")
                break
            if where < 0x40:
                out.note("header-pointer", "std", where,
                         f"capability pointer {where:#04x} points into the header (the kernel stops here)")
            spec = STD_CAPS.get(cap_id)
            if cap_id == PCI_CAP_ID_EXP:  # PCI Express: the port type decides several sizes
                ctx.express = where
                fl = cs.word(where + 2)
                ctx.express_type = out.express_type = None if fl is None else (fl >> 4) & 0xF
                can_have_ext = True
            elif cap_id == PCI_CAP_ID_PCIX:
                can_have_ext = True
            out.caps.append(Capability("std", where, cap_id, std_cap_name(cap_id), None,
                                       kernel_visible=where in kernel_seen,
                                       tag=spec.tag if spec else f"CAP_{cap_id:02x}"))
            if nxt_raw & 3:
                out.note("misaligned", "std", where + 1,
                         f"next pointer {nxt_raw:#04x} at {where:#04x} is not dword-aligned (low bits ignored)")
            where = nxt_raw & ~3
        # Sizes once the PCIe capability (wherever it sits in the chain) is known.
        for c in out.caps:
            c.length = _size(STD_CAPS.get(c.id), ctx, c.offset)
    if can_have_ext:
        _walk_ext(cs, ctx, out)
    return out


def _walk_ext(cs: ConfigSpace, ctx: _Ctx, out: CapMap) -> None:
    if not cs.is_known(PCI_CFG_SPACE_SIZE, 4):
        out.anomalies.append(Anomaly("no-ext-space", "ext", PCI_CFG_SPACE_SIZE,
                                     "extended config space not captured (256-byte dump or non-root read)"))
        return
    ext_ok = cs.config_size is None or cs.config_size > PCI_CFG_SPACE_SIZE
    aliased = ext_space_aliased(cs)
    if aliased:
        out.anomalies.append(Anomaly("aliased", "ext", PCI_CFG_SPACE_SIZE,
                                     "extended space mirrors the header: the kernel treats the function as 256 bytes"))
        ext_ok = False
    kernel_seen = _kernel_ext_positions(cs) if ext_ok else set()
    where = PCI_CFG_SPACE_SIZE
    seen: set[int] = set()
    first = True
    while True:
        if not cs.is_known(where, 4):
            out.note("unknown-bytes", "ext", where, f"extended capability at {where:#05x} lies in bytes not read")
            break
        header = cs.dword(where) or 0
        if header == 0:
            if not first:
                out.note("broken", "ext", where, f"extended chain points to an empty header at {where:#05x}")
            break
        if header == 0xFFFFFFFF:
            out.note("all-ones", "ext", where, f"extended capability header at {where:#05x} reads all ones")
            break
        if where in seen:
            out.note("loop", "ext", where, f"extended capability chain loops back to {where:#05x}")
            break
        seen.add(where)
        if where < PCI_CFG_SPACE_SIZE:
            out.note("below-ext", "ext", where,
                     f"extended chain points to {where:#04x}, below 0x100 (the kernel stops here)")
        first = False
        cap_id = header & 0xFFFF
        version = (header >> 16) & 0xF
        spec = EXT_CAPS.get(cap_id)
        cap = Capability("ext", where, cap_id, ext_cap_name(cap_id), _size(spec, ctx, where), version=version,
                         kernel_visible=where in kernel_seen, tag=spec.tag if spec else f"EXT_{cap_id:04x}")
        if cap_id == PCI_EXT_CAP_ID_DVSEC:
            h1, h2 = cs.dword(where + 4), cs.word(where + 8)
            if h1 is not None:
                cap.dvsec_vendor = h1 & 0xFFFF
            if h2 is not None:
                cap.dvsec_id = h2
            if cap.dvsec_vendor == CXL_VENDOR and h2 is not None:
                cap.dvsec_name = "CXL " + CXL_DVSEC_IDS.get(h2, f"DVSEC ID {h2:#x}")
        if cap.length is not None and where + cap.length > PCI_CFG_SPACE_EXP_SIZE:
            out.note("truncated", "ext", where,
                     f"{cap.name} at {where:#05x} claims {cap.length} bytes, past the end of config space")
        out.caps.append(cap)
        nxt = header >> 20
        if nxt & 3:
            out.note("misaligned", "ext", where,
                     f"next pointer {nxt:#05x} at {where:#05x} is not dword-aligned (low bits ignored)")
        where = nxt & ~3
        if not where:
            break
