"""Composition inside ``regions/``: sources -> DeviceSet, and DeviceSet -> RegionRegistry."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import InputError, UsageError
from .capabilities import CapMap, walk
from .configspace import (
    PCI_CFG_SPACE_SIZE,
    DeviceSet,
    infer_config_size,
    load_lspci_dump,
    load_snapshot,
    load_sysfs,
    normalize_bdf,
)
from .kernel import KernelVersion, parse_kernel, upstream_from_proc_version
from .registry import Region, RegionRegistry
from .rules import RULES, DeviceView, Rule, evaluate

__all__ = ["load_devices", "build_registry", "RegistryResult", "running_kernel", "device_views", "parse_driver_overrides"]

DEFAULT_SYSFS = "/sys/bus/pci"


def running_kernel(proc_root: str = "/proc") -> tuple[str, str | None, bool]:
    """(release, upstream version if hidden, booted with iomem=relaxed) of this machine."""
    def rd(p: str) -> str:
        try:
            with open(os.path.join(proc_root, p)) as fh:
                return fh.read().strip()
        except OSError:
            return ""
    release = rd("sys/kernel/osrelease") or os.uname().release
    upstream = upstream_from_proc_version(rd("version"))
    relaxed = "iomem=relaxed" in rd("cmdline").split()
    return release, upstream, relaxed


def parse_driver_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["0d:00.0=cxl_pci"]`` -> ``{"0000:0d:00.0": "cxl_pci"}``."""
    out: dict[str, str] = {}
    for it in items:
        bdf, sep, name = it.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--driver wants BDF=NAME, got {it!r}")
        out[normalize_bdf(bdf)] = name.strip()
    return out


def load_devices(sysfs_path: str | None = None, lspci_dumps: Iterable[str] = (), snapshot: str | None = None,
                 drivers: Mapping[str, str] | None = None, proc_root: str = "/proc") -> DeviceSet:
    """Load devices from the given sources (the live sysfs when none is given).

    Host facts (kernel release, ``iomem=relaxed``) come from a snapshot, or from this machine
    when reading the live ``/sys/bus/pci``; dumps and fake trees carry none.
    """
    dumps = list(lspci_dumps)
    ds = DeviceSet()
    warn = ds.warnings.append
    if snapshot:
        snap = load_snapshot(snapshot)
        snap.warnings = ds.warnings
        ds = snap
    for path in dumps:
        for cs in load_lspci_dump(path, warn):
            ds.add(cs, f"{path}: ")
    if sysfs_path or (not snapshot and not dumps):
        root = sysfs_path or DEFAULT_SYSFS
        for cs in load_sysfs(root, warn):
            ds.add(cs, f"{root}: ")
        if os.path.realpath(root) == os.path.realpath(DEFAULT_SYSFS):
            ds.kernel_release, ds.kernel_version, ds.iomem_relaxed = running_kernel(proc_root)
            ds.host = socket.gethostname()
    for bdf, name in (drivers or {}).items():
        if bdf not in ds.devices:
            raise UsageError(f"--driver {bdf}={name}: no such device in the sources")
        ds.devices[bdf].driver = name
    if not ds.devices:
        raise InputError("no PCI devices found in the given sources")
    return ds


def device_views(ds: DeviceSet) -> list[DeviceView]:
    """Walk every device's capabilities; fill in ``config_size`` where the source did not."""
    views: list[DeviceView] = []
    for cs in ds.sorted():
        caps: CapMap = walk(cs)
        if cs.config_size is None:
            ext_capable = any(c.space == "std" and c.id in (0x10, 0x07) for c in caps.caps)
            cs.config_size = infer_config_size(cs, ext_capable)
            if cs.config_size == PCI_CFG_SPACE_SIZE:
                for c in caps.caps:
                    if c.space == "ext":
                        c.kernel_visible = False
        views.append(DeviceView(cs, caps))
    _mark_root_buses(views)
    return views


def _mark_root_buses(views: list[DeviceView]) -> None:
    """Where the source did not say, a bus is a root bus if no bridge in the set leads to it."""
    secondaries = set()
    for v in views:
        if v.cs.header_type == 1:
            sec = v.cs.byte(0x19)  # PCI_SECONDARY_BUS
            if sec is not None:
                secondaries.add((v.cs.domain, sec))
    for v in views:
        if v.cs.on_root_bus is None:
            v.cs.on_root_bus = (v.cs.domain, v.cs.bus) not in secondaries


@dataclass
class RegistryResult:
    """A registry and how it was made (kernel evaluated, warnings met)."""

    registry: RegionRegistry
    kernel: KernelVersion
    iomem_relaxed: bool
    views: list[DeviceView]
    warnings: list[str] = field(default_factory=list)


def build_registry(ds: DeviceSet, kernel: str | None = None, claims: Iterable[Rule] = (),
                   iomem_relaxed: bool | None = None, rules: list[Rule] | None = None) -> RegistryResult:
    """Evaluate the ownership table (plus user claims) for ``ds`` on a kernel release.

    ``kernel`` defaults to the snapshot's release, then the running kernel's. Kernel claims
    are requested in table order, then user claims; an exclusive claim that overlaps an
    earlier one fails exactly as in the kernel (one owner per byte) and gives a warning.
    """
    warnings: list[str] = []
    if kernel:
        kv = parse_kernel(kernel)
    elif ds.kernel_release:
        kv = parse_kernel(ds.kernel_release, ds.kernel_version)
    else:
        rel, upstream, _ = running_kernel()
        kv = parse_kernel(rel, upstream)
        warnings.append(f"no kernel release given: evaluating rules for the running kernel {rel}")
    relaxed = bool(ds.iomem_relaxed) if iomem_relaxed is None else iomem_relaxed
    reg = RegionRegistry(strict_iomem=not relaxed)
    views = device_views(ds)
    all_rules = list(rules if rules is not None else RULES) + list(claims)
    for r in evaluate(views, kv, all_rules):
        if reg.add(r) is None:
            warnings.append(f"{r.bdf}: {r.owner}'s exclusive claim [{r.start:#x}, +{r.length:#x}) ({r.rule}) "
                            "overlaps an earlier exclusive claim and fails, as it would in the kernel")
    return RegistryResult(reg, kv, relaxed, views, warnings)
