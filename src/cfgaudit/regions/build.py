"""Composition inside ``regions/``: sources -> DeviceSet, and DeviceSet -> RegionRegistry.

Sources come from the :data:`~cfgaudit.regions.sources.SOURCES` table; host paths (sysfs,
proc) come from a :class:`~cfgaudit.hostpaths.HostPaths` passed down, never hard-coded.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from ..errors import InputError, UsageError
from ..hostpaths import DEFAULT, HostPaths
from ..pci_regs import PCI_SECONDARY_BUS
from .capabilities import CapMap, walk
from .configspace import PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE, DeviceSet, infer_config_size, normalize_bdf
from .kernel import KernelVersion, parse_kernel
from .registry import RegionRegistry
from .rules import RULES, DeviceView, Rule, evaluate
from .sources import HOST_FACTS, SOURCES, Source, running_kernel

__all__ = ["load_devices", "build_registry", "RegistryResult", "running_kernel", "device_views",
           "parse_driver_overrides", "SourcePaths"]

SourcePaths = Mapping[str, str | Iterable[str] | None]
"""Paths per :data:`SOURCES` row name: one path, or several for a repeatable source."""


def parse_driver_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["0d:00.0=cxl_pci"]`` -> ``{"0000:0d:00.0": "cxl_pci"}``."""
    out: dict[str, str] = {}
    for it in items:
        bdf, sep, name = it.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--driver wants BDF=NAME, got {it!r}")
        out[normalize_bdf(bdf)] = name.strip()
    return out


def _path_list(row: Source, value: str | Iterable[str] | None) -> list[str]:
    """The paths given for ``row`` (one string, or an iterable for a repeatable source)."""
    if not value:
        return []
    got = [value] if isinstance(value, str) else [p for p in value if p]
    if len(got) > 1 and not row.repeatable:
        raise UsageError(f"{row.flag} takes one {row.metavar or 'path'}, got {len(got)}")
    return got


def _given(sources: SourcePaths | None, legacy: Mapping[str, str | Iterable[str] | None]) -> dict[str, list[str]]:
    """Paths per row name, from ``sources`` (by row name) and the legacy keywords (by ``arg``)."""
    by_arg = {row.arg: row for row in SOURCES.values()}
    out: dict[str, list[str]] = {}
    for arg, value in legacy.items():
        row = by_arg.get(arg)
        if row is None:
            if value:
                raise UsageError(f"no config-space source takes {arg!r}")
            continue
        out.setdefault(row.name, []).extend(_path_list(row, value))
    for name, value in (sources or {}).items():
        row = SOURCES.get(name)
        if row is None:
            raise UsageError(f"unknown config-space source {name!r}; choose from {', '.join(SOURCES)}")
        out.setdefault(name, []).extend(_path_list(row, value))
    for name, got in out.items():
        _path_list(SOURCES[name], got)  # a non-repeatable source named twice
    return {k: v for k, v in out.items() if v}


def load_devices(sysfs_path: str | None = None, lspci_dumps: Iterable[str] = (), snapshot: str | None = None,
                 drivers: Mapping[str, str] | None = None, *, paths: HostPaths = DEFAULT,
                 sources: SourcePaths | None = None) -> DeviceSet:
    """Load devices from the named sources, iterating :data:`SOURCES` in table order.

    ``sources`` maps row names to paths (``{"lspci-dump": [a, b]}``); the keywords
    ``sysfs_path``, ``lspci_dumps`` and ``snapshot`` are the same rows by their ``arg``. With
    no source at all, the rows with a default load it (the sysfs tree at ``paths.sysfs``).
    Host facts (kernel release, ``iomem=relaxed``, host) come from the sources that carry
    them: a snapshot, or this machine's live sysfs tree (read from ``paths.proc``).
    ``drivers`` sets bound drivers by BDF afterwards.
    """
    given = _given(sources, {"sysfs_path": sysfs_path, "lspci_dumps": lspci_dumps, "snapshot": snapshot})
    if not given:
        given = {row.name: [row.default(paths)] for row in SOURCES.values() if row.default is not None}
    ds = DeviceSet()
    warn = ds.warnings.append
    for row in SOURCES.values():
        for path in given.get(row.name, ()):
            part = row.load(path, warn, paths)
            ds.warnings.extend(part.warnings)
            for cs in part.sorted():
                ds.add(cs, f"{path}: ")
            if any(getattr(part, k) is not None for k in HOST_FACTS):
                for k in HOST_FACTS:
                    setattr(ds, k, getattr(part, k))
    for bdf, name in (drivers or {}).items():
        if bdf not in ds.devices:
            raise UsageError(f"--driver {bdf}={name}: no such device in the sources")
        ds.devices[bdf].driver = name
    if not ds.devices:
        raise InputError("no PCI devices found in the given sources")
    return ds


_SIZE_UNKNOWN = ("config size unknown: the source ends before the capability list does "
                 "(the kernel gives 256 or 4096 bytes)")


def device_views(ds: DeviceSet) -> list[DeviceView]:
    """Walk every device's capabilities; fill in ``config_size`` where the source did not."""
    views: list[DeviceView] = []
    for cs in ds.sorted():
        caps: CapMap = walk(cs)
        if cs.config_size is None:
            ext_capable = any(c.space == "std" and c.id in (0x10, 0x07) for c in caps.caps)
            if not ext_capable and any(a.kind == "unknown-bytes" and a.space != "ext" for a in caps.anomalies):
                # the source ends before the capability list does (a 16- or 64-byte dump): whether the
                # kernel gives 256 or 4096 bytes cannot be told, so the size stays unknown
                if _SIZE_UNKNOWN not in cs.notes:
                    cs.notes.append(_SIZE_UNKNOWN)
                views.append(DeviceView(cs, caps))
                continue
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
            sec = v.cs.byte(PCI_SECONDARY_BUS)
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
                   iomem_relaxed: bool | None = None, rules: list[Rule] | None = None, *,
                   paths: HostPaths = DEFAULT) -> RegistryResult:
    """Evaluate the ownership table (plus user claims) for ``ds`` on a kernel release.

    ``kernel`` defaults to the snapshot's release, then the running kernel's (read from
    ``paths.proc``). Kernel claims
    are requested in table order, then user claims; an exclusive claim that overlaps an
    earlier one fails exactly as in the kernel (one owner per byte) and gives a warning.
    """
    warnings: list[str] = []
    if kernel:
        kv = parse_kernel(kernel)
    elif ds.kernel_release:
        kv = parse_kernel(ds.kernel_release, ds.kernel_version)
    else:
        rel, upstream, _ = running_kernel(paths)
        kv = parse_kernel(rel, upstream)
        warnings.append(f"no kernel release given: evaluating rules for the running kernel {rel}")
    relaxed = bool(ds.iomem_relaxed) if iomem_relaxed is None else iomem_relaxed
    reg = RegionRegistry(strict_iomem=not relaxed)
    views = device_views(ds)
    all_rules = list(rules if rules is not None else RULES) + list(claims)
    for r in evaluate(views, kv, all_rules):
        if r.start + r.length > PCI_CFG_SPACE_EXP_SIZE:  # a capability length (or claim offset) read from odd bytes
            if r.start >= PCI_CFG_SPACE_EXP_SIZE:
                warnings.append(f"{r.bdf}: {r.owner}'s range at {r.start:#x} ({r.rule}) lies past the "
                                f"{PCI_CFG_SPACE_EXP_SIZE} bytes of config space: ignored")
                continue
            warnings.append(f"{r.bdf}: {r.owner}'s range [{r.start:#x}, +{r.length:#x}) ({r.rule}) runs past the "
                            f"{PCI_CFG_SPACE_EXP_SIZE} bytes of config space: cut at {PCI_CFG_SPACE_EXP_SIZE}")
            r = replace(r, length=PCI_CFG_SPACE_EXP_SIZE - r.start)
        if reg.add(r) is None:
            warnings.append(f"{r.bdf}: {r.owner}'s exclusive claim [{r.start:#x}, +{r.length:#x}) ({r.rule}) "
                            "overlaps an earlier exclusive claim and fails, as it would in the kernel")
    return RegistryResult(reg, kv, relaxed, views, warnings)
