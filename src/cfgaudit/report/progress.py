"""Progress on standard error for long analyses: shown only on a terminal, only for big inputs."""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "SegmentProgress"]

MIN_BYTES = 64 << 20  # inputs smaller than this finish before a progress line would help


class Progress:
    """``analyzed N events (R/s)`` on one rewritten line; call it with the events done so far."""

    def __init__(self, total_bytes: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty() and total_bytes > MIN_BYTES
        self.t0 = time.monotonic()
        self.shown = False

    def __call__(self, events: int) -> None:
        if self.on:
            rate = events / max(1e-9, time.monotonic() - self.t0)
            self.stream.write(f"\ranalyzed {events:,} events ({rate:,.0f}/s)")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        """End the progress line (if one was shown)."""
        if self.shown:
            self.stream.write("\n")
            self.shown = False


class SegmentProgress:
    """``segments N/TOTAL (R/s)`` on one rewritten line (``cfgaudit fleet analyze``), shown only
    on a terminal; call it with (segments finished, segments to analyse)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.t0 = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.on and total:
            rate = done / max(1e-9, time.monotonic() - self.t0)
            self.stream.write(f"\rsegments {done:,}/{total:,} ({rate:,.1f}/s)")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        """End the progress line (if one was shown)."""
        if self.shown:
            self.stream.write("\n")
            self.shown = False
