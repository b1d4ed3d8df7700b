"""Traces on the DOE sample's device (sample-traces/cxl-doe-6.2: a cxl_pci CXL device, DOE
capability at 0x190) with made-up events, for the kernel-DOE-exchange and collision tests."""
from __future__ import annotations

import json
import os

from .paths import ROOT

SAMPLE = os.path.join(ROOT, "sample-traces", "cxl-doe-6.2", "trace.jsonl")


CXL = "0000:0d:00.0"  # the sample's CXL device
DOE_CAP = 0x190  # its DOE capability (bytes)
KWORKER = {"pid": 97, "tid": 97, "uid": 0, "comm": "kworker/u8:2", "bdf": CXL, "offset": DOE_CAP, "via": "kernel"}


def doe_sample_trace(tmp_path, rows: list[dict], name: str = "t.jsonl", **header: object) -> str:
    """A JSONL trace: the DOE sample's header (its embedded snapshot; ``header`` overrides its
    keys, e.g. ``backend="syscalls"``) and ``rows``; its path (``name`` in ``tmp_path``)."""
    with open(SAMPLE) as fh:
        head = fh.readline()
    if header:
        head = json.dumps({**json.loads(head), **header}) + "\n"
    p = tmp_path / name
    p.write_text(head + "".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def kstart(ts: int, vendor: int = 0x1E98, type_: int = 2, size: int = 16) -> dict:
    """The kernel's ``doe_start`` on the sample's mailbox (default: a CXL table access, CDAT)."""
    return {"ts_ns": ts, "op": "doe_start", "size": size, "doe_vendor": vendor, "doe_type": type_, **KWORKER}


def kend(ts: int, ret: int = 12) -> dict:
    """The kernel's ``doe_end`` on the sample's mailbox (``ret``: bytes received or -errno)."""
    return {"ts_ns": ts, "op": "doe_end", "size": 16, "ret": ret, **KWORKER}


def uwrite(ts: int, rel: int, data: str | None = "00000000", size: int = 4, bdf: str = CXL, pid: int = 812) -> dict:
    """A user write (sysfs) at mailbox offset ``rel`` (bytes from the capability)."""
    row = {"ts_ns": ts, "pid": pid, "tid": pid, "uid": 0, "comm": "doe-tool", "op": "write", "bdf": bdf,
           "offset": DOE_CAP + rel, "size": size, "via": "sysfs", "ret": size}
    if data is not None:
        row["data"] = data
    return row
