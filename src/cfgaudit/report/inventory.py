"""Text for the listing commands: ``devices``, ``regions`` and ``doctor``.

Rows come from the library (cfgaudit.inventory.devices_rows / regions_rows, the backend table)
as plain dicts; this module only formats them: hex as lspci prints it, tables under 100 columns.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .listing import Column, render_listing

__all__ = ["device_label", "render_devices", "render_regions", "render_doctor"]

_DEVICE_KEYS = ["bdf", "vendor", "device", "vendor_name", "device_name",
                "class", "revision", "driver", "config_size", "known_bytes",
                "capabilities", "anomalies"]
_REGION_KEYS = ["bdf", "start", "length", "owner", "kind", "capability", "rule", "source"]


def _hex(width: int) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else f"{v:0{width}x}"


def _caps_summary(caps: list[dict]) -> str:
    """``[off] name (bytes)`` per capability; ``*`` marks one the kernel's walk does not reach."""
    out = []
    for c in caps:
        tag = c["name"]
        if c.get("dvsec_vendor") is not None:
            tag = c.get("dvsec_name") or f"DVSEC {c['dvsec_vendor']:04x}:{c.get('dvsec_id') or 0:x}"
        mark = "" if c.get("kernel_visible", True) else "*"
        out.append(f"[{c['offset']:x}]{mark} {tag}" + (f" ({c['length']})" if c["length"] else ""))
    return ", ".join(out) or "none"


def device_label(row: dict) -> str:
    """A device's name as lspci words it: pci.ids' vendor and device names (``vendor_name``,
    ``device_name``), ``Device 1234`` where the database lists no device name, ``-`` for none."""
    ven, dev = row.get("vendor"), row.get("device")
    if ven is None or dev is None:
        return "-"
    vname = row.get("vendor_name") or f"Vendor {ven:04x}"
    return f"{vname} {row.get('device_name') or f'Device {dev:04x}'}"


_DEVICE_COLS = [
    Column("bdf", "BDF"),
    Column("id", "VEN:DEV"),
    Column("class", "CLASS", _hex(6)),
    Column("driver", "DRIVER"),
    Column("config_size", "CFG"),
    Column("caps", "NAME (pci.ids): CAPABILITIES [offset] name (bytes)"),
]


def render_devices(rows: Sequence[dict], fmt: str = "table") -> str:
    """``devices`` output for the rows of cfgaudit.inventory.devices_rows()."""
    if fmt != "table":
        return render_listing(rows, fmt, _DEVICE_COLS, _DEVICE_KEYS)
    trows = []
    for r in rows:
        caps = _caps_summary(r["capabilities"])
        if r["anomalies"]:
            caps += "; anomalies: " + "; ".join(a["message"] for a in r["anomalies"])
        ven = r["vendor"] if r["vendor"] is not None else 0xFFFF
        dev = r["device"] if r["device"] is not None else 0xFFFF
        trows.append({**r, "id": f"{ven:04x}:{dev:04x}", "caps": f"{device_label(r)}: {caps}"})
    return render_listing(trows, "table", _DEVICE_COLS)


_REGION_COLS = [
    Column("bdf", "BDF"),
    Column("start", "START", lambda v: f"{v:#05x}"),
    Column("length", "LEN", lambda v: f"{v:#x}"),
    Column("kind", "KIND"),
    Column("owner", "OWNER"),
    Column("what", "WHAT"),
]


def render_regions(rows: Sequence[dict], fmt: str = "table", kernel: str = "", iomem_relaxed: bool = False) -> str:
    """``regions`` output for the rows of cfgaudit.inventory.regions_rows(); the table says which
    kernel release and iomem mode the rules were evaluated for."""
    if fmt != "table":
        return render_listing(rows, fmt, _REGION_COLS, _REGION_KEYS)
    mode = "iomem=relaxed (the kernel checks nothing)" if iomem_relaxed else "strict iomem"
    head = f"# kernel {kernel}, {mode}; {len(rows)} regions\n"
    trows = [{**r, "what": f"{r['capability'] or ''} [{r['rule']}]".strip()} for r in rows]
    return head + render_listing(trows, "table", _REGION_COLS)


_DOCTOR_COLS = [Column("backend", "BACKEND"), Column("available", "OK", lambda v: "yes" if v else "no"),
                Column("reason", "WHY NOT", lambda v: v or "-"), Column("help", "WHAT")]


def render_doctor(rows: Sequence[dict], fmt: str = "table") -> str:
    """``doctor`` output: one row per backend, then which one ``--backend auto`` picks."""
    if fmt != "table":
        return render_listing(rows, fmt, _DOCTOR_COLS)
    # a backend that can run but will change the host when it starts says so where "why not" goes
    trows = [{**r, "reason": r.get("reason") or (f"note: {r['note']}" if r.get("note") else "")} for r in rows]
    text = render_listing(trows, "table", _DOCTOR_COLS)
    live = [r["backend"] for r in rows if r["live"] and r["available"]]
    text += f"--backend auto uses: {live[0]}\n" if live else "--backend auto: no live backend can run here\n"
    # collisions (user writes during the kernel's own DOE exchanges) need those exchanges traced
    doe = [f"  {r['backend']}: {r['doe_exchanges']}" for r in rows if r["live"] and r.get("doe_exchanges")]
    if doe:
        text += "the kernel's own DOE exchanges (collision detection needs them):\n" + "\n".join(doe) + "\n"
    return text
