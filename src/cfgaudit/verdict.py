"""Which user-space paths the kernel itself checks against exclusive regions, per release.

Only writes through these call sites can taint (kernel/resource.c resource_is_exclusive()
called from them); each has its own once-per-boot warning flag (pci_warn_once()).
Sources: docs/KERNEL-FACTS.md ("cfgaudit's findings"), observed in the QEMU guests of
../shared/qemu-cxl/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from .regions.kernel import KernelRange, KernelVersion

__all__ = ["CallSite", "CALL_SITES", "checked_paths", "path_note"]


@dataclass(frozen=True)
class CallSite:
    via: str
    function: str
    kernels: KernelRange
    trims: bool  # the range checked is the write trimmed to the config size first
    fmt: str  # offset format of the warning
    source: str
    uncertain: KernelRange = KernelRange("0.0", "0.0")  # releases where the boundary is inferred


CALL_SITES: tuple[CallSite, ...] = (
    CallSite("sysfs", "pci_write_config", KernelRange("6.2-rc1", None, also=(("6.1.53", "6.2-rc1"),)), True, "llx",
             "drivers/pci/pci-sysfs.c pci_write_config(): 278294798ac9 (v6.2), stable 6.1.53 (3108f7c78884); "
             "sysfs trims the write to the file size before the check"),
    CallSite("procfs", "proc_bus_pci_write",
             KernelRange("7.3-rc1", None, also=(("7.2.1", "7.3-rc1"), ("6.18.50", "6.19-rc1"), ("6.12.96", "6.13-rc1"),
                                                  ("6.1.188", "6.2-rc1"))),
             False, "x",
             "drivers/pci/proc.c proc_bus_pci_write(): 3359e044d597 (v7.3), stable 7.2.y, 6.18.50, 6.12.y, 6.1.y "
             "after 6.1.187; checks the untrimmed range (observed on Debian 6.1.192; 6.12.95 does not check)",
             uncertain=KernelRange("0.0", "0.0", also=(("7.2.1", "7.3-rc1"), ("6.12.96", "6.13-rc1"), ("6.1.188", "6.1.192")))),
)
_BY_VIA = {c.via: c for c in CALL_SITES}


def checked_paths(kernel: KernelVersion) -> dict[str, CallSite]:
    """The call sites that check writes on ``kernel``, keyed by ``via``."""
    return {c.via: c for c in CALL_SITES if c.kernels.contains(kernel)}


def path_note(via: str, kernel: KernelVersion) -> str | None:
    """A caveat when the verdict for ``via`` on ``kernel`` rests on an inferred release boundary."""
    c = _BY_VIA.get(via)
    if c is None:
        if via in ("vfio", "ioport", "devmem"):
            return f"the kernel never checks {via} writes"
        return None
    if c.uncertain.contains(kernel):
        return f"{via} check on {kernel}: release boundary inferred from stable-queue dates, not confirmed"
    return None
