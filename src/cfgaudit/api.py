"""Library entry points. The CLI calls these; notebooks can too."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

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
from .report.listing import Column, render_listing

__all__ = ["Sources", "open_devices", "devices_rows", "regions_rows", "render_devices", "render_regions",
           "registry_for", "write_snapshot"]


@dataclass
class Sources:
    """Where config spaces come from (the CLI's shared source options)."""

    sysfs_path: str | None = None
    lspci_dumps: list[str] = field(default_factory=list)
    snapshot: str | None = None
    drivers: list[str] = field(default_factory=list)  # "BDF=NAME"


def open_devices(src: Sources) -> DeviceSet:
    return load_devices(src.sysfs_path, src.lspci_dumps, src.snapshot, parse_driver_overrides(src.drivers))


def devices_rows(ds: DeviceSet) -> list[dict]:
    """One dict per device (the ``devices --format json`` contract)."""
    rows = []
    for v in device_views(ds):
        cs = v.cs
        rows.append({
            "bdf": cs.bdf,
            "vendor": cs.vendor,
            "device": cs.device,
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


def _hex(width: int):
    return lambda v: "-" if v is None else f"{v:0{width}x}"


def _caps_summary(caps: list[dict]) -> str:
    out = []
    for c in caps:
        tag = c["name"]
        if c.get("dvsec_vendor") is not None:
            tag = c.get("dvsec_name") or f"DVSEC {c['dvsec_vendor']:04x}:{c.get('dvsec_id') or 0:x}"
        mark = "" if c.get("kernel_visible", True) else "*"
        out.append(f"[{c['offset']:x}]{mark} {tag}" + (f" ({c['length']})" if c["length"] else ""))
    return ", ".join(out) or "none"


_DEVICE_COLS = [
    Column("bdf", "BDF"),
    Column("id", "VEN:DEV"),
    Column("class", "CLASS", _hex(6)),
    Column("driver", "DRIVER"),
    Column("config_size", "CFG"),
    Column("caps", "CAPABILITIES [offset] name (bytes)"),
]


def render_devices(ds: DeviceSet, fmt: str = "table") -> str:
    rows = devices_rows(ds)
    if fmt != "table":
        keys = ["bdf", "vendor", "device", "class", "revision", "driver", "config_size", "known_bytes", "capabilities", "anomalies"]
        return render_listing(rows, fmt, _DEVICE_COLS, keys)
    trows = []
    for r in rows:
        caps = _caps_summary(r["capabilities"])
        if r["anomalies"]:
            caps += "; anomalies: " + "; ".join(a["message"] for a in r["anomalies"])
        trows.append({**r, "id": f"{r['vendor'] if r['vendor'] is not None else 0xffff:04x}:"
                                  f"{r['device'] if r['device'] is not None else 0xffff:04x}",
                      "caps": caps})
    return render_listing(trows, "table", _DEVICE_COLS)


def registry_for(ds: DeviceSet, kernel: str | None = None, claims: Iterable[str] = (),
                 iomem_relaxed: bool | None = None) -> RegistryResult:
    rules = [r for path in claims for r in load_claims(path)]
    return build_registry(ds, kernel, rules, iomem_relaxed)


def regions_rows(res: RegistryResult) -> list[dict]:
    """One dict per region (the ``regions --format json`` contract)."""
    return [r.to_dict() for r in res.registry.regions()]


_REGION_COLS = [
    Column("bdf", "BDF"),
    Column("start", "START", lambda v: f"{v:#05x}"),
    Column("length", "LEN", lambda v: f"{v:#x}"),
    Column("kind", "KIND"),
    Column("owner", "OWNER"),
    Column("what", "WHAT"),
]


def render_regions(res: RegistryResult, fmt: str = "table") -> str:
    rows = regions_rows(res)
    if fmt != "table":
        return render_listing(rows, fmt, _REGION_COLS,
                              ["bdf", "start", "length", "owner", "kind", "capability", "rule", "source"])
    head = (f"# kernel {res.kernel}, {'iomem=relaxed (the kernel checks nothing)' if res.iomem_relaxed else 'strict iomem'}; "
            f"{len(rows)} regions\n")
    trows = [{**r, "what": f"{r['capability'] or ''} [{r['rule']}]".strip()} for r in rows]
    return head + render_listing(trows, "table", _REGION_COLS)


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
    save_snapshot(ds, path)
    return len(ds.devices)
