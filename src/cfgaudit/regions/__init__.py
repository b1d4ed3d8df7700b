"""Config-space sources, capability decoding, ownership rules and the region registry."""
from __future__ import annotations

from .build import (
    RegistryResult,
    SourcePaths,
    build_registry,
    device_views,
    load_devices,
    parse_driver_overrides,
    running_kernel,
)
from .capabilities import Anomaly, Capability, CapMap, walk
from .claims import load_claims
from .configspace import (
    ConfigSpace,
    DeviceSet,
    load_lspci_dump,
    load_snapshot,
    load_sysfs,
    normalize_bdf,
    save_snapshot,
)
from .kernel import KernelVersion, parse_kernel
from .registry import Region, RegionRegistry
from .rules import RULES, Rule
from .sources import SOURCES, Source, host_facts

__all__ = [
    "Anomaly", "Capability", "CapMap", "ConfigSpace", "DeviceSet", "KernelVersion", "Region",
    "RegionRegistry", "RegistryResult", "RULES", "Rule", "SOURCES", "Source", "SourcePaths", "build_registry",
    "device_views", "host_facts", "load_claims", "load_devices", "load_lspci_dump", "load_snapshot", "load_sysfs",
    "normalize_bdf", "parse_driver_overrides", "parse_kernel", "running_kernel", "save_snapshot", "walk",
]
