"""Events x registry -> findings, vectorised.

For every write, each region it overlaps (``[offset, offset+size-1]`` intersects
``[start, start+length-1]``) gives one finding row, carrying the event, the region and the
kernel's own verdict on the write. The overlap join runs on numpy arrays: events are
factorised into distinct (device, offset, size) triples, each triple is matched against its
device's regions once, and the matches are expanded back to events; no Python loop touches
every event. Only writes into DOE mailboxes and reads that carry data (for "which bits
changed") are looked at one by one.

Offsets and sizes are bytes; times are ns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .regions import RegistryResult
from .report.frames import FINDING_COLUMNS, SEVERITY, empty_findings
from .verdict import checked_paths, path_note

__all__ = ["Analyzer", "analyze_tables", "DOE_PROTOCOLS"]

KIND_CODE = {"exclusive": 0, "managed": 1, "user": 2}
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
DOE_CTRL, DOE_WRITE, DOE_READ = 0x08, 0x10, 0x14  # pci_regs.h PCI_DOE_CTRL, PCI_DOE_WRITE, PCI_DOE_READ
DOE_ABORT, DOE_GO = 0x1, 0x80000000  # PCI_DOE_CTRL_ABORT, PCI_DOE_CTRL_GO
MAX_OFF = (1 << 24) - 1
MAX_SIZE = (1 << 16) - 1


@dataclass
class _Doe:
    bdf: str
    cap: int
    owner: str
    dwords: list[int] = field(default_factory=list)


class Analyzer:
    """Stateful over a stream of event chunks (the once-per-boot warning, last-read values,
    DOE exchanges in progress carry from one chunk to the next)."""

    def __init__(self, res: RegistryResult, reads: bool = False) -> None:
        self.res = res
        self.reads = reads
        self.kernel = res.kernel
        self.paths = checked_paths(res.kernel)
        self.counts = {"events": 0, "writes": 0, "reads": 0}
        self._logged: set[str] = set()
        self._next_index = 0
        regs = res.registry.regions()
        self._regions = regs
        self._bdfs = sorted({r.bdf for r in regs} | {v.cs.bdf for v in res.views})
        self._dev_code = {b: i for i, b in enumerate(self._bdfs)}
        order = sorted(range(len(regs)), key=lambda i: (self._dev_code[regs[i].bdf], regs[i].start))
        self._r_dev = np.array([self._dev_code[regs[i].bdf] for i in order], dtype=np.int64)
        self._r_start = np.array([regs[i].start for i in order], dtype=np.int64)
        self._r_end = np.array([min(regs[i].end, MAX_OFF + MAX_SIZE) for i in order], dtype=np.int64)
        self._r_kind = np.array([KIND_CODE[regs[i].kind] for i in order], dtype=np.int8)
        self._r_obj = [regs[i] for i in order]
        self._r_attr = {"region_length": np.array([r.length for r in self._r_obj], dtype=np.int64)}
        for name in ("owner", "kind", "capability", "rule", "source"):
            self._r_attr[name] = np.array([getattr(r, name) for r in self._r_obj] + [None], dtype=object)[:-1]
        ndev = len(self._bdfs)
        self.bdfs = self._bdfs
        self.write_hist = np.zeros((ndev, 4097), dtype=np.int64)  # writes per (device, offset); 4096 = beyond
        self._dev_begin = np.searchsorted(self._r_dev, np.arange(ndev), side="left")
        self._dev_count = np.searchsorted(self._r_dev, np.arange(ndev), side="right") - self._dev_begin
        views = {v.cs.bdf: v for v in res.views}
        self._cfg_size = np.array([(views[b].cs.config_size or 4096) if b in views else 4096 for b in self._bdfs],
                                  dtype=np.int64)
        self._driver = [views[b].cs.driver if b in views else None for b in self._bdfs]
        self._user = [r for r in self._r_obj if r.kind == "user"]
        # DOE mailboxes the kernel sees, and the bytes known at trace start (for changed bits).
        self._doe: dict[tuple[str, int], _Doe] = {}
        for v in res.views:
            for c in v.caps.caps:
                if c.space == "ext" and c.id == 0x2E and c.kernel_visible:
                    owner = next((r.owner for r in regs if r.bdf == v.cs.bdf and r.start <= c.offset <= r.end
                                  and r.kind != "user"), "no one's")
                    self._doe[(v.cs.bdf, c.offset)] = _Doe(v.cs.bdf, c.offset, owner)
        self._known: dict[str, tuple[bytearray, bytearray]] = {
            v.cs.bdf: (bytearray(v.cs.data), bytearray(v.cs.known)) for v in res.views}

    # ---------------------------------------------------------------------------------
    def feed(self, t: pa.Table) -> pd.DataFrame:
        """Findings for one chunk of events (an Arrow table in the event schema)."""
        n = t.num_rows
        base = self._next_index
        self._next_index += n
        self.counts["events"] += n
        op = t.column("op")
        is_write = pc.fill_null(pc.equal(op, "write"), False).to_numpy(zero_copy_only=False)
        is_read = ~is_write
        self.counts["writes"] += int(is_write.sum())
        self.counts["reads"] += int(is_read.sum())
        if n == 0:
            return empty_findings()
        # device codes via the chunk's dictionary of BDF strings
        enc = pc.dictionary_encode(t.column("bdf")).combine_chunks()
        lut = np.array([self._dev_code.get(b, -1) for b in enc.dictionary.to_pylist()] + [-1], dtype=np.int64)
        idx = enc.indices.fill_null(len(lut) - 1).to_numpy(zero_copy_only=False)
        dev = lut[idx]
        offset = t.column("offset").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        size = t.column("size").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        w = is_write & (dev >= 0)
        if w.any():
            self.write_hist += np.bincount(dev[w] * 4097 + np.minimum(offset[w], 4096),
                                           minlength=self.write_hist.size).reshape(self.write_hist.shape)
        has_data_read = None
        if is_read.any():
            dcol = t.column("data")
            has_data_read = is_read & pc.is_valid(dcol).to_numpy(zero_copy_only=False)
        consider = (is_write | is_read) if self.reads else is_write
        sel = np.flatnonzero(consider & (dev >= 0))
        # Per-write kernel verdict (computed on writes, independent of regions found)
        taints = self._taints(t, sel, dev, offset, size, is_write)
        rows_ev, rows_reg = self._join(sel, dev, offset, size)
        # Sequential extras: reads update the known bytes; DOE writes get protocol sense.
        doe_text: dict[int, str] = {}
        old_changed: dict[int, tuple[str, str]] = {}
        self._sequential(t, base, sel, rows_ev, is_write, has_data_read, dev, offset, size, doe_text, old_changed)
        if rows_ev.size == 0:
            return empty_findings()
        return self._frame(t, base, rows_ev, rows_reg, dev, offset, size, taints, doe_text, old_changed)

    # ---------------------------------------------------------------------------------
    def _join(self, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(event row, region index) pairs for every overlap, ordered by event then region start."""
        if sel.size == 0 or self._r_dev.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        d, o, s = dev[sel], np.minimum(offset[sel], MAX_OFF), np.minimum(size[sel], MAX_SIZE)
        keys = (d << 40) | (o << 16) | s
        codes, uniq = pd.factorize(keys, sort=False)
        ud, uo, us = uniq >> 40, (uniq >> 16) & MAX_OFF, uniq & MAX_SIZE
        # every unique triple against every region of its device
        cnt = self._dev_count[ud]
        u_rep = np.repeat(np.arange(uniq.size), cnt)
        first = np.repeat(self._dev_begin[ud] - np.concatenate(([0], np.cumsum(cnt)[:-1])), cnt)
        r = first + np.arange(u_rep.size)
        lo, hi = uo[u_rep], uo[u_rep] + us[u_rep] - 1
        hit = (self._r_start[r] <= hi) & (self._r_end[r] >= lo) & (us[u_rep] > 0)
        pu, pr = u_rep[hit], r[hit]
        # CSR over unique triples, expanded back to events
        pc_cnt = np.bincount(pu, minlength=uniq.size)
        ptr = np.concatenate(([0], np.cumsum(pc_cnt)))
        ev_cnt = pc_cnt[codes]
        if ev_cnt.sum() == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ev_rows = np.repeat(sel, ev_cnt)
        starts = np.repeat(ptr[codes] - np.concatenate(([0], np.cumsum(ev_cnt)[:-1])), ev_cnt)
        regs = pr[starts + np.arange(ev_rows.size)]
        return ev_rows, regs

    def _taints(self, t: pa.Table, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
                is_write: np.ndarray) -> np.ndarray:
        """Boolean per row: the kernel would taint on this write (see verdict.py)."""
        out = np.zeros(t.num_rows, dtype=bool)
        if not self.paths:
            return out
        via = t.column("via")
        ret = t.column("ret")
        ret_ok = pc.fill_null(pc.greater_equal(ret, 0), True).to_numpy(zero_copy_only=False)
        reg = self.res.registry
        for name, site in self.paths.items():
            on_path = pc.fill_null(pc.equal(via, name), False).to_numpy(zero_copy_only=False)
            rows = sel[on_path[sel] & is_write[sel] & ret_ok[sel]]
            if rows.size == 0:
                continue
            d, o, s = dev[rows], offset[rows], size[rows]
            if site.trims:  # sysfs: writes at or past the end fail first; the rest is trimmed
                fsz = self._cfg_size[d]
                inside = o < fsz
                rows, d, o, s = rows[inside], d[inside], o[inside], np.minimum(s[inside], fsz[inside] - o[inside])
            for code in np.unique(d):
                m = d == code
                out[rows[m]] = reg.is_exclusive_many(self._bdfs[code], o[m].astype(np.uint64), s[m].astype(np.uint64))
        return out

    # ---------------------------------------------------------------------------------
    def _sequential(self, t, base, sel, rows_ev, is_write, has_data_read, dev, offset, size, doe_text, old_changed) -> None:
        finding_rows = set(np.unique(rows_ev).tolist()) if rows_ev.size else set()
        doe_rows = self._doe_rows(sel, dev, offset, size, is_write)
        reads = np.flatnonzero(has_data_read & (dev >= 0)) if has_data_read is not None else np.empty(0, np.int64)
        want = sorted(set(reads.tolist()) | set(doe_rows) | {r for r in finding_rows if is_write[r]})
        if not want:
            return
        data = t.column("data").take(pa.array(want)).to_pylist()
        pids = t.column("pid").take(pa.array(want)).to_pylist()
        comms = t.column("comm").take(pa.array(want)).to_pylist()
        doe_set = set(doe_rows)
        for i, row in enumerate(want):
            hexd = data[i]
            bdf = self._bdfs[dev[row]]
            off = int(offset[row])
            raw = bytes.fromhex(hexd) if hexd else None
            if not is_write[row]:
                if raw is not None and bdf in self._known:
                    vals, known = self._known[bdf]
                    for k, b in enumerate(raw[: max(0, len(vals) - off)]):
                        vals[off + k], known[off + k] = b, 1
                continue
            if raw is not None and row in finding_rows and bdf in self._known:
                vals, known = self._known[bdf]
                n = min(len(raw), max(0, len(vals) - off))
                if n and all(known[off: off + n]):
                    old = bytes(vals[off: off + n])
                    mask = bytes(a ^ b for a, b in zip(old, raw[:n]))
                    old_changed[row] = (old.hex(), mask.hex())
            if row in doe_set:
                txt = self._doe_step(bdf, off, raw, int(pids[i]), comms[i])
                if txt:
                    doe_text[row] = txt

    def _doe_rows(self, sel, dev, offset, size, is_write) -> list[int]:
        if not self._doe or sel.size == 0:
            return []
        m = np.zeros(sel.size, dtype=bool)
        d, o, s = dev[sel], offset[sel], size[sel]
        for (bdf, cap) in self._doe:
            code = self._dev_code[bdf]
            m |= (d == code) & (o < cap + 0x18) & (o + s > cap)
        return [int(r) for r in sel[m] if is_write[r]]

    def _doe_step(self, bdf: str, off: int, raw: bytes | None, pid: int, comm: str) -> str | None:
        mb = next((m for (b, cap), m in self._doe.items() if b == bdf and cap <= off < cap + 0x18), None)
        if mb is None:
            return None
        rel = off - mb.cap
        if raw is None:
            return f"DOE register +{rel:#x} written (no data in the trace)"
        val = int.from_bytes(raw[:4].ljust(4, b"\0"), "little")
        if rel == DOE_WRITE and len(raw) == 4:
            mb.dwords.append(val)
            k = len(mb.dwords)
            what = self._doe_name(mb) if k >= 1 else "data object"
            return f"pid {pid} ({comm}) wrote dword {k} of a {what} data object into {mb.owner}'s mailbox"
        if rel == DOE_READ:
            return f"pid {pid} ({comm}) took a response dword from {mb.owner}'s mailbox (read mailbox acknowledge)"
        if rel == DOE_CTRL:
            if val & DOE_ABORT:
                n = len(mb.dwords)
                mb.dwords.clear()
                return f"pid {pid} ({comm}) aborted the DOE exchange on {mb.owner}'s mailbox ({n} dwords discarded)"
            if val & DOE_GO:
                desc = self._doe_name(mb)
                n = len(mb.dwords)
                length = (mb.dwords[1] & 0x3FFFF) or (1 << 18) if n >= 2 else None
                mb.dwords.clear()
                extra = "" if length is None or length == n else f"; header says {length} dwords"
                return f"pid {pid} ({comm}) started a {desc} request ({n} dwords{extra}) on {mb.owner}'s mailbox"
        return f"pid {pid} ({comm}) wrote DOE register +{rel:#x} of {mb.owner}'s mailbox"

    @staticmethod
    def _doe_name(mb: _Doe) -> str:
        if not mb.dwords:
            return "empty"
        vendor, dtype = mb.dwords[0] & 0xFFFF, (mb.dwords[0] >> 16) & 0xFF
        return DOE_PROTOCOLS.get((vendor, dtype), f"vendor-defined (vendor {vendor:04x} type {dtype:#x})")

    # ---------------------------------------------------------------------------------
    def _frame(self, t, base, rows_ev, rows_reg, dev, offset, size, taints, doe_text, old_changed) -> pd.DataFrame:
        take = pa.array(rows_ev)
        cols: dict[str, object] = {}
        for name in ("ts_ns", "pid", "tid", "uid", "comm", "op", "bdf", "data", "via", "ret"):
            cols[name] = t.column(name).take(take).to_pandas()
        cols["offset"] = offset[rows_ev]
        cols["size"] = size[rows_ev]
        cols["region_start"] = self._r_start[rows_reg]
        for name, arr in self._r_attr.items():
            cols[name] = arr[rows_reg]
        kt = taints[rows_ev]
        cols["kernel_taints"] = kt
        logs = np.zeros(rows_ev.size, dtype=bool)
        msg: list[str | None] = [None] * rows_ev.size
        if kt.any():
            via = cols["via"]
            for site in self.paths:
                if site in self._logged:
                    continue
                cand = np.flatnonzero(kt & (np.asarray(via.fillna("")) == site))
                if cand.size:
                    first_ev = rows_ev[cand[0]]
                    self._logged.add(site)
                    same = rows_ev == first_ev
                    logs |= same
                    fmt = self.paths[site].fmt
                    d = int(dev[first_ev])
                    comm = str(t.column("comm")[int(first_ev)].as_py())[:15]
                    prefix = self._driver[d] or "pci"
                    text = (f"{prefix} {self._bdfs[d]}: {comm}: Unexpected write to kernel-exclusive config offset "
                            f"{int(offset[first_ev]):{'x'}}")
                    for j in np.flatnonzero(same):
                        msg[j] = text
        cols["kernel_logs"] = logs
        cols["kernel_message"] = msg
        cols["allowed_by"] = self._allowed(rows_ev, rows_reg, offset, size, dev)
        kinds = np.asarray(cols["kind"], dtype=object)
        sev = np.array([SEVERITY.get(k, "warning") for k in kinds], dtype=object)
        allowed = pd.notna(cols["allowed_by"])
        sev[allowed] = "note"
        cols["severity"] = sev
        oc = [old_changed.get(int(r)) for r in rows_ev] if old_changed else None
        cols["old_value"] = [x[0] if x else None for x in oc] if oc else [None] * rows_ev.size
        cols["changed_bits"] = [x[1] if x else None for x in oc] if oc else [None] * rows_ev.size
        cols["doe"] = [doe_text.get(int(r)) for r in rows_ev] if doe_text else [None] * rows_ev.size
        vias = np.asarray(cols["via"].fillna("unknown"))
        notes = {v: path_note(v, self.kernel) for v in set(vias.tolist())}
        cols["verdict_note"] = [notes[v] for v in vias] if any(notes.values()) else [None] * rows_ev.size
        cols["event_index"] = rows_ev + base
        # user regions are not findings: they only mark others as allowed
        df = pd.DataFrame(cols)
        df = df[df["kind"].astype(str) != "user"]
        return df.astype({c: tp for c, tp in FINDING_COLUMNS.items()})[list(FINDING_COLUMNS)].reset_index(drop=True)

    def _allowed(self, rows_ev, rows_reg, offset, size, dev) -> list[str | None] | np.ndarray:
        out = np.full(rows_ev.size, None, dtype=object)
        if not self._user:
            return out
        o = offset[rows_ev]
        e = o + size[rows_ev] - 1
        lo = np.maximum(o, self._r_start[rows_reg])
        hi = np.minimum(e, self._r_end[rows_reg])
        d = dev[rows_ev]
        for u in self._user:
            m = (d == self._dev_code[u.bdf]) & (u.start <= lo) & (u.end >= hi) & pd.isna(out)
            out[m] = u.owner
        return out


def analyze_tables(res: RegistryResult, tables: Iterable[pa.Table], reads: bool = False) -> Iterator[pd.DataFrame]:
    """Findings chunk by chunk; the analyzer's counts are in the generator's return value."""
    an = Analyzer(res, reads=reads)
    for t in tables:
        yield an.feed(t)
    return an.counts
