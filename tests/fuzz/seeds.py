"""Well-formed seed inputs the mutators start from, loaded once per worker.

Traces: the bundled sample traces (sample-traces/*/trace.jsonl), compact copies of them (their
header's snapshot cut to the devices the events name) and a trace built here from the QEMU CXL
dumps; Parquet seeds are written from those by cfgaudit's own ``TraceWriter``. Dumps: every
lspci dump under tests/data/dumps and ../shared/qemu-cxl/runs. Snapshots: the samples' and the
QEMU dumps' (cfgaudit's ``snapshot_dict``). Claims: TOML files in the shape of docs/claims.md.
"""
from __future__ import annotations

import copy
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cfgaudit.probes.tracefile import TraceWriter, make_header
from cfgaudit.regions import load_devices
from cfgaudit.regions.configspace import snapshot_dict

__all__ = ["Seeds", "ROOT", "QEMU_CXL", "QEMU_RP", "KERNELS"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DUMPS = os.path.join(ROOT, "tests", "data", "dumps")
QEMU_CXL = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0d_00.0.txt")
QEMU_RP = os.path.join(DUMPS, "qemu-6.1", "lspci-xxxx_0000_0c_00.0.txt")
SHARED_DUMPS = os.path.join(os.path.dirname(ROOT), "shared", "qemu-cxl", "runs", "*", "dumps", "lspci-*_*.txt")
KERNELS = ("6.1.0", "6.2.0", "6.2.16", "6.4", "6.12.0", "6.15.0", "6.18.0", "5.10", "7.3.0")

CLAIM_SEEDS: tuple[str, ...] = (
    '# vendor capability block\n[[claim]]\nkind = "managed"\nowner = "acme_drv"\nvendor = 0x8086\n'
    'capability = "std:0x10"\noffset = 0x04\nlength = 8\n',
    '[[claim]]\nkind = "user"\nowner = "spdm-tool"\nbdf = "0000:0d:00.0"\ncapability = "doe"\nkernels = ">=6.4"\n',
    '[[claim]]\nkind = "exclusive"\nowner = "x"\nbdf = "0d:00.0"\noffset = 0x198\nlength = 4\nname = "mailbox"\n'
    '\n[[claim]]\nkind = "exclusive"\nowner = "y"\nbdf = "0d:00.0"\noffset = 0x196\nlength = 8\n',
    '[[claim]]\nkind = "managed"\nowner = "cxl_core"\ndriver = "cxl_pci"\ncapability = "dvsec:1e98:0"\n'
    'note = "CXL DVSEC"\n',
    '[[claim]]\nkind = "managed"\nowner = "aspm"\nclass = 0x0604\ncapability = "pcie"\noffset = 0x10\nlength = 2\n'
    'kernels = ">=6.1, <6.19"\n',
    '[[claim]]\nkind = "user"\nowner = "t"\nvendor = 0x8086\ndevice = 0x0d93\ncapability = "ext:0x2e"\n'
    '[[claim]]\nkind = "managed"\nowner = "m"\nbdf = "0000:0c:00.0"\ncapability = "msi"\n',
)

# Events of the seed built from the QEMU CXL dumps: a DOE exchange and link control.
_QEMU_EVENTS: tuple[dict[str, Any], ...] = (
    {"ts_ns": 1000, "pid": 812, "tid": 812, "uid": 0, "comm": "doe-tool", "op": "read", "bdf": "0000:0d:00.0",
     "offset": 0x198, "size": 4, "data": "00000000", "via": "sysfs", "ret": 4},
    {"ts_ns": 2000, "pid": 812, "tid": 812, "uid": 0, "comm": "doe-tool", "op": "write", "bdf": "0000:0d:00.0",
     "offset": 0x1A0, "size": 4, "data": "01000000", "via": "sysfs", "ret": 4},
    {"ts_ns": 3000, "pid": 812, "tid": 812, "uid": 0, "comm": "doe-tool", "op": "write", "bdf": "0000:0d:00.0",
     "offset": 0x198, "size": 4, "data": "00000080", "via": "procfs", "ret": 4},
    {"ts_ns": 4000, "pid": 90, "comm": "setpci", "op": "write", "bdf": "0000:0c:00.0", "offset": 0x50, "size": 2,
     "data": "4300", "via": "sysfs", "ret": 2, "kernel_verdict": False},
    {"ts_ns": 5000, "pid": 91, "comm": "setpci", "op": "write", "bdf": "0000:0d:00.0", "offset": 0x04, "size": 2,
     "data": "0600", "via": "sysfs", "ret": 2},
    {"record": "unmediated", "ts_ns": 6000, "pid": 92, "comm": "io", "what": "iopl(3)", "via": "ioport"},
    {"ts_ns": 7000, "pid": 93, "comm": "lspci", "op": "read", "bdf": "0000:0d:00.0", "offset": 0, "size": 4096,
     "via": "sysfs", "ret": 4096},
)


@dataclass
class TraceSeed:
    """One trace: its header (``{}`` when bare), event (and notice) records, and footer."""

    header: dict[str, Any]
    records: list[dict[str, Any]]
    footer: dict[str, Any]
    big: bool = False  # a full sample (slower to analyse): picked less often

    def jsonl(self) -> bytes:
        lines = ([self.header] if self.header else []) + self.records + ([self.footer] if self.footer else [])
        return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in lines)


@dataclass
class Seeds:
    """Every seed, plus fixed well-formed side inputs (a bare trace, a snapshot, dumps) that the
    commands pair a fuzzed input with."""

    traces: list[TraceSeed] = field(default_factory=list)
    jsonl: list[bytes] = field(default_factory=list)
    parquet: list[bytes] = field(default_factory=list)
    dumps: list[bytes] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    claims: list[bytes] = field(default_factory=list)
    side: dict[str, str] = field(default_factory=dict)  # name -> path of a well-formed side input

    @classmethod
    def load(cls, workdir: str) -> "Seeds":
        """Read and build every seed; write the side inputs and Parquet seeds under ``workdir``."""
        os.makedirs(workdir, exist_ok=True)
        s = cls()
        qemu = load_devices(lspci_dumps=[QEMU_CXL, QEMU_RP], drivers={"0000:0d:00.0": "cxl_pci",
                                                                      "0000:0c:00.0": "pcieport"})
        qsnap = snapshot_dict(qemu)
        qsnap["kernel_release"] = "6.2.0"
        qsnap["created_ns"] = 1
        s.snapshots.append(qsnap)
        s.traces.append(TraceSeed(make_header(host="fuzz", kernel_release="6.2.0", boot_flags=[], iomem_relaxed=False,
                                              backend="syscalls", started_ns=0, snapshot=qsnap),
                                  [dict(e) for e in _QEMU_EVENTS], {"record": "footer", "ended_ns": 9000, "events": 6,
                                                                    "lost": 0}))
        s.traces.append(TraceSeed({}, [dict(e) for e in _QEMU_EVENTS if "record" not in e], {}))
        for path in sorted(glob.glob(os.path.join(ROOT, "sample-traces", "*", "trace.jsonl"))):
            with open(path, "rb") as fh:
                rows = [json.loads(ln) for ln in fh if ln.strip()]
            header = rows[0] if rows and rows[0].get("record") == "header" else {}
            footer = rows[-1] if rows and rows[-1].get("record") == "footer" else {}
            body = rows[1 if header else 0: len(rows) - (1 if footer else 0)]
            s.traces.append(TraceSeed(header, body, footer, big=True))
            compact = copy.deepcopy(header)
            snap = compact.get("snapshot")
            if isinstance(snap, dict):
                named = {r.get("bdf") for r in body}
                snap["devices"] = [d for d in snap.get("devices", []) if d.get("bdf") in named][:3]
                s.snapshots.append(copy.deepcopy(snap))
            s.traces.append(TraceSeed(compact, body[:40], footer))
            with open(os.path.join(os.path.dirname(path), "snapshot.json"), "rb") as fh:
                s.snapshots.append(json.load(fh))
        s.jsonl = [t.jsonl() for t in s.traces]
        for i, t in enumerate(s.traces):
            p = os.path.join(workdir, f"seed{i}.parquet")
            w = TraceWriter(p, t.header or make_header())
            for r in t.records:
                if "record" not in r:
                    w.write(r)
            w.close({"lost": t.footer.get("lost", 0)})
            with open(p, "rb") as fh:
                s.parquet.append(fh.read())
        dumps = sorted(glob.glob(os.path.join(DUMPS, "**", "*.txt"), recursive=True)) + sorted(glob.glob(SHARED_DUMPS))
        for p in dumps:
            with open(p, "rb") as fh:
                s.dumps.append(fh.read())
        s.claims = [c.encode() for c in CLAIM_SEEDS]
        side = {
            "bare": s.traces[1].jsonl(),
            "snapshot": json.dumps(qsnap).encode(),
            "trace": s.traces[0].jsonl(),
            "claims": s.claims[0],
        }
        for name, data in side.items():
            p = os.path.join(workdir, f"side-{name}.{ {'snapshot': 'json', 'claims': 'toml'}.get(name, 'jsonl')}")
            with open(p, "wb") as fh:
                fh.write(data)
            s.side[name] = p
        s.side["cxl"], s.side["rp"] = QEMU_CXL, QEMU_RP
        return s
