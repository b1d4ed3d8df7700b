"""RegionRegistry: who owns which config-space bytes, with the kernel's semantics.

Exclusive regions model ``pci_request_config_region_exclusive()`` (include/linux/pci.h, v6.2,
commit 278294798ac9 "PCI: Allow drivers to request exclusive config regions"): a
``__request_region(&pdev->driver_exclusive_resource, offset, len, name, IORESOURCE_EXCLUSIVE)``
into a private per-device resource tree spanning ``[0, ~0]``. Every request is BUSY, so a
request overlapping any earlier one fails (kernel/resource.c __request_region_locked():
the conflicting child is BUSY, so it does not descend, and returns NULL). A release must
name exactly a region's start and length (__release_region()). ``is_exclusive`` is
``resource_is_exclusive()`` (kernel/resource.c): true iff some region intersects
``[addr, addr+size-1]``, is BUSY and ``strict_iomem_checks`` is set (with IORESOURCE_EXCLUSIVE
or CONFIG_IO_STRICT_DEVMEM). Arithmetic is the kernel's: 64-bit, wrapping.

Managed regions (kernel-programmed state, no reservation) and user regions (handed to user
space by an administrator) are kept beside them and may overlap anything.
Offsets and lengths are bytes from the start of the function's config space.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import asdict, dataclass
from typing import Iterable

__all__ = ["Region", "RegionRegistry", "KINDS"]

U64 = (1 << 64) - 1
KINDS = ("exclusive", "managed", "user")


@dataclass(frozen=True)
class Region:
    """A byte range of one function's config space and who owns it.

    ``start`` and ``length`` are bytes; ``end`` (inclusive) follows the kernel's
    ``start + length - 1`` in 64-bit arithmetic.
    """

    bdf: str
    start: int
    length: int
    owner: str
    kind: str = "exclusive"
    capability: str | None = None
    rule: str = ""
    source: str = ""

    @property
    def end(self) -> int:
        return (self.start + self.length - 1) & U64

    def to_dict(self) -> dict:
        return asdict(self)


class RegionRegistry:
    """Per-device region tables.

    ``strict_iomem`` is the kernel's ``strict_iomem_checks`` (false when booted with
    ``iomem=relaxed``); ``io_strict_devmem`` is CONFIG_IO_STRICT_DEVMEM (then any BUSY region
    counts, exclusive flag or not; every request here is exclusive anyway).
    """

    def __init__(self, strict_iomem: bool = True, io_strict_devmem: bool = False) -> None:
        self.strict_iomem = strict_iomem
        self.io_strict_devmem = io_strict_devmem
        # bdf -> exclusive regions sorted by start (never overlapping: the singleton property)
        self._excl: dict[str, list[Region]] = {}
        self._starts: dict[str, list[int]] = {}
        self._other: list[Region] = []

    # -- the kernel's API ----------------------------------------------------------------
    def request_exclusive(self, bdf: str, offset: int, length: int, name: str, *, owner: str | None = None,
                          capability: str | None = None, rule: str = "", source: str = "") -> Region | None:
        """``pci_request_config_region_exclusive()``: the new region, or ``None`` on conflict."""
        start = offset & U64
        end = (offset + length - 1) & U64
        if start > end:  # __request_resource(): start > end conflicts with the root
            return None
        regs = self._excl.setdefault(bdf, [])
        starts = self._starts.setdefault(bdf, [])
        i = bisect_left(starts, start)
        # Only the neighbours can overlap a sorted, non-overlapping list.
        if i > 0 and regs[i - 1].end >= start:
            return None
        if i < len(regs) and regs[i].start <= end:
            return None
        reg = Region(bdf, start, length, owner or name, "exclusive", capability, rule, source)
        regs.insert(i, reg)
        starts.insert(i, start)
        return reg

    def release(self, bdf: str, offset: int, length: int) -> bool:
        """``pci_release_config_region()``: true if a region with exactly this start and
        length existed (the kernel warns "Trying to free nonexistent resource" otherwise)."""
        start = offset & U64
        end = (offset + length - 1) & U64
        regs = self._excl.get(bdf, [])
        for i, r in enumerate(regs):
            if r.start <= start and r.end >= end:
                if r.start != start or r.end != end:
                    return False
                del regs[i]
                del self._starts[bdf][i]
                return True
        return False

    def is_exclusive(self, bdf: str, offset: int, count: int) -> bool:
        """``resource_is_exclusive(&dev->driver_exclusive_resource, offset, count)``."""
        if not self.strict_iomem:
            return False
        starts = self._starts.get(bdf)
        if not starts:
            return False
        k = bisect_left(starts, (offset + count) & U64)
        return k > 0 and self._excl[bdf][k - 1].end >= (offset & U64)

    # -- managed / user ------------------------------------------------------------------
    def add(self, region: Region) -> Region | None:
        """Add any region; exclusive ones go through :meth:`request_exclusive` (may fail)."""
        if region.kind == "exclusive":
            return self.request_exclusive(region.bdf, region.start, region.length, region.owner,
                                          capability=region.capability, rule=region.rule, source=region.source)
        if region.kind not in KINDS:
            raise ValueError(f"unknown region kind {region.kind!r}")
        self._other.append(region)
        return region

    # -- views ---------------------------------------------------------------------------
    def exclusive_bounds(self, bdf: str) -> tuple[list[int], list[int]]:
        """Exclusive starts (sorted) and inclusive ends for ``bdf``, bytes (new lists). The
        vectorised check over many writes is analyze/kernel.py's (numpy, which regions/ do not
        load: ``cfgaudit devices`` needs no numpy)."""
        regs = self._excl.get(bdf, [])
        return [r.start for r in regs], [r.end for r in regs]

    def regions(self, bdf: str | None = None, kind: str | None = None) -> list[Region]:
        """All regions, sorted by (bdf, start, kind, owner)."""
        out: list[Region] = [r for regs in self._excl.values() for r in regs] + list(self._other)
        if bdf is not None:
            out = [r for r in out if r.bdf == bdf]
        if kind is not None:
            out = [r for r in out if r.kind == kind]
        return sorted(out, key=lambda r: (r.bdf, r.start, KINDS.index(r.kind), r.owner, r.length))

    def __len__(self) -> int:
        return sum(len(v) for v in self._excl.values()) + len(self._other)

    def __iter__(self) -> Iterable[Region]:
        return iter(self.regions())
