"""DOE mailbox exchanges: one sentence per write into a Data Object Exchange mailbox the kernel sees.

A requester writes a data object dword by dword into the write data mailbox, then sets GO in the
control register (or ABORT to discard it); a write to the read data mailbox acknowledges one
response dword (PCIe Base 6.0 sec 6.30, 7.9.24). The decoder is vectorised: per mailbox, the
writes of a chunk are cut into segments at each GO/ABORT, and segment arithmetic gives each
write the dwords written so far. The kernel's own start of an exchange on the mailbox (a
``doe_start`` event: its GO sends whatever the user had written with its request) ends a segment
too, and so does its end (``doe_end``: the device took the object, or the kernel aborted). The
object being written when a chunk ends carries over to the next chunk. Writes whose data is
missing or not lower-case hex count as "no data in the trace".
Offsets are bytes; offsets inside a mailbox are relative to the capability.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..hexarrow import HexColumn
from ..pci_regs import (
    DOE_PROTOCOLS,
    PCI_DOE_CAP_SIZEOF,
    PCI_DOE_CTRL,
    PCI_DOE_CTRL_ABORT,
    PCI_DOE_CTRL_GO,
    PCI_DOE_DATA_OBJECT_HEADER_1_TYPE,
    PCI_DOE_DATA_OBJECT_HEADER_1_VID,
    PCI_DOE_DATA_OBJECT_LENGTH_MASK,
    PCI_DOE_MAX_LENGTH_DW,
    PCI_DOE_READ,
    PCI_DOE_WRITE,
    PCI_EXT_CAP_ID_DOE,
)
from ..regions import RegistryResult
from .findings import RowValues
from .index import RegionIndex

__all__ = ["Mailbox", "DoeDecoder", "protocol_names"]

_REL_HEX = pa.array([f"{i:#x}" for i in range(PCI_DOE_CAP_SIZEOF)], type=pa.string())  # "+0x10" etc.
_EMPTY = np.empty(0, np.int64)


@dataclass
class Mailbox:
    """One DOE mailbox: device, capability offset (bytes), the owner of the bytes (for sentences),
    the dwords of the data object being written and who wrote the last of them (pid, comm)."""

    bdf: str
    cap: int
    owner: str
    code: int  # device code in the region index
    dwords: list[int] = field(default_factory=list)
    writer: tuple[str, str] | None = None


def _overlaps(mb: Mailbox, offset: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per access of ``mb``'s device: does it touch a byte of the mailbox?"""
    return (offset < mb.cap + PCI_DOE_CAP_SIZEOF) & (offset + size > mb.cap)


def protocol_names(dw0: np.ndarray) -> pa.Array:
    """The protocol of each data object whose first header dword is ``dw0`` (vendor ID bits 15:0,
    data object type bits 23:16), as :data:`~cfgaudit.pci_regs.DOE_PROTOCOLS` names it; any other
    is "vendor-defined (vendor VVVV type 0xT)". Whole-array work: no Python step per value."""
    key = dw0.astype(np.int64) & (PCI_DOE_DATA_OBJECT_HEADER_1_VID | PCI_DOE_DATA_OBJECT_HEADER_1_TYPE)
    uniq, inv = np.unique(key, return_inverse=True)
    vendor, kind = uniq & PCI_DOE_DATA_OBJECT_HEADER_1_VID, (uniq & PCI_DOE_DATA_OBJECT_HEADER_1_TYPE) >> 16
    known = np.full(uniq.size, -1, dtype=np.int64)
    for j, (v, k) in enumerate(_KNOWN_PROTOCOLS):
        known[(vendor == v) & (kind == k)] = j
    names = _join(["vendor-defined (vendor ", _hex4(vendor), " type ", _TYPE_HEX.take(pa.array(kind)), ")"])
    if (known >= 0).any():
        names = pc.if_else(pa.array(known >= 0), _KNOWN_NAMES.take(pa.array(np.maximum(known, 0))), names)
    return names.take(pa.array(inv.reshape(-1)))


_KNOWN_PROTOCOLS = list(DOE_PROTOCOLS)
_KNOWN_NAMES = pa.array([DOE_PROTOCOLS[p] for p in _KNOWN_PROTOCOLS], type=pa.string())
_TYPE_HEX = pa.array([f"{i:#x}" for i in range(256)], type=pa.string())  # data object types are 8 bits
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex4(v: np.ndarray) -> pa.Array:
    """Four lower-case hex digits of each value (bits 15:0)."""
    chars = _HEX_DIGITS[(v[:, None] >> np.array([12, 8, 4, 0])) & 15].astype(np.uint8)
    offsets = np.arange(0, 4 * v.size + 1, 4, dtype=np.int32)
    return pa.StringArray.from_buffers(v.size, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)))


def _join(parts: list[str | pa.Array]) -> pa.Array:
    """Element-wise concatenation of string arrays and constant strings."""
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    out = pc.binary_join_element_wise(*args, "")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


class DoeDecoder:
    """The DOE mailboxes the kernel sees (extended capability ``PCI_EXT_CAP_ID_DOE``, kernel-visible), with the
    exchange in progress on each; stateful over a stream of chunks."""

    def __init__(self, res: RegistryResult, index: RegionIndex) -> None:
        regs = res.registry.regions()
        self.mailboxes: list[Mailbox] = []
        for v in res.views:
            for c in v.caps.caps:
                if c.space == "ext" and c.id == PCI_EXT_CAP_ID_DOE and c.kernel_visible:
                    owner = next((r.owner for r in regs if r.bdf == v.cs.bdf and r.start <= c.offset <= r.end
                                  and r.kind != "user"), "no one's")
                    if all((m.bdf, m.cap) != (v.cs.bdf, c.offset) for m in self.mailboxes):
                        self.mailboxes.append(Mailbox(v.cs.bdf, c.offset, owner, index.dev_code[v.cs.bdf]))
        self._starts: dict[int, np.ndarray] = {}  # id(mailbox) -> chunk rows of the kernel's starts on it
        self._decoded: set[int] = set()  # id(mailbox) of those whose writes this chunk were decoded

    def kernel_starts(self, starts: dict[int, np.ndarray]) -> None:
        """The chunk's kernel starts and ends per mailbox (``id(mailbox)`` -> chunk rows,
        ascending): each ends the object in progress (call before :meth:`decode`, then :meth:`end_chunk`)."""
        self._starts = starts
        self._decoded = set()

    def end_chunk(self) -> None:
        """After the chunk: a mailbox the kernel started an exchange on and the user wrote no
        request dword into after that has no object in progress."""
        for mb in self.mailboxes:
            if id(mb) in self._starts and id(mb) not in self._decoded:
                mb.dwords = []
        self._starts = {}
        self._decoded = set()

    def rows(self, sel: np.ndarray, dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
             is_write: np.ndarray) -> np.ndarray:
        """The writes among ``sel`` (chunk rows, ascending) that overlap a mailbox."""
        if not self.mailboxes or sel.size == 0:
            return _EMPTY
        m = np.zeros(sel.size, dtype=bool)
        d, o, s = dev[sel], offset[sel], size[sel]
        for mb in self.mailboxes:
            m |= (d == mb.code) & _overlaps(mb, o, s)
        rows = sel[m]
        return rows[is_write[rows]]

    def decode(self, t: pa.Table, rows: np.ndarray, raw: HexColumn, at: np.ndarray, dev: np.ndarray,
               offset: np.ndarray) -> RowValues:
        """A sentence for each mailbox write ``rows`` (chunk rows, ascending, from :meth:`rows`);
        ``at``: their positions in ``raw`` (the decoded ``data``). Writes that overlap a mailbox
        but start before it get none."""
        d, o = dev[rows], offset[rows]
        mb_id = np.full(rows.size, -1, dtype=np.int64)
        for j, mb in enumerate(self.mailboxes):
            m = (mb_id < 0) & (d == mb.code) & (o >= mb.cap) & (o < mb.cap + PCI_DOE_CAP_SIZEOF)
            mb_id[m] = j
        present, nbytes, val = raw.present[at], raw.nbytes[at], raw.dword(at)
        pid_s = pc.cast(t.column("pid").take(pa.array(rows)), pa.string())
        comm_s = pc.fill_null(t.column("comm").take(pa.array(rows)), "None")
        pieces: list[tuple[np.ndarray, pa.Array]] = []
        for j, mb in enumerate(self.mailboxes):
            sel = np.flatnonzero(mb_id == j)
            if sel.size:
                who = _Who(pid_s.take(pa.array(sel)), comm_s.take(pa.array(sel)))
                pieces += self._mailbox(mb, rows[sel], o[sel] - mb.cap, present[sel], val[sel], nbytes[sel], who)
        if not pieces:
            return RowValues.empty()
        return RowValues(np.concatenate([p[0] for p in pieces]),
                         pa.concat_arrays([p[1].cast(pa.string()) for p in pieces]))

    def _mailbox(self, mb: Mailbox, rows: np.ndarray, rel: np.ndarray, present: np.ndarray, v: np.ndarray,
                 nb: np.ndarray, who: "_Who") -> list[tuple[np.ndarray, pa.Array]]:
        """Sentences for the writes ``rows`` into one mailbox (``rel``: register offset in it);
        updates the mailbox's object in progress."""
        is_app = present & (rel == PCI_DOE_WRITE) & (nb == 4)
        is_rd = present & (rel == PCI_DOE_READ) & ~is_app
        is_ctl = present & (rel == PCI_DOE_CTRL)
        is_abort = is_ctl & ((v & PCI_DOE_CTRL_ABORT) != 0)
        is_go = is_ctl & ~is_abort & ((v & PCI_DOE_CTRL_GO) != 0)
        is_clear = is_abort | is_go
        # segments between clears (a GO or ABORT ends one after it, a kernel start before the next
        # write); dwords in a segment = carried (first segment) + appends so far
        starts = self._starts.get(id(mb), _EMPTY)
        seg = np.cumsum(is_clear) - is_clear + np.searchsorted(starts, rows)
        app_cum = np.cumsum(is_app)
        clear_at = np.flatnonzero(is_clear)
        bounds = np.sort(np.concatenate([app_cum[clear_at], np.searchsorted(rows[is_app], starts)]))
        seg_base = np.concatenate(([0], bounds))
        carry = list(mb.dwords)
        c0 = len(carry)
        count = app_cum - seg_base[seg] + np.where(seg == 0, c0, 0)  # dwords in the object after this row
        app_idx = np.flatnonzero(is_app)
        app_seg = seg[app_idx]
        app_val = v[app_idx]

        def dword(q: int, s: np.ndarray) -> np.ndarray:
            """Dword ``q`` of the object of segment ``s`` (callers only ask where it exists)."""
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

        owner = mb.owner
        out: list[tuple[np.ndarray, pa.Array]] = []
        m = ~present
        if m.any():
            out.append((rows[m], _join(["DOE register +", _REL_HEX.take(pa.array(rel[m])),
                                        " written (no data in the trace)"])))
        if is_app.any():
            names = protocol_names(dword(0, seg[is_app]))
            out.append((rows[is_app], _join([*who.of(is_app), ") wrote dword ", _str(count[is_app]), " of a ", names,
                                             f" data object into {owner}'s mailbox"])))
        if is_rd.any():
            out.append((rows[is_rd], _join([*who.of(is_rd), f") took a response dword from {owner}'s mailbox "
                                                            "(read mailbox acknowledge)"])))
        if is_abort.any():
            out.append((rows[is_abort], _join([*who.of(is_abort), f") aborted the DOE exchange on {owner}'s mailbox (",
                                               _str(count[is_abort]), " dwords discarded)"])))
        if is_go.any():
            n_go, s_go = count[is_go], seg[is_go]
            names = protocol_names(np.where(n_go >= 1, dword(0, s_go), 0))
            names = pc.if_else(pa.array(n_go >= 1), names, pa.scalar("empty"))
            d1 = dword(1, s_go) & PCI_DOE_DATA_OBJECT_LENGTH_MASK
            length = np.where(d1 == 0, PCI_DOE_MAX_LENGTH_DW, d1)
            say = (n_go >= 2) & (length != n_go)
            extra = pc.if_else(pa.array(say), _join(["; header says ", _str(length), " dwords"]), pa.scalar(""))
            out.append((rows[is_go], _join([*who.of(is_go), ") started a ", names, " request (", _str(n_go),
                                            " dwords", extra, f") on {owner}'s mailbox"])))
        other = present & ~is_app & ~is_rd & ~is_abort & ~is_go
        if other.any():
            out.append((rows[other], _join([*who.of(other), ") wrote DOE register +",
                                            _REL_HEX.take(pa.array(rel[other])), f" of {owner}'s mailbox"])))
        # the object being written when the chunk ends, and who wrote its last dword
        if is_app.any():
            last = int(np.flatnonzero(is_app)[-1])
            mb.writer = (str(who.pid[last].as_py()), str(who.comm[last].as_py()))
        if bounds.size:
            mb.dwords = [int(x) for x in app_val[app_seg == bounds.size]]
        else:
            mb.dwords = carry + [int(x) for x in app_val]
        self._decoded.add(id(mb))  # the state above counts the kernel's starts
        return out


@dataclass
class _Who:
    """The pid and comm of a mailbox's writes, as strings."""

    pid: pa.Array
    comm: pa.Array

    def of(self, m: np.ndarray) -> list[str | pa.Array]:
        """``"pid ", pid, " (", comm`` of the writes ``m`` (a mask), for :func:`_join`."""
        keep = pa.array(m)
        return ["pid ", self.pid.filter(keep), " (", self.comm.filter(keep)]
