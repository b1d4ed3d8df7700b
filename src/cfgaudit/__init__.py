"""cfgaudit: audit user-space writes to PCI configuration space.

The public API; everything else is internal. See README.md.
"""
from __future__ import annotations

from .errors import BackendError, CfgauditError, InputError, UsageError
from .regions import (
    Capability,
    ConfigSpace,
    Region,
    RegionRegistry,
    build_registry,
    load_devices,
)

__all__ = [
    "BackendError",
    "CfgauditError",
    "InputError",
    "UsageError",
    "Capability",
    "ConfigSpace",
    "Region",
    "RegionRegistry",
    "build_registry",
    "load_devices",
]
__version__ = "0.1.0"
