"""Events x registry -> findings: a pipeline of named stages over Arrow batches.

For every write, each region it overlaps gives one finding row, carrying the event, the region
and the kernel's own verdict on the write. The stages, each over a whole chunk of events:

* :mod:`.index`: regions as sorted arrays, and the overlap join (event row, region) pairs;
* :mod:`.kernel`: the kernel's verdict (which writes taint, the once-per-boot warning, caveats);
* :mod:`.known`: the bytes known before each write (old value, changed bits);
* :mod:`.doe`: the sense of writes into DOE mailboxes;
* :mod:`.collisions`: the kernel's own DOE exchanges against user space's (findings of kind
  ``collision``);
* :mod:`.findings`: the findings field table, and the findings table assembled from the rest.

A collision's row says how the kernel's exchange ended, which its ``doe_end`` tells, maybe chunks
later: from an exchange's first collision on, the findings are held back (in order) until that
end, or until :data:`.collisions.RESULT_WINDOW` events have passed, or until :meth:`Analyzer.finish`
(the trace ended first). So the findings come out in trace order, the same whatever the chunks
(replay = live), in bounded memory; callers call :meth:`Analyzer.finish` after the last chunk.

:meth:`Analyzer.feed_arrow` gives the findings as an Arrow table (columns may be
dictionary-encoded; the region columns are); :meth:`Analyzer.feed` as a pandas DataFrame with
:data:`.findings.FINDING_COLUMNS`.
Offsets and sizes are bytes; times are ns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..hexarrow import HexColumn
from ..pci_regs import PCI_CFG_SPACE_EXP_SIZE, PCI_DOE_CAP_SIZEOF
from ..regions import RegistryResult
from .collisions import RESULT_WINDOW, Collisions, DoeCollisions, result_text, write_effect
from .doe import DoeDecoder, Mailbox
from .findings import RowValues, assemble, empty_findings, findings_frame, severity_column
from .index import KIND_CODE, RegionIndex
from .kernel import KernelVerdicts
from .known import KnownBytes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Analyzer", "analyze_tables", "findings_frame"]

_HIST_WIDTH = PCI_CFG_SPACE_EXP_SIZE + 1  # write_hist columns: offsets 0..4095, then "beyond"
_FIRST_FIELDS = ["ts_ns", "pid", "comm", "offset", "size"]  # kept of an unknown device's first write
NULL_BDF = "?"  # the name of a null BDF among the unknown devices


class Analyzer:
    """Findings for a stream of event chunks against one registry.

    Stateful over the stream: the once-per-boot warnings, the bytes known from reads and the DOE
    exchanges in progress carry from one chunk to the next, and findings from a collision on wait
    for the kernel exchange's end (see the module docstring: call :meth:`finish` at the end).
    ``counts``: events, writes and reads seen, the kernel's own DOE exchanges (``doe_end`` events;
    they are neither writes nor reads), user writes into DOE mailboxes, and collisions (user writes
    during a kernel exchange and kernel starts during a user's request: ``doe_collisions``);
    ``write_hist``: writes per (device code, offset), shape ``[len(bdfs), 4097]`` (column
    4096: offsets beyond 4095); ``bdfs``: the devices in device-code order. With ``reads``, reads
    give finding rows too.

    Writes to a device that is not in the sources (no config space, no regions: what the kernel
    owns there is unknown) give no findings; they are counted per BDF instead, in ``unknown``
    (BDF -> ``{"bdf", "writes", "first": {"event_index", "ts_ns", "pid", "comm", "offset",
    "size"}}``, the first such write) and ``unknown_writes`` (their total; reads are not counted).
    """

    def __init__(self, res: RegistryResult, reads: bool = False) -> None:
        self.res = res
        self.reads = reads
        self.kernel = res.kernel
        self.index = RegionIndex(res)
        self.verdicts = KernelVerdicts(res, self.index)
        self.known = KnownBytes(res, self.index)
        self.doe = DoeDecoder(res, self.index)
        self.collide = DoeCollisions(self.doe.mailboxes)
        self._held: list[pa.Table] = []  # findings waiting for a kernel exchange's result, in order
        self._pending: dict[int, int] = {}  # exchange (doe_start event index) -> its first collision's event index
        self._results: dict[int, tuple[str, int | None]] = {}  # exchange -> how it ended (collisions.result_text)
        self._mb_region: dict[int, int] = {}  # id(mailbox) -> the region a collision row on it names (-1: none)
        self.counts: dict[str, int] = {"events": 0, "writes": 0, "reads": 0, "kernel_doe_exchanges": 0,
                                       "doe_mailbox_writes": 0, "doe_collisions": 0}
        self.bdfs: list[str] = self.index.bdfs
        self.write_hist = np.zeros((len(self.bdfs), _HIST_WIDTH), dtype=np.int64)
        self.unknown: dict[str, dict[str, Any]] = {}
        self.unknown_writes = 0
        self._next_index = 0

    def unknown_devices(self) -> list[dict[str, Any]]:
        """The writes to devices not in the sources, one dict per BDF (see :attr:`unknown`), sorted by BDF."""
        return [{**self.unknown[b], "first": dict(self.unknown[b]["first"])} for b in sorted(self.unknown)]

    def feed(self, t: pa.Table) -> pd.DataFrame:
        """Findings for one chunk of events (an Arrow table in the event schema)."""
        f = self.feed_arrow(t)
        return empty_findings() if f is None else findings_frame(f)

    def feed_arrow(self, t: pa.Table) -> pa.Table | None:
        """Findings for one chunk as an Arrow table (columns and order of :data:`.findings.FINDING_COLUMNS`;
        columns may be dictionary-encoded), or ``None`` when none are ready: findings from a
        collision on are held until the kernel exchange's end (then released, in trace order, with
        a later chunk's or with :meth:`finish`)."""
        n = t.num_rows
        base = self._next_index
        self._next_index += n
        self.counts["events"] += n
        op = t.column("op")
        is_write = pc.fill_null(pc.equal(op, "write"), False).to_numpy(zero_copy_only=False)
        is_read = pc.fill_null(pc.equal(op, "read"), False).to_numpy(zero_copy_only=False)
        n_writes, n_reads = int(is_write.sum()), int(is_read.sum())
        self.counts["writes"] += n_writes
        self.counts["reads"] += n_reads
        user_only = n_writes + n_reads == n
        if not user_only:  # the kernel's own DOE exchanges (events.DOE_OPS): counted at their start
            self.counts["kernel_doe_exchanges"] += int(pc.sum(pc.equal(op, "doe_start")).as_py() or 0)
        if n == 0:
            return None
        dev, bdf_key, bdf_names = self.index.device_keys(t.column("bdf"))
        offset = t.column("offset").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        size = t.column("size").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        self._count_writes(is_write & (dev >= 0), dev, offset)
        self._count_unknown(t, is_write & (dev < 0), bdf_key, bdf_names, base)
        consider = (is_write | is_read) if self.reads else is_write
        sel = np.flatnonzero(consider & (dev >= 0))
        # a write that failed (ret < 0: refused by the guard, EFBIG, ...) never reached a DOE mailbox:
        # no collision, no dword of a user request (the DOE decoder skips it too)
        ret = t.column("ret")
        wrote = is_write if ret.null_count == n else \
            is_write & pc.fill_null(pc.greater_equal(ret, 0), True).to_numpy(zero_copy_only=False)
        c = self.collide.feed(t, base, dev, offset, size, wrote, user_only)
        rev = self.collide.user_requests(t, c, dev, offset, wrote)  # before the decoder sees the chunk
        self.counts["doe_collisions"] += int(c.rows.size) + len(rev)
        # the stages; each one that keeps state sees every chunk, findings or not
        taints = self.verdicts.taints(t, sel, dev, offset, size, is_write)
        rows_ev, rows_reg = self.index.join(sel, dev, offset, size)
        marks = [(r, mb) for r, mb, _ in c.started] + c.finished
        if marks:  # the kernel's starts and ends end the user's objects in progress
            self.doe.kernel_starts({id(mb): np.sort(np.array([r for r, m in marks if m is mb], dtype=np.int64))
                                    for _, mb in marks})
        old_value, changed_bits, doe = self._data(t, sel, rows_ev, is_write, is_read, dev, offset, size, wrote)
        if marks:
            self.doe.end_chunk()
        logged = self.verdicts.once_per_boot(t, taints, dev, offset)
        f = None
        # user regions are not findings: they only mark others as allowed
        keep = np.flatnonzero(self.index.kind[rows_reg] != KIND_CODE["user"])
        if keep.size != rows_ev.size:
            rows_ev, rows_reg = rows_ev[keep], rows_reg[keep]
        coll: np.ndarray | None = None
        extra: dict[str, pa.Array] = {}
        if c.rows.size or rev:
            rows_ev, rows_reg, coll, extra = self._with_collisions(t, c, rev, rows_ev, rows_reg, offset, size)
        if rows_ev.size:
            reg = np.maximum(rows_reg, 0)
            kind_codes = self.index.kind[reg] if self.index.kind.size else np.zeros(rows_ev.size, np.int8)
            allowed, has_allowed = self.index.allowed(rows_ev, reg, dev, offset, size)
            if coll is not None:  # a claim hands bytes to user space; it cannot stop the kernel's exchange
                allowed[coll] = None
                has_allowed = has_allowed & ~coll
            via = t.column("via").take(pa.array(rows_ev))
            allowed_by = (pa.array(allowed, type=pa.string()) if has_allowed.any()
                          else pa.nulls(rows_ev.size, pa.string()))
            none = pa.nulls(rows_ev.size, pa.string())
            cols: dict[str, pa.Array | pa.ChunkedArray] = {
                "offset": pa.array(offset[rows_ev]), "size": pa.array(size[rows_ev]), "via": via,
                **self.index.region_columns(rows_reg, coll),
                **self.verdicts.columns(rows_ev, taints, logged, via),
                "allowed_by": allowed_by,
                "severity": severity_column(kind_codes, has_allowed, coll),
                "old_value": old_value.take(n, rows_ev),
                "changed_bits": changed_bits.take(n, rows_ev),
                "doe": doe.take(n, rows_ev),
                "collision": none, "kernel_protocol": none,
                "kernel_exchange": pa.nulls(rows_ev.size, pa.int64()), "kernel_ret": pa.nulls(rows_ev.size, pa.int64()),
                **extra,
                "event_index": pa.array(rows_ev + base),
            }
            f = assemble(t, rows_ev, cols)
        return self._release(f, c, base + n - 1)

    def finish(self) -> pa.Table | None:
        """The findings still held at the end of the trace (their kernel exchanges' ends are not
        in it: their collisions say the trace ends first), or ``None``. Call once, after the last chunk."""
        for x in self._pending:
            self._results[x] = ("end", None)
        self._pending.clear()
        return self._flush(None)

    # -- collisions --------------------------------------------------------------------------
    def _mailbox_region(self, mb: Mailbox) -> int:
        """The region a collision row on mailbox ``mb`` names: the first (index order) that is not a
        user region and overlaps the mailbox's bytes; -1: none."""
        if id(mb) not in self._mb_region:
            ix = self.index
            m = np.flatnonzero((ix.dev == mb.code) & (ix.start < mb.cap + PCI_DOE_CAP_SIZEOF) & (ix.end >= mb.cap)
                               & (ix.kind != KIND_CODE["user"]))
            self._mb_region[id(mb)] = int(m[0]) if m.size else -1
        return self._mb_region[id(mb)]

    def _with_collisions(self, t: pa.Table, c: Collisions, rev: list, rows_ev: np.ndarray, rows_reg: np.ndarray,
                         offset: np.ndarray, size: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, pa.Array]]:
        """The (event row, region) pairs with the chunk's collisions: a colliding write's pairs
        whose region overlaps the mailbox become collisions (one pair with no region, -1, when
        none does), and each kernel start during a user's request (``rev``, from
        :meth:`.collisions.DoeCollisions.user_requests`) is one more, on the mailbox's region.
        Returns the pairs in (event, region start) order, the collision mask and the collision
        columns (each sentence without the exchange's result: :meth:`_finalize` adds it)."""
        nrow = t.num_rows
        fw = c.rows
        cap_of = np.full(nrow, -1, dtype=np.int64)
        if fw.size:
            cap_of[fw] = np.array([mb.cap for mb in c.mailboxes], dtype=np.int64)
        pcap = cap_of[rows_ev]
        coll = pcap >= 0
        if coll.any():
            coll &= (self.index.start[rows_reg] < pcap + PCI_DOE_CAP_SIZEOF) & (self.index.end[rows_reg] >= pcap)
        covered = np.zeros(nrow, dtype=bool)
        covered[rows_ev[coll]] = True
        lone = fw[~covered[fw]]  # colliding writes with no region over the mailbox: one row each
        rev_rows = np.array([h[0] for h in rev], dtype=np.int64)
        rev_reg = np.array([self._mailbox_region(h[1]) for h in rev], dtype=np.int64)
        ev = np.concatenate([rows_ev, lone, rev_rows])
        reg = np.concatenate([rows_reg, np.full(lone.size, -1, np.int64), rev_reg])
        cl = np.concatenate([coll, np.ones(lone.size + rev_rows.size, dtype=bool)])
        start = self.index.start[np.maximum(reg, 0)] if self.index.start.size else np.zeros(reg.size, np.int64)
        order = np.lexsort((np.where(reg >= 0, start, -1), ev))
        ev, reg, cl = ev[order], reg[order], cl[order]
        # the sentences, protocols and exchanges: a Python step per collision
        what: dict[int, tuple[str, str, int]] = {}
        if fw.size:
            data = t.column("data").take(pa.array(fw)).to_pylist()
            for r, x, mb, d in zip(fw.tolist(), c.exchanges, c.mailboxes, data):
                effect = write_effect(int(offset[r]) - mb.cap, int(size[r]), d)
                what[r] = (f"{effect}, during the kernel's {x.protocol} exchange on {mb.owner}'s mailbox (pid {x.pid} "
                           f"{x.comm}, event {x.event_index})", x.protocol, x.event_index)
        for r, mb, x, req in rev:
            dw = f"{req.dwords} dword{'' if req.dwords == 1 else 's'}"
            what[r] = (f"the kernel (pid {x.pid} {x.comm}) started a {x.protocol} exchange on {mb.owner}'s mailbox "
                       f"while pid {req.pid} ({req.comm}) had a request of {dw} in progress in it (not sent with GO): "
                       "the kernel's request is appended to the user's, and the device takes both as one object",
                       x.protocol, x.event_index)
        at = np.flatnonzero(cl)
        vals = [what[int(r)] for r in ev[at].tolist()]
        text = np.full(ev.size, None, dtype=object)
        proto = np.full(ev.size, None, dtype=object)
        xchg = np.full(ev.size, -1, dtype=np.int64)
        text[at] = [v[0] for v in vals]
        proto[at] = [v[1] for v in vals]
        xchg[at] = [v[2] for v in vals]
        extra = {"collision": pa.array(text, type=pa.string()), "kernel_protocol": pa.array(proto, type=pa.string()),
                 "kernel_exchange": pa.array(xchg, mask=xchg < 0)}
        return ev, reg, cl, extra

    def _release(self, f: pa.Table | None, c: Collisions, last: int) -> pa.Table | None:
        """The findings ready to go out after a chunk (``f``: its findings; ``c``: its kernel
        events; ``last``: its last event index): everything before the first collision whose
        kernel exchange has not ended yet (within :data:`RESULT_WINDOW` events)."""
        if f is not None and (c.rows.size or c.started):
            x = f.column("kernel_exchange")
            if x.null_count < f.num_rows:
                xs = pc.fill_null(x, -1).to_numpy(zero_copy_only=False)
                ei = f.column("event_index").to_numpy(zero_copy_only=False)
                for u in np.unique(xs[xs >= 0]).tolist():  # a step per exchange collided with
                    if u not in self._pending and u not in self._results:
                        self._pending[u] = int(ei[xs == u].min())
        for u, first in list(self._pending.items()):
            if u in c.ends:
                j, ret = c.ends[u]
                self._results[u] = ("ret", ret) if j - first <= RESULT_WINDOW else ("window", None)
            elif last - first >= RESULT_WINDOW:
                self._results[u] = ("window", None)
            else:
                continue
            del self._pending[u]
        for u in c.ends:  # an exchange past its window has ended: later rows cannot name it
            if self._results.get(u, ("",))[0] == "window" and u not in self._pending:
                self._results[u] = ("window-ended", None)
        if not self._held and not self._pending:  # the usual case: nothing waits
            out = None if f is None else self._finalize(f)
            self._prune()
            return out
        if f is not None:
            self._held.append(f)
        return self._flush(min(self._pending.values()) if self._pending else None)

    def _flush(self, upto: int | None) -> pa.Table | None:
        """The held findings of events before ``upto`` (None: all), finalized, as one table."""
        out: list[pa.Table] = []
        keep: list[pa.Table] = []
        for tb in self._held:
            if keep or upto is None:
                (keep if keep else out).append(tb)
                continue
            ei = tb.column("event_index").to_numpy()
            k = int(np.searchsorted(ei, upto, side="left"))
            if k:
                out.append(tb.slice(0, k))
            if k < tb.num_rows:
                keep.append(tb.slice(k))
        self._held = keep
        out = [tb for tb in out if tb.num_rows]
        done = None
        if out:
            done = self._finalize(out[0] if len(out) == 1 else pa.concat_tables(out).combine_chunks())
        self._prune()
        return done

    def _prune(self) -> None:
        """Forget the results no held finding needs (an exchange past its window that has not
        ended stays: later collisions with it must say the same)."""
        if not self._held and self._results:
            self._results = {u: r for u, r in self._results.items() if r[0] == "window"}

    def _finalize(self, f: pa.Table) -> pa.Table:
        """``f`` with each collision's result: its sentence completed (:func:`.collisions.result_text`)
        and ``kernel_ret``."""
        x = f.column("kernel_exchange")
        if x.null_count == f.num_rows:
            return f
        xs = pc.fill_null(x, -1).to_numpy(zero_copy_only=False)
        valid = xs >= 0
        uniq, inv = np.unique(xs[valid], return_inverse=True)
        res = [self._results.get(int(u), ("end", None)) for u in uniq.tolist()]
        res = [("window", None) if r[0] == "window-ended" else r for r in res]
        suffix = pa.array(["; " + result_text(r) for r in res], type=pa.string())
        rets = pa.array([r[1] if r[0] == "ret" else None for r in res], type=pa.int64())
        idx = np.full(f.num_rows, -1, dtype=np.int64)
        idx[valid] = inv.reshape(-1)
        take = pa.array(idx, mask=idx < 0)
        text = pc.binary_join_element_wise(f.column("collision"), suffix.take(take), "")
        f = f.set_column(f.schema.get_field_index("collision"), "collision", text)
        return f.set_column(f.schema.get_field_index("kernel_ret"), "kernel_ret", rets.take(take))

    def _count_writes(self, w: np.ndarray, dev: np.ndarray, offset: np.ndarray) -> None:
        """Add the writes ``w`` (a mask) to :attr:`write_hist`."""
        if w.any():
            self.write_hist += np.bincount(dev[w] * _HIST_WIDTH + np.minimum(offset[w], _HIST_WIDTH - 1),
                                           minlength=self.write_hist.size).reshape(self.write_hist.shape)

    def _count_unknown(self, t: pa.Table, w: np.ndarray, key: np.ndarray, names: list[str | None], base: int) -> None:
        """Add the writes ``w`` (a mask of writes to devices not in the sources) to :attr:`unknown`:
        per BDF (``key``: position in ``names``) their number and the first one; whole-array work,
        a Python step per distinct BDF only."""
        rows = np.flatnonzero(w)
        if rows.size == 0:
            return
        k = key[rows]
        writes = np.bincount(k, minlength=len(names))
        first = np.full(len(names), t.num_rows, dtype=np.int64)
        np.minimum.at(first, k, rows)  # the first row of each BDF (rows ascend)
        present = np.flatnonzero(writes).tolist()
        bdf = {j: NULL_BDF if names[j] is None else str(names[j]) for j in present}
        new = [j for j in present if bdf[j] not in self.unknown]
        if new:
            recs = t.select(_FIRST_FIELDS).take(pa.array(first[new])).to_pylist()
            for j, rec in zip(new, recs):
                self.unknown[bdf[j]] = {"bdf": bdf[j], "writes": 0,
                                        "first": {"event_index": base + int(first[j]), **rec}}
        for j in present:
            self.unknown[bdf[j]]["writes"] += int(writes[j])
        self.unknown_writes += int(rows.size)

    def _data(self, t: pa.Table, sel: np.ndarray, rows_ev: np.ndarray, is_write: np.ndarray, is_read: np.ndarray,
              dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
              wrote: np.ndarray) -> tuple[RowValues, RowValues, RowValues]:
        """The stages that read ``data``, in row order: known bytes (old value, changed bits) and
        DOE sense (of the writes that did not fail: ``wrote``). ``data`` is decoded once, for the
        rows they need."""
        n = t.num_rows
        finding_w = np.zeros(n, dtype=bool)
        finding_w[rows_ev] = True
        finding_w &= is_write
        reads = is_read & (dev >= 0)
        if reads.any():
            reads &= pc.is_valid(t.column("data")).to_numpy(zero_copy_only=False)
        doe_rows = self.doe.rows(sel, dev, offset, size, wrote)
        self.counts["doe_mailbox_writes"] += int(doe_rows.size)
        need = reads | finding_w
        need[doe_rows] = True
        want = np.flatnonzero(need)
        if want.size == 0:
            return RowValues.empty(), RowValues.empty(), RowValues.empty()
        raw = HexColumn(t.column("data").take(pa.array(want)))
        old_value, changed_bits = self.known.advance(want, raw, reads[want], finding_w[want], dev[want], offset[want])
        doe = RowValues.empty()
        if doe_rows.size:
            at = np.searchsorted(want, doe_rows)
            doe = self.doe.decode(t, doe_rows, raw, at, dev, offset)
        return old_value, changed_bits, doe


def analyze_tables(res: RegistryResult, tables: Iterable[pa.Table],
                   reads: bool = False) -> Generator[pd.DataFrame, None, dict[str, int]]:
    """Findings chunk by chunk; the analyzer's counts are in the generator's return value."""
    an = Analyzer(res, reads=reads)
    for t in tables:
        yield an.feed(t)
    rest = an.finish()
    if rest is not None:
        yield findings_frame(rest)
    return an.counts
