"""Register offsets, capability IDs and sizes cfgaudit relies on, each with its source.

One place for the numbers of PCI configuration space (the names follow the kernel's
include/uapi/linux/pci_regs.h). Offsets and sizes are bytes; offsets inside a capability are
relative to the capability's own offset.
"""
from __future__ import annotations

__all__ = [
    "PCI_VENDOR_ID", "PCI_DEVICE_ID", "PCI_COMMAND", "PCI_STATUS", "PCI_REVISION_ID", "PCI_CLASS_PROG",
    "PCI_HEADER_TYPE", "PCI_SECONDARY_BUS", "PCI_CAPABILITY_LIST", "PCI_CB_CAPABILITY_LIST",
    "PCI_STATUS_CAP_LIST", "PCI_CFG_SPACE_SIZE", "PCI_CFG_SPACE_EXP_SIZE",
    "PCI_CAP_ID_EXP", "PCI_CAP_ID_PCIX", "PCI_EXT_CAP_ID_DVSEC", "PCI_EXT_CAP_ID_DOE", "PCI_EXT_CAP_ID_LTR",
    "PCI_DOE_CAP_SIZEOF", "PCI_DOE_CTRL", "PCI_DOE_STATUS", "PCI_DOE_WRITE", "PCI_DOE_READ",
    "PCI_DOE_CTRL_ABORT", "PCI_DOE_CTRL_GO", "PCI_DOE_DATA_OBJECT_HEADER_1_VID",
    "PCI_DOE_DATA_OBJECT_HEADER_1_TYPE", "PCI_DOE_DATA_OBJECT_LENGTH_MASK", "PCI_DOE_MAX_LENGTH_DW",
    "DOE_PROTOCOLS", "CXL_VENDOR", "AMD_VENDOR", "HYGON_VENDOR", "PCI_CLASS_BRIDGE_HOST",
]

# ---- the standard header (PCI Local Bus 3.0 sec 6.1; pci_regs.h) --------------------------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_STATUS_CAP_LIST = 0x10      # Status bit 4: a capability list exists
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09           # 3 bytes: prog-if, subclass, base class
PCI_HEADER_TYPE = 0x0E
PCI_SECONDARY_BUS = 0x19        # type 1 (bridge) header
PCI_CAPABILITY_LIST = 0x34
PCI_CB_CAPABILITY_LIST = 0x14   # CardBus header
PCI_CFG_SPACE_SIZE = 256        # conventional config space, bytes
PCI_CFG_SPACE_EXP_SIZE = 4096   # PCIe / PCI-X 2.0 extended config space, bytes

# ---- capability IDs (pci_regs.h PCI_CAP_ID_*, PCI_EXT_CAP_ID_*) ----------------------------------
PCI_CAP_ID_PCIX = 0x07
PCI_CAP_ID_EXP = 0x10
PCI_EXT_CAP_ID_LTR = 0x18
PCI_EXT_CAP_ID_DVSEC = 0x23
PCI_EXT_CAP_ID_DOE = 0x2E

# ---- Data Object Exchange (PCIe Base 6.0 sec 7.9.24; pci_regs.h PCI_DOE_*) -----------------------
PCI_DOE_CAP_SIZEOF = 0x18       # the whole mailbox: header .. read data mailbox
PCI_DOE_CTRL = 0x08             # control: abort bit 0, go bit 31
PCI_DOE_STATUS = 0x0C
PCI_DOE_WRITE = 0x10            # write data mailbox
PCI_DOE_READ = 0x14             # read data mailbox (a write acknowledges one response dword)
PCI_DOE_CTRL_ABORT = 0x00000001
PCI_DOE_CTRL_GO = 0x80000000
PCI_DOE_DATA_OBJECT_HEADER_1_VID = 0x0000FFFF   # header dword 1 bits 15:0: vendor ID
PCI_DOE_DATA_OBJECT_HEADER_1_TYPE = 0x00FF0000  # header dword 1 bits 23:16: data object type
PCI_DOE_DATA_OBJECT_LENGTH_MASK = 0x3FFFF  # header dword 2 bits 17:0, dwords; 0 means 2^18
PCI_DOE_MAX_LENGTH_DW = 1 << 18

# DOE data object protocols (vendor ID, data object type): PCIe Base 6.0 sec 6.30.1.1 (DOE
# discovery, type 0), PCIe 6.0 sec 6.31.3 (CMA/SPDM type 1, secured CMA/SPDM type 2), CXL 3.1
# sec 8.1.11 (table access, CDAT, type 2) and sec 14.16 (compliance, type 0).
DOE_PROTOCOLS: dict[tuple[int, int], str] = {
    (0x0001, 0): "DOE discovery",
    (0x0001, 1): "CMA/SPDM",
    (0x0001, 2): "secured CMA/SPDM",
    (0x1E98, 0): "CXL compliance",
    (0x1E98, 2): "CXL table access (CDAT)",
}

# ---- vendor and class IDs (include/linux/pci_ids.h) ----------------------------------------------
CXL_VENDOR = 0x1E98             # CXL DVSEC vendor ID (CXL 3.1 sec 8.1.1; drivers/cxl/cxlpci.h PCI_DVSEC_VENDOR_ID_CXL)
AMD_VENDOR = 0x1022             # PCI_VENDOR_ID_AMD
HYGON_VENDOR = 0x1D94           # PCI_VENDOR_ID_HYGON
PCI_CLASS_BRIDGE_HOST = 0x0600  # base class 06, subclass 00
