"""RegionRegistry against a plain transcription of kernel/resource.c.

The reference below follows __request_resource(), __request_region_locked(),
__release_region() and resource_is_exclusive() line by line on a sibling/child tree, with
64-bit wrapping arithmetic. Hypothesis drives both with the same random operations.
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from cfgaudit.analyze.kernel import is_exclusive_many
from cfgaudit.regions import RegionRegistry

U64 = (1 << 64) - 1
BUSY, EXCLUSIVE = 0x80000000, 0x08000000  # include/linux/ioport.h IORESOURCE_BUSY / _EXCLUSIVE


@dataclass
class Res:
    start: int
    end: int
    flags: int = 0
    parent: "Res | None" = None
    sibling: "Res | None" = None
    child: "Res | None" = None


class KernelTree:
    """pdev->driver_exclusive_resource: start 0, end -1, and its children."""

    def __init__(self, strict_iomem_checks: bool = True) -> None:
        self.root = Res(0, U64)
        self.strict = strict_iomem_checks

    def _request_resource(self, root: Res, new: Res) -> Res | None:
        start, end = new.start, new.end
        if end < start:
            return root
        if start < root.start:
            return root
        if end > root.end:
            return root
        # p walks the child list: &root->child, then &tmp->sibling
        prev: Res | None = None
        tmp = root.child
        while True:
            if tmp is None or tmp.start > end:
                new.sibling = tmp
                if prev is None:
                    root.child = new
                else:
                    prev.sibling = new
                new.parent = root
                return None
            if tmp.end < start:
                prev, tmp = tmp, tmp.sibling
                continue
            return tmp

    def request_region(self, start: int, n: int) -> bool:
        res = Res(start & U64, (start + n - 1) & U64, BUSY | EXCLUSIVE)
        parent = self.root
        while True:
            conflict = self._request_resource(parent, res)
            if conflict is None:
                return True
            if conflict is not parent and not (conflict.flags & BUSY):
                parent = conflict
                continue
            return False

    def release_region(self, start: int, n: int) -> bool:
        start &= U64
        end = (start + n - 1) & U64
        parent = self.root
        prev: Res | None = None
        res = parent.child
        while res is not None:
            if res.start <= start and res.end >= end:
                if not (res.flags & BUSY):
                    parent, prev, res = res, None, res.child
                    continue
                if res.start != start or res.end != end:
                    break
                if prev is None:
                    parent.child = res.sibling
                else:
                    prev.sibling = res.sibling
                return True
            prev, res = res, res.sibling
        return False  # "Trying to free nonexistent resource"

    def _next(self, p: Res, skip_children: bool) -> Res | None:
        # kernel/resource.c next_resource(p, skip_children, root)
        if not skip_children and p.child is not None:
            return p.child
        while p.sibling is None and p.parent is not None:
            p = p.parent
            if p is self.root:
                return None
        return p.sibling

    def is_exclusive(self, addr: int, size: int) -> bool:
        skip = False
        p = self.root.child
        lim = (addr + size) & U64
        while p is not None:
            if p.start >= lim:
                break
            if p.end < addr:
                skip = True
                p = self._next(p, skip)
                continue
            skip = False
            if not self.strict or not (p.flags & BUSY):
                p = self._next(p, skip)
                continue
            if p.flags & EXCLUSIVE:
                return True
            p = self._next(p, skip)
        return False


offsets = st.one_of(st.integers(0, 0x1000), st.sampled_from([0, 0x18F, 0x190, 0x1A7, 0x1A8, 0xFFF, U64 - 3]))
lengths = st.one_of(st.integers(0, 0x40), st.sampled_from([0, 1, 0x18, 0x100, 0x1000]))
ops = st.lists(st.tuples(st.sampled_from(["req", "rel", "chk"]), offsets, lengths), max_size=60)


@settings(max_examples=400, deadline=None)
@given(ops, st.booleans())
def test_registry_matches_kernel_transcription(seq, strict) -> None:
    ref = KernelTree(strict_iomem_checks=strict)
    reg = RegionRegistry(strict_iomem=strict)
    bdf = "0000:0d:00.0"
    for op, off, n in seq:
        if op == "req":
            assert (reg.request_exclusive(bdf, off, n, "t") is not None) == ref.request_region(off, n), (op, off, n)
        elif op == "rel":
            assert reg.release(bdf, off, n) == ref.release_region(off, n), (op, off, n)
        else:
            assert reg.is_exclusive(bdf, off, n) == ref.is_exclusive(off, n), (op, off, n)
        # And the vectorised form agrees on a probe grid around everything known.
    probes = sorted({p for _, o, n in seq for p in (o, max(o - 1, 0), o + n, (o + n - 1) & U64)})[:64]
    import numpy as np
    offs = np.array([p & U64 for p in probes], dtype=np.uint64)
    for size in (0, 1, 2, 4, 0x18):
        vec = is_exclusive_many(reg, bdf, offs, np.full(offs.shape, size, dtype=np.uint64))
        assert list(vec) == [ref.is_exclusive(int(o), size) for o in offs]


def test_singleton_and_exact_release() -> None:
    reg = RegionRegistry()
    b = "0000:0d:00.0"
    assert reg.request_exclusive(b, 0x190, 0x18, "cxl_pci") is not None
    assert reg.request_exclusive(b, 0x1A7, 1, "other") is None  # last byte overlaps
    assert reg.request_exclusive(b, 0x18F, 1, "other") is not None  # byte before is free
    assert reg.is_exclusive(b, 0x18E, 4) and reg.is_exclusive(b, 0x1A6, 4) and reg.is_exclusive(b, 0x1A7, 1)
    assert not reg.is_exclusive(b, 0x1A8, 1)
    assert not reg.release(b, 0x190, 0x10)  # partial release is refused, as in __release_region()
    assert reg.release(b, 0x190, 0x18)
    assert not reg.is_exclusive(b, 0x198, 4)
    assert not reg.is_exclusive("0000:00:00.0", 0x198, 4)  # per-device trees


def test_iomem_relaxed_silences_check() -> None:
    reg = RegionRegistry(strict_iomem=False)
    assert reg.request_exclusive("0000:0d:00.0", 0x190, 0x18, "cxl_pci") is not None
    assert not reg.is_exclusive("0000:0d:00.0", 0x198, 4)


def test_zero_length_edge_cases_follow_the_kernel() -> None:
    ref, reg = KernelTree(), RegionRegistry()
    b = "x"
    assert reg.request_exclusive(b, 0x10, 0, "t") is None and not ref.request_region(0x10, 0)
    # size 0 inside a region: resource_is_exclusive() still reports it (start < addr <= end)
    assert reg.request_exclusive(b, 0x190, 0x18, "t") and ref.request_region(0x190, 0x18)
    assert reg.is_exclusive(b, 0x198, 0) == ref.is_exclusive(0x198, 0) is True
    assert reg.is_exclusive(b, 0x190, 0) == ref.is_exclusive(0x190, 0) is False
