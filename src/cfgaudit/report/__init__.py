"""Reports: pandas frames of findings and listings, and their renderers.

The submodules load on first use (PEP 562): ``report.render`` after ``from cfgaudit import report``
imports render.py (pandas, pyarrow) only when a command reaches it, so the command line's
``--help``, ``devices`` and ``regions`` never pay for it. ``from cfgaudit.report import render``
works as usual.
"""
from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from types import ModuleType

    from . import csvout, fleet, frames, inventory, listing, live, progress, render

__all__ = ["csvout", "fleet", "frames", "inventory", "listing", "live", "progress", "render"]


def __getattr__(name: str) -> ModuleType:
    """``report.NAME``: import the submodule NAME (once; then it is a package attribute)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f".{name}", __name__)

