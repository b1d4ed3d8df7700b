"""Events x registry -> findings, vectorised.

For every write, each region it overlaps (``[offset, offset+size-1]`` intersects
``[start, start+length-1]``) gives one finding row, carrying the event, the region and the
kernel's own verdict on the write. The overlap join runs on numpy arrays: events are
factorised into distinct (device, offset, size) triples, each triple is matched against its
device's regions once, and the matches are expanded back to events; no Python loop touches
every event. The sequential parts (reads that carry data update the bytes known for "which
bits changed"; DOE mailbox exchanges) are vectorised too: an as-of lookup over sorted
(device, byte, row) keys, and segment arithmetic between DOE GO/ABORT writes. A chunk whose
data is not plain hex takes the one-by-one path, which gives the same answers.

:meth:`Analyzer.feed_arrow` gives the findings as an Arrow table (string columns may be
dictionary-encoded); :meth:`Analyzer.feed` as a pandas DataFrame with :data:`FINDING_COLUMNS`.

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

__all__ = ["Analyzer", "analyze_tables", "findings_frame", "DOE_PROTOCOLS"]

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
        # One row per device code; self._known holds views of it per BDF (the one-by-one path).
        self._klen = np.zeros(ndev, dtype=np.int64)
        for v in res.views:
            self._klen[self._dev_code[v.cs.bdf]] = len(v.cs.data)
        kmax = max(1, int(self._klen.max(initial=0)))
        self._kvals = np.zeros((ndev, kmax), dtype=np.uint8)
        self._kknown = np.zeros((ndev, kmax), dtype=np.uint8)
        self._known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for v in res.views:
            code, n = self._dev_code[v.cs.bdf], len(v.cs.data)
            self._kvals[code, :n] = np.frombuffer(bytes(v.cs.data), dtype=np.uint8)
            self._kknown[code, :n] = np.frombuffer(bytes(bytearray(v.cs.known)), dtype=np.uint8)[:n] != 0
            self._known[v.cs.bdf] = (self._kvals[code, :n], self._kknown[code, :n])
        # region attributes as Arrow dictionaries (findings take indices into them)
        self._r_dict = {name: pa.array(list(self._r_attr[name]), type=pa.string())
                        for name in ("owner", "kind", "capability", "rule", "source")}
        sev_names = ["error", "warning", "note"]
        for r in self._r_obj:
            if SEVERITY.get(r.kind, "warning") not in sev_names:
                sev_names.append(SEVERITY.get(r.kind, "warning"))
        self._sev_dict = pa.array(sev_names, type=pa.string())
        self._r_sev = np.array([sev_names.index(SEVERITY.get(r.kind, "warning")) for r in self._r_obj], dtype=np.int32)

    # ---------------------------------------------------------------------------------
    def feed(self, t: pa.Table) -> pd.DataFrame:
        """Findings for one chunk of events (an Arrow table in the event schema)."""
        f = self.feed_arrow(t)
        return empty_findings() if f is None else findings_frame(f)

    def feed_arrow(self, t: pa.Table) -> pa.Table | None:
        """Findings for one chunk as an Arrow table (columns and order of :data:`FINDING_COLUMNS`;
        string columns may be dictionary-encoded), or ``None`` when the chunk has none."""
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
            return None
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
        extras = self._sequential(t, sel, rows_ev, is_write, has_data_read, dev, offset, size)
        logged = self._once_per_boot(t, taints, dev, offset)
        if rows_ev.size == 0:
            return None
        return self._table(t, base, rows_ev, rows_reg, dev, offset, size, taints, extras, logged)

    def _once_per_boot(self, t: pa.Table, taints: np.ndarray, dev: np.ndarray, offset: np.ndarray) -> dict[int, str]:
        """Rows that print the kernel's warning: the first tainting write of the boot at each call
        site (pci_warn_once() is one static flag per call site), whether or not it has a finding
        row (a zero-length procfs write inside a claim taints but overlaps no byte). Row -> dmesg text."""
        out: dict[int, str] = {}
        if not taints.any():
            return out
        via = t.column("via")
        for site in self.paths:
            if site in self._logged:
                continue
            on = pc.fill_null(pc.equal(via, site), False).to_numpy(zero_copy_only=False)
            hits = np.flatnonzero(taints & on)
            if hits.size:
                row = int(hits[0])
                self._logged.add(site)
                d = int(dev[row])
                comm = str(t.column("comm")[row].as_py())[:15]
                out[row] = (f"{self._driver[d] or 'pci'} {self._bdfs[d]}: {comm}: Unexpected write to "
                            f"kernel-exclusive config offset {int(offset[row]):x}")
        return out

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
            if site.trims:
                # sysfs (fs/sysfs/file.c sysfs_kf_bin_write()): a write at or past the end fails
                # with -EFBIG, the rest is trimmed to the file size, and a zero-length write
                # returns before pci_write_config() is called
                fsz = self._cfg_size[d]
                inside = (o < fsz) & (s > 0)
                rows, d, o, s = rows[inside], d[inside], o[inside], np.minimum(s[inside], fsz[inside] - o[inside])
            for code in np.unique(d):
                m = d == code
                out[rows[m]] = reg.is_exclusive_many(self._bdfs[code], o[m].astype(np.uint64), s[m].astype(np.uint64))
        return out

    # ---------------------------------------------------------------------------------
    def _sequential(self, t, sel, rows_ev, is_write, has_data_read, dev, offset, size) -> "_Extras":
        """Known bytes (old value, changed bits) and DOE sense, for this chunk, in row order."""
        n = t.num_rows
        finding_w = np.zeros(n, dtype=bool)
        if rows_ev.size:
            finding_w[rows_ev] = True
            finding_w &= is_write
        reads = has_data_read & (dev >= 0) if has_data_read is not None else np.zeros(n, dtype=bool)
        doe_rows = self._doe_rows(sel, dev, offset, size, is_write)
        want = np.flatnonzero(reads | finding_w | _mask(n, doe_rows))
        ex = _Extras(n)
        if want.size == 0:
            return ex
        raw = _HexColumn(t.column("data").take(pa.array(want)))
        if not raw.ok:  # not plain hex somewhere: the one-by-one path (same answers, or the same error)
            doe_text: dict[int, str] = {}
            old_changed: dict[int, tuple[str, str]] = {}
            self._sequential_slow(t, want, set(np.flatnonzero(finding_w).tolist()) | set(rows_ev.tolist()),
                                  is_write, doe_rows, dev, offset, doe_text, old_changed)
            ex.set_old(old_changed)
            ex.set_doe(doe_text)
            return ex
        pos_in_want = np.full(n, -1, dtype=np.int64)
        pos_in_want[want] = np.arange(want.size)
        self._known_bytes(ex, want, raw, reads[want], finding_w[want], dev[want], offset[want])
        if doe_rows.size:
            self._doe_fast(ex, t, doe_rows, raw, pos_in_want[doe_rows], dev, offset)
        return ex

    def _known_bytes(self, ex: "_Extras", rows, raw: "_HexColumn", is_rd, is_fw, d, off) -> None:
        """Reads with data update the known bytes; writes with findings get old value and changed
        bits when every byte they write was known just before them (an as-of lookup)."""
        klen = self._klen[d]
        has = raw.present & (d >= 0) & (klen > 0)
        # read bytes: k < len(vals) - off
        r_sel = np.flatnonzero(is_rd & has)
        r_n = np.clip(np.minimum(raw.nbytes[r_sel], klen[r_sel] - off[r_sel]), 0, None)
        # write bytes: n = min(len(raw), len(vals) - off) > 0
        w_sel = np.flatnonzero(is_fw & has & ~is_rd)
        w_n = np.clip(np.minimum(raw.nbytes[w_sel], klen[w_sel] - off[w_sel]), 0, None)
        keep = w_n > 0
        w_sel, w_n = w_sel[keep], w_n[keep]
        if r_sel.size == 0 and w_sel.size == 0:
            return
        kmax = self._kvals.shape[1]
        r_rep, r_k = _expand(r_n)
        w_rep, w_k = _expand(w_n)
        r_key = d[r_sel][r_rep] * kmax + off[r_sel][r_rep] + r_k
        r_val = raw.byte(r_sel[r_rep], r_k)
        w_key = d[w_sel][w_rep] * kmax + off[w_sel][w_rep] + w_k
        w_raw = raw.byte(w_sel[w_rep], w_k)
        flat_vals, flat_known = self._kvals.reshape(-1), self._kknown.reshape(-1)
        if w_sel.size:
            if r_sel.size:
                m = rows.size + 1
                keys = np.concatenate([r_key * m + r_sel[r_rep], w_key * m + w_sel[w_rep]])
                order = np.argsort(keys, kind="stable")
                is_r = order < r_key.size
                last = np.maximum.accumulate(np.where(is_r, np.arange(order.size), -1))
                src = order[np.maximum(last, 0)]
                key_all = np.concatenate([r_key, w_key])
                hit = (last >= 0) & (key_all[src] == key_all[order])
                wpos = np.flatnonzero(~is_r)
                w_at = order[wpos] - r_key.size  # index into the write bytes
                w_hit = np.zeros(w_key.size, dtype=bool)
                w_src = np.zeros(w_key.size, dtype=np.int64)
                w_hit[w_at] = hit[wpos]
                w_src[w_at] = src[wpos]
                w_old = np.where(w_hit, r_val[np.minimum(w_src, max(r_val.size - 1, 0))] if r_val.size else 0,
                                 flat_vals[w_key]).astype(np.uint8)
                w_known = w_hit | (flat_known[w_key] != 0)
            else:
                w_old = flat_vals[w_key]
                w_known = flat_known[w_key] != 0
            starts = np.concatenate(([0], np.cumsum(w_n)[:-1]))
            all_known = np.minimum.reduceat(w_known.astype(np.uint8), starts) == 1
            ok_rows = np.flatnonzero(all_known)
            if ok_rows.size:
                ok_bytes = np.repeat(all_known, w_n)
                old_b = w_old[ok_bytes]
                ex.old_rows = rows[w_sel[ok_rows]]
                ex.old_value = _hex_strings(old_b, w_n[ok_rows])
                ex.changed_bits = _hex_strings(old_b ^ w_raw[ok_bytes], w_n[ok_rows])
        if r_sel.size:  # the state after this chunk: the last read of each byte wins
            seq = r_sel[r_rep]
            order = np.lexsort((seq, r_key))
            k_sorted = r_key[order]
            last = np.flatnonzero(np.append(k_sorted[1:] != k_sorted[:-1], True))
            flat_vals[k_sorted[last]] = r_val[order[last]]
            flat_known[k_sorted[last]] = 1

    def _doe_fast(self, ex: "_Extras", t, rows, raw: "_HexColumn", wi, dev, offset) -> None:
        """DOE protocol sense for the DOE writes ``rows`` (chunk rows, ascending); ``wi``: their
        positions in ``raw``. Mailbox state (the dwords of the object being written) carries over."""
        d, o = dev[rows], offset[rows]
        mb_id = np.full(rows.size, -1, dtype=np.int64)
        mbs = list(self._doe.values())
        for j, mb in enumerate(mbs):
            m = (mb_id < 0) & (d == self._dev_code[mb.bdf]) & (o >= mb.cap) & (o < mb.cap + 0x18)
            mb_id[m] = j
        present = raw.present[wi]
        nbytes = raw.nbytes[wi]
        val = raw.dword(wi)
        pid_s = pc.cast(t.column("pid").take(pa.array(rows)), pa.string())
        comm_s = pc.fill_null(t.column("comm").take(pa.array(rows)), "None")
        pieces: list[tuple[np.ndarray, pa.Array]] = []
        for j, mb in enumerate(mbs):
            sel = np.flatnonzero(mb_id == j)
            if sel.size == 0:
                continue
            rel = o[sel] - mb.cap
            pr, v, nb = present[sel], val[sel], nbytes[sel]
            is_app = pr & (rel == DOE_WRITE) & (nb == 4)
            is_rd = pr & (rel == DOE_READ) & ~is_app
            is_ctl = pr & (rel == DOE_CTRL)
            is_abort = is_ctl & ((v & DOE_ABORT) != 0)
            is_go = is_ctl & ~is_abort & ((v & DOE_GO) != 0)
            is_clear = is_abort | is_go
            # segments between clears; dwords in a segment = carried (first segment) + appends so far
            seg = np.cumsum(is_clear) - is_clear
            app_cum = np.cumsum(is_app)
            clear_at = np.flatnonzero(is_clear)
            seg_base = np.concatenate(([0], app_cum[clear_at]))
            carry = list(mb.dwords)
            c0 = len(carry)
            count = app_cum - seg_base[seg] + np.where(seg == 0, c0, 0)  # len(mb.dwords) after this row
            app_idx = np.flatnonzero(is_app)
            app_seg = seg[app_idx]
            app_val = v[app_idx]

            def dword(q: int, s: np.ndarray) -> np.ndarray:
                """dwords[q] of segment s (callers only ask where it exists)."""
                out = np.zeros(s.size, dtype=np.int64)
                in_carry = (s == 0) & (q < c0)
                if c0 > q:
                    out[in_carry] = carry[q]
                qa = q - np.where(s == 0, c0, 0)
                first = np.searchsorted(app_seg, s, side="left")
                gi = np.clip(first + qa, 0, max(app_idx.size - 1, 0))
                if app_idx.size:
                    out[~in_carry] = app_val[gi[~in_carry]]
                return out

            sub_rows = rows[sel]
            pid_j, comm_j = pid_s.take(pa.array(sel)), comm_s.take(pa.array(sel))
            owner = mb.owner
            # no data
            m = ~pr
            if m.any():
                pieces.append((sub_rows[m], _join_str(["DOE register +", _REL_HEX.take(pa.array(rel[m])),
                                                       " written (no data in the trace)"])))
            if is_app.any():
                k = count[is_app]
                names = self._doe_names(dword(0, seg[is_app]))
                pieces.append((sub_rows[is_app], _join_str([
                    "pid ", pid_j.filter(pa.array(is_app)), " (", comm_j.filter(pa.array(is_app)), ") wrote dword ",
                    pc.cast(pa.array(k), pa.string()), " of a ", names, f" data object into {owner}'s mailbox"])))
            if is_rd.any():
                pieces.append((sub_rows[is_rd], _join_str([
                    "pid ", pid_j.filter(pa.array(is_rd)), " (", comm_j.filter(pa.array(is_rd)),
                    f") took a response dword from {owner}'s mailbox (read mailbox acknowledge)"])))
            if is_abort.any():
                pieces.append((sub_rows[is_abort], _join_str([
                    "pid ", pid_j.filter(pa.array(is_abort)), " (", comm_j.filter(pa.array(is_abort)),
                    f") aborted the DOE exchange on {owner}'s mailbox (", pc.cast(pa.array(count[is_abort]), pa.string()),
                    " dwords discarded)"])))
            if is_go.any():
                n_go, s_go = count[is_go], seg[is_go]
                names = self._doe_names(np.where(n_go >= 1, dword(0, s_go), 0))
                names = pc.if_else(pa.array(n_go >= 1), names, pa.scalar("empty"))
                d1 = dword(1, s_go) & 0x3FFFF
                length = np.where(d1 == 0, 1 << 18, d1)
                say = (n_go >= 2) & (length != n_go)
                extra = pc.if_else(pa.array(say), _join_str(["; header says ", pc.cast(pa.array(length), pa.string()),
                                                             " dwords"]), pa.scalar(""))
                pieces.append((sub_rows[is_go], _join_str([
                    "pid ", pid_j.filter(pa.array(is_go)), " (", comm_j.filter(pa.array(is_go)), ") started a ", names,
                    " request (", pc.cast(pa.array(n_go), pa.string()), " dwords", extra, f") on {owner}'s mailbox"])))
            other = pr & ~is_app & ~is_rd & ~is_abort & ~is_go
            if other.any():
                pieces.append((sub_rows[other], _join_str([
                    "pid ", pid_j.filter(pa.array(other)), " (", comm_j.filter(pa.array(other)),
                    ") wrote DOE register +", _REL_HEX.take(pa.array(rel[other])), f" of {owner}'s mailbox"])))
            # the object being written when the chunk ends
            if clear_at.size:
                mb.dwords = [int(x) for x in app_val[app_seg == clear_at.size]]
            else:
                mb.dwords = carry + [int(x) for x in app_val]
        if pieces:
            ex.doe_rows = np.concatenate([p[0] for p in pieces])
            ex.doe = pa.concat_arrays([p[1].cast(pa.string()) for p in pieces])

    def _doe_names(self, dw0: np.ndarray) -> pa.Array:
        """:meth:`_doe_name` of the objects whose first dword is ``dw0`` (non-empty objects)."""
        key = dw0.astype(np.int64) & 0xFFFFFF
        uniq, inv = np.unique(key, return_inverse=True)
        names = [DOE_PROTOCOLS.get((int(u) & 0xFFFF, int(u) >> 16),
                                   f"vendor-defined (vendor {int(u) & 0xFFFF:04x} type {int(u) >> 16:#x})") for u in uniq]
        return pa.array(names, type=pa.string()).take(pa.array(inv.reshape(-1)))

    def _sequential_slow(self, t, want, finding_rows, is_write, doe_rows, dev, offset, doe_text, old_changed) -> None:
        """The one-by-one path (chunks whose data is not plain hex)."""
        want = want.tolist()
        data = t.column("data").take(pa.array(want, type=pa.int64())).to_pylist()
        pids = t.column("pid").take(pa.array(want, type=pa.int64())).to_pylist()
        comms = t.column("comm").take(pa.array(want, type=pa.int64())).to_pylist()
        doe_set = set(doe_rows.tolist())
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

    def _doe_rows(self, sel, dev, offset, size, is_write) -> np.ndarray:
        """Writes (chunk rows, ascending) that overlap a DOE mailbox the kernel sees."""
        if not self._doe or sel.size == 0:
            return np.empty(0, np.int64)
        m = np.zeros(sel.size, dtype=bool)
        d, o, s = dev[sel], offset[sel], size[sel]
        for (bdf, cap) in self._doe:
            code = self._dev_code[bdf]
            m |= (d == code) & (o < cap + 0x18) & (o + s > cap)
        rows = sel[m]
        return rows[is_write[rows]]

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
    def _table(self, t, base, rows_ev, rows_reg, dev, offset, size, taints, ex: "_Extras",
               logged: dict[int, str]) -> pa.Table:
        kt = taints[rows_ev]
        via_all = t.column("via").take(pa.array(rows_ev))
        logs = np.zeros(rows_ev.size, dtype=bool)
        msg: dict[int, str] = {}
        for row, text in logged.items():
            for j in np.flatnonzero(rows_ev == row):
                logs[j] = True
                msg[int(j)] = text
        allowed = self._allowed(rows_ev, rows_reg, offset, size, dev)
        # user regions are not findings: they only mark others as allowed
        keep = np.flatnonzero(self._r_kind[rows_reg] != KIND_CODE["user"])
        if keep.size != rows_ev.size:
            rows_ev, rows_reg, kt, logs, allowed = rows_ev[keep], rows_reg[keep], kt[keep], logs[keep], allowed[keep]
            via_all = via_all.take(pa.array(keep))
            where = {int(j): i for i, j in enumerate(keep)}
            msg = {where[j]: v for j, v in msg.items() if j in where}
        take = pa.array(rows_ev)
        nrow = rows_ev.size
        ri = pa.array(rows_reg.astype(np.int32))
        cols: dict[str, object] = {}
        for name in ("ts_ns", "pid", "tid", "uid", "comm", "op", "bdf"):
            cols[name] = t.column(name).take(take)
        cols["offset"] = pa.array(offset[rows_ev])
        cols["size"] = pa.array(size[rows_ev])
        for name in ("data", "via", "ret"):
            cols[name] = t.column(name).take(take) if name != "via" else via_all
        cols["region_start"] = pa.array(self._r_start[rows_reg])
        cols["region_length"] = pa.array(self._r_attr["region_length"][rows_reg])
        for name in ("owner", "kind", "capability", "rule", "source"):
            cols[name] = pa.DictionaryArray.from_arrays(ri, self._r_dict[name])
        cols["kernel_taints"] = pa.array(kt)
        cols["kernel_logs"] = pa.array(logs)
        if msg:
            mo = np.full(nrow, None, dtype=object)
            for j, v in msg.items():
                mo[j] = v
            cols["kernel_message"] = pa.array(mo, type=pa.string())
        else:
            cols["kernel_message"] = pa.nulls(nrow, pa.string())
        has_allowed = pd.notna(allowed)
        cols["allowed_by"] = pa.array(allowed, type=pa.string()) if has_allowed.any() else pa.nulls(nrow, pa.string())
        sev = self._r_sev[rows_reg].copy()
        sev[has_allowed] = 2  # "note"
        cols["severity"] = pa.DictionaryArray.from_arrays(pa.array(sev), self._sev_dict)
        cols["old_value"] = ex.take_old("old_value", rows_ev)
        cols["changed_bits"] = ex.take_old("changed_bits", rows_ev)
        cols["doe"] = ex.take_doe(rows_ev)
        venc = pc.dictionary_encode(pc.fill_null(via_all, "unknown")).combine_chunks()
        notes = [path_note(v, self.kernel) for v in venc.dictionary.to_pylist()]
        if any(notes):
            nn = [x for x in notes if x]
            code = np.array([nn.index(x) if x else -1 for x in notes] + [-1], dtype=np.int32)
            ci = code[venc.indices.to_numpy(zero_copy_only=False)]
            cols["verdict_note"] = pa.DictionaryArray.from_arrays(pa.array(ci, mask=ci < 0), pa.array(nn, pa.string()))
        else:
            cols["verdict_note"] = pa.nulls(nrow, pa.string())
        cols["event_index"] = pa.array(rows_ev + base)
        arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols.values()]
        return pa.Table.from_arrays(arrays, names=list(FINDING_COLUMNS))
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


def findings_frame(f: pa.Table) -> pd.DataFrame:
    """A findings table from :meth:`Analyzer.feed_arrow` as a DataFrame with :data:`FINDING_COLUMNS` dtypes."""
    cols = [pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in f.columns]
    df = pa.Table.from_arrays(cols, names=f.column_names).to_pandas()
    return df.astype({c: tp for c, tp in FINDING_COLUMNS.items()})[list(FINDING_COLUMNS)].reset_index(drop=True)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_HEX_VALUE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)
_REL_HEX = pa.array([f"{i:#x}" for i in range(0x18)], type=pa.string())


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, k) for k in range(counts[owner]) for every owner, flattened."""
    counts = counts.astype(np.int64, copy=False)
    rep = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
    return rep, np.arange(rep.size) - np.repeat(starts, counts)


def _hex_strings(flat: np.ndarray, lens: np.ndarray) -> pa.Array:
    """Lower-case hex strings of consecutive runs of ``flat`` bytes (``lens`` bytes each)."""
    chars = np.empty(flat.size * 2, dtype=np.uint8)
    chars[0::2] = _HEX_DIGITS[flat >> 4]
    chars[1::2] = _HEX_DIGITS[flat & 15]
    offsets = np.concatenate(([0], np.cumsum(2 * lens.astype(np.int64)))).astype(np.int32)
    return pa.StringArray.from_buffers(lens.size, pa.py_buffer(offsets), pa.py_buffer(chars))


def _join_str(parts: list) -> pa.Array:
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    out = pc.binary_join_element_wise(*args, "")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


class _HexColumn:
    """The ``data`` strings of some rows, decoded from hex at once. ``ok`` is False when one is
    not plain hex (odd length, other characters); then nothing else is filled in."""

    def __init__(self, col) -> None:
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if arr.type != pa.string():
            arr = arr.cast(pa.string())
        n = len(arr)
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        bufs = arr.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4).astype(np.int64)
        data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        clen = np.where(valid, offs[1:] - offs[:-1], 0)
        self.present = clen > 0  # bytes.fromhex(x) if x else None
        self.ok = not bool((clen % 2).any())
        if not self.ok:
            return
        self.nbytes = clen // 2
        rep, k = _expand(self.nbytes)
        pos = offs[:-1][rep] + 2 * k
        hi, lo = _HEX_VALUE[data[pos]], _HEX_VALUE[data[pos + 1]]
        if (hi == 255).any() or (lo == 255).any():
            self.ok = False
            return
        self.flat = (hi << 4) | lo
        self.bstart = np.concatenate(([0], np.cumsum(self.nbytes)[:-1])) if n else np.zeros(0, np.int64)

    def byte(self, rows: np.ndarray, k: np.ndarray) -> np.ndarray:
        return self.flat[self.bstart[rows] + k]

    def dword(self, rows: np.ndarray) -> np.ndarray:
        """int.from_bytes(raw[:4].ljust(4, b"\\0"), "little") (0 where there is no data)."""
        out = np.zeros(rows.size, dtype=np.int64)
        nb = self.nbytes[rows]
        for k in range(4):
            m = nb > k
            out[m] |= self.flat[self.bstart[rows[m]] + k].astype(np.int64) << (8 * k)
        return out


class _Extras:
    """Per chunk: old value / changed bits of some rows, DOE sense of some rows."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.old_rows = np.empty(0, np.int64)
        self.old_value: pa.Array = pa.array([], pa.string())
        self.changed_bits: pa.Array = pa.array([], pa.string())
        self.doe_rows = np.empty(0, np.int64)
        self.doe: pa.Array = pa.array([], pa.string())

    def set_old(self, d: dict[int, tuple[str, str]]) -> None:
        rows = sorted(d)
        self.old_rows = np.array(rows, dtype=np.int64)
        self.old_value = pa.array([d[r][0] for r in rows], pa.string())
        self.changed_bits = pa.array([d[r][1] for r in rows], pa.string())

    def set_doe(self, d: dict[int, str]) -> None:
        rows = sorted(d)
        self.doe_rows = np.array(rows, dtype=np.int64)
        self.doe = pa.array([d[r] for r in rows], pa.string())

    @staticmethod
    def _take(rows_with: np.ndarray, values: pa.Array, n: int, rows: np.ndarray) -> pa.Array:
        if rows_with.size == 0:
            return pa.nulls(rows.size, pa.string())
        at = np.full(n, -1, dtype=np.int64)
        at[rows_with] = np.arange(rows_with.size)
        i = at[rows]
        if not (i >= 0).any():
            return pa.nulls(rows.size, pa.string())
        return values.take(pa.array(i, mask=i < 0))

    def take_old(self, which: str, rows: np.ndarray) -> pa.Array:
        return self._take(self.old_rows, getattr(self, which), self.n, rows)

    def take_doe(self, rows: np.ndarray) -> pa.Array:
        return self._take(self.doe_rows, self.doe, self.n, rows)
