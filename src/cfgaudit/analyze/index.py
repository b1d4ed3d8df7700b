"""Regions as sorted numpy arrays, and the overlap join of events against them.

Devices get codes (their position in the sorted list of BDFs); regions are sorted by (device
code, start). A write ``[offset, offset+size-1]`` overlaps a region ``[start, start+length-1]``
when they intersect. The join looks each (device, offset, size) triple up in a dense table made
once per registry (offsets below 4096, sizes up to 8: every access a trace normally holds), which
gives the triple's overlapping regions as a slice of one array; any other triple is factorised
and matched against its device's regions. Either way no Python loop touches every event, and
only the events with a match are expanded. Offsets, sizes and lengths are bytes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pci_regs import PCI_CFG_SPACE_EXP_SIZE
from ..regions import Region, RegistryResult
from ..regions.registry import KINDS

__all__ = ["RegionIndex", "KIND_CODE", "REGION_ATTRS", "MAX_OFF", "MAX_SIZE", "DENSE_OFF", "DENSE_SIZE"]

KIND_CODE: dict[str, int] = {k: i for i, k in enumerate(KINDS)}  # exclusive 0, managed 1, user 2
REGION_ATTRS = ("owner", "kind", "capability", "rule", "source")  # string attributes, as Arrow dictionaries
MAX_OFF = (1 << 24) - 1  # offsets are clipped to 24 bits in the join key (bytes)
MAX_SIZE = (1 << 16) - 1  # sizes are clipped to 16 bits in the join key (bytes)
_EMPTY = np.empty(0, np.int64)
DENSE_OFF = PCI_CFG_SPACE_EXP_SIZE  # the dense join table covers offsets 0..4095 (bytes) ...
DENSE_SIZE = 8  # ... and sizes 0..8 (bytes)


class RegionIndex:
    """The regions of a registry as arrays sorted by (device code, start).

    ``bdfs``: every device with regions or config space, sorted (a device's code is its position);
    ``dev``, ``start``, ``end`` (inclusive, clipped), ``length``, ``kind`` (:data:`KIND_CODE`): per
    region; ``dictionaries``: :data:`REGION_ATTRS` per region as Arrow string arrays (findings take
    indices into them); ``cfg_size``: per device, the size the kernel gives its config space
    (bytes); ``driver``: per device, the bound driver or ``None``.
    """

    def __init__(self, res: RegistryResult) -> None:
        regs = res.registry.regions()
        self.bdfs: list[str] = sorted({r.bdf for r in regs} | {v.cs.bdf for v in res.views})
        self.dev_code: dict[str, int] = {b: i for i, b in enumerate(self.bdfs)}
        code = self.dev_code
        self.regions: list[Region] = sorted(regs, key=lambda r: (code[r.bdf], r.start))
        rs = self.regions
        self.dev = np.array([code[r.bdf] for r in rs], dtype=np.int64)
        self.start = np.array([r.start for r in rs], dtype=np.int64)
        self.end = np.array([min(r.end, MAX_OFF + MAX_SIZE) for r in rs], dtype=np.int64)
        self.length = np.array([r.length for r in rs], dtype=np.int64)
        self.kind = np.array([KIND_CODE[r.kind] for r in rs], dtype=np.int8)
        # per region, then the same regions as the regions of collision findings (kind "collision"),
        # then one for a collision that overlaps no region (every attribute null but the kind)
        nreg = len(rs)
        self.dictionaries: dict[str, pa.Array] = {
            name: pa.array([getattr(r, name) for r in rs] * 2 + [None], type=pa.string()) for name in REGION_ATTRS}
        self.dictionaries["kind"] = pa.array([r.kind for r in rs] + ["collision"] * (nreg + 1), type=pa.string())
        self._start_arrow = pa.array([*self.start.tolist(), *self.start.tolist(), None], type=pa.int64())
        self._length_arrow = pa.array([*self.length.tolist(), *self.length.tolist(), None], type=pa.int64())
        ndev = len(self.bdfs)
        self.dev_begin = np.searchsorted(self.dev, np.arange(ndev), side="left")
        self.dev_count = np.searchsorted(self.dev, np.arange(ndev), side="right") - self.dev_begin
        views = {v.cs.bdf: v for v in res.views}
        self.cfg_size = np.array([(views[b].cs.config_size or PCI_CFG_SPACE_EXP_SIZE) if b in views
                                  else PCI_CFG_SPACE_EXP_SIZE for b in self.bdfs], dtype=np.int64)
        self.driver: list[str | None] = [views[b].cs.driver if b in views else None for b in self.bdfs]
        self.user: list[Region] = [r for r in rs if r.kind == "user"]
        self._dense_ptr, self._dense_reg = self._dense_table()

    def _dense_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The overlaps of every (device, offset < DENSE_OFF, size <= DENSE_SIZE) triple, as CSR
        over :meth:`dense_keys`: regions ``reg[ptr[k]:ptr[k + 1]]`` (index order) for key ``k``."""
        width = DENSE_SIZE + 1
        span = DENSE_OFF * width
        keys, regs = [], []
        ridx = np.arange(self.dev.size, dtype=np.int64)
        hi = np.minimum(self.end, DENSE_OFF - 1)  # a region's last byte, as far as the table goes
        for s in range(1, width):  # one vector pass per access size: the offsets o with o <= end and o + s - 1 >= start
            lo = np.maximum(self.start - s + 1, 0)
            n = np.maximum(hi - lo + 1, 0)  # how many offsets of each region
            total = int(n.sum())
            if not total:
                continue
            r = np.repeat(ridx, n)
            o = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n) + np.repeat(lo, n)
            keys.append(self.dev[r] * span + o * width + s)
            regs.append(r)
        key = np.concatenate(keys) if keys else _EMPTY
        reg = np.concatenate(regs) if regs else _EMPTY
        order = np.lexsort((reg, key))
        ptr = np.zeros(len(self.bdfs) * span + 1, dtype=np.int64)
        np.cumsum(np.bincount(key, minlength=len(self.bdfs) * span), out=ptr[1:])
        return ptr, reg[order]

    def dense_keys(self, dev: np.ndarray, offset: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key, in_table) per access: its key in the dense join table, and whether the table
        covers it (known device, offset below DENSE_OFF, size 0..DENSE_SIZE; others: key 0)."""
        ok = (dev >= 0) & (offset >= 0) & (offset < DENSE_OFF) & (size >= 0) & (size <= DENSE_SIZE)
        key = (dev * DENSE_OFF + offset) * (DENSE_SIZE + 1) + size
        return np.where(ok, key, 0), ok

    def device_keys(self, bdf: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """(device code per event, -1 for a device without regions or config space; position of
        each event's BDF in ``names``; ``names``: the chunk's distinct BDF strings, then ``None``
        for a null BDF), through the chunk's own dictionary of BDF strings."""
        enc = pc.dictionary_encode(bdf)
        enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
        names: list[str | None] = [*enc.dictionary.to_pylist(), None]
        lut = np.array([self.dev_code.get(b, -1) if b is not None else -1 for b in names], dtype=np.int64)
        idx = enc.indices.fill_null(len(lut) - 1).to_numpy(zero_copy_only=False)
        return lut[idx], idx, names

    def join(self, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray,
             size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(event row, region index) pairs for every overlap of the events ``sel`` (chunk rows,
        ascending), ordered by event then region start; zero-length accesses overlap nothing."""
        if sel.size == 0 or self.dev.size == 0:
            return _EMPTY, _EMPTY
        key, ok = self.dense_keys(dev[sel], offset[sel], size[sel])
        cnt = self._dense_ptr[key + 1] - self._dense_ptr[key]  # regions per key, only these keys
        cnt[~ok] = 0
        hit = np.flatnonzero(cnt)
        ev_rows, regs = _expand(sel[hit], self._dense_ptr[key[hit]], cnt[hit], self._dense_reg)
        if ok.all():
            return ev_rows, regs
        rest_ev, rest_reg = self._join_sparse(sel[~ok], dev, offset, size)
        if rest_ev.size == 0:
            return ev_rows, regs
        ev_all = np.concatenate([ev_rows, rest_ev])
        order = np.argsort(ev_all, kind="stable")  # an event's pairs come from one side, in index order
        return ev_all[order], np.concatenate([regs, rest_reg])[order]

    def _join_sparse(self, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray,
                     size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`join` for accesses the dense table does not cover: distinct triples factorised
        and matched against their device's regions."""
        if sel.size == 0:
            return _EMPTY, _EMPTY
        d, o, s = dev[sel], np.minimum(offset[sel], MAX_OFF), np.minimum(size[sel], MAX_SIZE)
        keys = (d << 40) | (o << 16) | s
        uniq, codes = np.unique(keys, return_inverse=True)
        uo, us = (uniq >> 16) & MAX_OFF, uniq & MAX_SIZE
        # every unique triple against every region of its device
        cnt = self.dev_count[uniq >> 40]
        u_rep = np.repeat(np.arange(uniq.size), cnt)
        first = np.repeat(self.dev_begin[uniq >> 40] - np.concatenate(([0], np.cumsum(cnt)[:-1])), cnt)
        r = first + np.arange(u_rep.size)
        lo, hi = uo[u_rep], uo[u_rep] + us[u_rep] - 1
        hit = (self.start[r] <= hi) & (self.end[r] >= lo) & (us[u_rep] > 0)
        pu, pr = u_rep[hit], r[hit]
        # CSR over unique triples, expanded back to events
        pc_cnt = np.bincount(pu, minlength=uniq.size)
        ptr = np.concatenate(([0], np.cumsum(pc_cnt)))
        ev_cnt = pc_cnt[codes]
        m = np.flatnonzero(ev_cnt)
        return _expand(sel[m], ptr[codes[m]], ev_cnt[m], pr)

    def allowed(self, rows_ev: np.ndarray, rows_reg: np.ndarray, dev: np.ndarray, offset: np.ndarray,
                size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per (event, region) pair: the owner of the first user region (in index order) that
        covers the bytes the event writes inside the region, or ``None`` (an object array); and
        the mask of the pairs that have one."""
        out = np.full(rows_ev.size, None, dtype=object)
        has = np.zeros(rows_ev.size, dtype=bool)
        if not self.user:
            return out, has
        o = offset[rows_ev]
        e = o + size[rows_ev] - 1
        lo = np.maximum(o, self.start[rows_reg])
        hi = np.minimum(e, self.end[rows_reg])
        d = dev[rows_ev]
        for u in self.user:
            m = (d == self.dev_code[u.bdf]) & (u.start <= lo) & (u.end >= hi) & ~has
            out[m] = u.owner
            has |= m
        return out, has

    def region_columns(self, rows_reg: np.ndarray, collision: np.ndarray | None = None) -> dict[str, pa.Array]:
        """The region columns of the findings for the regions ``rows_reg`` (indices into the index;
        -1: none, for a collision only): ``region_start``, ``region_length`` (bytes) and
        :data:`REGION_ATTRS`, all dictionary-encoded over one index array (a CSV writer renders each
        region's fields once). ``collision[j]``: finding ``j`` is a collision (kind ``collision``,
        the region's other attributes as they are)."""
        codes = rows_reg.astype(np.int32)
        if collision is not None and collision.any():
            nreg = self.start.size
            codes = np.where(collision, np.where(rows_reg >= 0, codes + nreg, 2 * nreg), codes).astype(np.int32)
        ri = pa.array(codes)
        cols: dict[str, pa.Array] = {"region_start": pa.DictionaryArray.from_arrays(ri, self._start_arrow),
                                     "region_length": pa.DictionaryArray.from_arrays(ri, self._length_arrow)}
        for name in REGION_ATTRS:
            cols[name] = pa.DictionaryArray.from_arrays(ri, self.dictionaries[name])
        return cols


def _expand(rows: np.ndarray, first: np.ndarray, cnt: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row ``rows[i]`` repeated ``cnt[i]`` times, paired with ``values[first[i]:first[i] + cnt[i]]``."""
    if rows.size == 0:
        return _EMPTY, _EMPTY
    ev_rows = np.repeat(rows, cnt)
    ends = np.cumsum(cnt)
    at = np.repeat(first - (ends - cnt), cnt) + np.arange(ev_rows.size)
    return ev_rows, values[at]
