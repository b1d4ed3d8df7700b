"""What the program's entry point sets up for speed: pandas on demand, and allocators that keep
freed memory for reuse. A library user's process is not touched (nothing here runs on import).

pandas is loaded when a DataFrame is asked for, not at start-up.

pandas costs 0.3-0.8 s to import on the hosts cfgaudit runs on, and most commands never need a
DataFrame (``analyze --format csv`` streams Arrow tables; a report without findings renders
from counts). Not importing it is not enough: pyarrow imports pandas itself the first time it
builds any array, to ask whether the input is a pandas object (``pyarrow.lib._PandasAPIShim``,
which tries ``import pandas`` once and remembers a failure). So the program's entry point calls
:func:`defer_pandas`, which makes that first probe fail (an import finder that refuses pandas:
pyarrow then treats its inputs as plain Python and NumPy objects, as they are), and
:func:`load_pandas` lifts the block, imports pandas and lets pyarrow know it is there.
Library users who never call :func:`defer_pandas` see no difference.

The allocators (:func:`keep_freed_memory`): an analysis makes the same large arrays chunk after
chunk (numpy through glibc malloc, Arrow through mimalloc). Each hands freed memory back to the
kernel at once by default, so every chunk faults its pages in again: some 350,000 minor faults
and seconds of system time on a 10M-event run, where keeping it takes ~80,000 (BENCHMARKS.md).

Every use of pandas in cfgaudit goes through :func:`load_pandas` (or :func:`frame`, for Arrow's
``to_pandas``); tests/test_architecture.py checks that nothing else imports it.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from types import ModuleType

    import pandas as pd

__all__ = ["defer_pandas", "load_pandas", "frame", "keep_freed_memory", "child_environ", "PROGRAM_ENV"]

# glibc mallopt() parameters (malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_TRIM_BYTES = 256 << 20  # free heap kept before glibc trims it back to the kernel
KEEP_MMAP_BYTES = 32 << 20  # blocks below this come from the (reused) heap, not a fresh mmap each time
KEEP_PURGE_MS = "1000"  # mimalloc (Arrow's allocator) returns freed pages after 1 s, not 10 ms
# Environment variables the entry point set for cfgaudit's own process: a command it runs
# (`cfgaudit run -- CMD`) gets the environment without them (child_environ()).
PROGRAM_ENV: dict[str, str] = {}


def keep_freed_memory() -> None:
    """Let glibc malloc and mimalloc reuse freed memory instead of returning it at once (see
    the module's docstring). Call before pyarrow loads; ``CFGAUDIT_MALLOC=default`` in the
    environment leaves both allocators as they are. Peak RSS stays bounded (BENCHMARKS.md)."""
    if os.environ.get("CFGAUDIT_MALLOC") == "default":
        return
    if "MIMALLOC_PURGE_DELAY" not in os.environ:  # the user's own setting wins
        os.environ["MIMALLOC_PURGE_DELAY"] = PROGRAM_ENV["MIMALLOC_PURGE_DELAY"] = KEEP_PURGE_MS
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_BYTES)
    except (OSError, AttributeError):  # not glibc: its defaults stay
        pass


def child_environ() -> dict[str, str]:
    """``os.environ`` without the variables :func:`keep_freed_memory` set for cfgaudit itself."""
    return {k: v for k, v in os.environ.items() if k not in PROGRAM_ENV or PROGRAM_ENV[k] != v}


class _Deferred:
    """An import finder (the ``importlib.abc.MetaPathFinder`` protocol; not subclassed, as that
    module alone costs 20 ms) that refuses pandas (ImportError) while it is on ``sys.meta_path``."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if fullname == "pandas":
            raise ImportError("pandas is loaded on demand (cfgaudit.ondemand.load_pandas)")
        return None


_DEFERRED = _Deferred()


def defer_pandas() -> None:
    """Block ``import pandas`` until :func:`load_pandas` (no-op when pandas is already loaded)."""
    if "pandas" not in sys.modules and _DEFERRED not in sys.meta_path:
        sys.meta_path.insert(0, _DEFERRED)


def load_pandas() -> ModuleType:
    """pandas, imported now if it is not yet (lifting :func:`defer_pandas`'s block)."""
    if _DEFERRED in sys.meta_path:
        sys.meta_path.remove(_DEFERRED)
    import pandas  # lazy: 0.3-0.8 s, only for DataFrame results (issue 10, start-up)

    shim = getattr(sys.modules.get("pyarrow.lib"), "_pandas_api", None)
    if shim is not None:
        shim.pd  # noqa: B018 - pyarrow retries its import when asked for pandas after a failed probe
    return pandas


def frame(arrow: Any, **kwargs: Any) -> pd.DataFrame:
    """``arrow.to_pandas(**kwargs)`` (an Arrow table or array) with pandas loaded first."""
    load_pandas()
    return arrow.to_pandas(**kwargs)
