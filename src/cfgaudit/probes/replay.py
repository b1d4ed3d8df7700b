"""The replay backend: events from recorded trace files, through the backend interface.

Like pciutils' dump access method, it is just another method, and a read-only one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa

from ..errors import InputError
from ..events import ConfigAccess
from .tracefile import TraceReader

__all__ = ["ReplaySource"]


@dataclass
class ReplaySource:
    """Events of one or more trace files, in file order.

    ``speed``: 0 = as fast as possible; 1.0 = the recorded pace; 10 = ten times faster.
    ``sleep`` is injectable so tests need not wait.
    """

    paths: list[str]
    skip_bad: bool = False
    speed: float = 0.0
    warn: Callable[[str], None] = lambda m: None
    sleep: Callable[[float], None] = time.sleep
    readers: list[TraceReader] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.paths:
            raise InputError("no trace file given")
        if self.speed < 0:
            raise InputError(f"--speed must be 0 or more, not {self.speed}")
        self.readers = [TraceReader(p, skip_bad=self.skip_bad, warn=self.warn) for p in self.paths]

    @property
    def header(self) -> dict[str, Any]:
        """The first header that embeds a snapshot, else the first header."""
        with_snap = [r.header for r in self.readers if r.header.get("snapshot")]
        return (with_snap or [r.header for r in self.readers] or [{}])[0]

    @property
    def lost(self) -> int:
        return sum(int(r.footer.get("lost") or 0) for r in self.readers)

    @property
    def skipped(self) -> int:
        return sum(r.stats.skipped for r in self.readers)

    def tables(self) -> Iterator[pa.Table]:
        """Chunks as fast as they can be read (analysis)."""
        for r in self.readers:
            yield from r.tables()

    def paced(self, tables: Iterator[pa.Table] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first ts_ns, small table) pieces, sleeping between them to keep the recorded pace."""
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
                        self.sleep((ts[start] - prev) / 1e9 / self.speed)
                    prev = ts[start]
                    yield ts[start], t.slice(start, i - start)
                    start = i

    def events(self) -> Iterator[ConfigAccess]:
        for r in self.readers:
            yield from r.events()
