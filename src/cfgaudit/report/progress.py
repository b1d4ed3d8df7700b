"""Progress on standard error for long analyses: shown only on a terminal, only for big inputs."""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "SegmentProgress"]

MIN_BYTES = 64 << 20  # inputs smaller than this finish before a progress line would help


class _Line:
    """One progress line on a terminal, rewritten in place (``\r``); nothing elsewhere."""

    def __init__(self, stream: TextIO | None, on: bool) -> None:
        self.stream = stream or sys.stderr
        self.on = on and self.stream.isatty()
        self.t0 = time.monotonic()
        self.shown = False

    def rate(self, n: int) -> float:
        """``n`` per second since this line was made."""
        return n / max(1e-9, time.monotonic() - self.t0)

    def show(self, text: str) -> None:
        if self.on:
            self.stream.write("\r" + text)
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        """End the progress line (if one was shown)."""
        if self.shown:
            self.stream.write("\n")
            self.shown = False


class Progress(_Line):
    """``analyzed N events (R/s)`` on one rewritten line; call it with the events done so far.
    Shown only for inputs over :data:`MIN_BYTES` (``total_bytes``)."""

    def __init__(self, total_bytes: int, stream: TextIO | None = None) -> None:
        super().__init__(stream, total_bytes > MIN_BYTES)

    def __call__(self, events: int) -> None:
        if self.on:
            self.show(f"analyzed {events:,} events ({self.rate(events):,.0f}/s)")


class SegmentProgress(_Line):
    """``segments N/TOTAL (R/s)`` on one rewritten line (``cfgaudit fleet analyze``), shown only
    on a terminal; call it with (segments finished, segments to analyse)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream, True)

    def __call__(self, done: int, total: int) -> None:
        if self.on and total:
            self.show(f"segments {done:,}/{total:,} ({self.rate(done):,.1f}/s)")
