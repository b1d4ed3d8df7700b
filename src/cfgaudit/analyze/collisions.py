"""Conflicts in time: the kernel's own DOE exchanges against user space's, on one mailbox.

One mailbox runs one exchange at a time: the kernel queues its exchanges on an ordered workqueue
per mailbox, and ``doe_statemachine_work()`` drives the registers from the request's first dword
to the response's last (drivers/pci/doe.c, 6.0 to 6.12 and later; docs/KERNEL-FACTS.md "The
kernel's own DOE exchanges"). The trace carries the kernel's exchanges as ``doe_start`` /
``doe_end`` events (:data:`cfgaudit.events.DOE_OPS`) on (bdf, capability offset). Two collisions:

* a user write into the mailbox (any of its 0x18 bytes) while the kernel's exchange on it is in
  flight: an abort, a GO mid-exchange, a dword appended to the kernel's request, a response dword
  taken from the kernel (:func:`write_effect` says which, from the bytes written);
* the kernel starting an exchange while a user's request is in progress on the mailbox: request
  dwords written into the write data mailbox and neither sent (GO) nor discarded (ABORT) yet; the
  kernel's request is appended to them (:meth:`DoeCollisions.user_requests`).

The stage is stateful over a stream of chunks: an exchange started in one chunk is in flight in
the next until its end. Events are taken in trace order (a live trace's ring buffer is ordered by
time of recording). Whole-array work per mailbox: a chunk's kernel events on it are a sorted row
list, and each write finds the last kernel event before it with one ``searchsorted``; Python steps
only per kernel event and per collision. Offsets are bytes (relative to the capability where
named ``rel``); times ns.
"""
from __future__ import annotations

import errno
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
    PCI_DOE_READ,
    PCI_DOE_STATUS,
    PCI_DOE_WRITE,
)
from .doe import Mailbox

__all__ = ["KernelExchange", "Collisions", "DoeCollisions", "UserRequest", "protocol_name", "write_effect",
           "result_text", "RESULT_WINDOW"]

_EMPTY = np.empty(0, np.int64)
RESULT_WINDOW = 1 << 16
"""Events after an exchange's first collision within which its ``doe_end`` is waited for: the
findings from that collision on are held back until then (bounded memory), and a collision whose
exchange ends later is reported without the result."""
_INT_EN = 0x2  # control bit 1: DOE interrupt enable (PCIe Base 6.0 sec 7.9.24.3)
_INT_STATUS = 0x2  # status bit 1: DOE interrupt status, RW1C (sec 7.9.24.4)


def protocol_name(vendor: int | None, type_: int | None) -> str:
    """The data object protocol (vendor ID, type) as :data:`~cfgaudit.pci_regs.DOE_PROTOCOLS`
    names it; else ``vendor-defined (vendor 0xVVVV type 0xT)``; ``unknown-protocol`` when not recorded."""
    if vendor is None or type_ is None:
        return "unknown-protocol"
    v, k = int(vendor), int(type_)
    return DOE_PROTOCOLS.get((v, k), f"vendor-defined (vendor {v:#06x} type {k:#x})")


@dataclass(frozen=True)
class KernelExchange:
    """A kernel DOE exchange, from its ``doe_start`` event: where in the trace (``event_index``),
    when (``start_ns``), the kernel context (``pid``, ``comm``) and the protocol (``vendor``,
    ``type``; None when not recorded)."""

    event_index: int
    start_ns: int
    pid: int
    comm: str
    vendor: int | None
    type: int | None

    @property
    def protocol(self) -> str:
        return protocol_name(self.vendor, self.type)

    def to_record(self) -> dict:
        return {"event_index": self.event_index, "start_ns": self.start_ns, "pid": self.pid, "comm": self.comm,
                "doe_vendor": self.vendor, "doe_type": self.type}


@dataclass(frozen=True)
class UserRequest:
    """A user's request in progress on a mailbox when the kernel started an exchange on it:
    ``dwords`` written and not yet sent or discarded, by ``pid`` (``comm``), the last writer."""

    dwords: int
    pid: str
    comm: str


@dataclass
class Collisions:
    """One chunk's view of the kernel's exchanges.

    ``rows`` (chunk rows, ascending): user writes into a mailbox while a kernel exchange was in
    flight, each with the exchange (``exchanges``) and the mailbox (``mailboxes``);
    ``started``: every ``doe_start`` of the chunk, (chunk row, mailbox, exchange);
    ``ends``: exchange event index -> (its ``doe_end`` event index, that event's ``ret``: bytes
    received or -errno, None when not recorded) for the exchanges that ended in the chunk;
    ``finished``: every ``doe_end`` of the chunk, (chunk row, mailbox). An exchange's end leaves
    the mailbox empty: the device took what was written with the kernel's request, or the kernel
    aborted (drivers/pci/doe.c signal_task_abort() -> pci_doe_abort() on every failure), so user
    dwords written during it are no request in progress afterwards."""

    rows: np.ndarray
    exchanges: list[KernelExchange]
    mailboxes: list[Mailbox] = field(default_factory=list)
    started: list[tuple[int, Mailbox, KernelExchange]] = field(default_factory=list)
    ends: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    finished: list[tuple[int, Mailbox]] = field(default_factory=list)

    @classmethod
    def none(cls) -> "Collisions":
        return cls(_EMPTY, [])


def _known(x: KernelExchange | None) -> KernelExchange:
    """An exchange that is in flight (the caller checked)."""
    assert x is not None
    return x


def write_effect(rel: int, size: int, data: str | None) -> str:
    """What a user write does to the kernel's exchange on the mailbox, from the bytes it covers
    (``rel``: its first byte relative to the capability, ``size``: bytes) and, when the trace has
    them, the bytes written (``data``: hex, file order): control (ABORT bit 0, INT_EN bit 1, GO bit
    31), status (RW1C interrupt status), write data mailbox (a dword appended to the kernel's
    request), read data mailbox (a response dword taken), header/capabilities (read-only)."""
    raw: bytes | None = None
    if isinstance(data, str) and data:
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raw = None

    def byte(r: int) -> int | None:
        """The byte written at ``r`` (relative to the capability), or None when not known."""
        k = r - rel
        return raw[k] if raw is not None and 0 <= k < len(raw) else None

    lo, hi = max(rel, 0), min(rel + size, PCI_DOE_CAP_SIZEOF)
    covers = lambda a, b: lo < b and hi > a  # noqa: E731 - does the write cover [a, b)?
    out: list[str] = []
    if covers(0, PCI_DOE_CTRL):
        out.append("writes the read-only DOE header/capabilities (no effect)")
    if covers(PCI_DOE_CTRL, PCI_DOE_STATUS):
        b0 = byte(PCI_DOE_CTRL) if covers(PCI_DOE_CTRL, PCI_DOE_CTRL + 1) else None
        b3 = byte(PCI_DOE_CTRL + 3) if covers(PCI_DOE_CTRL + 3, PCI_DOE_STATUS) else None
        abort = b0 is not None and bool(b0 & PCI_DOE_CTRL_ABORT)
        go = b3 is not None and bool(b3 & (PCI_DOE_CTRL_GO >> 24))
        if abort:
            out.append("sets ABORT: aborts the kernel's exchange")
        if go:
            out.append("sets GO mid-exchange: the device takes the request written so far (the kernel's, "
                       "maybe incomplete) as a whole")
        known = (b0 is not None or not covers(PCI_DOE_CTRL, PCI_DOE_CTRL + 1)) and \
            (b3 is not None or not covers(PCI_DOE_CTRL + 3, PCI_DOE_STATUS))
        if not abort and not go:
            if known:
                ie = "" if b0 is None else f" (INT_EN {'set' if b0 & _INT_EN else 'clear'})"
                out.append(f"writes the DOE control register without ABORT or GO{ie}")
            else:
                out.append("writes the DOE control register (ABORT or GO not known: no data in the trace)")
    if covers(PCI_DOE_STATUS, PCI_DOE_WRITE):
        b = byte(PCI_DOE_STATUS) if covers(PCI_DOE_STATUS, PCI_DOE_STATUS + 1) else None
        if b is not None and b & _INT_STATUS:
            out.append("clears the DOE interrupt status the kernel may wait on (RW1C)")
        else:
            out.append("writes the DOE status register (RW1C)")
    if covers(PCI_DOE_WRITE, PCI_DOE_READ):
        whole = lo <= PCI_DOE_WRITE and hi >= PCI_DOE_READ
        out.append("appends a dword to the kernel's request" if whole
                   else "writes part of a dword into the kernel's request")
    if covers(PCI_DOE_READ, PCI_DOE_CAP_SIZEOF):
        out.append("takes a response dword the kernel was going to read (read mailbox acknowledge)")
    return "; ".join(out) if out else "writes the DOE mailbox"


def result_text(result: tuple[str, int | None]) -> str:
    """How the kernel's exchange ended, as a clause after a collision's description: ``result`` is
    ``("ret", ret)`` (its ``doe_end``: bytes received, or -errno), ``("end", None)`` (the trace ends
    first) or ``("window", None)`` (not over :data:`RESULT_WINDOW` events after the first collision)."""
    how, ret = result
    if how == "ret":
        if ret is None:
            return "the kernel's exchange then ended (its result not recorded)"
        if ret < 0:
            name = errno.errorcode.get(-ret)
            return f"the kernel's exchange then failed: {ret}{f' ({name})' if name else ''}"
        return f"the kernel's exchange then completed ({ret} bytes received)"
    if how == "window":
        return (f"the kernel's exchange had not finished {RESULT_WINDOW} events after the first collision with "
                "it (its result is not reported)")
    return "the trace ends before the kernel's exchange finished"


class DoeCollisions:
    """The kernel's DOE exchanges in flight per mailbox, over a stream of chunks.

    ``collisions``: user writes into a mailbox while an exchange was in flight;
    ``in_flight``: (device code, capability offset) -> the exchange in flight, or None."""

    def __init__(self, mailboxes: list[Mailbox]) -> None:
        self.mailboxes = list(mailboxes)
        self.in_flight: dict[tuple[int, int], KernelExchange | None] = {(m.code, m.cap): None for m in mailboxes}
        self.collisions = 0

    def feed(self, t: pa.Table, base: int, dev: np.ndarray, offset: np.ndarray, size: np.ndarray,
             is_write: np.ndarray, user_only: bool = False) -> Collisions:
        """The writes of chunk ``t`` (its first row is event ``base`` of the trace) that collide
        with a kernel exchange, and the chunk's kernel starts and ends; ``dev``: device code per
        row (-1: unknown device), ``offset``, ``size``: bytes, ``is_write``: user writes;
        ``user_only``: the caller knows the chunk has no kernel events (then nothing is computed
        unless an exchange is in flight)."""
        if not self.mailboxes or t.num_rows == 0 or (user_only and not any(self.in_flight.values())):
            return Collisions.none()
        op = t.column("op")
        start = pc.fill_null(pc.equal(op, "doe_start"), False).to_numpy(zero_copy_only=False)
        end = pc.fill_null(pc.equal(op, "doe_end"), False).to_numpy(zero_copy_only=False)
        kernel = start | end
        if not kernel.any() and not any(self.in_flight.values()):
            return Collisions.none()  # nothing in flight: no write can collide
        rows: list[np.ndarray] = []
        with_: list[list[KernelExchange]] = []
        boxes: list[list[Mailbox]] = []
        started: list[tuple[int, Mailbox, KernelExchange]] = []
        ends: dict[int, tuple[int, int | None]] = {}
        finished: list[tuple[int, Mailbox]] = []
        ret_of: dict[int, int | None] = {}
        if kernel.any():
            k_all = np.flatnonzero(end)
            ret_of = dict(zip(k_all.tolist(), t.column("ret").take(pa.array(k_all)).to_pylist()))
        for mb in self.mailboxes:
            key = (mb.code, mb.cap)
            on = dev == mb.code
            k_rows = np.flatnonzero(kernel & on & (offset == mb.cap))
            carried = self.in_flight[key]
            if k_rows.size == 0 and carried is None:
                continue
            w_rows = np.flatnonzero(is_write & on & (offset < mb.cap + PCI_DOE_CAP_SIZEOF) & (offset + size > mb.cap))
            k_start = start[k_rows]
            found = self._exchanges(t, base, k_rows[k_start])
            # per write: the last kernel event on this mailbox before it (-1: none in this chunk)
            last = np.searchsorted(k_rows, w_rows) - 1
            if k_rows.size:
                in_flight = np.where(last >= 0, k_start[np.maximum(last, 0)], carried is not None)
            else:  # no kernel event here: the exchange carried in is in flight all chunk long
                in_flight = np.ones(w_rows.size, dtype=bool)
            hit = np.flatnonzero(in_flight)
            if hit.size:
                rows.append(w_rows[hit])
                with_.append([found[int(k_rows[last[j]])] if last[j] >= 0 else _known(carried) for j in hit])
                boxes.append([mb] * hit.size)
            cur = carried
            for r, s in zip(k_rows.tolist(), k_start.tolist()):  # one step per kernel event
                if s:
                    cur = found[r]
                    started.append((r, mb, cur))
                else:
                    if cur is not None:
                        ends[cur.event_index] = (base + r, ret_of.get(r))
                    finished.append((r, mb))
                    cur = None
            self.in_flight[key] = cur
        started.sort(key=lambda x: x[0])
        finished.sort(key=lambda x: x[0])
        if not rows:
            return Collisions(_EMPTY, [], [], started, ends, finished)
        all_rows = np.concatenate(rows)
        order = np.argsort(all_rows, kind="stable")
        flat = [x for xs in with_ for x in xs]
        flat_mb = [m for ms in boxes for m in ms]
        self.collisions += int(all_rows.size)
        idx = order.tolist()
        return Collisions(all_rows[order], [flat[i] for i in idx], [flat_mb[i] for i in idx], started, ends,
                          finished)

    @staticmethod
    def _exchanges(t: pa.Table, base: int, rows: np.ndarray) -> dict[int, KernelExchange]:
        """The exchanges started at chunk ``rows`` (``doe_start`` events), by row."""
        if rows.size == 0:
            return {}
        recs = t.select(["ts_ns", "pid", "comm", "doe_vendor", "doe_type"]).take(pa.array(rows)).to_pylist()
        return {int(r): KernelExchange(base + int(r), int(x["ts_ns"]), int(x["pid"]), str(x["comm"]),
                                       x["doe_vendor"], x["doe_type"]) for r, x in zip(rows.tolist(), recs)}

    @staticmethod
    def user_requests(t: pa.Table, c: Collisions, dev: np.ndarray, offset: np.ndarray,
                      is_write: np.ndarray) -> list[tuple[int, Mailbox, KernelExchange, UserRequest]]:
        """The kernel starts of chunk ``t`` (``c.started``) made while a user's request was in
        progress on the mailbox: (chunk row, mailbox, exchange, the user's request). A user's
        request is in progress from its first dword written into the write data mailbox until
        GO or ABORT (control written with either bit set), the kernel's own start (whose GO
        sends the user's dwords with the kernel's request) or end (``Collisions.finished``), as
        the decoder counts them
        (:mod:`.doe`); the dwords written before the chunk are the decoder's
        (``Mailbox.dwords``, ``Mailbox.writer``): call this before the decoder sees the chunk."""
        hits: list[tuple[int, Mailbox, KernelExchange, UserRequest]] = []
        if not c.started:
            return hits
        by_mb: dict[int, list[tuple[int, KernelExchange]]] = {}
        for r, mb, x in c.started:
            by_mb.setdefault(id(mb), []).append((r, x))
        for mb in {id(m): m for _, m, _ in c.started}.values():
            inside = (offset >= mb.cap) & (offset < mb.cap + PCI_DOE_CAP_SIZEOF)
            w = np.flatnonzero(is_write & (dev == mb.code) & inside)
            raw = HexColumn(t.column("data").take(pa.array(w)))
            rel, v = offset[w] - mb.cap, raw.dword(np.arange(w.size))
            is_app = raw.present & (rel == PCI_DOE_WRITE) & (raw.nbytes == 4)
            is_clear = raw.present & (rel == PCI_DOE_CTRL) & ((v & (PCI_DOE_CTRL_ABORT | PCI_DOE_CTRL_GO)) != 0)
            fin = np.array([r for r, m in c.finished if m is mb], dtype=np.int64)
            app_rows, clear_rows = w[is_app], np.sort(np.concatenate([w[is_clear], fin]))
            who = t.select(["pid", "comm"]).take(pa.array(app_rows)).to_pylist() if app_rows.size else []
            prev_start = -1
            for r, x in by_mb[id(mb)]:  # a step per kernel start
                k = int(np.searchsorted(clear_rows, r))
                reset = max(int(clear_rows[k - 1]) if k else -1, prev_start)
                mine = np.flatnonzero((app_rows > reset) & (app_rows < r))
                n = int(mine.size) + (len(mb.dwords) if reset < 0 else 0)
                if n:
                    if mine.size:
                        wr = who[int(mine[-1])]
                        writer = (str(wr["pid"]), str(wr["comm"]))
                    else:
                        writer = mb.writer or ("?", "?")
                    hits.append((r, mb, x, UserRequest(n, *writer)))
                prev_start = r
        hits.sort(key=lambda h: h[0])
        return hits
