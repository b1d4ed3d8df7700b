"""Conflicts in time: user writes into a DOE mailbox while the kernel's own exchange is in flight.

One mailbox runs one exchange at a time: the kernel queues its exchanges on an ordered workqueue
per mailbox, and ``doe_statemachine_work()`` drives the registers from the request's first dword
to the response's last (drivers/pci/doe.c, 6.0 to 6.12 and later; docs/KERNEL-FACTS.md "The
kernel's own DOE exchanges"). A user write into that mailbox meanwhile (abort, GO, a request dword,
a response acknowledgement) corrupts or aborts the kernel's exchange, and the kernel does not say
so: its exchange fails or returns garbage. The trace carries the kernel's exchanges as
``doe_start`` / ``doe_end`` events (:data:`cfgaudit.events.DOE_OPS`) on (bdf, capability offset).

The stage is stateful over a stream of chunks: an exchange started in one chunk is in flight in
the next until its end. Events are taken in trace order (a live trace's ring buffer is ordered by
time of recording). Whole-array work per mailbox: a chunk's kernel events on it are a sorted row
list, and each write finds the last kernel event before it with one ``searchsorted``.
Offsets are bytes; times ns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pci_regs import PCI_DOE_CAP_SIZEOF
from .doe import Mailbox

__all__ = ["KernelExchange", "Collisions", "DoeCollisions"]

_EMPTY = np.empty(0, np.int64)


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

    def to_record(self) -> dict:
        return {"event_index": self.event_index, "start_ns": self.start_ns, "pid": self.pid, "comm": self.comm,
                "doe_vendor": self.vendor, "doe_type": self.type}


@dataclass
class Collisions:
    """The colliding writes of one chunk: ``rows`` (chunk rows, ascending) and, per row, the
    kernel exchange it collided with (``exchanges``)."""

    rows: np.ndarray
    exchanges: list[KernelExchange]

    @classmethod
    def none(cls) -> "Collisions":
        return cls(_EMPTY, [])


def _known(x: KernelExchange | None) -> KernelExchange:
    """An exchange that is in flight (the caller checked)."""
    assert x is not None
    return x


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
        with a kernel exchange; ``dev``: device code per row (-1: unknown device), ``offset``,
        ``size``: bytes, ``is_write``: user writes; ``user_only``: the caller knows the chunk has
        no kernel events (then nothing is computed unless an exchange is in flight)."""
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
            if k_rows.size:
                self.in_flight[key] = found[int(k_rows[-1])] if k_start[-1] else None
        if not rows:
            return Collisions.none()
        all_rows = np.concatenate(rows)
        order = np.argsort(all_rows, kind="stable")
        flat = [x for xs in with_ for x in xs]
        self.collisions += int(all_rows.size)
        return Collisions(all_rows[order], [flat[i] for i in order.tolist()])

    @staticmethod
    def _exchanges(t: pa.Table, base: int, rows: np.ndarray) -> dict[int, KernelExchange]:
        """The exchanges started at chunk ``rows`` (``doe_start`` events), by row."""
        if rows.size == 0:
            return {}
        recs = t.select(["ts_ns", "pid", "comm", "doe_vendor", "doe_type"]).take(pa.array(rows)).to_pylist()
        return {int(r): KernelExchange(base + int(r), int(x["ts_ns"]), int(x["pid"]), str(x["comm"]),
                                       x["doe_vendor"], x["doe_type"]) for r, x in zip(rows.tolist(), recs)}
