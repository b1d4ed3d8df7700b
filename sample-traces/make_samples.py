#!/usr/bin/env python3
"""Builds the bundled scenarios: sample-traces/<name>/{snapshot.json,trace.jsonl,expected.*}.

The config spaces are real: the QEMU CXL guest's lspci dumps (tests/data/dumps/qemu-6.1, from
../shared/qemu-cxl) and this development machine's host bridge (tests/data/dumps/host). The
AMD root complex is that host bridge's header with AMD's vendor/device IDs (1022:14d8), since no
AMD machine was at hand: the claim depends only on vendor, class and position. The event
sequences are the system calls the named tools make (setpci: one pwrite of 1/2/4 bytes per
register; lspci: preads), written here rather than recorded, and marked so in each header.

Run `python3 sample-traces/make_samples.py` to rebuild; `--expected` also rewrites the expected
reports from the current code (review the diff before committing).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DUMPS = os.path.join(ROOT, "tests", "data", "dumps")
sys.path.insert(0, os.path.join(ROOT, "src"))

from cfgaudit.regions import load_lspci_dump  # noqa: E402
from cfgaudit.regions.configspace import DeviceSet, snapshot_dict  # noqa: E402
from cfgaudit.regions.build import device_views  # noqa: E402

CXL, RP = "0000:0d:00.0", "0000:0c:00.0"
T0 = 5_000_000_000  # ns since boot when each scenario starts


def qemu_devices() -> DeviceSet:
    ds = DeviceSet()
    for name in sorted(os.listdir(os.path.join(DUMPS, "qemu-6.1"))):
        for cs in load_lspci_dump(os.path.join(DUMPS, "qemu-6.1", name)):
            ds.add(cs)
    ds.devices[CXL].driver = "cxl_pci"
    ds.devices[RP].driver = "pcieport"
    ds.devices["0000:00:02.0"].driver = "e1000e"
    ds.devices["0000:00:1f.2"].driver = "ahci"
    return ds


def amd_devices() -> DeviceSet:
    ds = DeviceSet()
    for cs in load_lspci_dump(os.path.join(DUMPS, "host", "lspci-xxxx-host.txt")):
        ds.add(cs)
    root = ds.devices["0000:00:00.0"]
    root.set_bytes(0, struct.pack("<HH", 0x1022, 0x14D8))  # pci_ids.h PCI_VENDOR_ID_AMD; a Zen 4 root complex ID
    root.on_root_bus = True
    for cs in ds.devices.values():
        cs.driver = cs.driver or ("virtio-pci" if cs.vendor == 0x1AF4 else None)
    return ds


class Trace:
    def __init__(self, ds: DeviceSet, kernel: str, flags: list[str], what: str) -> None:
        device_views(ds)
        ds.kernel_release = kernel
        ds.iomem_relaxed = "iomem=relaxed" in flags
        self.header = {"record": "header", "format": "cfgaudit-trace", "version": 1, "host": ds.host or "sample",
                       "kernel_release": kernel, "boot_flags": flags, "iomem_relaxed": ds.iomem_relaxed,
                       "backend": "synthetic", "note": what, "started_ns": T0, "snapshot": snapshot_dict(ds)}
        self.header["snapshot"]["created_ns"] = T0
        self.events: list[dict] = []
        self.ts = T0

    def ev(self, op: str, bdf: str, off: int, size: int, value: int | None = None, *, pid: int, comm: str,
           via: str = "sysfs", gap_us: int = 40, raw: bytes | None = None) -> None:
        self.ts += gap_us * 1000
        e = {"ts_ns": self.ts, "pid": pid, "tid": pid, "uid": 0, "comm": comm, "op": op, "bdf": bdf, "offset": off,
             "size": size, "via": via, "ret": size}
        if raw is not None:
            e["data"] = raw.hex()
        elif value is not None:
            e["data"] = value.to_bytes(size, "little").hex()
        self.events.append(e)

    def write(self, d: str) -> None:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "snapshot.json"), "w") as fh:
            json.dump(self.header["snapshot"], fh, indent=1)
            fh.write("\n")
        with open(os.path.join(d, "trace.jsonl"), "w") as fh:
            for rec in [self.header] + self.events + [{"record": "footer", "ended_ns": self.ts + 1000,
                                                       "events": len(self.events), "lost": 0}]:
                fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


def doe_exchange(t: Trace, bdf: str, cap: int, pid: int, comm: str, via: str) -> None:
    """A user-space DOE discovery, then a CXL compliance request, on the mailbox at ``cap``:
    PCIe 6.0 sec 6.30 (status +0x0C, control +0x08, write mailbox +0x10, read mailbox +0x14)."""
    st, ctl, wmb, rmb = cap + 0x0C, cap + 0x08, cap + 0x10, cap + 0x14
    rd = lambda off, v: t.ev("read", bdf, off, 4, v, pid=pid, comm=comm, via=via)  # noqa: E731
    wr = lambda off, v: t.ev("write", bdf, off, 4, v, pid=pid, comm=comm, via=via)  # noqa: E731
    rd(st, 0)                                   # not busy
    for dw in (0x00000001, 0x00000003, 0x00000000):  # discovery: vendor 0001 type 0, 3 dwords, index 0
        wr(wmb, dw)
    wr(ctl, 0x80000000)                         # Go
    rd(st, 0x80000000)                          # Data Object Ready
    for dw in (0x00000001, 0x00000003, 0x00010000):
        rd(rmb, dw)
        wr(rmb, 0)                              # a write to the read mailbox acknowledges the dword
    for dw in (0x00001E98, 0x00000003, 0x00000000):  # CXL compliance (vendor 1e98 type 0)
        wr(wmb, dw)
    wr(ctl, 0x80000000)
    rd(st, 0x00000004)                          # error: the device refuses
    wr(ctl, 0x00000001)                         # Abort


def scenarios() -> dict[str, Trace]:
    out: dict[str, Trace] = {}
    t = Trace(qemu_devices(), "6.2.16", [], "DOE exchange from user space through sysfs on a cxl_pci-bound "
              "CXL memory device; cxl_pci claims the DOE mailbox on 6.2 (487d828d751d)")
    doe_exchange(t, CXL, 0x190, 812, "doe-tool", "sysfs")
    out["cxl-doe-6.2"] = t

    t = Trace(qemu_devices(), "6.2.16", [], "the same DOE exchange through /proc/bus/pci/0d/00.0: 6.2 does not "
              "check procfs writes (3359e044d597 came in 7.3), so the kernel stays silent")
    doe_exchange(t, CXL, 0x190, 813, "doe-tool", "procfs")
    out["cxl-doe-procfs-6.2"] = t

    t = Trace(amd_devices(), "6.15.4", [], "ryzenadj-style SMN access: index at 0xB8, data at 0xBC of the AMD "
              "root complex, which amd_node claims from 6.15 (83518453074d)")
    for i, (reg, val) in enumerate([(0x3B10998, None), (0x3B10A08, None), (0x3B10A20, 0x0000C350)]):
        t.ev("write", "0000:00:00.0", 0xB8, 4, reg, pid=4242, comm="ryzenadj", gap_us=200)
        if val is None:
            t.ev("read", "0000:00:00.0", 0xBC, 4, 0x00002710 + i, pid=4242, comm="ryzenadj")
        else:
            t.ev("write", "0000:00:00.0", 0xBC, 4, val, pid=4242, comm="ryzenadj")
    out["amd-smn-6.15"] = t

    t = Trace(qemu_devices(), "6.12.95", ["pcie_ports=compat"], "setpci -s 0c:00.0 CAP_EXP+10.w=2:3 (enable ASPM "
              "L1 on the CXL root port behind the kernel's back): kernel-managed Link Control, no claim, the kernel says nothing")
    ds = qemu_devices()
    lnk = ds.devices[RP].word(0x48 + 0x10)
    t.ev("read", RP, 0x58, 2, lnk, pid=2020, comm="setpci")
    t.ev("write", RP, 0x58, 2, (lnk & ~0x3) | 0x2, pid=2020, comm="setpci")
    out["aspm-setpci-6.12"] = t

    ds = qemu_devices()
    t = Trace(ds, "6.12.95", ["pcie_ports=compat"], "lspci -vvv: reads only, a clean trace")
    for bdf in sorted(ds.devices):
        cs = ds.devices[bdf]
        n = 4096 if (cs.config_size or 256) > 256 else 256
        for off in range(0, n, 64):  # pciutils reads the space in 64-byte pieces
            t.ev("read", bdf, off, 64, raw=bytes(cs.data[off:off + 64]), pid=3030, comm="lspci", gap_us=5)
    out["lspci-scan-6.12"] = t
    return out


EXPECTED = {"table": "expected.txt", "json": "expected.json", "github": "expected.github"}


def main() -> None:
    for name, t in scenarios().items():
        d = os.path.join(HERE, name)
        t.write(d)
        if "--expected" in sys.argv:
            for fmt, fname in EXPECTED.items():
                p = subprocess.run([sys.executable, "-m", "cfgaudit.cli", "analyze", f"sample-traces/{name}/trace.jsonl",
                                    "--format", fmt], capture_output=True, text=True, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")})
                if p.returncode not in (0, 1):
                    raise SystemExit(f"{name}: {p.stderr}")
                with open(os.path.join(d, fname), "w") as fh:
                    fh.write(p.stdout)


if __name__ == "__main__":
    main()
