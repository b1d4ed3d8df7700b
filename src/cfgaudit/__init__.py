"""cfgaudit: audit user-space writes to PCI configuration space against the ranges kernel drivers own.

This package's namespace is the library; everything under it is internal. Three areas:

* inventory: :func:`open_devices` (from :class:`Sources`), :func:`devices_rows`, :func:`registry_for`
  (the ownership rules for a kernel release), :func:`regions_rows`, :func:`write_snapshot`;
* audit: :func:`open_analysis` then :func:`run_analysis` / :func:`render_report` / :func:`replay`,
  :func:`analyze_traces` (findings as a DataFrame), :func:`load_trace`, :func:`failing`;
* live: :class:`LiveRun` (a context manager) with :class:`TraceConfig`, :func:`doctor_rows`.

Errors are :class:`CfgauditError` (``InputError``, ``UsageError``, ``BackendError``).
Offsets and sizes are bytes, times ns. See README.md.
"""
from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (30 ms): the entry point (__main__.py) sets up its
# signal handling right after this package loads, so the package loads nothing it can do without.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .audit import (
        FAIL_LEVELS,
        Analysis,
        failing,
        load_trace,
        open_analysis,
        render_report,
        replay,
        run_analysis,
        stream_analysis,
    )
    from .audit import analyze as analyze_traces
    from .errors import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, BackendError, CfgauditError, InputError, UsageError
    from .fleet import FleetOptions, FleetRun, fleet_failing, fleet_report, load_fleet, run_fleet
    from .hostpaths import HostPaths
    from .inventory import PciIds, Sources, devices_rows, open_devices, regions_rows, registry_for, write_snapshot
    from .live import GuardConfig, LiveBatch, LiveRun, TraceConfig, doctor_rows, prepare_host, resolve_command
    from .record import RecordConfig, Recorder, SegmentInfo, recover_segments
    from .regions import Capability, ConfigSpace, Region, RegionRegistry, build_registry, load_devices
    from .regions.guard import GUARD_LEVELS

# The names above, loaded on first use (PEP 562): `import cfgaudit` stays cheap, so the command
# line's entry point (__main__.py) can set up its signal handling before pandas and pyarrow load.
_WHERE: dict[str, tuple[str, str]] = {
    **{n: ("audit", n) for n in ("FAIL_LEVELS", "Analysis", "failing", "load_trace", "open_analysis",
                                 "render_report", "replay", "run_analysis", "stream_analysis")},
    "analyze_traces": ("audit", "analyze"),
    **{n: ("errors", n) for n in ("EXIT_ERROR", "EXIT_FINDINGS", "EXIT_OK", "BackendError", "CfgauditError",
                                  "InputError", "UsageError")},
    "HostPaths": ("hostpaths", "HostPaths"),
    **{n: ("fleet", n) for n in ("FleetOptions", "FleetRun", "fleet_failing", "fleet_report", "load_fleet",
                                 "run_fleet")},
    **{n: ("inventory", n) for n in ("PciIds", "Sources", "devices_rows", "open_devices", "regions_rows",
                                     "registry_for", "write_snapshot")},
    **{n: ("live", n) for n in ("GuardConfig", "LiveBatch", "LiveRun", "TraceConfig", "doctor_rows", "prepare_host",
                                "resolve_command")},
    **{n: ("regions", n) for n in ("Capability", "ConfigSpace", "Region", "RegionRegistry", "build_registry",
                                   "load_devices")},
    "GUARD_LEVELS": ("regions.guard", "GUARD_LEVELS"),
    **{n: ("record", n) for n in ("RecordConfig", "Recorder", "SegmentInfo", "recover_segments")},
}


def __getattr__(name: str) -> Any:
    """Load a public name from the module that defines it (once; then it is a module attribute)."""
    try:
        mod, attr = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'cfgaudit' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{mod}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CfgauditError", "InputError", "UsageError", "BackendError", "EXIT_OK", "EXIT_FINDINGS", "EXIT_ERROR",
    "HostPaths", "PciIds", "Sources", "open_devices", "devices_rows", "registry_for", "regions_rows", "write_snapshot",
    "load_devices", "build_registry", "Capability", "ConfigSpace", "Region", "RegionRegistry",
    "FAIL_LEVELS", "Analysis", "open_analysis", "run_analysis", "stream_analysis", "render_report", "replay",
    "analyze_traces", "load_trace", "failing",
    "FleetOptions", "FleetRun", "run_fleet", "load_fleet", "fleet_report", "fleet_failing",
    "TraceConfig", "GuardConfig", "GUARD_LEVELS", "LiveRun", "LiveBatch", "doctor_rows", "prepare_host",
    "resolve_command",
    "RecordConfig", "Recorder", "SegmentInfo", "recover_segments",
]
__version__ = "0.1.0"
