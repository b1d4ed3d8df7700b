"""The ``cfgaudit`` program: ``python -m cfgaudit`` and the installed script both start here.

Start-up loads click and the command line; a command then loads what it uses (pandas and pyarrow
for a report: about a second on a slow host). A Ctrl-C at any point must end like any other
interrupt (``Error: interrupted``, exit 130), not with a traceback, so the signal dispositions are
set before the command line's modules load (once it runs, main() turns a Ctrl-C into that line).
``cfgaudit/__init__.py`` loads its names lazily so that importing this module costs nothing: the
handler is in place some 15 ms after the interpreter starts (before that, in the interpreter's own
start, Python's default applies).
"""
from __future__ import annotations

import os
import signal
import sys

from .ondemand import defer_pandas, keep_freed_memory

EXIT_INTERRUPTED = 128 + signal.SIGINT  # a shell's code for "ended by SIGINT" (130)

def _interrupted_while_loading(signum: int, frame: object) -> None:
    """SIGINT before the command line is loaded: nothing has started, nothing to save."""
    os.write(2, b"Error: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def console() -> None:
    """Reset what a parent may have left us (SIGINT ignored in a shell's background job, signals
    blocked), load the command line and run it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    keep_freed_memory()  # before pyarrow and numpy load
    defer_pandas()  # pandas loads when a DataFrame is asked for, not when pyarrow makes its first array
    # The CLI is imported here, after the handler above, so a Ctrl-C while it loads is handled.
    from .cli import main
    signal.signal(signal.SIGINT, signal.default_int_handler)  # main() turns it into "Error: interrupted"
    sys.exit(main())


if __name__ == "__main__":
    console()
