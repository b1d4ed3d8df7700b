"""cfgaudit's fuzz tier: seeded mutation of well-formed inputs through every offline command.

Formats (:data:`fuzz.formats.FORMATS`): ``trace-jsonl``, ``trace-parquet``, ``lspci-dump``,
``claims``, ``snapshot``, ``trace-header``. Each input runs through some of the offline commands
that read it (``analyze``, ``check``, ``replay``, ``devices``, ``regions``, ``snapshot``) in a
worker process; a run must end in exit 0, 1, or 2 with one ``Error:`` line: never a traceback
(exit 3), a signal, or a hang past the per-run limit (seconds).

    python -m fuzz --seed 1 --count 10000            # from tests/ (make fuzz)
    python -m fuzz --format claims --start 1234 --count 1 --keep /tmp/f   # one input again

The small budget runs in the fast tier (tests/test_fuzz_tier.py).
"""
from __future__ import annotations

from .runner import FAILURES, OUTCOMES, Summary, run_fuzz

__all__ = ["run_fuzz", "Summary", "OUTCOMES", "FAILURES"]
