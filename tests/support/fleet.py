"""Synthetic fleets for `cfgaudit fleet` (issue 13): many hosts' trace segments, built from the
config-space dumps under tests/data/dumps, in the recorder's layout
``DIR/host=<HOST>/seg-<SEQ:08d>-<UTC %Y%m%dT%H%M%SZ>.parquet`` (or ``.jsonl``).

Hosts differ in kernel release (the ownership rules differ by release), bound drivers (cxl_pci,
vfio-pci, none) and devices (the QEMU CXL guests of 6.1 and 6.12, the virtio host); each segment
has writes into owned ranges (DOE mailbox, MSI-X, Link Control, Command, BARs) and elsewhere,
some reads, and now and then lost events in its footer or notices (vfio, io_uring). Everything
is seeded: the same arguments give the same files. Offsets and sizes are bytes, times ns.
"""
from __future__ import annotations

import functools
import os
import random
import time
import zlib
from dataclasses import dataclass

from cfgaudit.probes.tracefile import TraceWriter, make_header
from cfgaudit.regions import load_devices
from cfgaudit.regions.configspace import snapshot_dict

from .paths import DUMPS

# (name, dumps directory, files, drivers by BDF): the device pictures hosts are built from.
CXL_BDF = "0000:0d:00.0"
RP_BDF = "0000:0c:00.0"
BASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "qemu-6.1": ("qemu-6.1", ()),
    "qemu-6.12": ("qemu-6.12", ()),
    "virtio-host": ("host", ("lspci-xxxx-host.txt",)),
}
# Kernel releases on both sides of the rules' boundaries (cxl_pci's exclusive DOE claim from 6.2, ...).
KERNELS = ("5.15.0", "6.1.0", "6.1.90", "6.2.16", "6.6.30", "6.12.10")
CXL_DRIVERS = ("cxl_pci", "cxl_pci", "vfio-pci", None)  # how the CXL device is bound on a host
COMMS = ("setpci", "cxl-fwupd", "pcimem", "dpdk-devbind", "lspci", "nvme-cli")
# Offsets written per device kind: (offset, size, data hex). Owned and not owned.
CXL_WRITES = ((0x198, 4, "01000000"), (0x190 + 0x10, 4, "00100000"), (0x19c, 4, "80000000"),
              (0x198, 4, "02000000"), (0x42, 2, "0080"), (0x90, 2, "4000"), (0x04, 2, "0600"),
              (0x10, 4, "ffffffff"), (0x200, 4, "deadbeef"), (0x0c, 1, "40"))
RP_WRITES = ((0x58, 2, "0020"), (0x3e, 2, "4000"), (0x60, 2, "0000"), (0x1a0, 4, "00000000"))
OTHER_WRITES = ((0x04, 2, "0700"), (0x10, 4, "ffffffff"), (0x44, 4, "00000000"), (0xa0, 2, "0000"))


@functools.lru_cache(maxsize=None)
def base_snapshot(name: str) -> dict:
    """The snapshot document of one device picture (no drivers, no kernel)."""
    sub, files = BASES[name]
    d = os.path.join(DUMPS, sub)
    paths = [os.path.join(d, f) for f in (files or sorted(os.listdir(d))) if f.endswith(".txt")]
    ds = load_devices(lspci_dumps=paths)
    return snapshot_dict(ds)


@dataclass(frozen=True)
class HostPlan:
    """One synthetic host: its name, device picture, kernel, CXL driver and iomem=relaxed."""

    host: str
    base: str
    kernel: str
    cxl_driver: str | None
    relaxed: bool

    def snapshot(self) -> dict:
        snap = dict(base_snapshot(self.base))
        devs = []
        for dv in snap["devices"]:
            dv = dict(dv)
            if dv["bdf"] == CXL_BDF:
                dv["driver"] = self.cxl_driver
            elif dv["bdf"] == RP_BDF:
                dv["driver"] = "pcieport"
            elif self.base == "virtio-host":
                dv["driver"] = "virtio-pci"
            devs.append(dv)
        return {**snap, "devices": devs, "host": self.host, "kernel_release": self.kernel,
                "iomem_relaxed": self.relaxed, "created_ns": 0}

    def bdfs(self) -> list[str]:
        return [d["bdf"] for d in base_snapshot(self.base)["devices"]]


def host_plan(i: int, seed: int = 0) -> HostPlan:
    """Host number ``i`` of a fleet: name ``node-NNNNN``, picture, kernel, driver (seeded)."""
    rnd = random.Random(seed * 1_000_003 + i)
    base = ("qemu-6.1", "qemu-6.12", "virtio-host")[i % 3]
    return HostPlan(f"node-{i:05d}", base, KERNELS[rnd.randrange(len(KERNELS))],
                    CXL_DRIVERS[rnd.randrange(len(CXL_DRIVERS))], rnd.random() < 0.1)


def segment_name(seq: int, started_unix_ns: int, ext: str = ".parquet") -> str:
    """The recorder's file name: ``seg-<SEQ:08d>-<UTC %Y%m%dT%H%M%SZ><ext>``."""
    return f"seg-{seq:08d}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started_unix_ns // 10**9))}{ext}"


def header_for(plan: HostPlan, seq: int, started_unix_ns: int, with_host: bool = True) -> dict:
    facts = dict(kernel_release=plan.kernel, kernel_version=None, backend="syscalls", boot_flags=[],
                 iomem_relaxed=plan.relaxed, doe_exchanges="not traced", snapshot=plan.snapshot(),
                 machine_id=f"{zlib.crc32(plan.host.encode()):08x}", boot_id=f"boot-{plan.host}-1",
                 segment={"seq": seq, "started_unix_ns": started_unix_ns}, started_ns=1_000_000_000,
                 started_unix_ns=started_unix_ns)
    if with_host:
        facts["host"] = plan.host
    return make_header(**facts)


def _writes_for(bdf: str) -> tuple[tuple[int, int, str], ...]:
    return CXL_WRITES if bdf == CXL_BDF else RP_WRITES if bdf == RP_BDF else OTHER_WRITES


def segment_rows(plan: HostPlan, n_events: int, rnd: random.Random) -> list[dict]:
    """``n_events`` event rows: writes (owned bytes and others) and some reads, in time order."""
    bdfs = plan.bdfs()
    rows = []
    ts = 2_000_000_000
    for _ in range(n_events):
        ts += rnd.randrange(1000, 5_000_000)
        bdf = CXL_BDF if CXL_BDF in bdfs and rnd.random() < 0.5 else bdfs[rnd.randrange(len(bdfs))]
        off, size, data = _writes_for(bdf)[rnd.randrange(len(_writes_for(bdf)))]
        op = "read" if rnd.random() < 0.15 else "write"
        pid = 1000 + rnd.randrange(50)
        rows.append({"ts_ns": ts, "pid": pid, "tid": pid, "uid": 0, "comm": COMMS[pid % len(COMMS)], "op": op,
                     "bdf": bdf, "offset": off, "size": size, "data": data, "via": "sysfs", "ret": size})
    return rows


def write_segment(root: str, plan: HostPlan, seq: int, n_events: int, ext: str = ".parquet", seed: int = 0,
                  with_host: bool = True, lost: int | None = None, notices: bool | None = None) -> str:
    """One segment file under ``root/host=<HOST>/`` (recorder layout); returns its path. ``lost``
    and ``notices`` default to a seeded choice (about one host in 8 loses events, one in 10 has a notice)."""
    rnd = random.Random(f"{seed}/{plan.host}/{seq}")
    started = 1_780_000_000_000_000_000 + seq * 3_600_000_000_000 + rnd.randrange(10**9)
    d = os.path.join(root, f"host={plan.host}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, segment_name(seq, started, ext))
    w = TraceWriter(path, header_for(plan, seq, started, with_host))
    for r in segment_rows(plan, n_events, rnd):
        w.write(r)
    if notices if notices is not None else rnd.random() < 0.1:
        kind = ("vfio", "io_uring")[rnd.randrange(2)]
        what = "/dev/vfio/12" if kind == "vfio" else "io_uring_setup()"
        w.write({"record": "unmediated", "ts_ns": 3_000_000_000, "pid": 4242, "comm": "qemu-system-x86",
                 "what": what, "via": kind, "kind": kind})
    n_lost = lost if lost is not None else (rnd.randrange(1, 50) if rnd.random() < 0.125 else 0)
    w.close({"lost": n_lost, "closed_by": "rotation"})
    return path


def make_fleet(root: str, n_hosts: int, n_events: int = 30, seed: int = 0, jsonl_every: int = 7,
               two_segments_every: int = 10) -> list[str]:
    """A fleet of ``n_hosts`` hosts under ``root``: one segment each (every ``two_segments_every``-th
    host two), Parquet but every ``jsonl_every``-th host's JSON Lines. Returns the segment paths."""
    out = []
    for i in range(n_hosts):
        plan = host_plan(i, seed)
        ext = ".jsonl" if jsonl_every and i % jsonl_every == 3 else ".parquet"
        for seq in range(1 + (two_segments_every and i % two_segments_every == 5)):
            out.append(write_segment(root, plan, seq + 1, n_events, ext, seed))
    return out
