"""The kernel's verdict on a write: which paths it checks, whether it taints, when it warns.

Only writes through the :data:`CALL_SITES` the running release has can taint
(kernel/resource.c resource_is_exclusive() called from them); each has its own once-per-boot
warning flag (pci_warn_once()). Sources: docs/KERNEL-FACTS.md ("cfgaudit's findings"),
observed in the QEMU guests of ../shared/qemu-cxl/README.md. Offsets and sizes are bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..regions import RegionRegistry, RegistryResult
from ..regions.kernel import KernelRange, KernelVersion
from .index import RegionIndex

__all__ = ["CallSite", "CALL_SITES", "checked_paths", "path_note", "KernelVerdicts", "exclusive_arrays",
           "is_exclusive_many"]


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
             KernelRange("7.3-rc1", None, also=(("7.2.1", "7.3-rc1"), ("6.18.50", "6.19-rc1"), ("6.12.108", "6.13-rc1"),
                                                  ("6.1.188", "6.2-rc1"))),
             False, "x",
             "drivers/pci/proc.c proc_bus_pci_write(): 3359e044d597 (v7.3), stable 7.2.y, 6.18.50, 6.12.y, 6.1.y; "
             "checks the untrimmed range. Booted (make e2e-kernels): Debian 6.1.187 and 6.12.107 do not check, "
             "6.1.190, 6.1.192, 6.12.111 and later do",
             uncertain=KernelRange("0.0", "0.0",
                                   also=(("7.2.1", "7.3-rc1"), ("6.12.108", "6.12.111"), ("6.1.188", "6.1.190")))),
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


def _is(col: pa.ChunkedArray | pa.Array, value: str) -> np.ndarray:
    """Per row: ``col == value`` (null: False)."""
    return pc.fill_null(pc.equal(col, value), False).to_numpy(zero_copy_only=False)


def exclusive_arrays(registry: RegionRegistry, bdf: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``uint64`` arrays of ``bdf``'s exclusive starts and inclusive ends (the registry's
    own lists: regions/ load no numpy)."""
    starts, ends = registry.exclusive_bounds(bdf)
    return np.array(starts, dtype=np.uint64), np.array(ends, dtype=np.uint64)


def is_exclusive_many(registry: RegionRegistry, bdf: str, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Vectorised :meth:`~cfgaudit.regions.RegionRegistry.is_exclusive` for many writes to one
    device (bool array)."""
    offsets = np.asarray(offsets, dtype=np.uint64)
    counts = np.asarray(counts, dtype=np.uint64)
    out = np.zeros(offsets.shape, dtype=bool)
    starts, ends = exclusive_arrays(registry, bdf)
    if not registry.strict_iomem or starts.size == 0:
        return out
    with np.errstate(over="ignore"):
        lim = offsets + counts  # wraps like the kernel's u64
    k = np.searchsorted(starts, lim, side="left")
    hit = k > 0
    out[hit] = ends[k[hit] - 1] >= offsets[hit]
    return out


def _exclusive_spans(registry: RegionRegistry, bdfs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per device code: its first and last exclusive byte (offsets; ``int64`` max and -1 for a
    device without exclusive bytes), built once per registry."""
    lo = np.full(len(bdfs), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(len(bdfs), -1, dtype=np.int64)
    for code, bdf in enumerate(bdfs):
        starts, ends = exclusive_arrays(registry, bdf)
        if starts.size:
            lo[code] = int(starts.min())
            hi[code] = min(int(ends.max()), np.iinfo(np.int64).max)
    return lo, hi


class KernelVerdicts:
    """The verdict model for one registry and release. Stateful over a stream of chunks: the
    once-per-boot warning of each call site is printed once."""

    def __init__(self, res: RegistryResult, index: RegionIndex) -> None:
        self.kernel = res.kernel
        self.registry = res.registry
        self.paths = checked_paths(res.kernel)
        self.index = index
        self._logged: set[str] = set()
        self._span = _exclusive_spans(self.registry, index.bdfs)

    def taints(self, t: pa.Table, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
               is_write: np.ndarray) -> np.ndarray:
        """Boolean per chunk row: the kernel would taint on this write (rows ``sel`` are considered;
        a write fails, ``ret < 0``, without tainting)."""
        out = np.zeros(t.num_rows, dtype=bool)
        if not self.paths:
            return out
        sel = self._candidates(sel, dev, offset, size)
        sel = sel[is_write[sel]]
        if sel.size == 0:
            return out
        take = pa.array(sel)
        via = t.column("via").take(take)
        ret_ok = pc.fill_null(pc.greater_equal(t.column("ret").take(take), 0), True).to_numpy(zero_copy_only=False)
        for name, site in self.paths.items():
            rows = sel[_is(via, name) & ret_ok]
            if rows.size == 0:
                continue
            d, o, s = dev[rows], offset[rows], size[rows]
            if site.trims:
                # sysfs (fs/sysfs/file.c sysfs_kf_bin_write()): a write at or past the end fails
                # with -EFBIG, the rest is trimmed to the file size, and a zero-length write
                # returns before pci_write_config() is called
                fsz = self.index.cfg_size[d]
                inside = (o < fsz) & (s > 0)
                rows, d, o, s = rows[inside], d[inside], o[inside], np.minimum(s[inside], fsz[inside] - o[inside])
            for code in np.unique(d):
                m = d == code
                out[rows[m]] = is_exclusive_many(self.registry, self.index.bdfs[code], o[m].astype(np.uint64),
                                                 s[m].astype(np.uint64))
        return out

    def _candidates(self, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray, size: np.ndarray) -> np.ndarray:
        """The rows of ``sel`` that could taint: on a device with exclusive bytes, reaching from
        below its last exclusive byte to past its first (is_exclusive() is monotone in the size,
        so trimming only removes rows from these); negative offsets or sizes are kept, to be
        judged as the kernel's u64 arithmetic would."""
        lo, hi = self._span
        if not (hi >= 0).any() or sel.size == 0:
            return sel[:0]
        d, o, s = dev[sel], offset[sel], size[sel]
        return sel[((o <= hi[d]) & (s > lo[d] - o)) | (o < 0) | (s < 0)]

    def once_per_boot(self, t: pa.Table, taints: np.ndarray, dev: np.ndarray, offset: np.ndarray) -> dict[int, str]:
        """Rows that print the kernel's warning: the first tainting write of the boot at each call
        site (pci_warn_once() is one static flag per call site), whether or not it has a finding
        row (a zero-length procfs write inside a claim taints but overlaps no byte). Row -> dmesg text."""
        out: dict[int, str] = {}
        if not taints.any():
            return out
        rows = np.flatnonzero(taints)
        via = t.column("via").take(pa.array(rows))
        for site in self.paths:
            if site in self._logged:
                continue
            hits = rows[_is(via, site)]
            if hits.size:
                row = int(hits[0])
                self._logged.add(site)
                d = int(dev[row])
                comm = str(t.column("comm")[row].as_py())[:15]
                out[row] = (f"{self.index.driver[d] or 'pci'} {self.index.bdfs[d]}: {comm}: Unexpected write to "
                            f"kernel-exclusive config offset {int(offset[row]):x}")
        return out

    def columns(self, rows_ev: np.ndarray, taints: np.ndarray, logged: dict[int, str],
                via: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array]:
        """The kernel columns of the findings for the chunk rows ``rows_ev`` (``via``: their paths):
        ``kernel_taints``, ``kernel_logs``, ``kernel_message``, ``verdict_note``."""
        nrow = rows_ev.size
        logs = np.zeros(nrow, dtype=bool)
        msg = np.full(nrow, None, dtype=object)
        for row, text in logged.items():
            at = np.flatnonzero(rows_ev == row)
            logs[at] = True
            msg[at] = text
        cols: dict[str, pa.Array] = {
            "kernel_taints": pa.array(taints[rows_ev]),
            "kernel_logs": pa.array(logs),
            "kernel_message": pa.array(msg, type=pa.string()) if logs.any() else pa.nulls(nrow, pa.string()),
        }
        venc = pc.dictionary_encode(pc.fill_null(via, "unknown"))
        venc = venc.combine_chunks() if isinstance(venc, pa.ChunkedArray) else venc
        notes = [path_note(v, self.kernel) for v in venc.dictionary.to_pylist()]
        if any(notes):
            nn = [x for x in notes if x]
            code = np.array([nn.index(x) if x else -1 for x in notes] + [-1], dtype=np.int32)
            ci = code[venc.indices.to_numpy(zero_copy_only=False)]
            cols["verdict_note"] = pa.DictionaryArray.from_arrays(pa.array(ci, mask=ci < 0), pa.array(nn, pa.string()))
        else:
            cols["verdict_note"] = pa.nulls(nrow, pa.string())
        return cols
