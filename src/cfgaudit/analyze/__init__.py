"""Events x registry -> findings: a pipeline of named stages over Arrow batches.

For every write, each region it overlaps gives one finding row, carrying the event, the region
and the kernel's own verdict on the write. The stages, each over a whole chunk of events:

* :mod:`.index`: regions as sorted arrays, and the overlap join (event row, region) pairs;
* :mod:`.kernel`: the kernel's verdict (which writes taint, the once-per-boot warning, caveats);
* :mod:`.known`: the bytes known before each write (old value, changed bits);
* :mod:`.doe`: the sense of writes into DOE mailboxes;
* :mod:`.findings`: the findings field table, and the findings table assembled from the rest.

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
from ..pci_regs import PCI_CFG_SPACE_EXP_SIZE
from ..regions import RegistryResult
from .collisions import DoeCollisions
from .doe import DoeDecoder
from .findings import RowValues, assemble, empty_findings, findings_frame, severity_column
from .index import KIND_CODE, RegionIndex
from .kernel import KernelVerdicts
from .known import KnownBytes

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Analyzer", "analyze_tables", "findings_frame"]

_HIST_WIDTH = PCI_CFG_SPACE_EXP_SIZE + 1  # write_hist columns: offsets 0..4095, then "beyond"
_FIRST_FIELDS = ["ts_ns", "pid", "comm", "offset", "size"]  # kept of an unknown device's first write
COLLISIONS_KEPT = 100  # colliding writes described in :attr:`Analyzer.collision_writes` (all are counted)
NULL_BDF = "?"  # the name of a null BDF among the unknown devices


class Analyzer:
    """Findings for a stream of event chunks against one registry.

    Stateful over the stream: the once-per-boot warnings, the bytes known from reads and the DOE
    exchanges in progress carry from one chunk to the next. ``counts``: events, writes and reads
    seen, the kernel's own DOE exchanges (``doe_end`` events; they are neither writes nor
    reads), user writes into DOE mailboxes and those of them that collided with a kernel
    exchange; ``write_hist``: writes per (device code, offset), shape ``[len(bdfs), 4097]`` (column
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
        self.collision_writes: list[dict[str, Any]] = []
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
        columns may be dictionary-encoded), or ``None`` when the chunk has none."""
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
        if not user_only:  # the kernel's own DOE exchanges (events.DOE_OPS): counted at their end
            self.counts["kernel_doe_exchanges"] += int(pc.sum(pc.equal(op, "doe_end")).as_py() or 0)
        if n == 0:
            return None
        dev, bdf_key, bdf_names = self.index.device_keys(t.column("bdf"))
        offset = t.column("offset").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        size = t.column("size").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        self._count_writes(is_write & (dev >= 0), dev, offset)
        self._count_unknown(t, is_write & (dev < 0), bdf_key, bdf_names, base)
        consider = (is_write | is_read) if self.reads else is_write
        sel = np.flatnonzero(consider & (dev >= 0))
        self._collisions(t, base, dev, offset, size, is_write, user_only)
        # the stages; each one that keeps state sees every chunk, findings or not
        taints = self.verdicts.taints(t, sel, dev, offset, size, is_write)
        rows_ev, rows_reg = self.index.join(sel, dev, offset, size)
        old_value, changed_bits, doe = self._data(t, sel, rows_ev, is_write, is_read, dev, offset, size)
        logged = self.verdicts.once_per_boot(t, taints, dev, offset)
        if rows_ev.size == 0:
            return None
        # user regions are not findings: they only mark others as allowed
        keep = np.flatnonzero(self.index.kind[rows_reg] != KIND_CODE["user"])
        if keep.size != rows_ev.size:
            rows_ev, rows_reg = rows_ev[keep], rows_reg[keep]
        allowed, has_allowed = self.index.allowed(rows_ev, rows_reg, dev, offset, size)
        via = t.column("via").take(pa.array(rows_ev))
        allowed_by = pa.array(allowed, type=pa.string()) if has_allowed.any() else pa.nulls(rows_ev.size, pa.string())
        cols: dict[str, pa.Array | pa.ChunkedArray] = {
            "offset": pa.array(offset[rows_ev]), "size": pa.array(size[rows_ev]), "via": via,
            **self.index.region_columns(rows_reg),
            **self.verdicts.columns(rows_ev, taints, logged, via),
            "allowed_by": allowed_by,
            "severity": severity_column(self.index.kind[rows_reg], has_allowed),
            "old_value": old_value.take(n, rows_ev),
            "changed_bits": changed_bits.take(n, rows_ev),
            "doe": doe.take(n, rows_ev),
            "event_index": pa.array(rows_ev + base),
        }
        return assemble(t, rows_ev, cols)

    def _collisions(self, t: pa.Table, base: int, dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
                    is_write: np.ndarray, user_only: bool) -> None:
        """Count the writes into a DOE mailbox while the kernel's own exchange on it is in flight
        (:mod:`.collisions`), and describe the first :data:`COLLISIONS_KEPT` of them."""
        c = self.collide.feed(t, base, dev, offset, size, is_write, user_only)
        if c.rows.size == 0:
            return
        self.counts["doe_collisions"] += int(c.rows.size)
        room = COLLISIONS_KEPT - len(self.collision_writes)
        if room > 0:
            rows = c.rows[:room]
            recs = t.select(["ts_ns", "pid", "comm", "bdf", "offset", "size", "data"]).take(pa.array(rows)).to_pylist()
            for r, rec, ex in zip(rows.tolist(), recs, c.exchanges):
                self.collision_writes.append({"event_index": base + int(r), **rec, "kernel": ex.to_record()})

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
              dev: np.ndarray, offset: np.ndarray, size: np.ndarray) -> tuple[RowValues, RowValues, RowValues]:
        """The stages that read ``data``, in row order: known bytes (old value, changed bits) and
        DOE sense. ``data`` is decoded once, for the rows they need."""
        n = t.num_rows
        finding_w = np.zeros(n, dtype=bool)
        finding_w[rows_ev] = True
        finding_w &= is_write
        reads = is_read & (dev >= 0)
        if reads.any():
            reads &= pc.is_valid(t.column("data")).to_numpy(zero_copy_only=False)
        doe_rows = self.doe.rows(sel, dev, offset, size, is_write)
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
    return an.counts
