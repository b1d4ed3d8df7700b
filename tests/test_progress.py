"""Progress lines (report/progress.py): on a terminal only, rewritten in place, ended once."""
from __future__ import annotations

import io

from cfgaudit.report.progress import MIN_BYTES, Progress, SegmentProgress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_on_a_terminal() -> None:
    t = Tty()
    p = Progress(MIN_BYTES + 1, t)
    p(5)
    p.done()
    p.done()  # ended once
    s = SegmentProgress(t)
    s(1, 3)
    s(0, 0)  # nothing to do: no line
    s.done()
    lines = t.getvalue().split("\n")
    assert lines[0].startswith("\ranalyzed 5 events (") and lines[0].endswith("/s)")
    assert lines[1].startswith("\rsegments 1/3 (") and lines[2] == ""


def test_no_progress_off_a_terminal_or_for_small_inputs() -> None:
    t = Tty()
    Progress(MIN_BYTES, t)(5)
    plain = io.StringIO()
    SegmentProgress(plain)(1, 2)
    Progress(MIN_BYTES + 1, plain)(5)
    assert t.getvalue() == plain.getvalue() == ""
