"""Devices, regions and snapshots: what is on the host and which bytes the kernel owns.

The library side of ``cfgaudit devices``, ``regions`` and ``snapshot``: these functions return
data (dataclasses, plain dicts); turning them into text is report/inventory.py's job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .files import create_output
from .hostpaths import DEFAULT, HostPaths
from .regions import (
    DeviceSet,
    RegistryResult,
    build_registry,
    device_views,
    load_claims,
    load_devices,
    parse_driver_overrides,
    parse_kernel,
    save_snapshot,
)
from .regions.pciids import PciIds

__all__ = ["PciIds", "Sources", "open_devices", "devices_rows", "registry_for", "regions_rows", "write_snapshot",
           "REGION_KEYS", "DEVICE_KEYS"]

DEVICE_KEYS = ("bdf", "vendor", "device", "vendor_name", "device_name",
               "class", "revision", "driver", "config_size", "known_bytes",
               "capabilities", "anomalies")
REGION_KEYS = ("bdf", "start", "length", "owner", "kind", "capability", "rule", "source")


@dataclass
class Sources:
    """Where config spaces come from (the CLI's shared source options). ``drivers``: ``BDF=NAME``
    items; ``paths``: the host's kernel interfaces (the live sysfs is ``paths.sysfs``)."""

    sysfs_path: str | None = None
    lspci_dumps: list[str] = field(default_factory=list)
    snapshot: str | None = None
    drivers: list[str] = field(default_factory=list)
    paths: HostPaths = DEFAULT

    def given(self) -> bool:
        """True when a source was named (otherwise the live sysfs, or a trace's snapshot, is used)."""
        return bool(self.sysfs_path or self.lspci_dumps or self.snapshot)


def open_devices(src: Sources) -> DeviceSet:
    """Load the devices ``src`` names (the live sysfs when it names none)."""
    return load_devices(src.sysfs_path, src.lspci_dumps, src.snapshot, parse_driver_overrides(src.drivers),
                        paths=src.paths)


def devices_rows(ds: DeviceSet, ids: PciIds | None = None) -> list[dict[str, Any]]:
    """One dict per device, keys :data:`DEVICE_KEYS` (the ``devices --format json`` contract);
    capability offsets and lengths in bytes. ``vendor_name``/``device_name`` come from ``ids``
    (default: the system's pci.ids, :meth:`PciIds.load`); None where it lists no name."""
    ids = PciIds.load() if ids is None else ids
    rows = []
    for v in device_views(ds):
        cs = v.cs
        rows.append({
            "bdf": cs.bdf,
            "vendor": cs.vendor,
            "device": cs.device,
            "vendor_name": None if cs.vendor is None else ids.vendor_name(cs.vendor),
            "device_name": None if cs.vendor is None or cs.device is None else ids.device_name(cs.vendor, cs.device),
            "class": cs.class_code,
            "revision": cs.revision,
            "driver": cs.driver,
            "config_size": cs.config_size,
            "known_bytes": sum(cs.known),
            "capabilities": [c.to_dict() for c in v.caps.caps],
            "anomalies": [a.to_dict() for a in v.caps.anomalies] + [
                {"kind": "note", "space": "header", "offset": None, "message": n} for n in cs.notes],
        })
    return rows


def registry_for(ds: DeviceSet, kernel: str | None = None, claims: Iterable[str] = (),
                 iomem_relaxed: bool | None = None) -> RegistryResult:
    """The ownership table (plus the claims files ``claims``) evaluated for ``ds`` on ``kernel``."""
    rules = [r for path in claims for r in load_claims(path)]
    return build_registry(ds, kernel, rules, iomem_relaxed)


def regions_rows(res: RegistryResult) -> list[dict[str, Any]]:
    """One dict per region, keys :data:`REGION_KEYS` (the ``regions --format json`` contract)."""
    return [r.to_dict() for r in res.registry.regions()]


def write_snapshot(ds: DeviceSet, path: str, kernel: str | None = None, iomem_relaxed: bool | None = None,
                   host: str | None = None) -> int:
    """Write a snapshot; returns the number of devices written. ``kernel``, ``iomem_relaxed``
    and ``host`` override what the source said (dumps say nothing)."""
    if kernel:
        parse_kernel(kernel)
        ds.kernel_release, ds.kernel_version = kernel, None
    if iomem_relaxed is not None:
        ds.iomem_relaxed = iomem_relaxed
    if host:
        ds.host = host
    device_views(ds)  # fills in config_size where the source did not give it
    # config bytes non-root cannot read: a new file is 0600, never written through a symbolic link,
    # and a device (/dev/null) is written, never chmodded
    save_snapshot(ds, path, fd=create_output(path, "snapshot"))
    return len(ds.devices)
