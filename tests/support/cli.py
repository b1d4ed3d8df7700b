"""Running cfgaudit's CLI in-process."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from cfgaudit.cli import main


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run cfgaudit's CLI in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()
