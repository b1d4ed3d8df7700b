"""Watching a child process from a test."""
from __future__ import annotations

import time


def wait_loading(pid: int, lib: str = "pyarrow", timeout_s: float = 60.0) -> bool:
    """Wait until process ``pid`` maps a shared object whose path contains ``lib`` (its heavy
    imports have begun, so cfgaudit's entry point has run and set up its signal handling), polling
    /proc/PID/maps every 2 ms. False if the process ended first, or after ``timeout_s`` seconds.

    Not a fixed delay: on a loaded machine the interpreter alone can take longer to start than any
    delay chosen in a test, and before cfgaudit's code runs Python's own default handler applies."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/maps") as fh:
                if lib in fh.read():
                    return True
        except OSError:
            return False
        time.sleep(0.002)
    return False
