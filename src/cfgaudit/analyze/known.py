"""Known config-space bytes: the old value of a write and the bits it changed.

The bytes known at trace start come from the config-space views (bytes never read are unknown).
Reads that carry data update them; a write with findings gets its old value and changed-bit mask
when every byte it writes was known just before it. Within a chunk that is an as-of lookup over
sorted (device, byte, row) keys, so no Python loop touches every event. Offsets are bytes.
"""
from __future__ import annotations

import numpy as np

from ..hexarrow import HexColumn, encode_runs, expand
from ..regions import RegistryResult
from .findings import RowValues
from .index import RegionIndex

__all__ = ["KnownBytes"]


class KnownBytes:
    """Per device code: the config-space bytes (``values``) and which of them are known
    (``known``, 0/1), ``size[code]`` bytes of each (0: no config space)."""

    def __init__(self, res: RegistryResult, index: RegionIndex) -> None:
        ndev = len(index.bdfs)
        self.size = np.zeros(ndev, dtype=np.int64)
        for v in res.views:
            self.size[index.dev_code[v.cs.bdf]] = len(v.cs.data)
        width = max(1, int(self.size.max(initial=0)))
        self.values = np.zeros((ndev, width), dtype=np.uint8)
        self.known = np.zeros((ndev, width), dtype=np.uint8)
        for v in res.views:
            code, n = index.dev_code[v.cs.bdf], len(v.cs.data)
            self.values[code, :n] = np.frombuffer(bytes(v.cs.data), dtype=np.uint8)
            self.known[code, :n] = np.frombuffer(bytes(bytearray(v.cs.known)), dtype=np.uint8)[:n] != 0

    def advance(self, rows: np.ndarray, raw: HexColumn, is_read: np.ndarray, is_finding_write: np.ndarray,
                dev: np.ndarray, offset: np.ndarray) -> tuple[RowValues, RowValues]:
        """Take the accesses ``rows`` (chunk rows, ascending; ``raw``, ``is_read``,
        ``is_finding_write``, ``dev`` and ``offset`` are per entry of ``rows``) in order: reads with
        data update the known bytes; writes with findings get (old value, changed bits) as hex,
        when every byte they write was known just before them."""
        none = RowValues.empty(), RowValues.empty()
        d, off = dev, offset
        klen = self.size[np.maximum(d, 0)]
        has = raw.present & (d >= 0) & (klen > 0)
        # read bytes: k < len(values) - offset
        r_sel = np.flatnonzero(is_read & has)
        r_n = np.clip(np.minimum(raw.nbytes[r_sel], klen[r_sel] - off[r_sel]), 0, None)
        keep = r_n > 0  # a read at or past the end of the known bytes tells nothing
        r_sel, r_n = r_sel[keep], r_n[keep]
        # write bytes: n = min(len(data), len(values) - offset) > 0
        w_sel = np.flatnonzero(is_finding_write & has & ~is_read)
        w_n = np.clip(np.minimum(raw.nbytes[w_sel], klen[w_sel] - off[w_sel]), 0, None)
        keep = w_n > 0
        w_sel, w_n = w_sel[keep], w_n[keep]
        if r_sel.size == 0 and w_sel.size == 0:
            return none
        width = self.values.shape[1]
        r_rep, r_k = expand(r_n)
        w_rep, w_k = expand(w_n)
        r_key = d[r_sel][r_rep] * width + off[r_sel][r_rep] + r_k
        r_val = raw.byte(r_sel[r_rep], r_k)
        w_key = d[w_sel][w_rep] * width + off[w_sel][w_rep] + w_k
        w_raw = raw.byte(w_sel[w_rep], w_k)
        flat_vals, flat_known = self.values.reshape(-1), self.known.reshape(-1)
        old = none
        if w_sel.size:
            if r_sel.size:
                w_old, w_known = _as_of(r_key, r_sel[r_rep], r_val, w_key, w_sel[w_rep], rows.size + 1,
                                        flat_vals, flat_known)
            else:
                w_old = flat_vals[w_key]
                w_known = flat_known[w_key] != 0
            starts = np.concatenate(([0], np.cumsum(w_n)[:-1]))
            all_known = np.minimum.reduceat(w_known.astype(np.uint8), starts) == 1
            ok_rows = np.flatnonzero(all_known)
            if ok_rows.size:
                ok_bytes = np.repeat(all_known, w_n)
                old_b = w_old[ok_bytes]
                at = rows[w_sel[ok_rows]]
                old = (RowValues(at, encode_runs(old_b, w_n[ok_rows])),
                       RowValues(at, encode_runs(old_b ^ w_raw[ok_bytes], w_n[ok_rows])))
        if r_sel.size:  # the state after this chunk: the last read of each byte wins
            order = _by_key(r_key)  # read bytes are in row order: the last of a key is its last read
            k_sorted = r_key[order]
            last = np.flatnonzero(np.append(k_sorted[1:] != k_sorted[:-1], True))
            flat_vals[k_sorted[last]] = r_val[order[last]]
            flat_known[k_sorted[last]] = 1
        return old


def _by_key(key: np.ndarray) -> np.ndarray:
    """A stable argsort of non-negative keys (a radix sort when they fit in 16 bits: up to 16
    devices of 4096 bytes)."""
    if key.size and int(key.max()) < 1 << 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    return np.argsort(key, kind="stable")


def _as_of(r_key: np.ndarray, r_seq: np.ndarray, r_val: np.ndarray, w_key: np.ndarray, w_seq: np.ndarray,
           m: int, flat_vals: np.ndarray, flat_known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each written byte (key ``w_key``, position ``w_seq`` in the chunk): the value of the
    last earlier read of the same byte, else the value known before the chunk; and whether it is
    known. ``m`` exceeds every position. Read and written bytes are each in position order, and
    no position has both: merged in position order (no sort), then stably sorted by key alone."""
    nr, nw = r_key.size, w_key.size
    # each position's first byte in the merged order
    per_pos = np.bincount(r_seq, minlength=m) + np.bincount(w_seq, minlength=m)
    first = np.cumsum(per_pos) - per_pos
    r_at = first[r_seq] + _rank_in_run(r_seq)
    w_at = first[w_seq] + _rank_in_run(w_seq)
    key_all = np.empty(nr + nw, dtype=np.int64)
    key_all[r_at] = r_key
    key_all[w_at] = w_key
    src_all = np.empty(nr + nw, dtype=np.int64)  # read byte j: j; written byte j: -1 - j
    src_all[r_at] = np.arange(nr)
    src_all[w_at] = -1 - np.arange(nw)
    order = _by_key(key_all)
    k_sorted, s_sorted = key_all[order], src_all[order]
    is_r = s_sorted >= 0
    pos = np.arange(order.size)
    last = np.maximum.accumulate(np.where(is_r, pos, -1))
    lp = np.maximum(last, 0)
    hit = (last >= 0) & (k_sorted[lp] == k_sorted)
    wpos = np.flatnonzero(~is_r)
    w_idx = -1 - s_sorted[wpos]
    w_hit = np.zeros(nw, dtype=bool)
    w_src = np.zeros(nw, dtype=np.int64)
    w_hit[w_idx] = hit[wpos]
    w_src[w_idx] = s_sorted[lp[wpos]]
    w_old = np.where(w_hit, r_val[np.clip(w_src, 0, max(nr - 1, 0))] if nr else 0,
                     flat_vals[w_key]).astype(np.uint8)
    return w_old, w_hit | (flat_known[w_key] != 0)


def _rank_in_run(seq: np.ndarray) -> np.ndarray:
    """Per entry of ``seq`` (non-decreasing): its index among the entries with the same value."""
    if seq.size == 0:
        return seq
    start = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    run = np.repeat(start, np.diff(np.r_[start, seq.size]))
    return np.arange(seq.size) - run
