"""The replay backend: events from recorded trace files, through the Session protocol.

Like pciutils' dump access method, it is just another method, and a read-only one: open it with
``BACKENDS["replay"].open(ReplayOptions(paths=[...]))``. Besides :meth:`poll` (the next chunk, an
empty batch when the files are done) it offers the whole-file views the offline audit uses:
:meth:`ReplaySession.tables` (as fast as they can be read) and :meth:`ReplaySession.paced` (at the
recorded pace). Times are ns; ``speed`` is a factor of the recorded pace (0: no waiting).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Iterator, Self

import pyarrow as pa

from ..errors import InputError, UsageError
from ..events import ConfigAccess
from .session import Batch, Notice, SessionStats, concat_batches
from .tracefile import TraceReader

__all__ = ["ReplayOptions", "ReplaySession"]


# The longest pause between two events at the recorded pace, in seconds: a trace's gaps can be
# hours (or, in a damaged file, centuries); a replay shows the order and rhythm, not idle time.
MAX_PAUSE_S = 10.0


def _no_warning(message: str) -> None:
    pass


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay. ``speed``: 0 = as fast as possible; 1.0 = the recorded pace; 10 = ten times
    faster (a pause is at most :data:`MAX_PAUSE_S` seconds). ``skip_bad``: skip and count malformed
    lines instead of failing. ``warn`` gets warnings (a truncated last line ...); ``sleep``
    (seconds) is injectable so tests need not wait."""

    paths: list[str] = field(default_factory=list)
    skip_bad: bool = False
    speed: float = 0.0
    warn: Callable[[str], None] = _no_warning
    sleep: Callable[[float], None] = time.sleep


class ReplaySession:
    """Events of one or more trace files, in file order."""

    name = "replay"

    def __init__(self, opts: ReplayOptions) -> None:
        if not opts.paths:
            raise InputError("no trace file given")
        if math.isnan(opts.speed) or opts.speed < 0:
            raise UsageError(f"--speed must be a number, 0 or more, not {opts.speed}")
        self.opts = opts
        self.paths = list(opts.paths)
        self.speed = opts.speed
        self.readers = [TraceReader(p, skip_bad=opts.skip_bad, warn=opts.warn) for p in self.paths]
        self._pieces: Iterator[tuple[int, pa.Table]] | None = None
        self._notices_seen = [0] * len(self.readers)

    @property
    def header(self) -> dict[str, Any]:
        """The first header that embeds a snapshot, else the first header."""
        with_snap = [r.header for r in self.readers if r.header.get("snapshot")]
        return (with_snap or [r.header for r in self.readers] or [{}])[0]

    def stats(self) -> SessionStats:
        """``lost``: from the traces' footers; ``skipped``: malformed lines skipped so far."""
        return SessionStats(lost=sum(int(r.footer.get("lost") or 0) for r in self.readers),
                            skipped=sum(r.stats.skipped for r in self.readers))

    # -- whole-file views ----------------------------------------------------------------
    def tables(self) -> Iterator[pa.Table]:
        """Chunks as fast as they can be read (analysis)."""
        for r in self.readers:
            yield from r.tables()

    def paced(self, tables: Iterator[pa.Table] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first ts_ns, table) pieces, sleeping between them to keep the recorded pace (with
        ``speed`` 0: whole chunks, no sleeping)."""
        prev: int | None = None
        for t in tables if tables is not None else self.tables():
            if self.speed == 0:
                yield (t.column("ts_ns")[0].as_py() if t.num_rows else 0), t
                continue
            ts = t.column("ts_ns").to_pylist()
            start = 0
            for i in range(1, len(ts) + 1):
                if i == len(ts) or ts[i] != ts[start]:
                    if prev is not None and ts[start] > prev:
                        self.opts.sleep(min((ts[start] - prev) / 1e9 / self.speed, MAX_PAUSE_S))
                    prev = ts[start]
                    yield ts[start], t.slice(start, i - start)
                    start = i

    def events(self) -> Iterator[ConfigAccess]:
        for r in self.readers:
            yield from r.events()

    # -- the Session protocol -----------------------------------------------------------
    def start(self) -> None:
        if self._pieces is None:
            self._pieces = self.paced()

    def poll(self, timeout_ms: int = 100) -> Batch:
        """The next piece (at the recorded pace when ``speed`` > 0) with the notices read so far;
        an empty batch once the files are done. ``timeout_ms`` does not apply."""
        self.start()
        assert self._pieces is not None
        piece = next(self._pieces, None)
        return Batch(piece[1] if piece is not None else Batch.empty().events, self._new_notices())

    def drain(self) -> Batch:
        """Everything not yet polled, as one batch."""
        self.start()
        assert self._pieces is not None
        return concat_batches([Batch(t, []) for _, t in self._pieces] + [Batch.empty()._replace(
            notices=self._new_notices())])

    def _new_notices(self) -> list[Notice]:
        out: list[Notice] = []
        for i, r in enumerate(self.readers):
            out += [Notice.from_record(d) for d in r.notices[self._notices_seen[i]:]]
            self._notices_seen[i] = len(r.notices)
        return out

    def notices(self) -> list[Notice]:
        """Every notice (``{"record": "unmediated", ...}`` line) read so far, file by file; all of
        them once :meth:`tables` is exhausted."""
        return [Notice.from_record(d) for r in self.readers for d in r.notices]

    def follow_pid(self, pid: int) -> None:
        """Nothing to follow in a recording."""

    def close(self) -> None:
        self._pieces = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
